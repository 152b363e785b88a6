"""Default vehicle types and user-preference samplers (R5.1.2, R6.1.1, R6.2.3.1).

Vehicle types
-------------
:func:`default_vehicle_types` returns the ``vehicle_types`` table
(:data:`optev.data.VEHICLE_TYPES`) of the three classes of R6.1.1 with every parameter of
R5.1.2, plus two extra columns: ``weight`` (relative sampling weight of the type within
its class) and ``source`` (short key of the sources below). Every default value and its
source:

==================  =======  ======  ======  ======  ====  ======  ======  =====  =====  ======
vtype_id            battery  DC      AC      V2G     eff   kWh/km  accel   top    length weight
                    kWh      kW      kW      kW      ch/dis        m/s²    km/h   m
==================  =======  ======  ======  ======  ====  ======  ======  =====  =====  ======
car_v2sim_1         100      200     5.98    20      0.90  0.1587  2.6     160    5.0    1
car_v2sim_2         55.9     60      7       20      0.90  0.1511  2.6     160    5.0    1
car_v2sim_3         84       70      7       20      0.90  0.2100  2.6     160    5.0    1
car_v2sim_4         76.8     100     7       20      0.90  0.1707  2.6     160    5.0    1
car_v2sim_5         90.3     60      7       20      0.90  0.1806  2.6     160    5.0    1
car_v2sim_6         100      100     7       20      0.90  0.1961  2.6     160    5.0    1
bus_12m             324      150     80      80      0.90  1.30    1.2     70     12.0   1
van_light           68       115     11.3    11.3    0.90  0.335   2.6     100    6.5    1
==================  =======  ======  ======  ======  ====  ======  ======  =====  =====  ======

Sources (key → what it gives):

``V2SIM``
    V2Sim ``probtable/vtypes.xml`` (T. Qian et al., IEEE Trans. Smart Grid
    16(4):3167–3178, 2025; BSD-3-Clause; copied to ``instances/data/v2sim_probtable``):
    the six passenger-car models with usable battery ``cap``, fast (``pcf`` → DC) and slow
    (``pcs`` → AC) charging power, V2G power ``pdv`` and equal sampling weights; energy
    per km = ``cap / range`` exactly as V2Sim computes its consumption (rated ranges,
    hence optimistic for city driving). Charging and discharging efficiency 0.9: V2Sim's
    vehicle default (``eta_c = eta_d = 0.9``), used for all classes for consistency.
``SUMO``
    Eclipse SUMO, "Vehicle Type Parameter Defaults"
    (sumo.dlr.de/docs/Vehicle_Type_Parameter_Defaults.html): body length and maximum
    acceleration of the vClasses ``passenger`` (5.0 m, 2.6 m/s²), ``bus`` (12 m,
    1.2 m/s²) and ``delivery`` (6.5 m, 2.6 m/s²).
``BYD-K9``
    BYD K9 12 m battery-electric city bus, manufacturer data sheet: 324 kWh LiFePO4
    battery, about 250 km urban range (→ 324/250 ≈ 1.30 kWh/km, within the
    1–1.5 kWh/km reported for 12 m e-buses in service), AC charging 2 × 40 kW = 80 kW,
    top speed 70 km/h, length 12 m.
``FORD-ETRANSIT``
    Ford E-Transit (model year 2022) specifications: 68 kWh usable battery, DC charging
    up to 115 kW, 11.3 kW on-board AC charger, EPA range 126 mi = 203 km for the
    low-roof cargo van (→ 68/203 ≈ 0.335 kWh/km).
``ASSUMPTION``
    Values without a published source, chosen as round typical figures and listed here
    so they can be changed deliberately:

    * car top speed 160 km/h (Chinese-market EVs are limited to about 150–200 km/h);
    * bus DC charging 150 kW (a common GB/T 20234.3 depot-charger rating for 12 m
      buses; the original K9 charges AC only) and bus V2G 80 kW (= its AC rating,
      bidirectional on-board converter assumed);
    * van V2G 11.3 kW (= its AC rating) and van top speed 100 km/h (urban delivery).

Each row's ``source`` column lists the keys it draws on.

User preferences (R5.1.2, R6.2.3.1)
-----------------------------------
Every sampler takes a ``seed`` (an int or a :class:`numpy.random.Generator`); the same
seed gives the same values. Defaults per vehicle class are in :data:`DEFAULT_PREFERENCES`.

``price_weight`` — distance vs price trade-off (0..1)
    Weight of price against distance when a driver ranks stations (0: nearest station,
    1: cheapest). Drawn from Beta(a, b): Beta(2, 2) for private cars (mean 0.5, the
    schema default, symmetric, few extreme users); Beta(4, 2) for bus and logistics fleets
    (mean 2/3: fleet operators weigh energy cost more). Assumption (no published
    distribution on this scale).
``soc_charge_threshold`` — SOC-dependent willingness to charge
    The share of users willing to look for a fast charger at state of charge ``s`` is a
    logistic curve falling with SOC,

    .. math::  w(s) = \\frac{1}{1 + e^{(s - s_{50}) / \\sigma}},

    (:func:`willingness_to_charge`): at ``s = s50`` half of the users want to charge.
    Each user charges once the SOC falls below a personal threshold θ, so
    ``w(s) = P(θ > s)`` and θ follows a logistic distribution with location ``s50`` and
    scale σ, truncated to ``[lo, hi]`` (sampled exactly by inverse CDF). Cars:
    ``s50 = 0.225``, the centre of V2Sim's fast-charge threshold U(0.20, 0.25)
    (V2Sim ``kfc``), σ = 0.03, θ in [0.10, 0.50]; buses and logistics vehicles:
    ``s50 = 0.30`` (fleets keep a larger reserve; assumption), same σ and bounds.
``v2g_opt_in`` and ``v2g_reservation_price_per_kwh`` (R6.2.3.1)
    Exactly ``round(v2g_share × n)`` of the V2G-capable vehicles (``p_dis_max_kw > 0``)
    opt in, chosen at random; vehicles that cannot discharge never opt in. An opted-in
    user's reservation price (lowest discharge price accepted, currency/kWh) is
    log-normal with median 0.8 and log-standard deviation 0.3 (5–95 %: 0.49–1.31), i.e.
    around the 0.35–1.1 /kWh time-of-use grid prices of the V2Sim cases plus a
    battery-wear premium (assumption). Users who do not opt in get 0 (unused).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from optev.data.vehicles import VEHICLE_CLASSES, VEHICLE_TYPES
from optev.errors import DataError

Seed = int | np.random.Generator
"""A seed: an integer (a new :func:`numpy.random.default_rng` is made from it) or a generator."""


def as_rng(seed: Seed) -> np.random.Generator:
    """A generator from a seed (an int) or the generator itself.

    Raises
    ------
    DataError
        If ``seed`` is neither (``None`` is refused: every random draw must be seeded).
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0:
        return np.random.default_rng(int(seed))
    raise DataError(f"seed must be a non-negative integer or a numpy Generator, got {seed!r}")


