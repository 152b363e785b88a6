"""An uncontrolled day of the charging simulation: the plant advanced with no setpoints.

:func:`simulate_day` builds a :class:`~optev.mobility.plant.Plant` and advances it through
the day in intervals of ``step_s`` without setpoints, so every EV charges at full power
(the baseline of R5.1.4's station rules); there is one simulation core
(:mod:`optev.mobility.core`), used alike by the controller and by this function.

Outputs (:class:`SimulationResult`): the session table, the EVs' energy accounts,
per-station time series at ``resolution_s``, and, on request, 5-s telemetry per charger
streamed to a Parquet file while the day runs (:mod:`optev.mobility.telemetry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from optev.data.instance import Instance
from optev.mobility.core import PlantConfig
from optev.mobility.plant import MAX_INTERVAL_S, Plant
from optev.mobility.series import StationSeries
from optev.mobility.travel import RouterLike
from optev.options import output_file_option


@dataclass
class SimulationResult:
    """What an uncontrolled day produced.

    Attributes
    ----------
    sessions : DataFrame
        One row per charging session, rejections and open sessions included
        (:data:`optev.mobility.plant.SESSION_COLUMNS`).
    evs : DataFrame
        Energy account per EV (:meth:`optev.mobility.plant.Plant.ev_summary`).
    series : StationSeries
        Occupancy, queue and load per station at the chosen resolution.
    station_bus : dict of str to str
        Feeder bus of every station (to aggregate loads per bus or feeder).
    telemetry_path : Path or None
        The 5-s telemetry file, when requested.
    config : PlantConfig
    """

    sessions: pd.DataFrame
    evs: pd.DataFrame
    series: StationSeries
    station_bus: dict[str, str] = field(default_factory=dict)
    telemetry_path: Path | None = None
    config: PlantConfig = field(default_factory=PlantConfig)

    @property
    def plugged_sessions(self) -> pd.DataFrame:
        """Sessions that plugged in, in the :data:`optev.data.SESSIONS` columns (for the optimiser)."""
        s = self.sessions
        keep = ~s["rejected"].to_numpy(bool) & s["plug_in"].notna().to_numpy()
        return s.loc[keep].reset_index(drop=True)

    def bus_load_kw(self) -> pd.DataFrame:
        """Mean EV charging load per feeder bus and bin, kW (index ``t_s``, one column per bus)."""
        buses = pd.Series(self.station_bus).reindex(self.series.station_id.astype(str))
        codes, uniq = pd.factorize(buses.to_numpy(object))
        agg = np.zeros((self.series.t_s.size, uniq.size))
        for k in range(uniq.size):
            agg[:, k] = self.series.load_kw[:, codes == k].sum(axis=1)
        return pd.DataFrame(agg, index=pd.Index(self.series.t_s, name="t_s"), columns=list(uniq))

    def summary(self) -> dict[str, Any]:
        """Headline figures: sessions, energy, rejections, FCS waits, stranded EVs, peak load."""
        s = self.sessions
        fcs = s[(s["station_kind"] == "fcs") & s["plug_in"].notna()]
        total = self.series.load_kw.sum(axis=1)
        waits = fcs["wait_min"].to_numpy(float)
        return {
            "evs": int(len(self.evs)),
            "sessions": int((~s["rejected"] & s["plug_in"].notna()).sum()),
            "sessions_fcs": int(len(fcs)),
            "rejections": int(s["rejected"].sum()),
            "grid_import_kwh": float(s["grid_import_kwh"].sum()),
            "driving_kwh": float(self.evs["driving_kwh"].sum()),
            "stranded": int(self.evs["stranded"].sum()),
            "fcs_wait_mean_min": float(waits.mean()) if waits.size else 0.0,
            "fcs_wait_p95_min": float(np.percentile(waits, 95)) if waits.size else 0.0,
            "peak_load_kw": float(total.max()) if total.size else 0.0,
            "peak_load_t_s": float(self.series.t_s[int(np.argmax(total))]) if total.size else 0.0,
        }

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``sessions.parquet``, ``ev_summary.parquet`` and ``station_series.parquet``.

        The same result always gives byte-identical files (no timestamps are written).
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"sessions": out / "sessions.parquet", "evs": out / "ev_summary.parquet",
                 "series": out / "station_series.parquet"}
        for key, df in (("sessions", self.sessions), ("evs", self.evs), ("series", self.series.to_frame())):
            table = pa.Table.from_pandas(df, preserve_index=False)
            pq.write_table(table, paths[key], compression="zstd")
        return paths


def simulate_day(instance: Instance, *, config: PlantConfig | None = None, router: RouterLike | None = None,
                 step_s: float = MAX_INTERVAL_S, resolution_s: float | None = None, telemetry: str | Path | None = None,
                 telemetry_stations: list[str] | None = None) -> SimulationResult:
    """Simulate one uncontrolled day (no setpoints: every EV charges at full power).

    Parameters
    ----------
    instance : Instance
        Stations, charger models, tariffs, vehicle types, EVs and trips (routed or not;
        unrouted trips are measured with ``router``).
    config : PlantConfig, optional
        Behaviour parameters; ``config.horizon_s`` is the length of the day and
        ``config.seed`` the seed of the drivers' random choices.
    router : router, optional
        Travel distances/times (protocol in :mod:`optev.mobility.travel`); default:
        straight line × 1.3 at 30 km/h.
    step_s : float
        Plant interval, s (60–900); without setpoints it changes nothing but the
        granularity of the telemetry writes.
    resolution_s : float, optional
        Bin length of the per-station time series, s; default the instance's control step
        (``metadata.step_minutes``). The series hold ``bins × stations`` values per
        quantity: 1-min bins for 30,000 stations are 43 million values each (~1 GB for the
        three), 15-min bins 3 million.
    telemetry : str or Path, optional
        Write 5-s per-charger telemetry (R6.1.4) to this Parquet file.
    telemetry_stations : list of str, optional
        Restrict the telemetry to these stations.
    """
    if telemetry is not None:  # a folder or an unwritable file fails now, not after the day
        telemetry = output_file_option(telemetry, "telemetry", ".parquet")
    cfg = config or PlantConfig()
    plant = Plant(instance, cfg, router=router, telemetry=telemetry, telemetry_stations=telemetry_stations)
    try:
        while plant.time_s < cfg.horizon_s - 1e-9:
            plant.advance(min(step_s, max(cfg.horizon_s - plant.time_s, 60.0)), report=False)
    finally:
        plant.close()
    res_s = float(resolution_s) if resolution_s is not None else float(instance.metadata.step_minutes) * 60.0
    series = plant.station_series(res_s, t_end_s=plant.time_s)
    bus = dict(zip(instance.stations["station_id"].astype(str), instance.stations["bus_id"].astype(str)))
    return SimulationResult(sessions=plant.sessions(), evs=plant.ev_summary(), series=series, station_bus=bus,
                            telemetry_path=Path(telemetry) if telemetry is not None else None, config=cfg)
