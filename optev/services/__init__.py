"""Grid services of the aggregated fleet (R6.5.1): requests, presets, baselines, delivery, Appendix A metrics.

Layer: above :mod:`optev.mpc` (design.md); nothing below imports it.

- :mod:`~optev.services.request` — service requests as TOML data (:func:`load_service`);
- :mod:`~optev.services.presets` — the market and programme rules of ``china_rules.md``;
- :mod:`~optev.services.baseline` — uncontrolled, real-time (t0 − 15 min) and 5-workday baselines;
- :mod:`~optev.services.limits` — a request as limits of the optimisation windows;
- :mod:`~optev.services.run` — a closed-loop day delivering a request (:func:`run_service`);
- :mod:`~optev.services.evaluate` — what was delivered: metrics, payment, response records;
- :mod:`~optev.services.appendix_a` — the metrics of the standard's Appendix A.
"""

from optev.services.presets import PRESETS, PRODUCTS, ServiceRule
from optev.services.request import ServiceRequest, load_service, parse_service
from optev.services.run import ServiceRun, run_service

__all__ = ["PRESETS", "PRODUCTS", "ServiceRequest", "ServiceRule", "ServiceRun", "load_service", "parse_service",
           "run_service"]
