"""V2Sim's trip statistics: reading the ``probtable`` and drawing from it (R5.1.3).

The tables are V2Sim's ``probtable`` (copied with licence and attribution to
``instances/data/v2sim_probtable``; see its README for the file layout); optev reads them
into :class:`TripStatistics` with :func:`load_trip_statistics` and draws from them with
the samplers below. How the private cars' activity chains use the draws is told in
:mod:`optev.mobility.car_chains`.

First departure from home
    V2Sim's fitted shifted gamma, minutes after midnight
    (:data:`FIRST_DEPARTURE_GAMMA`, :func:`sample_first_departure`): weekday
    Gamma(6.63, 65.76) + 114.54 (mean 9:10), weekend Gamma(3.45, 84.37) + 197.53.
Destination type
    ``space_transfer_probability/<f>_spr_<day>.csv`` gives, per 15-minute slot of the
    departure, the probability of each destination type of a trip leaving a place of
    type *f* (rows: home, work, relax, other); an all-zero column means no observation.
Parking duration
    ``duration_of_parking/<type>_spr_<day>.csv``: bin *k* (probability ``15 × value``),
    then uniformly within ``[15k, 15k + 15)`` minutes, optionally truncated
    (:func:`sample_parking_s`).
Initial state of charge
    Cars: V2Sim's ``soc_dist.csv`` histogram, bin *b* drawn with probability ∝ ``freq``,
    SOC uniform in ``[b, b+1)`` percent (capped at 1) (:func:`sample_initial_soc`).
    Buses and logistics vehicles: U(0.9, 1.0) (charged overnight at the depot;
    assumption), drawn by :mod:`optev.mobility.fleet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from optev.errors import DataError
from optev.mobility.vehicles import Seed, as_rng
from optev.resources import instances_dir

DEFAULT_PROBTABLE = instances_dir() / "data" / "v2sim_probtable"
"""The copy of V2Sim's ``probtable`` shipped with optev (package data, :mod:`optev.resources`)."""

ACTIVITY_TYPES = ("home", "work", "relax", "other")
"""Node (activity) types, in the row order of V2Sim's transfer tables."""

HOME, WORK, RELAX, OTHER = range(4)

SLOT_S = 900.0
"""Width of a time slot of the transfer and parking tables, s (15 min)."""

N_SLOTS = 96
N_PARK_BINS = 95

FIRST_DEPARTURE_GAMMA = {True: (6.63, 65.76, 114.54), False: (3.45, 84.37, 197.53)}
"""V2Sim's first-departure fit (shape, scale min, shift min) for weekday (True) / weekend."""


@dataclass(frozen=True)
class TripStatistics:
    """V2Sim's trip statistics for one kind of day, as arrays.

    Attributes
    ----------
    transfer : ndarray, shape (4, 4, 96)
        ``transfer[f, k, t]``: probability that a trip leaving a place of type ``f`` in
        slot ``t`` goes to a place of type ``k`` (types in :data:`ACTIVITY_TYPES` order);
        a column of zeros means no observation.
    parking : ndarray, shape (4, 95)
        ``parking[k, b]``: probability that parking at type ``k`` lasts ``[15b, 15b+15)``
        minutes (row ``home`` is zero: a chain ends at home).
    soc : ndarray, shape (100,)
        Probability of an initial SOC in ``[b, b+1)`` percent.
    weekday : bool
        Whether the tables are the weekday (True) or weekend ones.
    """

    transfer: np.ndarray
    parking: np.ndarray
    soc: np.ndarray
    weekday: bool


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, index_col=0)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read trip statistics ({exc})") from None


