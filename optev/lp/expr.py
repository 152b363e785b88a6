"""Vectorised linear expressions over arrays of LP variables.

A :class:`VarArray` is an n-dimensional array of variable ids; a :class:`LinExpr` is an
n-dimensional array of linear expressions stored densely as ``coeffs[..., k]`` and
``ids[..., k]`` (``k`` indexes the terms, id −1 marks an empty term) plus ``const[...]``.
Arithmetic broadcasts like NumPy, so one statement declares a whole constraint family::

    e = lp.add_variables("ev_e", (n_ev, T), lower=e_min, upper=e_max)
    lp.add_constraints("ev_energy_balance",
                       e[:, 1:] - e[:, :-1] - eta * dt * p_ch[:, 1:] + dt / eta * p_dis[:, 1:], "==", 0.0)

Building costs a few NumPy operations per family, independent of the number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import numpy as np

ArrayLike = Union[float, int, np.ndarray]


@dataclass(frozen=True)
class VarArray:
    """An array of variable ids of one family (see :meth:`LinearProgram.add_variables`)."""

    name: str
    ids: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.ids.shape

    def __getitem__(self, key: Any) -> "VarArray":
        return VarArray(self.name, self.ids[key])

    def to_expr(self) -> "LinExpr":
        return LinExpr(np.ones(self.ids.shape + (1,)), self.ids[..., None].copy(), np.zeros(self.ids.shape))

    # arithmetic delegates to LinExpr
    def __add__(self, other: Any) -> "LinExpr":
        return self.to_expr() + other

    __radd__ = __add__

    def __sub__(self, other: Any) -> "LinExpr":
        return self.to_expr() - other

    def __rsub__(self, other: Any) -> "LinExpr":
        return (-self.to_expr()) + other

    def __mul__(self, other: ArrayLike) -> "LinExpr":
        return self.to_expr() * other

    __rmul__ = __mul__

    def __truediv__(self, other: ArrayLike) -> "LinExpr":
        return self.to_expr() * (1.0 / np.asarray(other, float))

    def __neg__(self) -> "LinExpr":
        return -self.to_expr()

    def sum(self, axis: int | None = None) -> "LinExpr":
        return self.to_expr().sum(axis)


@dataclass(frozen=True)
class LinExpr:
    """An array of linear expressions ``Σ_k coeffs[..., k] · x[ids[..., k]] + const``."""

    coeffs: np.ndarray
    ids: np.ndarray
    const: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.const.shape

    @property
    def n_terms(self) -> int:
        return int(self.ids.shape[-1])

    @staticmethod
    def constant(values: ArrayLike) -> "LinExpr":
        c = np.asarray(values, float)
        return LinExpr(np.zeros(c.shape + (0,)), np.zeros(c.shape + (0,), dtype=np.int64), c.copy())

    def __getitem__(self, key: Any) -> "LinExpr":
        if not isinstance(key, tuple):
            key = (key,)
        return LinExpr(self.coeffs[key + (slice(None),)], self.ids[key + (slice(None),)], self.const[key])

    def _broadcast(self, shape: tuple[int, ...]) -> "LinExpr":
        if self.shape == shape:
            return self
        k = self.n_terms
        return LinExpr(np.broadcast_to(self.coeffs, shape + (k,)), np.broadcast_to(self.ids, shape + (k,)),
                       np.broadcast_to(self.const, shape))

    def __add__(self, other: Any) -> "LinExpr":
        if isinstance(other, VarArray):
            other = other.to_expr()
        if isinstance(other, LinExpr):
            if other.n_terms == 0:  # a constant: no term arrays to copy
                return self + other.const
            if self.n_terms == 0:
                return other + self.const
            shape = np.broadcast_shapes(self.shape, other.shape)
            a, b = self._broadcast(shape), other._broadcast(shape)
            return LinExpr(np.concatenate([a.coeffs, b.coeffs], axis=-1),
                           np.concatenate([a.ids, b.ids], axis=-1), a.const + b.const)
        c = np.asarray(other, float)
        shape = np.broadcast_shapes(self.shape, c.shape)
        a = self._broadcast(shape)
        return LinExpr(a.coeffs, a.ids, a.const + c)

    __radd__ = __add__

    def __neg__(self) -> "LinExpr":
        return LinExpr(-self.coeffs, self.ids, -self.const)

    def __sub__(self, other: Any) -> "LinExpr":
        return self + (-other if isinstance(other, (LinExpr, VarArray)) else -np.asarray(other, float))

    def __rsub__(self, other: Any) -> "LinExpr":
        return (-self) + other

    def __mul__(self, other: ArrayLike) -> "LinExpr":
        if isinstance(other, (LinExpr, VarArray)):
            raise TypeError("a product of two linear expressions is not linear")
        c = np.asarray(other, float)
        shape = np.broadcast_shapes(self.shape, c.shape)
        a = self._broadcast(shape)
        return LinExpr(a.coeffs * c[..., None], a.ids, a.const * c)

    __rmul__ = __mul__

    def __truediv__(self, other: ArrayLike) -> "LinExpr":
        return self * (1.0 / np.asarray(other, float))

    def sum(self, axis: int | None = None) -> "LinExpr":
        """Sum over ``axis`` (all axes when None): the summed axis joins the term axis."""
        if axis is None:
            return LinExpr(self.coeffs.reshape(1, -1)[0], self.ids.reshape(1, -1)[0], np.asarray(self.const.sum()))
        axis = axis % len(self.shape)
        coeffs = np.moveaxis(self.coeffs, axis, -2)
        ids = np.moveaxis(self.ids, axis, -2)
        new_shape = coeffs.shape[:-2]
        return LinExpr(coeffs.reshape(new_shape + (-1,)), ids.reshape(new_shape + (-1,)),
                       self.const.sum(axis=axis))

    def compact(self) -> "LinExpr":
        """Drop term slots that are empty in every row (id −1 or coefficient 0)."""
        if self.n_terms == 0:  # nothing to drop (also avoids reshaping an empty array to (-1, 0))
            return self
        used = ((self.ids >= 0) & (self.coeffs != 0)).reshape(-1, self.n_terms).any(axis=0)
        if used.all():
            return self
        return LinExpr(self.coeffs[..., used], self.ids[..., used], self.const)


def as_expr(value: Any) -> LinExpr:
    """Turn a VarArray, LinExpr or numeric array into a LinExpr."""
    if isinstance(value, LinExpr):
        return value
    if isinstance(value, VarArray):
        return value.to_expr()
    return LinExpr.constant(value)


def total(terms: list[Any]) -> LinExpr:
    """The sum of several expressions (and constants), broadcast like ``+``.

    Equal to ``terms[0] + terms[1] + …`` but the term arrays are concatenated once, not
    once per addition (which copies the growing sum k − 1 times).
    """
    es = [as_expr(t) for t in terms]
    if not es:
        return LinExpr.constant(0.0)
    shape = np.broadcast_shapes(*(e.shape for e in es))
    es = [e._broadcast(shape) for e in es]
    const = np.zeros(shape)
    for e in es:
        const = const + e.const
    parts = [e for e in es if e.n_terms]
    if not parts:
        return LinExpr.constant(const)
    return LinExpr(np.concatenate([e.coeffs for e in parts], axis=-1),
                   np.concatenate([e.ids for e in parts], axis=-1), const)


def group_sum(expr: LinExpr | VarArray, groups: np.ndarray, n_groups: int) -> LinExpr:
    """Sum the rows of ``expr`` (first axis) that share a group: result[g] = Σ_{i: groups[i]=g} expr[i].

    Parameters
    ----------
    expr : LinExpr or VarArray
        Expression with items along axis 0 (for example EVs × time).
    groups : ndarray of int
        Group of each item, in ``[0, n_groups)``; −1 leaves an item out.
    n_groups : int
        Number of groups (rows of the result); empty groups give empty expressions.

    Notes
    -----
    Items are sorted by group and padded to the largest group size, so the result has
    ``max group size × terms`` term slots; the cost is linear in the number of items.
    """
    e = as_expr(expr)
    groups = np.asarray(groups, dtype=np.int64)
    rest = e.shape[1:]
    k = e.n_terms
    keep = np.flatnonzero(groups >= 0)
    g = groups[keep]
    order = np.argsort(g, kind="stable")
    g_sorted = g[order]
    items = keep[order]
    counts = np.bincount(g_sorted, minlength=n_groups)
    width = int(counts.max()) if counts.size and items.size else 0
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(items.size) - starts[g_sorted]
    coeffs = np.zeros((n_groups, width) + rest + (k,))
    ids = np.full((n_groups, width) + rest + (k,), -1, dtype=np.int64)
    const = np.zeros((n_groups, width) + rest)
    coeffs[g_sorted, slot] = e.coeffs[items]
    ids[g_sorted, slot] = e.ids[items]
    const[g_sorted, slot] = e.const[items]
    coeffs = np.moveaxis(coeffs, 1, -2).reshape((n_groups,) + rest + (width * k,))
    ids = np.moveaxis(ids, 1, -2).reshape((n_groups,) + rest + (width * k,))
    return LinExpr(coeffs, ids, const.sum(axis=1))


def stack(exprs: list[Any], axis: int = 0) -> LinExpr:
    """Stack expressions of one shape along a new axis (terms padded to the longest)."""
    es = [as_expr(e) for e in exprs]
    shape = np.broadcast_shapes(*(e.shape for e in es))
    es = [e._broadcast(shape) for e in es]
    k = max(e.n_terms for e in es)

    def pad(e: LinExpr) -> tuple[np.ndarray, np.ndarray]:
        extra = k - e.n_terms
        if not extra:
            return e.coeffs, e.ids
        return (np.concatenate([e.coeffs, np.zeros(shape + (extra,))], axis=-1),
                np.concatenate([e.ids, np.full(shape + (extra,), -1, dtype=np.int64)], axis=-1))

    padded = [pad(e) for e in es]
    axis = axis % (len(shape) + 1)
    return LinExpr(np.stack([c for c, _ in padded], axis=axis), np.stack([i for _, i in padded], axis=axis),
                   np.stack([e.const for e in es], axis=axis))


def scatter(values: VarArray | LinExpr, index: tuple[np.ndarray, ...], shape: tuple[int, ...],
            fill: Any = 0.0) -> LinExpr:
    """A dense expression array of ``shape`` holding ``values`` (1-D) at ``index`` and the
    constant ``fill`` (broadcastable to ``shape``) elsewhere.

    Lets a block keep variables only where they exist (for example the steps in which an
    EV is plugged in) while exposing the usual (EV × step) arrays to other blocks.
    """
    e = as_expr(values)
    k = e.n_terms
    coeffs = np.zeros(shape + (k,))
    ids = np.full(shape + (k,), -1, dtype=np.int64)
    const = np.broadcast_to(np.asarray(fill, float), shape).copy()
    coeffs[index] = e.coeffs
    ids[index] = e.ids
    const[index] = e.const
    return LinExpr(coeffs, ids, const)