_V2SIM_CARS = (  # (battery kWh, rated range km, DC kW, AC kW, V2G kW) from V2Sim vtypes.xml
    (100.0, 630.0, 200.0, 5.98, 20.0),
    (55.9, 370.0, 60.0, 7.0, 20.0),
    (84.0, 400.0, 70.0, 7.0, 20.0),
    (76.8, 450.0, 100.0, 7.0, 20.0),
    (90.3, 500.0, 60.0, 7.0, 20.0),
    (100.0, 510.0, 100.0, 7.0, 20.0),
)

V2SIM_EFFICIENCY = 0.9
"""V2Sim's default charging and discharging efficiency (``eta_c``, ``eta_d``)."""


def default_vehicle_types() -> pd.DataFrame:
    """The default ``vehicle_types`` table (see the module docstring for every source).

    Returns
    -------
    DataFrame
        Conformed to :data:`optev.data.VEHICLE_TYPES`, with extra columns ``weight``
        (sampling weight within the class) and ``source``.
    """
    rows = []
    for k, (cap, rng_km, dc, ac, v2g) in enumerate(_V2SIM_CARS, start=1):
        rows.append({"vtype_id": f"car_v2sim_{k}", "vehicle_class": "car", "battery_kwh": cap,
                     "p_ch_max_kw": dc, "p_ch_ac_max_kw": ac, "p_dis_max_kw": v2g,
                     "eff_ch": V2SIM_EFFICIENCY, "eff_dis": V2SIM_EFFICIENCY, "kwh_per_km": cap / rng_km,
                     "max_accel_m_s2": 2.6, "top_speed_kmh": 160.0, "length_m": 5.0, "weight": 1.0,
                     "source": "V2SIM; SUMO (accel, length); ASSUMPTION (top speed)"})
    rows.append({"vtype_id": "bus_12m", "vehicle_class": "bus", "battery_kwh": 324.0,
                 "p_ch_max_kw": 150.0, "p_ch_ac_max_kw": 80.0, "p_dis_max_kw": 80.0,
                 "eff_ch": V2SIM_EFFICIENCY, "eff_dis": V2SIM_EFFICIENCY, "kwh_per_km": 1.30,
                 "max_accel_m_s2": 1.2, "top_speed_kmh": 70.0, "length_m": 12.0, "weight": 1.0,
                 "source": "BYD-K9; SUMO (accel); V2SIM (efficiency); ASSUMPTION (DC, V2G power)"})
    rows.append({"vtype_id": "van_light", "vehicle_class": "logistics", "battery_kwh": 68.0,
                 "p_ch_max_kw": 115.0, "p_ch_ac_max_kw": 11.3, "p_dis_max_kw": 11.3,
                 "eff_ch": V2SIM_EFFICIENCY, "eff_dis": V2SIM_EFFICIENCY, "kwh_per_km": 68.0 / 203.0,
                 "max_accel_m_s2": 2.6, "top_speed_kmh": 100.0, "length_m": 6.5, "weight": 1.0,
                 "source": "FORD-ETRANSIT; SUMO (accel, length); V2SIM (efficiency); "
                           "ASSUMPTION (V2G power, top speed)"})
    return VEHICLE_TYPES.conform(pd.DataFrame(rows))


