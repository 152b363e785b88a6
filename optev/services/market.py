r"""What AGC markets pay on: regulation mileage and the performance factor K (``china_rules.md`` §0.3, §5).

Payment of a frequency-regulation hour: :math:`R = D \cdot B \cdot K` with the mileage
:math:`D` (MW, :func:`optev.services.appendix_a.mileage_kw` / 1000), the offer price
:math:`B` (currency per MW) and the performance factor :math:`K`, combined from three indices
by the rule's form (Hunan 2025: :math:`K = 0.4K_1 + 0.3K_2 + 0.3K_3`; Shaanxi draft:
:math:`0.2(3k_1 + k_2 + k_3)`; Jiangsu: :math:`K_1K_2`), capped at ``k_max``.

The rules name the indices (rate, response time, accuracy) and their standards (storage class:
response time :math:`T_0` = 5 s, rate 100 % of the offered power per minute, error band
:math:`E_0` = 2 %), but the texts collected do not give the formulas. optev uses one
normalisation for all three — *measured performance over the standard*, so that 1 means
"exactly the standard" and better is larger — and marks them ◐:

- :math:`K_1 = v / v_0`: the fleet's ramp capability :math:`v` (sum of the participating
  chargers' ramp rates, kW/min) over the standard rate :math:`v_0` (``rate_pct_per_min`` ×
  offered power), capped at ``k1_max``;
- :math:`K_2 = T_0 / t`: the standard response time over the fleet's (its communication
  delay plus one signal interval);
- :math:`K_3 = E_0 R / MAE`: the error band over the mean absolute tracking error (A.4);

each capped at ``k_max`` where the rule has no own cap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optev.services.presets import ServiceRule

K_DEFAULT_CAP = 3.0
"""Cap of an index when the rule gives none (K1 ≤ 3 in Hunan)."""


@dataclass(frozen=True)
class Performance:
    """The AGC indices and the payment of one occurrence (see the module docstring)."""

    k1: float
    k2: float
    k3: float
    k: float
    mileage_mw: float
    pay: float


def performance(rule: ServiceRule, *, offered_kw: float, ramp_kw_per_min: float, response_s: float,
                mae_kw: float, mileage_kw: float) -> Performance:
    """K1, K2, K3, K and ``D·B·K`` of an occurrence (module docstring)."""
    cap = rule.k_max if rule.k_max is not None else K_DEFAULT_CAP
    k1_cap = rule.k1_max if rule.k1_max is not None else cap
    rate = (rule.rate_pct_per_min or 100.0) / 100.0 * offered_kw
    k1 = min(ramp_kw_per_min / rate, k1_cap) if rate > 0 else float("nan")
    t0 = rule.t0_s or 5.0
    k2 = min(t0 / response_s, cap) if response_s > 0 else cap
    band = (rule.error_band_pct or 2.0) / 100.0 * offered_kw
    k3 = min(band / mae_kw, cap) if mae_kw > 0 else cap
    if rule.k_form == "product":
        k = k1 * k2
    else:
        w = rule.k_weights or (1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0)
        k = float(np.dot(w, (k1, k2, k3)))
    k = min(k, rule.k_max) if rule.k_max is not None else k
    mileage_mw = mileage_kw / 1000.0
    price = float(rule.price or 0.0)
    if rule.price_max is not None:
        price = min(price, rule.price_max)
    return Performance(k1, k2, k3, k, mileage_mw, mileage_mw * price * k)
