r"""AC power-flow check of a day of applied steps: bus injections → voltages, flows, losses,
substation import, violations and costs — never a silent fallback.

The net load of bus :math:`b` in step :math:`k` (kW; kvar alike) is

.. math:: P^{net}_{b,k} = P^{L}_{b,k} + P^{EV}_{b,k} + P^{sto}_{b,k} - P^{DER}_{b,k},

the realised base load, the EVs' realised mean power at their stations' buses, storage
charging, and the generation of generators, PV and wind (:mod:`optev.mpc.injections`).
One batched power flow (:func:`optev.powerflow.run_powerflow`) solves every step.

**Non-converged steps** (:class:`GridDay`): a step whose power flow does not converge has
no import, loss or voltage figure — they are NaN, the step is listed in
``nonconverged`` and counted as a ``not_converged`` violation. Figures that compare two
days (peaks, costs) are taken over the steps that converged in *both* (:func:`comparable`),
and the summary names the excluded steps.

**Identity** ``import_kw``: in a converged step the substation import equals the sum of the
net loads plus the losses, :math:`\sum_r P^{sub}_{r,k} = \sum_b P^{net}_{b,k} + P^{loss}_k`
(largest error, kW).

**Cost** of grid energy (currency):
:math:`\sum_k \Delta t\,(\pi^{buy}_k \max(P^{imp}_k, 0) - \pi^{sell}_k \max(-P^{imp}_k, 0))`
over the compared steps; DER cost is added by :meth:`optev.mpc.injections.DerRecord.cost`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from optev.data.feeder import Feeder
from optev.powerflow import PowerFlowResult, run_powerflow, violations
from optev.powerflow.checks import VIOLATION_COLUMNS


def empty_violations() -> pd.DataFrame:
    """An empty violations table (:data:`optev.powerflow.checks.VIOLATION_COLUMNS`)."""
    return pd.DataFrame({c: pd.Series(dtype=object if c in ("kind", "element_id", "unit") else float)
                         for c in VIOLATION_COLUMNS})


@dataclass
class GridDay:
    """The AC check of one day (module docstring).

    Attributes
    ----------
    checked : bool
        An AC power flow ran (the instance has a feeder with a substation and the check
        was asked for); otherwise every grid figure is NaN.
    ac : PowerFlowResult or None
    import_kw, loss_kw : ndarray (steps,)
        Substation import and losses of each step, NaN where the power flow did not
        converge (or did not run).
    converged : ndarray of bool (steps,)
    violations : DataFrame
    net_p_kw : ndarray (steps × buses)
        The net loads that were checked.
    """

    checked: bool
    ac: PowerFlowResult | None
    import_kw: np.ndarray
    loss_kw: np.ndarray
    converged: np.ndarray
    violations: pd.DataFrame
    net_p_kw: np.ndarray

    @property
    def vm_pu(self) -> np.ndarray:
        """Bus voltages (steps × buses), NaN for non-converged or unchecked steps."""
        if self.ac is None:
            return np.full(self.net_p_kw.shape, np.nan)
        return np.where(self.converged[:, None], self.ac.vm_pu, np.nan)

    def nonconverged_times(self, times: pd.DatetimeIndex) -> list[str]:
        """ISO times of the steps whose power flow did not converge."""
        return [t.isoformat() for t in times[self.checked & ~self.converged]]

    def import_identity_kw(self) -> float | None:
        """Largest |import − (Σ net load + losses)| of a converged step, kW (None unchecked)."""
        if not self.checked or not self.converged.any():
            return None
        ok = self.converged
        resid = self.import_kw[ok] - (self.net_p_kw[ok].sum(axis=1) + self.loss_kw[ok])
        return float(np.max(np.abs(resid)))


def check_day(feeder: Feeder, times: pd.DatetimeIndex, net_p_kw: np.ndarray, net_q_kvar: np.ndarray, *,
              enabled: bool = True) -> GridDay:
    """Run the AC power flow of every step's net loads (module docstring)."""
    steps = len(times)
    checked = bool(enabled) and len(feeder.buses) > 0 and len(feeder.substations) > 0
    nan = np.full(steps, np.nan)
    if not checked:
        return GridDay(False, None, nan, nan.copy(), np.zeros(steps, dtype=bool), empty_violations(), net_p_kw)
    bus_ids = feeder.bus_ids
    ac = run_powerflow(feeder, pd.DataFrame(net_p_kw, index=times, columns=bus_ids),
                       pd.DataFrame(net_q_kvar, index=times, columns=bus_ids), raise_on_failure=False)
    ok = np.asarray(ac.converged, bool)
    imp = np.where(ok, ac.substation_p_kw.sum(axis=1), np.nan)
    loss = np.where(ok, ac.loss_kw, np.nan)
    return GridDay(True, ac, imp, loss, ok, violations(ac, feeder), net_p_kw)


def comparable(*days: GridDay) -> np.ndarray:
    """Steps whose figures can be compared across ``days``: converged in every checked day
    (all steps when none was checked)."""
    mask = np.ones(days[0].import_kw.size, dtype=bool)
    for d in days:
        if d.checked:
            mask &= d.converged
    return mask


def import_cost(import_kw: np.ndarray, price_buy: np.ndarray, price_sell: np.ndarray, dt_h: float,
                mask: np.ndarray) -> float:
    """Grid energy cost over the steps of ``mask`` (module docstring), currency."""
    p = np.asarray(import_kw, float)[mask]
    return float(dt_h * np.sum(np.asarray(price_buy, float)[mask] * np.maximum(p, 0.0)
                               - np.asarray(price_sell, float)[mask] * np.maximum(-p, 0.0)))


def per_step_counts(viol: pd.DataFrame, times: pd.DatetimeIndex) -> np.ndarray:
    """Number of violations in each step."""
    if not len(viol):
        return np.zeros(len(times), dtype=np.int64)
    idx = times.get_indexer(pd.DatetimeIndex(viol["time"]))
    return np.bincount(idx[idx >= 0], minlength=len(times)).astype(np.int64)


def to_buses(per_station: np.ndarray, station_bus: np.ndarray, n_bus: int) -> np.ndarray:
    """Sum a (steps × stations) array onto the stations' buses (steps × buses); stations with
    no bus of the feeder (−1) are left out."""
    out = np.zeros((per_station.shape[0], n_bus))
    on_bus = station_bus >= 0
    if on_bus.any():
        np.add.at(out.T, station_bus[on_bus], per_station[:, on_bus].T)
    return out