def sample_vehicle_types(vehicle_class: np.ndarray, vehicle_types: pd.DataFrame, seed: Seed) -> np.ndarray:
    """Draw a vehicle type for each vehicle from the types of its class.

    Parameters
    ----------
    vehicle_class : ndarray of str
        Class of each vehicle (``car``, ``bus``, ``logistics``).
    vehicle_types : DataFrame
        ``vehicle_types`` table; an optional ``weight`` column (default 1) gives each
        type's relative probability within its class.
    seed : int or Generator

    Returns
    -------
    ndarray of str (object)
        ``vtype_id`` per vehicle.

    Raises
    ------
    DataError
        If a class needed has no vehicle type, or weights are negative or all zero.
    """
    rng = as_rng(seed)
    vc = np.asarray(vehicle_class, dtype=object)
    bad = [c for c in pd.unique(vc) if c not in VEHICLE_CLASSES]
    if bad:
        raise DataError(f"unknown vehicle class {bad[0]!r}; expected one of {list(VEHICLE_CLASSES)}")
    out = np.empty(len(vc), dtype=object)
    weights = (vehicle_types["weight"].to_numpy(dtype=float) if "weight" in vehicle_types
               else np.ones(len(vehicle_types)))
    for cls in VEHICLE_CLASSES:
        sel = np.flatnonzero(vc == cls)
        if len(sel) == 0:
            continue
        rows = np.flatnonzero(vehicle_types["vehicle_class"].to_numpy(dtype=object) == cls)
        if len(rows) == 0:
            raise DataError(f"no vehicle type of class {cls!r} for {len(sel)} vehicle(s)",
                            table="vehicle_types", column="vehicle_class")
        w = weights[rows]
        if (w < 0).any() or not w.sum() > 0:
            raise DataError(f"weights of the {cls!r} vehicle types must be >= 0 and not all 0",
                            table="vehicle_types", column="weight")
        pick = rng.choice(len(rows), size=len(sel), p=w / w.sum())
        out[sel] = vehicle_types["vtype_id"].to_numpy(dtype=object)[rows[pick]]
    return out


