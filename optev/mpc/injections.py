r"""Realised DER and storage of a closed-loop day: what the generators, PV, wind and storage
did in each applied step, by one rule for the controlled day and for its baseline.

One rule, both days (like for like)
-----------------------------------
A component the formulation dispatches (a ``der`` block for PV, wind and generators; a
``storage`` block for storage) follows the first step of each decision: the controller's
plan for the controlled day, the same formulation's plan with the EV load fixed for the
uncontrolled baseline (:mod:`optev.mpc.baseline`). A component the formulation does not
model runs by the *fixed rule* in both days: PV and wind at their available power (no
curtailment), generators at their minimum output ``p_min_kw`` with no reactive power
(must-run; without commitment a generator is on), storage idle. A step whose solve failed
(the safe local policy ran) also uses the fixed rule.

Storage follows the first-step power of the decision within its limits; its energy is
integrated exactly:

.. math::
    E_{k+1} = E_k + \eta^{ch} p^{ch}_k \Delta t - p^{dis}_k \Delta t / \eta^{dis},

clipped so that :math:`E^{min} \le E \le E^{max}` (kWh; powers kW at the grid side).

Cost of the realised DER (currency), the same function for both days:

.. math::
    C^{DER} = \sum_{k} \Delta t \Bigl(\sum_g (a_g p_{g,k}^2 + b_g p_{g,k} + c_g)
              + \sum_u c^{curt}_u (A_{u,k} - p_{u,k})\Bigr),

generators :math:`g` (``cost_a_per_kw2h``, ``cost_b_per_kwh``, ``cost_c_per_h``, exact
quadratic, not the LP's tangents) and PV/wind :math:`u` with availability :math:`A` and
curtailment price :math:`c^{curt}` (:mod:`optev.blocks.der`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from optev.data.battery import battery_step
from optev.data.instance import Instance

DER_COLUMNS = ("unit_id", "kind", "bus_id", "time", "p_kw", "q_kvar", "p_avail_kw", "p_curtailed_kw")
"""Columns of the realised ``der`` table (the schema of ``optev solve``'s ``der`` table)."""

STORAGE_COLUMNS = ("storage_id", "bus_id", "time", "p_ch_kw", "p_dis_kw", "q_kvar", "e_kwh")
"""Columns of the realised ``storage`` table (``e_kwh`` at the end of the step)."""

_UNITS = (("pv", "pv", "pv_id"), ("wind", "wind", "wind_id"), ("generator", "generators", "gen_id"))


def dispatched_components(formulation: Any) -> dict[str, bool]:
    """Which components the formulation dispatches: ``{"der": ..., "storage": ...}``."""
    blocks = getattr(formulation, "blocks", {}) or {}
    return {"der": "der" in blocks, "storage": "storage" in blocks}


def _units(instance: Instance) -> pd.DataFrame:
    """Every PV, wind and generator unit: unit_id, kind, bus_id, position in its table."""
    feeder = instance.feeder
    frames = []
    for kind, attr, key in _UNITS:
        table = getattr(feeder, attr)
        if len(table):
            frames.append(pd.DataFrame({"unit_id": table[key].astype(str).to_numpy(object), "kind": kind,
                                        "bus_id": table["bus_id"].astype(str).to_numpy(object),
                                        "pos": np.arange(len(table))}))
    if not frames:
        return pd.DataFrame({"unit_id": pd.Series(dtype=object), "kind": pd.Series(dtype=object),
                             "bus_id": pd.Series(dtype=object), "pos": pd.Series(dtype=np.int64)})
    return pd.concat(frames, ignore_index=True)


class DerRecord:
    """The realised DER of each applied step (module docstring, "One rule, both days").

    Parameters
    ----------
    instance : Instance
    times : DatetimeIndex
        The applied steps.
    pv_avail_kw, wind_avail_kw : ndarray (units × steps)
        Realised availability of every PV and wind unit, kW.
    dispatched : bool
        The formulation has a ``der`` block (its plans are followed).
    """

    def __init__(self, instance: Instance, times: pd.DatetimeIndex, pv_avail_kw: np.ndarray,
                 wind_avail_kw: np.ndarray, dispatched: bool) -> None:
        self.instance = instance
        self.times = times
        self.dispatched = bool(dispatched)
        self.units = _units(instance)
        n, T = len(self.units), len(times)
        self.avail = np.full((n, T), np.nan)
        for kind, avail in (("pv", pv_avail_kw), ("wind", wind_avail_kw)):
            rows = np.flatnonzero(self.units["kind"].to_numpy(object) == kind)
            if rows.size:
                self.avail[rows] = np.asarray(avail, float)[self.units["pos"].to_numpy(np.int64)[rows]]
        gens = instance.feeder.generators
        self.p = np.nan_to_num(self.avail)
        self.q = np.zeros((n, T))
        grow = np.flatnonzero(self.units["kind"].to_numpy(object) == "generator")
        if grow.size:
            self.p[grow] = gens["p_min_kw"].to_numpy(float)[self.units["pos"].to_numpy(np.int64)[grow], None]
        self._index = {u: i for i, u in enumerate(self.units["unit_id"])}
        self.planned = np.zeros(T, dtype=bool)

    def follow(self, k: int, first_step: pd.DataFrame | None) -> None:
        """Step ``k`` follows a plan's first step (the ``der`` table rows of that step); with
        no plan (a failed solve, or no ``der`` block) it keeps the fixed rule."""
        if not self.dispatched or first_step is None or not len(first_step):
            return
        rows = np.array([self._index.get(str(u), -1) for u in first_step["unit_id"]], dtype=np.int64)
        ok = rows >= 0
        self.p[rows[ok], k] = first_step["p_kw"].to_numpy(float)[ok]
        self.q[rows[ok], k] = first_step["q_kvar"].fillna(0.0).to_numpy(float)[ok]
        self.planned[k] = True

    def bus_injections(self, bus_pos: Mapping[str, int], n_bus: int) -> tuple[np.ndarray, np.ndarray]:
        """Active and reactive generation per bus (steps × buses, kW / kvar)."""
        T = len(self.times)
        p = np.zeros((T, n_bus))
        q = np.zeros((T, n_bus))
        b = self.units["bus_id"].map(bus_pos).fillna(-1).to_numpy(np.int64)
        ok = b >= 0
        if ok.any():
            np.add.at(p.T, b[ok], self.p[ok])
            np.add.at(q.T, b[ok], self.q[ok])
        return p, q

    def table(self) -> pd.DataFrame:
        """The realised ``der`` table (:data:`DER_COLUMNS`), one row per unit and step."""
        T, n = len(self.times), len(self.units)
        curtailed = self.avail - self.p
        return pd.DataFrame({
            "unit_id": np.repeat(self.units["unit_id"].to_numpy(object), T),
            "kind": np.repeat(self.units["kind"].to_numpy(object), T),
            "bus_id": np.repeat(self.units["bus_id"].to_numpy(object), T),
            "time": np.tile(self.times, n), "p_kw": self.p.ravel(), "q_kvar": self.q.ravel(),
            "p_avail_kw": self.avail.ravel(), "p_curtailed_kw": curtailed.ravel()})

    def cost(self, dt_h: float, steps: np.ndarray | None = None) -> dict[str, float]:
        """Generation and curtailment cost of the realised DER (module docstring), currency,
        over the steps ``steps`` (a boolean mask; all by default)."""
        T = len(self.times)
        mask = np.ones(T, dtype=bool) if steps is None else np.asarray(steps, bool)
        feeder = self.instance.feeder
        kinds = self.units["kind"].to_numpy(object)
        pos = self.units["pos"].to_numpy(np.int64)
        gen = np.flatnonzero(kinds == "generator")
        gen_cost = 0.0
        if gen.size:
            g = feeder.generators.iloc[pos[gen]]
            p = self.p[gen][:, mask]
            a = g["cost_a_per_kw2h"].fillna(0.0).to_numpy(float)[:, None]
            b = g["cost_b_per_kwh"].fillna(0.0).to_numpy(float)[:, None]
            c = g["cost_c_per_h"].fillna(0.0).to_numpy(float)[:, None]
            gen_cost = float(dt_h * np.sum(a * p ** 2 + b * p + c))
        curt_cost = 0.0
        for kind, attr in (("pv", "pv"), ("wind", "wind")):
            rows = np.flatnonzero(kinds == kind)
            if rows.size:
                price = getattr(feeder, attr)["curtailment_cost_per_kwh"].fillna(0.0).to_numpy(float)[pos[rows]]
                curt = np.maximum(np.nan_to_num(self.avail[rows] - self.p[rows]), 0.0)[:, mask]
                curt_cost += float(dt_h * np.sum(price[:, None] * curt))
        return {"generation_cost": gen_cost, "curtailment_cost": curt_cost}

    def energy(self, dt_h: float) -> dict[str, float]:
        """Energy produced and curtailed per technology over the day, kWh."""
        out = {}
        kinds = self.units["kind"].to_numpy(object)
        for kind in ("pv", "wind", "generator"):
            rows = kinds == kind
            out[f"{kind}_energy_kwh"] = float(self.p[rows].sum() * dt_h)
            if kind != "generator":
                out[f"{kind}_curtailed_kwh"] = float(np.nansum(self.avail[rows] - self.p[rows]) * dt_h)
        return out


@dataclass
class StorageBank:
    """Stationary storage that follows decisions within its limits (module docstring).

    Attributes
    ----------
    table : DataFrame
        ``feeder.storage``.
    e_kwh : dict of str to float
        Energy of each unit now, kWh.
    """

    table: pd.DataFrame
    e_kwh: dict[str, float]
    dispatched: bool

    @classmethod
    def of(cls, instance: Instance, dispatched: bool) -> "StorageBank":
        st = instance.feeder.storage
        e = {str(s): float(v) for s, v in zip(st["storage_id"], st["e_init_kwh"].to_numpy(float))} if len(st) else {}
        return cls(table=st.reset_index(drop=True), e_kwh=e, dispatched=bool(dispatched))

    @property
    def ids(self) -> list[str]:
        return list(self.e_kwh)

    def apply(self, requested_kw: Mapping[str, float], dt_h: float) -> dict[str, float]:
        """Apply the requested net charging power (kW, charge positive) for one step within
        the power and energy limits; integrate the energy; return the applied power."""
        ids = self.ids
        if not ids:
            return {}
        t = self.table
        requested = np.array([float(requested_kw.get(sid, 0.0)) if self.dispatched else 0.0 for sid in ids])
        p = np.clip(requested, -t["p_dis_max_kw"].to_numpy(float), t["p_ch_max_kw"].to_numpy(float))
        e0 = np.array([self.e_kwh[sid] for sid in ids])
        step = battery_step(e0, p, dt_h, t["e_min_kwh"].to_numpy(float), t["e_max_kwh"].to_numpy(float),
                            t["eff_ch"].to_numpy(float), t["eff_dis"].to_numpy(float))
        e1 = e0 + step.stored_kwh
        self.e_kwh = {sid: float(e) for sid, e in zip(ids, e1)}
        return {sid: float(v) for sid, v in zip(ids, step.mean_power_kw(dt_h))}


class StorageRecord:
    """Applied storage power, reactive power and energy per step (:data:`STORAGE_COLUMNS`)."""

    def __init__(self, bank: StorageBank, times: pd.DatetimeIndex) -> None:
        self.bank = bank
        self.times = times
        n, T = len(bank.ids), len(times)
        self.p = np.zeros((n, T))
        self.q = np.zeros((n, T))
        self.e = np.zeros((n, T))

    def record(self, k: int, applied: Mapping[str, float], q_plan: Mapping[str, float] | None) -> None:
        for j, sid in enumerate(self.bank.ids):
            self.p[j, k] = applied.get(sid, 0.0)
            self.q[j, k] = float((q_plan or {}).get(sid, 0.0)) if self.bank.dispatched else 0.0
            self.e[j, k] = self.bank.e_kwh[sid]

    def bus_injections(self, bus_pos: Mapping[str, int], n_bus: int) -> tuple[np.ndarray, np.ndarray]:
        """Net load of storage per bus (steps × buses): charging power (kW) and −q (kvar)."""
        T = len(self.times)
        p = np.zeros((T, n_bus))
        q = np.zeros((T, n_bus))
        if len(self.bank.ids):
            b = self.bank.table["bus_id"].astype(str).map(bus_pos).fillna(-1).to_numpy(np.int64)
            ok = b >= 0
            np.add.at(p.T, b[ok], self.p[ok])
            np.add.at(q.T, b[ok], -self.q[ok])  # storage q is an injection; its net load is −q
        return p, q

    def table(self) -> pd.DataFrame:
        T, n = len(self.times), len(self.bank.ids)
        return pd.DataFrame({
            "storage_id": np.repeat(np.asarray(self.bank.ids, dtype=object), T),
            "bus_id": np.repeat(self.bank.table["bus_id"].astype(str).to_numpy(object), T) if n else [],
            "time": np.tile(self.times, n), "p_ch_kw": np.maximum(self.p, 0.0).ravel(),
            "p_dis_kw": np.maximum(-self.p, 0.0).ravel(), "q_kvar": self.q.ravel(), "e_kwh": self.e.ravel()})


def first_step(table: pd.DataFrame | None, t0: pd.Timestamp) -> pd.DataFrame | None:
    """Rows of a plan table (with a ``time`` column) at the plan's first step ``t0``."""
    if table is None or not len(table):
        return None
    return table.loc[pd.DatetimeIndex(table["time"]) == t0]
