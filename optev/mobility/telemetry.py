"""5-second charger telemetry (R6.1.4), streamed to Parquet.

Each charger reports every ``period_s`` seconds (5 s by default, R6.1.4: "≤ 5 s") one
row::

    charger_id   str (dictionary)  "<station_id>#<slot>", slot 0..n_chargers-1
    station_id   str (dictionary)  station of the charger
    time_s       float64  s        sample instant, seconds after the instance start
    power_kw     float64  kW       grid-side power at that instant (charge positive)
    energy_kwh   float64  kWh      meter register: net grid-side energy of the charger
                                   since the start of the simulation
    ev_id        str (dictionary)  EV plugged in at that instant; null when none

Samples are taken at every multiple of ``period_s`` and show the state *at* that instant
(a change at exactly a sample instant is included). Rows are ordered by time, then by
charger (station order, then slot).

The writer is fed by the plant after every interval with the chargers' power changes
of that interval and writes the interval's samples at once, in row groups of at most
``chunk_rows`` rows (:class:`pyarrow.parquet.ParquetWriter`): the telemetry of a day is
never held in memory, only one chunk of it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TELEMETRY_PERIOD_S = 5.0
"""R6.1.4: telemetry sampling period between chargers and platform, at most 5 s."""

TELEMETRY_SCHEMA = pa.schema([
    ("charger_id", pa.dictionary(pa.int32(), pa.string())),
    ("station_id", pa.dictionary(pa.int32(), pa.string())),
    ("time_s", pa.float64()),
    ("power_kw", pa.float64()),
    ("energy_kwh", pa.float64()),
    ("ev_id", pa.dictionary(pa.int32(), pa.string())),
])


class TelemetryWriter:
    """Writes per-charger samples to one Parquet file, interval by interval.

    Parameters
    ----------
    path : str or Path
        Output Parquet file (overwritten).
    charger_station : array of int (n_chargers,)
        Station index of each telemetry charger.
    charger_ids : array of str (n_chargers,)
    station_ids : array of str
        All station ids (``charger_station`` indexes into it).
    ev_ids : array of str
        All EV ids (the plant's EV index).
    period_s : float
        Sampling period, s (≤ 5 s for R6.1.4).
    chunk_rows : int
        Largest row group written at once.
    start_s : float
        Time of the first sample (the plant's start time).
    """

    def __init__(self, path: str | Path, charger_station: np.ndarray, charger_ids: np.ndarray,
                 station_ids: np.ndarray, ev_ids: np.ndarray, *, period_s: float = TELEMETRY_PERIOD_S,
                 chunk_rows: int = 1_000_000, start_s: float = 0.0) -> None:
        if not period_s > 0:
            raise ValueError(f"telemetry period must be positive, got {period_s}")
        self.path = Path(path)
        self.period_s = float(period_s)
        self.chunk_rows = int(chunk_rows)
        n = len(charger_ids)
        self.n = n
        self._charger_dict = pa.array(np.asarray(charger_ids, dtype=object).astype(str), pa.string())
        self._station_dict = pa.array(np.asarray(station_ids, dtype=object).astype(str), pa.string())
        self._ev_dict = pa.array(np.asarray(ev_ids, dtype=object).astype(str), pa.string())
        self._charger_station = np.asarray(charger_station, dtype=np.int32)
        self.p = np.zeros(n)
        self.ev = np.full(n, -1, dtype=np.int64)
        self.energy = np.zeros(n)
        self.next_sample = math.ceil(start_s / self.period_s - 1e-9) * self.period_s
        self.rows_written = 0
        self.row_groups = 0
        self._writer = pq.ParquetWriter(self.path, TELEMETRY_SCHEMA, compression="zstd")

    def write_interval(self, t0: float, t1: float, t: np.ndarray, charger: np.ndarray, p: np.ndarray,
                       ev: np.ndarray) -> None:
        """Write the samples in ``[t0, t1)`` given the power changes of that interval.

        Parameters
        ----------
        t0, t1 : float
            The interval; the writer's state is the chargers' state at ``t0``.
        t, charger, p, ev : arrays (m,)
            Changes in the interval: at time ``t`` charger ``charger`` (telemetry index)
            takes power ``p`` with EV ``ev`` (-1: none), in the order they happened.
        """
        n = self.n
        # segments: the state at t0 of every charger, then its changes
        seg_c = np.concatenate([np.arange(n, dtype=np.int64), np.asarray(charger, dtype=np.int64)])
        seg_t = np.concatenate([np.full(n, t0), np.asarray(t, dtype=float)])
        seg_p = np.concatenate([self.p, np.asarray(p, dtype=float)])
        seg_ev = np.concatenate([self.ev, np.asarray(ev, dtype=np.int64)])
        order = np.lexsort((seg_t, seg_c))  # stable: initial state first, then changes in order
        seg_c, seg_t, seg_p, seg_ev = seg_c[order], seg_t[order], seg_p[order], seg_ev[order]
        first = np.concatenate([[True], seg_c[1:] != seg_c[:-1]])
        inc = np.zeros(seg_t.size)
        same = ~first[1:]
        inc[1:] = np.where(same, seg_p[:-1] * (seg_t[1:] - seg_t[:-1]) / 3600.0, 0.0)
        starts = np.flatnonzero(first)
        group = np.cumsum(first) - 1
        cum = np.cumsum(inc)
        seg_e = self.energy[seg_c] + cum - cum[starts][group]
        span = (t1 - t0) + 1.0
        key = seg_c * span + (seg_t - t0)
        samples = np.arange(self.next_sample, t1 - 1e-9, self.period_s)
        if samples.size:
            per_chunk = max(1, self.chunk_rows // max(n, 1))
            for lo in range(0, samples.size, per_chunk):
                s_t = samples[lo:lo + per_chunk]
                q = np.arange(n)[None, :] * span + (s_t[:, None] - t0)
                pos = np.searchsorted(key, q.reshape(-1), side="right") - 1
                tt = np.repeat(s_t, n)
                power = seg_p[pos]
                energy = seg_e[pos] + power * (tt - seg_t[pos]) / 3600.0
                self._write(np.tile(np.arange(n, dtype=np.int32), s_t.size), tt, power, energy, seg_ev[pos])
            self.next_sample = float(samples[-1] + self.period_s)
        # state at t1
        last = np.concatenate([starts[1:], [seg_c.size]]) - 1
        self.p = seg_p[last].copy()
        self.ev = seg_ev[last].copy()
        self.energy = seg_e[last] + seg_p[last] * (t1 - seg_t[last]) / 3600.0

    def _write(self, charger: np.ndarray, t: np.ndarray, power: np.ndarray, energy: np.ndarray,
               ev: np.ndarray) -> None:
        ev_idx = pa.array(np.where(ev >= 0, ev, 0).astype(np.int32), mask=ev < 0)
        table = pa.Table.from_arrays([
            pa.DictionaryArray.from_arrays(pa.array(charger, pa.int32()), self._charger_dict),
            pa.DictionaryArray.from_arrays(pa.array(self._charger_station[charger], pa.int32()), self._station_dict),
            pa.array(t, pa.float64()),
            pa.array(power, pa.float64()),
            pa.array(energy, pa.float64()),
            pa.DictionaryArray.from_arrays(ev_idx, self._ev_dict),
        ], schema=TELEMETRY_SCHEMA)
        self._writer.write_table(table, row_group_size=max(len(t), 1))
        self.rows_written += len(t)
        self.row_groups += 1

    def close(self) -> None:
        """Finish the Parquet file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
