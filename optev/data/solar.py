r"""Clear-sky PV availability: a deterministic profile where no measured one is given.

:func:`clear_sky_pv` gives the available power of a PV plant in p.u. of its rating for each
time step (the middle of the step), from the sun's position and a clear-sky irradiance
model:

* solar declination (Cooper 1969) :math:`\delta = 23.45° \sin(360° (284 + n)/365)`, day of
  year :math:`n`;
* equation of time (Spencer-type approximation, minutes)
  :math:`E = 9.87 \sin 2B - 7.53 \cos B - 1.5 \sin B`, :math:`B = 360° (n - 81)/364`;
* solar time :math:`t_s = t + (4(\lambda - \lambda_{std}) + E)/60` h, with the longitude
  :math:`\lambda` and the standard meridian of the time zone :math:`\lambda_{std} = 15°
  \times` (UTC offset in h); hour angle :math:`\omega = 15° (t_s - 12)`;
* cosine of the zenith angle
  :math:`\cos\theta_z = \sin\varphi \sin\delta + \cos\varphi \cos\delta \cos\omega`;
* global horizontal irradiance, Haurwitz clear-sky model (W/m²)
  :math:`G = 1098 \cos\theta_z\, e^{-0.057/\cos\theta_z}` for :math:`\cos\theta_z > 0`;
* availability :math:`a = \min(1, PR \cdot G / 1000)` with the performance ratio
  :math:`PR` (default 0.8; horizontal modules, no temperature model).

Sources: P. I. Cooper, "The absorption of radiation in solar stills", Solar Energy
12(3):333–346, 1969; B. Haurwitz, "Insolation in relation to cloudiness and cloud
density", J. Meteorology 2:154–166, 1945; J. A. Duffie and W. A. Beckman, *Solar
Engineering of Thermal Processes*, 4th ed., Wiley 2013, ch. 1–2. A clear-sky profile is an
upper bound of what a real day gives; it is an assumption wherever it is used.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optev.errors import DataError

PERFORMANCE_RATIO = 0.8
"""Default ratio of AC output to the rated power at 1000 W/m² (losses, soiling, inverter)."""


def _utc_offset_h(t: pd.Timestamp) -> float:
    """UTC offset of an aware timestamp, hours."""
    offset = t.utcoffset()
    if offset is None:  # clear_sky_pv checks that the times are timezone-aware
        raise DataError("clear_sky_pv needs timezone-aware times")
    return offset.total_seconds() / 3600.0


def clear_sky_pv(times: pd.DatetimeIndex, latitude_deg: float, longitude_deg: float, *,
                 step: pd.Timedelta | None = None, performance_ratio: float = PERFORMANCE_RATIO) -> np.ndarray:
    """Clear-sky PV availability (p.u. of the rating) at the middle of each step (module docstring).

    Parameters
    ----------
    times : DatetimeIndex
        Timezone-aware step starts.
    latitude_deg, longitude_deg : float
        Site, degrees (north and east positive).
    step : Timedelta, optional
        Step length (default: the spacing of ``times``; 0 for a single time).
    performance_ratio : float
        In (0, 1].
    """
    if times.tz is None:
        raise DataError("clear_sky_pv needs timezone-aware times")
    if not (-90.0 <= latitude_deg <= 90.0 and -180.0 <= longitude_deg <= 180.0):
        raise DataError(f"clear_sky_pv: latitude/longitude out of range: {latitude_deg}, {longitude_deg}")
    if not 0.0 < performance_ratio <= 1.0:
        raise DataError(f"clear_sky_pv: performance_ratio must be in (0, 1], got {performance_ratio}")
    if step is None:
        step = times[1] - times[0] if len(times) > 1 else pd.Timedelta(0)
    mid = times + step / 2
    n = mid.day_of_year.to_numpy(float)
    offset_h = np.array([_utc_offset_h(t) for t in mid]) if len(mid) else np.zeros(0)
    decl = np.deg2rad(23.45) * np.sin(np.deg2rad(360.0 * (284.0 + n) / 365.0))
    b = np.deg2rad(360.0 * (n - 81.0) / 364.0)
    eot_min = 9.87 * np.sin(2 * b) - 7.53 * np.cos(b) - 1.5 * np.sin(b)
    clock_h = mid.hour.to_numpy(float) + mid.minute.to_numpy(float) / 60.0 + mid.second.to_numpy(float) / 3600.0
    solar_h = clock_h + (4.0 * (longitude_deg - 15.0 * offset_h) + eot_min) / 60.0
    omega = np.deg2rad(15.0 * (solar_h - 12.0))
    lat = np.deg2rad(latitude_deg)
    cosz = np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(omega)
    ghi = np.where(cosz > 0.0, 1098.0 * cosz * np.exp(-0.057 / np.maximum(cosz, 1e-9)), 0.0)
    return np.clip(performance_ratio * ghi / 1000.0, 0.0, 1.0)
