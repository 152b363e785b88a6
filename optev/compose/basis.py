r"""Start a window's LP from the previous window's basis when their structures differ.

A rolling horizon solves one window per control interval. Consecutive windows describe
almost the same problem one step apart, but their LPs rarely have the same structure (an
EV's plugged steps enter or leave the window, sessions arrive or depart), so HiGHS cannot
update the previous model in place (:class:`~optev.solvers.highs.HighsSession`). Starting
the new model from the previous optimal basis, translated element by element, saves most
of the simplex iterations of a cold solve (on the ux37 city day about two thirds).

Labels
------
Every column and row of a built model gets an integer *label* that names the same model
element in every window (:class:`Labeller`):

* families whose last axis is the window's steps (``(…, T)``: buses, branches, stations,
  generators, storage, the polygon sides …): family, position along the leading axes and
  the *absolute* step (steps since the epoch in units of the step length), so that step
  ``t + 1`` of a window and step ``t`` of the next one share a label;
* EV columns (families behind the ``(EV × step)`` handles :data:`EV_HANDLES`, declared
  only in plugged steps): family, EV session and absolute step, read from the handles —
  the first step an id appears at (the energy handle repeats the last plugged entry);
* other rows of one-dimensional families (EV energy balances, departures): family and
  the label of the row's first column;
* anything else: family and position.

A label is ``family (11 bits) · 2^52 + entity (30 bits) · 2^22 + step (22 bits)``, steps
counted from the labeller's first window; elements beyond these ranges are unlabelled.

Translation
-----------
:func:`translate` gives each element of the new model the status of the element with the
same label in the previous model, or else the status the same element had one step
earlier (the window's new last step repeats the previous last step, as the loss
correction repeats its losses); unlabelled and new elements are nonbasic at a bound
(columns) or basic (rows: their slack). :meth:`HighsSession.start_from` then makes the
statuses consistent with the new bounds and the basis size. A wrong guess costs
iterations, never correctness: the solve is an ordinary simplex run from that basis.
With :meth:`~optev.lp.program.LinearProgram.compile` ``drop_redundant`` the rows HiGHS
holds are a subset (``LPArrays.row_index``, :meth:`ModelLabels.of_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from optev.blocks.context import ModelContext
from optev.blocks.window import Window
from optev.lp.expr import as_expr
from optev.solvers.highs import BASIC, LOWER, UPPER, ZERO

EV_HANDLES = ("ev_p_ch", "ev_p_dis", "ev_e")
"""Handles of shape (EV × step) whose variables are labelled by EV session and step."""

_FAMILY_BITS, _ENTITY_BITS, _STEP_BITS = 11, 30, 22


@dataclass(frozen=True)
class ModelLabels:
    """Labels of the columns and rows of one model (−1: unlabelled)."""

    cols: np.ndarray
    rows: np.ndarray

    def of_rows(self, row_index: np.ndarray | None) -> "ModelLabels":
        """The labels of the rows a solver holds (``LPArrays.row_index``; None: all)."""
        return self if row_index is None else ModelLabels(self.cols, self.rows[row_index])


@dataclass
class Labeller:
    """Keeps family and session codes and the step origin across the windows of one solver."""

    families: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)
    origin: int | None = None
    """Absolute step of the first window labelled."""
    _cache: dict[tuple[str, tuple[int, ...], int], tuple[np.ndarray, bool]] = field(default_factory=dict,
                                                                                   repr=False)

    def labels(self, ctx: ModelContext) -> ModelLabels:
        """Labels of every column and row of the model built in ``ctx`` (module docstring)."""
        lp = ctx.lp
        w = ctx.window
        T = w.steps
        first = self._first_step(w)
        cols = np.full(lp.n_cols, -1, np.int64)
        for name, fam in lp.variables.items():
            cols[fam.start:fam.start + fam.size] = self._positional(name, fam.shape, T, first)
        of_ev = self._ev_columns(ctx, cols, first)
        rows = np.full(lp.n_rows, -1, np.int64)
        for name, con in lp.constraints.items():
            block = slice(con.start, con.start + con.size)
            rows[block] = self._positional(name, con.shape, T, first)
            if len(con.shape) == 1 and con.size and con.expr.n_terms:
                ids = con.expr.ids.reshape(con.size, -1)
                first_id = ids[np.arange(con.size), np.argmax(ids >= 0, axis=1)]
                if of_ev[np.where(first_id >= 0, first_id, 0)][first_id >= 0].any():
                    rows[block] = self._by_first_column(name, ids, cols)
        return ModelLabels(cols, rows)

    # -- pieces -----------------------------------------------------------------------------------
    def _first_step(self, w: Window) -> int:
        """Absolute step of the window's first step, relative to the labeller's origin."""
        step_ns = int(round(w.dt_h * 3600e9))
        absolute = int(w.times[0].value // step_ns) if step_ns > 0 else 0
        if self.origin is None:
            self.origin = absolute
        return absolute - self.origin

    def _family(self, name: str) -> int:
        return self.families.setdefault(name, len(self.families))

    def _compose(self, family: int, entity: np.ndarray, step: np.ndarray) -> np.ndarray:
        entity = np.asarray(entity, np.int64)
        step = np.asarray(step, np.int64)
        ok = ((family < (1 << _FAMILY_BITS)) & (entity >= 0) & (entity < (1 << _ENTITY_BITS)) & (step >= 0)
              & (step < (1 << _STEP_BITS)))
        key = (np.int64(family) << (_ENTITY_BITS + _STEP_BITS)) | (entity << _STEP_BITS) | step
        return np.where(ok, key, -1)

    def _positional(self, name: str, shape: tuple[int, ...], T: int, first: int) -> np.ndarray:
        """Family, position along the leading axes and absolute step ((…, T) families), else position.

        The labels of step 0 are kept per family and shape (the same in every window);
        a window starting ``first`` steps later adds ``first`` to the step field."""
        key = (name, shape, T)
        hit = self._cache.get(key)
        if hit is None:
            size = int(np.prod(shape, dtype=np.int64))
            fam = self._family(name)
            timed = (len(shape) >= 2 and shape[-1] == T) or (len(shape) == 1 and shape[0] == T and T > 1)
            if timed:
                lead = size // T if T else 0
                base = self._compose(fam, np.repeat(np.arange(lead), T), np.tile(np.arange(T), lead))
            else:
                base = self._compose(fam, np.arange(size), np.zeros(size, np.int64))
            hit = self._cache[key] = (base, timed)
        base, timed = hit
        if not timed or first == 0:
            return base.copy()
        if not 0 <= first < (1 << _STEP_BITS) - T:
            return np.full(base.size, -1, np.int64)
        return np.where(base >= 0, base + first, -1)

    def _ev_columns(self, ctx: ModelContext, cols: np.ndarray, first: int) -> np.ndarray:
        """Label EV columns by session and absolute step through the (EV × step) handles;
        return the mask of the columns so labelled."""
        w = ctx.window
        ev = w.evs
        of_ev = np.zeros(cols.size, bool)
        if not ev.n:
            return of_ev
        codes = np.array([self.sessions.setdefault(str(s), len(self.sessions)) for s in ev.session_id], np.int64)
        fam_of = self._family_of_columns(ctx)
        for handle in EV_HANDLES:
            value = ctx.handles.get(handle)
            if value is None:
                continue
            e = as_expr(value)
            if e.shape != (ev.n, w.steps) or e.n_terms < 1:
                continue
            ids = e.ids[..., 0]
            i, t = np.nonzero(ids >= 0)
            if not i.size:
                continue
            cid = ids[i, t]
            order = np.lexsort((t, cid))               # by column, earliest step first
            cid, i, t = cid[order], i[order], t[order]
            keep = np.r_[True, cid[1:] != cid[:-1]]
            cid, i, t = cid[keep], i[keep], t[keep]
            for fam_code in np.unique(fam_of[cid]):
                sel = fam_of[cid] == fam_code
                cols[cid[sel]] = self._compose(int(fam_code), codes[i[sel]], first + t[sel])
            of_ev[cid] = True
        return of_ev

    def _family_of_columns(self, ctx: ModelContext) -> np.ndarray:
        """Family code of every column."""
        lp = ctx.lp
        out = np.empty(lp.n_cols, np.int64)
        for name, fam in lp.variables.items():
            out[fam.start:fam.start + fam.size] = self._family(name)
        return out

    def _by_first_column(self, name: str, ids: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Rows labelled by family and their first column's entity and step."""
        fam = self._family(name)
        has = ids >= 0
        first_slot = np.argmax(has, axis=1)
        first_id = ids[np.arange(ids.shape[0]), first_slot]
        col_label = np.where(has.any(axis=1), cols[np.where(first_id >= 0, first_id, 0)], -1)
        low = (np.int64(1) << (_ENTITY_BITS + _STEP_BITS)) - 1
        own = (np.int64(fam) << (_ENTITY_BITS + _STEP_BITS)) | (col_label & low)
        return np.where((col_label >= 0) & (fam < (1 << _FAMILY_BITS)), own, -1)


