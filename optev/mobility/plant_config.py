"""Behaviour parameters of the charging simulation (:class:`PlantConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from optev.errors import DataError



@dataclass(frozen=True)
class PlantConfig:
    """Behaviour parameters of the simulation (units in the names; documented defaults).

    Attributes
    ----------
    horizon_s : float
        End of the simulated day, s after the instance start (sessions still open then
        are reported as ``censored``). It is also the expected departure of a car parked at
        its last stop of the day (no next trip), which the plant reports to a controller.
    fcs_soc_target : float
        SOC at which a car leaves a fast station (raised when the rest of the trip needs
        more). 0.8: fast charging usually stops at 80 %, where DC power tapers off.
    slow_soc_target : float
        SOC to which a car charges at a slow station or private charger, 1.0.
    slow_willing_soc_low, slow_willing_soc_high : float
        SOC-dependent willingness to plug in at a public SCS: always at or below ``low``,
        never at or above ``high``, linear in between (0.3 / 0.8).
    min_park_s : float
        Shortest stop for which a driver considers a public SCS, 1800 s (30 min).
    private_min_park_s : float
        Shortest stop for which a driver plugs in at their own charger, 0 s (always).
    scs_max_walk_m : float
        Largest straight-line distance from a destination node to an SCS serving it, 500 m.
    fcs_candidates : int
        Fast stations routed and scored per decision (smallest straight-line detour), 8.
    fcs_service_s : float
        Typical service time of an FCS charger for the expected wait, 1800 s.
    value_of_time_per_h : float
        Value of a driver's time in the FCS score, currency/h. 30: an assumption of about
        half an urban hourly wage in a large Chinese city (order 50–60 CNY/h), following the
        common practice of valuing personal travel time at 30–50 % of the wage.
    charge_at_start : bool
        Whether the EV may plug in where it is parked at the start of the day, before its
        first trip (False: ``soc_init`` is taken as the SOC at the first departure, and
        charging starts with the first arrival; True plugs a whole fleet in at time 0,
        which makes a spike that a day starting at midnight does not have in reality).
    seed : int
        Seed of the willingness draws; the same seed gives the same day.
    """

    horizon_s: float = 86400.0
    fcs_soc_target: float = 0.8
    slow_soc_target: float = 1.0
    slow_willing_soc_low: float = 0.3
    slow_willing_soc_high: float = 0.8
    min_park_s: float = 1800.0
    private_min_park_s: float = 0.0
    scs_max_walk_m: float = 500.0
    fcs_candidates: int = 8
    fcs_service_s: float = 1800.0
    value_of_time_per_h: float = 30.0
    charge_at_start: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("fcs_soc_target", "slow_soc_target", "slow_willing_soc_low", "slow_willing_soc_high"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise DataError(f"PlantConfig.{name} must be in [0, 1], got {v}")
        for name in ("horizon_s", "min_park_s", "private_min_park_s", "scs_max_walk_m", "fcs_service_s",
                     "value_of_time_per_h"):
            v = getattr(self, name)
            if not v >= 0.0:
                raise DataError(f"PlantConfig.{name} must be at least 0, got {v}")
        if self.fcs_candidates < 1:
            raise DataError(f"PlantConfig.fcs_candidates must be at least 1, got {self.fcs_candidates}")
