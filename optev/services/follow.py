r"""Following a frequency-regulation signal every few seconds with the plugged EVs (R6.5.1.3).

Within one control step the fleet holds the reserve its plan kept (:class:`optev.blocks.service.ServiceReserve`)
and follows the AGC signal :math:`s_k \in [-1, 1]` (:mod:`optev.services.signals`) around the
step's planned power :math:`P^0`:

.. math:: P^{cmd}_k = P^0 - s_k R^{up} \ (s_k > 0), \qquad P^{cmd}_k = P^0 - s_k R^{down} \ (s_k < 0).

Each sample (all vectorised over EVs):

1. **Ranges.** An EV may go down to :math:`\underline p_e` — its V2G discharge limit while
   above its SOC floor (R6.1.5), else 0, and never below the power its departure need
   requires if full power follows (least laxity: :math:`(E^{need} - E - \eta \bar P (T^{dep} - t - \tau))/(\eta\tau)`)
   — and up to :math:`\bar p_e` (its charge limit while below capacity).
2. **Sharing.** The deviation :math:`P^{cmd} - \sum p^0_e` is shared in proportion to each
   EV's room on that side, then rounded down to the 1 kW grid (full power stays valid) and
   the missing quanta go to the largest remainders (:func:`round_to_grid`).
3. **Delay and ramp.** A command reaches the chargers ``delay_s`` later (whole samples late,
   and for the rest of the delay the sample it arrives in keeps the old power: the power of
   a sample is its mean); each charger moves towards its setpoint by at most
   ``ramp_kw_per_s`` × interval.
4. **Energy.** Each battery integrates its power over the interval
   (:func:`optev.data.battery.battery_step`), within its floor and capacity.

Resources enter when they are plugged in with room and leave when they unplug (the step's
set of plugged EVs) or the window ends (R6.5.1.3). Between control steps the follower starts
from the plant's state: the energy the regulation moves inside a step is not fed back into
the plant (with a zero-mean signal it is small, and the next plan sees the measured SOC).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from optev.data.battery import battery_step

QUANTUM_KW = 1.0


@dataclass
class FleetState:
    """The plugged EVs of one control step (arrays of one length; energies kWh, powers kW, times s)."""

    e_kwh: np.ndarray
    capacity_kwh: np.ndarray
    floor_kwh: np.ndarray
    need_kwh: np.ndarray
    departure_s: np.ndarray
    p_ch_max_kw: np.ndarray
    p_dis_max_kw: np.ndarray
    eff_ch: np.ndarray
    eff_dis: np.ndarray
    p0_kw: np.ndarray
    """Each EV's planned (realised) power over the step."""


@dataclass(frozen=True)
class Following:
    """Commanded and realised fleet power per sample, kW, and the lowest SOC margin (kWh above the floor)."""

    p_cmd_kw: np.ndarray
    p_act_kw: np.ndarray
    min_floor_margin_kwh: float


def ranges(f: FleetState, t_s: float, interval_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest power of each EV now (module docstring, 1), kW."""
    tau_h = interval_s / 3600.0
    after_h = np.maximum(f.departure_s - t_s - interval_s, 0.0) / 3600.0
    must = (f.need_kwh - f.e_kwh - f.eff_ch * f.p_ch_max_kw * after_h) / (f.eff_ch * tau_h)
    down = np.where(f.e_kwh > f.floor_kwh + 1e-9, -f.p_dis_max_kw, 0.0)
    hi = np.where(f.e_kwh < f.capacity_kwh - 1e-9, f.p_ch_max_kw, 0.0)
    lo = np.minimum(np.maximum(down, np.minimum(must, f.p_ch_max_kw)), hi)
    return lo, hi


def round_to_grid(target: np.ndarray, lo: np.ndarray, hi: np.ndarray, total: float,
                  quantum: float = QUANTUM_KW) -> np.ndarray:
    """Per-EV setpoints on the ``quantum`` grid within [lo, hi] summing as close to ``total`` as the
    grid allows: floors first (a limit off the grid stays reachable), then the missing quanta to
    the largest remainders."""
    at_hi = target >= hi - 1e-9
    base = np.where(at_hi, hi, np.maximum(np.floor(target / quantum + 1e-9) * quantum, lo))
    missing = int(np.floor((total - base.sum()) / quantum + 0.5))
    if missing > 0:
        room = (hi - base >= quantum - 1e-9) & ~at_hi
        order = np.argsort(-(target - base) * room, kind="stable")[:missing]
        base[order[room[order]]] += quantum
    elif missing < 0:
        room = base - lo >= quantum - 1e-9
        order = np.argsort((target - base) + ~room * 1e9, kind="stable")[:-missing]
        base[order[room[order]]] -= quantum
    return base


def follow(f: FleetState, signal: np.ndarray, reserve_up_kw: float, reserve_down_kw: float, *, t0_s: float,
           interval_s: float, delay_s: float, ramp_kw_per_s: float,
           timings: list[float] | None = None) -> Following:
    """Follow ``signal`` (one value per ``interval_s``) within one control step (module docstring);
    ``timings`` (a list) receives the wall time of every update, s (benchmarks)."""
    n = signal.size
    p0_total = float(f.p0_kw.sum())
    cmd = p0_total - np.where(signal > 0, signal * reserve_up_kw, signal * reserve_down_kw)
    lag = int(np.floor(delay_s / interval_s + 1e-9))  # whole samples a command arrives late
    late = delay_s / interval_s - lag  # and the share of the next sample it still misses
    p = f.p0_kw.astype(float).copy()
    setpoint = p.copy()
    act = np.zeros(n)
    margin = np.inf
    e = f.e_kwh.astype(float).copy()
    state = FleetState(e, f.capacity_kwh, f.floor_kwh, f.need_kwh, f.departure_s, f.p_ch_max_kw, f.p_dis_max_kw,
                       f.eff_ch, f.eff_dis, f.p0_kw)
    step = ramp_kw_per_s * interval_s
    for k in range(n):  # time recursion: each sample depends on the energy of the previous one
        started = time.perf_counter()
        t = t0_s + k * interval_s
        state.e_kwh = e
        lo, hi = ranges(state, t, interval_s)
        if k >= lag:
            want = cmd[k - lag]
            base = np.clip(f.p0_kw, lo, hi)
            gap = want - base.sum()
            room = (hi - base) if gap > 0 else (base - lo)
            share = np.divide(room, room.sum(), out=np.zeros_like(room), where=room.sum() > 0)
            target = base + np.sign(gap) * share * min(abs(gap), float(room.sum()))
            setpoint = round_to_grid(target, lo, hi, float(np.clip(want, lo.sum(), hi.sum())))
        before = p
        p = p + np.clip(setpoint - p, -step, step)
        p = np.clip(p, np.minimum(lo, 0.0), hi)
        mean_p = late * before + (1.0 - late) * p  # the old power until the command arrives
        out = battery_step(e, mean_p, interval_s / 3600.0, f.floor_kwh, f.capacity_kwh, f.eff_ch, f.eff_dis)
        e = e + out.stored_kwh
        act[k] = float(out.mean_power_kw(interval_s / 3600.0).sum())
        margin = min(margin, float((e - f.floor_kwh).min(initial=np.inf)))
        if timings is not None:
            timings.append(time.perf_counter() - started)
    return Following(cmd, act, margin)