def load_trip_statistics(path: str | Path = DEFAULT_PROBTABLE, *, weekday: bool = True) -> TripStatistics:
    """Read V2Sim's ``probtable`` folder (see ``instances/data/v2sim_probtable/README.md``).

    Raises
    ------
    DataError
        A file is missing, has the wrong shape, negative values, or columns/bins that do
        not sum to 1 (within 1e-6).
    """
    root = Path(path)
    day = "weekday" if weekday else "weekend"
    transfer = np.zeros((4, 4, N_SLOTS))
    for f, name in enumerate(ACTIVITY_TYPES):
        p = root / "space_transfer_probability" / f"{name[0].upper()}_spr_{day}.csv"
        arr = _read_csv(p).to_numpy(dtype=float)
        if arr.shape != (4, N_SLOTS):
            raise DataError(f"{p}: expected 4 rows × {N_SLOTS} columns, got {arr.shape}")
        sums = arr.sum(axis=0)
        if (arr < 0).any() or (np.abs(sums[sums > 0] - 1.0) > 1e-6).any():
            raise DataError(f"{p}: probabilities must be >= 0 and each non-empty column must sum to 1")
        transfer[f] = arr
    parking = np.zeros((4, N_PARK_BINS))
    for k in (WORK, RELAX, OTHER):
        p = root / "duration_of_parking" / f"{ACTIVITY_TYPES[k][0].upper()}_spr_{day}.csv"
        arr = _read_csv(p).to_numpy(dtype=float).ravel() * (SLOT_S / 60.0)
        if arr.shape != (N_PARK_BINS,) or (arr < 0).any() or abs(arr.sum() - 1.0) > 1e-6:
            raise DataError(f"{p}: expected {N_PARK_BINS} non-negative densities per minute whose bins "
                            "(× 15 min) sum to 1")
        parking[k] = arr / arr.sum()
    p = root / "soc_dist.csv"
    try:
        soc_tab = pd.read_csv(p)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{p}: cannot read ({exc})") from None
    if list(soc_tab.columns) != ["range", "freq"] or len(soc_tab) != 100 or \
            (soc_tab["range"].to_numpy() != np.arange(100)).any() or (soc_tab["freq"] < 0).any():
        raise DataError(f"{p}: expected columns range,freq with range = 0..99 and freq >= 0")
    freq = soc_tab["freq"].to_numpy(dtype=float)
    return TripStatistics(transfer=transfer, parking=parking, soc=freq / freq.sum(), weekday=weekday)


def sample_first_departure(n: int, seed: Seed, *, weekday: bool = True) -> np.ndarray:
    """First departure from home, s after midnight (V2Sim's shifted gamma fit)."""
    shape, scale, shift = FIRST_DEPARTURE_GAMMA[bool(weekday)]
    return 60.0 * (as_rng(seed).gamma(shape, scale, size=n) + shift)


def sample_parking_s(types: np.ndarray, stats: TripStatistics, rng: np.random.Generator,
                     limit_s: np.ndarray | float = np.inf) -> np.ndarray:
    """Parking durations (s) at places of the given types (work, relax, other).

    The duration has the table's distribution, uniform within each 15-minute bin (a
    piecewise-linear CDF F), truncated to ``[0, limit_s]``: it is ``F⁻¹(u · F(limit_s))``
    with u uniform, so without a limit it is the table's distribution itself. Entries
    of other types get 0.
    """
    types = np.asarray(types)
    n = len(types)
    limit = np.broadcast_to(np.asarray(limit_s, dtype=float), (n,))
    out = np.zeros(n)
    u = rng.random(n)
    for k in (WORK, RELAX, OTHER):
        sel = np.flatnonzero(types == k)
        if len(sel) == 0:
            continue
        pmf = stats.parking[k]
        edges = np.concatenate([[0.0], np.cumsum(pmf)])
        edges /= edges[-1]
        x = np.clip(limit[sel] / SLOT_S, 0.0, N_PARK_BINS)
        b = np.minimum(np.floor(x).astype(np.int64), N_PARK_BINS - 1)
        f_lim = edges[b] + (edges[b + 1] - edges[b]) * (x - b)
        target = u[sel] * f_lim
        j = np.clip(np.searchsorted(edges, target, side="right") - 1, 0, N_PARK_BINS - 1)
        width = edges[j + 1] - edges[j]
        frac = np.where(width > 0, (target - edges[j]) / np.where(width > 0, width, 1.0), 0.0)
        out[sel] = np.minimum((j + np.clip(frac, 0.0, 1.0)) * SLOT_S, np.maximum(limit[sel], 0.0))
    return out


def sample_initial_soc(n: int, stats: TripStatistics, seed: Seed) -> np.ndarray:
    """Initial SOC of cars from V2Sim's histogram, uniform within each 1 % bin."""
    rng = as_rng(seed)
    b = rng.choice(100, size=n, p=stats.soc)
    return np.minimum((b + rng.random(n)) / 100.0, 1.0)


__all__ = ["ACTIVITY_TYPES", "DEFAULT_PROBTABLE", "FIRST_DEPARTURE_GAMMA", "HOME", "N_PARK_BINS", "N_SLOTS",
           "OTHER", "RELAX", "SLOT_S", "TripStatistics", "WORK", "load_trip_statistics", "sample_first_departure",
           "sample_initial_soc", "sample_parking_s"]
