r"""Service rules in force in China, as presets a service request names (R6.5.1, ``china_rules.md`` §5).

Every figure comes from ``../shared/services/china_rules.md`` with its source and its
status mark: ✔ read in an official text or a faithful reproduction, ◐ secondary source,
✘ not verified. A ✘ figure is never a default: a preset leaves it ``None`` and a request
that uses the preset must give it (:func:`optev.services.request.load_service` says so).
A request may override any parameter of its preset; the preset's key and
:data:`RULES_VERSION` go into every service-response record (R6.5.3).

Payment bases (``payment_basis``)
    ``energy``          currency per kWh of response energy (A.6 ``Pay = π·E_DR``; A.2 E_adj);
    ``capacity_event``  currency per kW of mean response per event (Jiangsu DR 2015–2018);
    ``mileage``         currency per MW of regulation mileage × performance factor K (AGC);
    ``capacity_time``   currency per MW·h of reserve held;
    ``contract``        a price per kvarh (voltage support; no market rule found).

AGC performance factor (``k_form``)
    ``weighted``: :math:`K = \sum_i w_i K_i` (Hunan 2025: 0.4, 0.3, 0.3 on rate, response
    time, accuracy; Shaanxi draft: 0.6, 0.2, 0.2); ``product``: :math:`K = K_1 K_2` (Jiangsu,
    no accuracy term). The indices themselves are defined in
    :mod:`optev.services.market` against the preset's T0, standard rate and error band.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from optev.errors import DataError

RULES_VERSION = "china_rules.md 2026-12 (optev presets v1)"
"""Version of the rule set written into every response record."""

PRODUCTS = ("peak_regulation", "valley_filling", "voltage_support", "frequency_primary",
            "frequency_secondary", "renewable_smoothing", "demand_response")
"""The service families of R6.5.1.1–R6.5.1.5 (frequency split into primary and secondary)."""

PAYMENT_BASES = ("energy", "capacity_event", "mileage", "capacity_time", "contract")
BASELINES = ("uncontrolled", "workdays_5", "t0_minus_15min", "import_target", "none")
"""Baseline rules: the uncontrolled simulation (studies), the mean of the 5 most recent normal
working days in the same window (Jiangsu agreed DR), the load 15 min before control (Jiangsu
real-time DR), a fixed import target, or none (frequency and voltage services)."""
K_FORMS = ("weighted", "product")


@dataclass(frozen=True)
class ServiceRule:
    """Parameters of one market or programme rule (units in the names; None: not set).

    Attributes
    ----------
    key : str
        Preset name (``js_dr_2018_peak``, ...).
    products : tuple of str
        Products the rule prices.
    payment_basis : str
        One of :data:`PAYMENT_BASES`.
    price : float or None
        Price in the basis's unit (CNY per kWh, per kW and event, per MW of mileage, per
        MW·h); None: given by the request (a market clearing price or an unverified figure).
    price_min, price_max : float or None
        Bounds of an offer price (e.g. AGC B ∈ [4, 15] CNY/MW) and price caps.
    baseline : str
        Default baseline rule, one of :data:`BASELINES`.
    band_low, band_high : float or None
        Evaluation band as shares of the requested quantity: below ``band_low`` the
        response is penalised, above ``band_high`` paid at ``over_performance_factor``.
    over_performance_factor : float or None
        Share of the price paid for response above the band.
    penalty_factor : float or None
        Penalty per unit of shortfall below the band, as a multiple of the price.
    min_duration_h : float or None
        Shortest event the rule pays.
    t0_s, rate_pct_per_min, error_band_pct : float or None
        AGC standards: response time T0, ramp rate in % of the offered power per minute,
        error band E0 in % of the offered power (also A.4's δ).
    k_form : str or None
        ``weighted`` or ``product`` (:data:`K_FORMS`).
    k_weights : tuple of float
        Weights of K1 (rate), K2 (response time), K3 (accuracy) for ``weighted``.
    k1_max, k_max : float or None
        Caps of K1 and of K.
    source, status : str
        Where the figures come from and their status mark (✔, ◐, ✘).
    """

    key: str
    products: tuple[str, ...]
    payment_basis: str
    price: float | None = None
    price_min: float | None = None
    price_max: float | None = None
    baseline: str = "uncontrolled"
    band_low: float | None = None
    band_high: float | None = None
    over_performance_factor: float | None = None
    penalty_factor: float | None = None
    min_duration_h: float | None = None
    t0_s: float | None = None
    rate_pct_per_min: float | None = None
    error_band_pct: float | None = None
    k_form: str | None = None
    k_weights: tuple[float, ...] = field(default_factory=tuple)
    k1_max: float | None = None
    k_max: float | None = None
    source: str = ""
    status: str = ""

    def with_overrides(self, values: dict[str, Any]) -> "ServiceRule":
        """A copy with the given fields replaced (names checked by the caller)."""
        return replace(self, **values)


RULE_FIELDS = tuple(f.name for f in fields(ServiceRule) if f.name not in ("key", "products", "source", "status"))
"""Fields a request may override in its ``[rule]`` table."""

PRESETS: dict[str, ServiceRule] = {r.key: r for r in (
    ServiceRule("js_dr_2018_peak", ("demand_response", "peak_regulation"), "capacity_event", price=15.0,
                baseline="t0_minus_15min", min_duration_h=2.0,
                source="Jiangsu DR rules 2015, rev. 2018 (WRI 2020): real-time DR > 2 h, 15 CNY/kW; "
                       "baseline load 15 min before control; the 80–120 % band is not verified (none set)",
                status="✔ (band ✘)"),
    ServiceRule("js_dr_2018_fill", ("valley_filling",), "capacity_event", price=5.0, baseline="workdays_5",
                source="Jiangsu DR rules rev. 2018: agreed valley filling 5 CNY/kW (valley), 8 CNY/kW (flat); "
                       "baseline: 5 most recent normal working days", status="✔"),
    ServiceRule("js_alr_as_2023", ("peak_regulation",), "energy", price=None, price_max=3.0,
                penalty_factor=0.1, baseline="workdays_5",
                source="Jiangsu adjustable-load ancillary market, NEA Jiangsu notice 2023-07-10: peak-shaving "
                       "cap 3 000 CNY/MWh, penalty coefficient 0.1; the price is the clearing price",
                status="✔"),
    ServiceRule("zj_dr_energy", ("demand_response",), "energy", price=2.96, baseline="workdays_5",
                source="Zhejiang Pinghu Aug 2024: 2.04 M CNY for 690 000 kWh (implied 2.96 CNY/kWh); "
                       "Quzhou tops up to 4 CNY/kWh", status="✔ (implied)"),
    ServiceRule("sc_dr_market", ("demand_response",), "energy", price=None, band_low=0.9, band_high=1.1,
                over_performance_factor=0.5, penalty_factor=1.1, baseline="workdays_5",
                source="Sichuan market DR method (public transcription): E_eff = min(E, 1.1 E_bid) + "
                       "0.5 max(0, E − 1.1 E_bid); penalty max(0, 0.9 E_bid − E_eff) × 1.1 p",
                status="◐"),
    ServiceRule("hn_fr_2025", ("frequency_secondary",), "mileage", price=None, price_min=4.0, price_max=15.0,
                baseline="none", t0_s=5.0, rate_pct_per_min=100.0, error_band_pct=2.0, k_form="weighted",
                k_weights=(0.4, 0.3, 0.3), k1_max=3.0, k_max=2.0,
                source="Hunan 2025 AGC rules: R = M Σ D B K, K = 0.4 K1 + 0.3 K2 + 0.3 K3 (rate, response "
                       "time, accuracy); storage-class T0 5 s, 100 %/min, E0 2 %; B in [4, 15] CNY/MW; K ≤ 2",
                status="✔"),
    ServiceRule("sx_fr_draft", ("frequency_secondary",), "mileage", price=None, price_min=0.0, price_max=15.0,
                baseline="none", t0_s=5.0, rate_pct_per_min=100.0, error_band_pct=2.0, k_form="weighted",
                k_weights=(0.6, 0.2, 0.2), k_max=2.0,
                source="Shaanxi draft AGC rules: k = 0.2 (3 k1 + k2 + k3), B in [0, 15] CNY/MW, k ≤ 2; "
                       "T0/rate/E0 taken from the Hunan storage standard (not in the draft)", status="✔ / ◐"),
    ServiceRule("js_fr", ("frequency_secondary",), "mileage", price=None, baseline="none", t0_s=5.0,
                rate_pct_per_min=100.0, error_band_pct=2.0, k_form="product",
                source="Jiangsu AGC market: K = K1 K2, no accuracy term (openvpp column); storage thresholds "
                       "≥ 10 MW / 2 h", status="◐"),
    ServiceRule("js_primary_droop", ("frequency_primary",), "capacity_time", price=None, baseline="none",
                t0_s=5.0, error_band_pct=2.0,
                source="No EV primary-response market rule found: capacity × time at a contract price, "
                       "evaluated by A.4 with E0 = 2 % (the Hunan storage band)", status="✘ (price)"),
    ServiceRule("avc_contract", ("voltage_support",), "contract", price=None, baseline="uncontrolled",
                source="No market rule for distribution-level reactive support found: a contract price per "
                       "kvarh, evaluated by A.3 I_V", status="✘"),
    ServiceRule("smoothing_kpi", ("renewable_smoothing",), "energy", price=0.0, baseline="none",
                source="Smoothing is mostly an internal KPI (ramping products exist in two provinces only): "
                       "no payment unless the request sets a price", status="✔ (as KPI)"),
)}


def preset(key: str) -> ServiceRule:
    """The preset ``key``; a clear error listing the presets otherwise."""
    try:
        return PRESETS[key]
    except KeyError:
        raise DataError(f"unknown service rule {key!r}; presets: {', '.join(sorted(PRESETS))}") from None