# ---------------------------------------------------------------------------------------
# User preferences
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreferenceModel:
    """Distributions of the user preferences of one vehicle class (see module docstring).

    Attributes
    ----------
    price_weight_a, price_weight_b : float
        Beta(a, b) parameters of ``price_weight``.
    threshold_mid : float
        ``s50``: SOC at which half of the users are willing to seek a fast charger.
    threshold_scale : float
        σ of the logistic willingness curve (SOC units).
    threshold_lo, threshold_hi : float
        Truncation bounds of the personal threshold θ.
    reservation_median : float
        Median V2G reservation price, currency/kWh.
    reservation_sigma : float
        Log-standard deviation of the reservation price.
    """

    price_weight_a: float = 2.0
    price_weight_b: float = 2.0
    threshold_mid: float = 0.225
    threshold_scale: float = 0.03
    threshold_lo: float = 0.10
    threshold_hi: float = 0.50
    reservation_median: float = 0.8
    reservation_sigma: float = 0.3

    def __post_init__(self) -> None:
        if not (self.price_weight_a > 0 and self.price_weight_b > 0):
            raise DataError("price_weight Beta parameters must be positive")
        if not self.threshold_scale > 0:
            raise DataError("threshold_scale must be positive")
        if not 0.0 <= self.threshold_lo < self.threshold_hi <= 1.0:
            raise DataError(f"threshold bounds must satisfy 0 <= lo < hi <= 1, got "
                            f"[{self.threshold_lo}, {self.threshold_hi}]")
        if not (self.reservation_median > 0 and self.reservation_sigma >= 0):
            raise DataError("reservation_median must be positive and reservation_sigma >= 0")


DEFAULT_PREFERENCES: dict[str, PreferenceModel] = {
    "car": PreferenceModel(),
    "bus": PreferenceModel(price_weight_a=4.0, price_weight_b=2.0, threshold_mid=0.30),
    "logistics": PreferenceModel(price_weight_a=4.0, price_weight_b=2.0, threshold_mid=0.30),
}
"""Default preference distributions per vehicle class (module docstring gives the reasons)."""


def willingness_to_charge(soc: np.ndarray | float, mid: float, scale: float) -> np.ndarray:
    """Share of users willing to seek a fast charger at state of charge ``soc``.

    :math:`w(s) = 1 / (1 + e^{(s - s_{50})/σ})` (untruncated logistic; decreasing in SOC).
    """
    return 1.0 / (1.0 + np.exp((np.asarray(soc, dtype=float) - mid) / scale))


def _logistic_cdf(x: float, mid: float, scale: float) -> float:
    return float(1.0 / (1.0 + np.exp(-(x - mid) / scale)))


def sample_soc_charge_threshold(n: int, seed: Seed, model: PreferenceModel = PreferenceModel()
                                ) -> np.ndarray:
    """Personal SOC thresholds θ: logistic(s50, σ) truncated to [lo, hi], by inverse CDF.

    With this distribution the share of users with θ > s is the willingness curve
    :func:`willingness_to_charge` renormalised to the truncation interval.
    """
    rng = as_rng(seed)
    f_lo = _logistic_cdf(model.threshold_lo, model.threshold_mid, model.threshold_scale)
    f_hi = _logistic_cdf(model.threshold_hi, model.threshold_mid, model.threshold_scale)
    u = f_lo + (f_hi - f_lo) * rng.random(n)
    theta = model.threshold_mid + model.threshold_scale * np.log(u / (1.0 - u))
    return np.clip(theta, model.threshold_lo, model.threshold_hi)