def translate(old: ModelLabels, old_status: tuple[np.ndarray, np.ndarray], new: ModelLabels,
              col_lower: np.ndarray, col_upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Statuses for the new model's columns and rows from the old model's basis, by label.

    Parameters
    ----------
    old, new : ModelLabels
        Labels of the previous and the new model.
    old_status : (ndarray, ndarray)
        Column and row statuses of the previous model's basis
        (:meth:`~optev.solvers.highs.HighsSession.basis`).
    col_lower, col_upper : ndarray
        Bounds of the new model's columns (for the status of new columns).

    Returns
    -------
    col_status, row_status : ndarray of int8
        Unlabelled or new columns nonbasic at a finite bound (free ones at zero), rows
        basic.
    """
    at_bound = np.where(np.isfinite(col_lower), LOWER, np.where(np.isfinite(col_upper), UPPER, ZERO))
    cols = _lookup(old.cols, old_status[0], new.cols, at_bound.astype(np.int8))
    rows = _lookup(old.rows, old_status[1], new.rows, np.full(new.rows.size, BASIC, np.int8))
    return cols, rows


def _previous_step(keys: np.ndarray) -> np.ndarray:
    """Labels of the same element one step earlier (−1 at step 0 or unlabelled)."""
    step = keys & ((np.int64(1) << _STEP_BITS) - 1)
    return np.where((keys >= 0) & (step > 0), keys - 1, -1)


def _lookup(old_keys: np.ndarray, old_values: np.ndarray, new_keys: np.ndarray, default: np.ndarray) -> np.ndarray:
    """``old_values`` at the positions of ``new_keys`` in ``old_keys`` (``default`` where absent or −1)."""
    valid = old_keys >= 0
    keys, values = old_keys[valid], np.asarray(old_values)[valid]
    if not keys.size or not new_keys.size:
        return default
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    pos = np.clip(np.searchsorted(keys, new_keys), 0, keys.size - 1)
    hit = (new_keys >= 0) & (keys[pos] == new_keys)
    # an element the old model lacks (the window's new last step) takes the status the same
    # element had one step earlier, as the loss correction repeats the last step's losses
    earlier = np.where(hit, -1, _previous_step(new_keys))
    pos1 = np.clip(np.searchsorted(keys, earlier), 0, keys.size - 1)
    hit1 = (earlier >= 0) & (keys[pos1] == earlier)
    return np.where(hit, values[pos], np.where(hit1, values[pos1], default)).astype(np.int8)


__all__ = ["EV_HANDLES", "Labeller", "ModelLabels", "translate"]
