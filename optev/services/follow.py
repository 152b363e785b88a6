r"""Following a frequency-regulation signal every few seconds with the plugged EVs (R6.5.1.3).

Within one control step the fleet holds the reserve its plan kept (:class:`optev.blocks.service.ServiceReserve`)
and follows the AGC signal :math:`s_k \in [-1, 1]` (:mod:`optev.services.signals`) around the
step's planned power :math:`P^0`:

.. math:: P^{cmd}_k = P^0 - s_k R^{up} \ (s_k > 0), \qquad P^{cmd}_k = P^0 - s_k R^{down} \ (s_k < 0).

Each sample (all vectorised over EVs):

1. **Ranges.** An EV may go down to :math:`\underline p_e` — its V2G discharge limit, at most
   the power that reaches its SOC floor within the sample (R6.1.5):
   :math:`\max(E - E^{floor}, 0)\,\eta^{dis}/\tau` — and never below the power its departure need
   requires if full power follows (least laxity: :math:`(E^{need} - E - \eta \bar P (T^{dep} - t - \tau))/(\eta\tau)`);
   and up to :math:`\bar p_e`, its charge limit, at most the power that fills it within the
   sample, :math:`\max(E^{cap} - E, 0)/(\eta\tau)`. A range the battery cannot keep for the whole
   sample would be shared out and then clipped by the plant: a tracking error the follower made.
2. **Sharing.** The deviation :math:`P^{cmd} - \sum p^0_e` is shared in proportion to each
   EV's room on that side, then rounded down to the 1 kW grid (full power stays valid) and
   the missing quanta go to the largest remainders (:func:`round_to_grid`).
3. **Delay and ramp.** A command reaches the chargers ``delay_s`` after it is issued (whole
   samples late, and for the rest of the delay the chargers keep ramping towards the
   previous setpoint); each charger moves towards its setpoint at ``ramp_kw_per_s``
   (linear ramp, then flat), so its mean power over a sample is exact for that motion.
4. **Energy.** Each battery integrates its mean power over the interval
   (:func:`optev.data.battery.battery_step`), within its floor and capacity.
5. **Judgement (A.4).** Command :math:`k` is judged on the fleet's power
   :math:`J = \min(T_0, \tau)` after it is issued (``judge_s``: the rule's response time
   :math:`T_0`, 5 s in ``china_rules.md``, at most the sample length :math:`\tau`, i.e. at the
   latest at the end of its own sample): a command cannot be met at the instant it is sent, and a
   market gives the resource :math:`T_0` to respond. That power is :attr:`Following.p_act_kw`;
   the mean power of each sample (the energy) is :attr:`Following.p_mean_kw`.

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
    """Per command (sample): the fleet power commanded, the power judged (A.4: ``judge_s`` after
    the command) and the mean power of the sample, kW; the lowest SOC margin (kWh above the floor)."""

    p_cmd_kw: np.ndarray
    p_act_kw: np.ndarray
    p_mean_kw: np.ndarray
    min_floor_margin_kwh: float


def ramp(p_kw: np.ndarray, target_kw: np.ndarray, rate_kw_per_s: float, seconds: float
         ) -> tuple[np.ndarray, np.ndarray]:
    """Power after ramping from ``p_kw`` towards ``target_kw`` at ``rate_kw_per_s`` for ``seconds``
    (linear, then flat once reached), and the mean power over those seconds, kW."""
    if seconds <= 0:
        return p_kw.copy(), p_kw.copy()
    gap = target_kw - p_kw
    reach_s = np.abs(gap) / rate_kw_per_s
    end = p_kw + np.clip(gap, -rate_kw_per_s * seconds, rate_kw_per_s * seconds)
    ramp_s = np.minimum(reach_s, seconds)
    mean = ((p_kw + end) / 2.0 * ramp_s + end * (seconds - ramp_s)) / seconds
    return end, mean


def ranges(f: FleetState, t_s: float, interval_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest power of each EV now (module docstring, 1), kW."""
    tau_h = interval_s / 3600.0
    after_h = np.maximum(f.departure_s - t_s - interval_s, 0.0) / 3600.0
    must = (f.need_kwh - f.e_kwh - f.eff_ch * f.p_ch_max_kw * after_h) / (f.eff_ch * tau_h)
    down = -np.minimum(f.p_dis_max_kw, np.maximum(f.e_kwh - f.floor_kwh, 0.0) * f.eff_dis / tau_h)
    hi = np.minimum(f.p_ch_max_kw, np.maximum(f.capacity_kwh - f.e_kwh, 0.0) / (f.eff_ch * tau_h))
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
           interval_s: float, delay_s: float, ramp_kw_per_s: float, judge_s: float = 5.0,
           timings: list[float] | None = None) -> Following:
    """Follow ``signal`` (one value per ``interval_s``) within one control step (module docstring);
    ``judge_s`` is the rule's response time :math:`T_0`; ``timings`` (a list) receives the wall
    time of every update, s (benchmarks)."""
    n = signal.size
    cmd = float(f.p0_kw.sum()) - np.where(signal > 0, signal * reserve_up_kw, signal * reserve_down_kw)
    lag = int(np.floor(delay_s / interval_s + 1e-9))  # whole samples a command arrives late
    late_s = delay_s - lag * interval_s  # and the seconds of the next sample it still misses
    judge = min(max(judge_s, 0.0), interval_s)
    p = f.p0_kw.astype(float).copy()
    old = new = p.copy()
    act, mean_p, margin = np.zeros(n), np.zeros(n), np.inf
    e = f.e_kwh.astype(float).copy()
    state = FleetState(e, f.capacity_kwh, f.floor_kwh, f.need_kwh, f.departure_s, f.p_ch_max_kw, f.p_dis_max_kw,
                       f.eff_ch, f.eff_dis, f.p0_kw)
    for k in range(n):  # time recursion: each sample depends on the energy of the previous one
        started = time.perf_counter()
        state.e_kwh = e
        lo, hi = ranges(state, t0_s + k * interval_s, interval_s)
        old = np.clip(new, lo, hi)
        if k >= lag:
            new = _setpoints(f.p0_kw, lo, hi, float(cmd[k - lag]))
        else:
            new = old
        before, p_before = ramp(p, old, ramp_kw_per_s, late_s)
        p_end, p_after = ramp(before, new, ramp_kw_per_s, interval_s - late_s)
        mean = (p_before * late_s + p_after * (interval_s - late_s)) / interval_s
        p_judged = ramp(p, old, ramp_kw_per_s, judge)[0] if judge <= late_s else \
            ramp(before, new, ramp_kw_per_s, judge - late_s)[0]
        out = battery_step(e, mean, interval_s / 3600.0, f.floor_kwh, f.capacity_kwh, f.eff_ch, f.eff_dis)
        e = e + out.stored_kwh
        realised = out.mean_power_kw(interval_s / 3600.0)
        scale = np.divide(realised, mean, out=np.ones_like(mean), where=np.abs(mean) > 1e-12)
        p = p_end * np.clip(scale, 0.0, 1.0)  # a battery that filled or emptied stops drawing
        mean_p[k] = float(realised.sum())
        act[k] = float((p_judged * np.clip(scale, 0.0, 1.0)).sum())
        margin = min(margin, float((e - f.floor_kwh).min(initial=np.inf)))
        if timings is not None:
            timings.append(time.perf_counter() - started)
    return Following(cmd, act, mean_p, margin)


def _setpoints(p0_kw: np.ndarray, lo: np.ndarray, hi: np.ndarray, want_kw: float) -> np.ndarray:
    """The fleet's command shared among the EVs (module docstring, 2), on the 1 kW grid."""
    base = np.clip(p0_kw, lo, hi)
    gap = want_kw - base.sum()
    room = (hi - base) if gap > 0 else (base - lo)
    share = np.divide(room, room.sum(), out=np.zeros_like(room), where=room.sum() > 0)
    target = base + np.sign(gap) * share * min(abs(gap), float(room.sum()))
    return round_to_grid(target, lo, hi, float(np.clip(want_kw, lo.sum(), hi.sum())))