def sample_price_weight(n: int, seed: Seed, model: PreferenceModel = PreferenceModel()) -> np.ndarray:
    """``price_weight`` in [0, 1] from Beta(a, b)."""
    return as_rng(seed).beta(model.price_weight_a, model.price_weight_b, size=n)


def sample_v2g(capable: np.ndarray, share: float, seed: Seed,
               median: np.ndarray | float = 0.8, sigma: np.ndarray | float = 0.3
               ) -> tuple[np.ndarray, np.ndarray]:
    """V2G opt-in and reservation price (R6.2.3.1).

    Parameters
    ----------
    capable : ndarray of bool
        Whether each vehicle can discharge (``p_dis_max_kw > 0``).
    share : float
        Share of the capable vehicles that opt in (exactly ``round(share × n_capable)``).
    seed : int or Generator
    median, sigma : float or ndarray
        Log-normal median (currency/kWh) and log-standard deviation of the reservation
        price, scalars or one per vehicle.

    Returns
    -------
    opt_in : ndarray of bool
    reservation_price_per_kwh : ndarray of float
        0 where the vehicle does not opt in.
    """
    if not 0.0 <= share <= 1.0:
        raise DataError(f"v2g_share must be within [0, 1], got {share!r}")
    rng = as_rng(seed)
    capable = np.asarray(capable, dtype=bool)
    idx = np.flatnonzero(capable)
    k = int(round(share * len(idx)))
    opt_in = np.zeros(len(capable), dtype=bool)
    if k:
        opt_in[rng.choice(idx, size=k, replace=False)] = True
    med = np.broadcast_to(np.asarray(median, dtype=float), capable.shape)
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), capable.shape)
    z = rng.standard_normal(len(capable))
    price = np.where(opt_in, med * np.exp(sig * z), 0.0)
    return opt_in, price


def sample_preferences(vehicle_class: np.ndarray, v2g_capable: np.ndarray, seed: Seed, *,
                       v2g_share: float = 0.3,
                       models: dict[str, PreferenceModel] | None = None) -> pd.DataFrame:
    """User preferences of a fleet, one row per vehicle.

    Parameters
    ----------
    vehicle_class : ndarray of str
        Class of each vehicle.
    v2g_capable : ndarray of bool
        Whether each vehicle's type can discharge.
    seed : int or Generator
    v2g_share : float
        Share of V2G-capable vehicles whose users opt in.
    models : dict, optional
        :class:`PreferenceModel` per class; missing classes use :data:`DEFAULT_PREFERENCES`.

    Returns
    -------
    DataFrame
        Columns ``price_weight``, ``soc_charge_threshold``, ``v2g_opt_in``,
        ``v2g_reservation_price_per_kwh`` (the ``evs`` columns of R5.1.2 / R6.2.3.1).
    """
    rng = as_rng(seed)
    models = {**DEFAULT_PREFERENCES, **(models or {})}
    vc = np.asarray(vehicle_class, dtype=object)
    n = len(vc)
    price_weight = np.empty(n)
    threshold = np.empty(n)
    median = np.empty(n)
    sigma = np.empty(n)
    for cls in VEHICLE_CLASSES:
        sel = np.flatnonzero(vc == cls)
        m = models[cls]
        price_weight[sel] = sample_price_weight(len(sel), rng, m)
        threshold[sel] = sample_soc_charge_threshold(len(sel), rng, m)
        median[sel] = m.reservation_median
        sigma[sel] = m.reservation_sigma
    opt_in, price = sample_v2g(v2g_capable, v2g_share, rng, median, sigma)
    return pd.DataFrame({"price_weight": price_weight, "soc_charge_threshold": threshold,
                         "v2g_opt_in": opt_in, "v2g_reservation_price_per_kwh": price})
