"""Vectorised linear expressions over arrays of LP variables.

A :class:`VarArray` is an n-dimensional array of variable ids; a :class:`LinExpr` is an
n-dimensional array of linear expressions stored densely as ``coeffs[..., k]`` and
``ids[..., k]`` (``k`` indexes the terms, id −1 marks an empty term) plus ``const[...]``.
Arithmetic broadcasts like NumPy, so one statement declares a whole constraint family::

    e = lp.add_variables("ev_e", (n_ev, T), lower=e_min, upper=e_max)
    lp.add_constraints("ev_energy_balance",
                       e[:, 1:] - e[:, :-1] - eta * dt * p_ch[:, 1:] + dt / eta * p_dis[:, 1:], "==", 0.0)

Building costs a few NumPy operations per family, independent of the number of rows.

Operand order does not matter: ``a * x``, ``x * a``, ``a + x``, ``a - x``, ``a @ x`` (``a``
a NumPy array or scalar, ``x`` a :class:`VarArray` or :class:`LinExpr`) give the same
expression array whichever side the NumPy operand is on — both classes implement
``__array_ufunc__``, so NumPy hands ``ndarray ⊙ x`` to them instead of building an object
array of per-element expressions. Every other ufunc (``np.exp(x)``, ``np.maximum(x, 0)``,
``a / x``, comparisons, ``np.add.reduce``, ``out=``) raises :class:`TypeError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import numpy as np

ArrayLike = Union[float, int, np.ndarray]

_UFUNC_OPS = {np.add: "add", np.subtract: "sub", np.multiply: "mul", np.true_divide: "div",
              np.divide: "div", np.matmul: "matmul", np.negative: "neg", np.positive: "pos"}
"""The ufuncs an expression array supports (NumPy operands on either side): the linear ones."""


def _is_expr(value: Any) -> bool:
    return isinstance(value, (LinExpr, VarArray))


def _array_ufunc(ufunc: Any, method: str, inputs: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``__array_ufunc__`` of :class:`VarArray` and :class:`LinExpr`: NumPy calls it for
    ``ndarray ⊙ expr`` (and ``np.add(a, x)`` etc.); linear operations are computed by the
    expression's own operators, whichever side the NumPy operand is on, the rest refused."""
    op = _UFUNC_OPS.get(ufunc)
    name = getattr(ufunc, "__name__", str(ufunc))
    if method != "__call__" or op is None or kwargs:
        what = f"np.{name}" + ("" if method == "__call__" else f".{method}")
        extra = f" with {', '.join(sorted(kwargs))}=" if kwargs and op is not None and method == "__call__" else ""
        raise TypeError(f"{what}{extra} is not supported on LP expressions (VarArray/LinExpr): only +, -, * and / "
                        f"by constants, unary -, and @ with a constant matrix are linear; use the operators, "
                        f"LinExpr.sum or optev.lp.expr.group_sum")
    if op == "neg":
        return -as_expr(inputs[0])
    if op == "pos":
        return as_expr(inputs[0])
    a, b = inputs
    if op == "add":
        return as_expr(a) + b if _is_expr(a) else as_expr(b) + a
    if op == "sub":
        return as_expr(a) - b if _is_expr(a) else (-as_expr(b)) + a
    if op == "mul":
        if _is_expr(a) and _is_expr(b):
            raise TypeError("a product of two linear expressions is not linear")
        return as_expr(a) * b if _is_expr(a) else as_expr(b) * a
    if op == "div":
        if _is_expr(b):
            raise TypeError("division by a linear expression is not linear")
        return as_expr(a) / b
    return _matmul(a, b)


def _matmul(a: Any, b: Any) -> "LinExpr":
    """``a @ b`` with exactly one side an expression and the other a constant array, with
    NumPy's rules for 1-D and 2-D operands (``A @ x``: ``Σ_j A[i, j] x[j, ...]``)."""
    if _is_expr(a) and _is_expr(b):
        raise TypeError("a product of two linear expressions is not linear")
    left = not _is_expr(a)
    e = as_expr(b if left else a)
    m = np.asarray(a if left else b, float)
    if m.ndim not in (1, 2) or len(e.shape) not in (1, 2):
        raise ValueError(f"@ needs 1-D or 2-D operands, got shapes {np.shape(a)} and {np.shape(b)}")
    n_m = m.shape[-1] if left else m.shape[0]
    n_e = e.shape[0] if left else e.shape[-1]
    if n_m != n_e:
        raise ValueError(f"@: shape mismatch, {np.shape(a) if left else e.shape} @ "
                         f"{e.shape if left else np.shape(b)} (contracted dimensions {n_m if left else n_e} "
                         f"and {n_e if left else n_m})")
    if left:  # (m,n) @ (n,) → (m,); (n,) @ (n,) → (); (m,n) @ (n,p) → (m,p); (n,) @ (n,p) → (p,)
        if len(e.shape) == 1:
            return (e * m).sum(axis=-1)
        if m.ndim == 1:
            return (e * m[:, None]).sum(axis=0)
        return (e[None, :, :] * m[:, :, None]).sum(axis=1)
    if m.ndim == 1:  # (…,n) @ (n,) → (…)
        return (e * m).sum(axis=-1)
    if len(e.shape) == 1:  # (n,) @ (n,p) → (p,)
        return (e[:, None] * m).sum(axis=0)
    return (e[:, :, None] * m[None, :, :]).sum(axis=1)  # (m,n) @ (n,p) → (m,p)


class _LinearOperators:
    """Operators shared by :class:`VarArray` and :class:`LinExpr`: ``@`` with a constant
    matrix, the refused ``constant / expression``, and NumPy operands on the left
    (``__array_ufunc__``, see the module docstring)."""

    def __rtruediv__(self, other: Any) -> "LinExpr":
        raise TypeError("division by a linear expression is not linear")

    def __matmul__(self, other: Any) -> "LinExpr":
        return _matmul(self, other)

    def __rmatmul__(self, other: Any) -> "LinExpr":
        return _matmul(other, self)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        return _array_ufunc(ufunc, method, inputs, kwargs)


@dataclass(frozen=True)
class VarArray(_LinearOperators):
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
        return self.to_expr() / other

    def __neg__(self) -> "LinExpr":
        return -self.to_expr()

    def __pos__(self) -> "LinExpr":
        return self.to_expr()

    def sum(self, axis: int | None = None) -> "LinExpr":
        return self.to_expr().sum(axis)


@dataclass(frozen=True)
class LinExpr(_LinearOperators):
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
        if isinstance(other, (LinExpr, VarArray)):
            raise TypeError("division by a linear expression is not linear")
        return self * (1.0 / np.asarray(other, float))

    def __pos__(self) -> "LinExpr":
        return self

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
    Sparse aggregation: only the stored terms (id ≥ 0) are moved, each to the next free
    slot of its result element, so a result element holds exactly the terms of its
    items, in item order (a stable order: the compiled rows are the same as summing the
    items one by one) and the result has as many term slots as its fullest element — the
    most *actual* terms any (group, …) element receives, not the largest group times the
    items' slot count. Empty slots of the items (an EV × step handle is empty where the EV
    is not plugged in) are dropped, so a nested sum (EV → station → bus) stays as wide as
    the fullest bus element instead of multiplying the widths of both levels. Cost: a few
    passes over the items' term arrays (cumulative counts, one scatter), linear in the
    number of items.

    Raises
    ------
    ValueError
        ``groups`` does not have one entry per item, or names a group ≥ ``n_groups``.
    """
    e = as_expr(expr)
    groups = np.asarray(groups, dtype=np.int64)
    if not e.shape or groups.shape != e.shape[:1]:
        raise ValueError(f"group_sum: groups has shape {groups.shape}, the expression {e.shape}: one group "
                         f"per item (row) of the expression is needed")
    if groups.size and int(groups.max()) >= n_groups:
        raise ValueError(f"group_sum: group {int(groups.max())} is out of range for {n_groups} groups")
    n = e.shape[0]
    rest = e.shape[1:]
    r_size = int(np.prod(rest, dtype=np.int64))
    k = e.n_terms
    keep = np.flatnonzero(groups >= 0)
    g = groups[keep]
    # constants: bincount adds the items of a group in item order (as a sum item by item)
    const: np.ndarray = np.zeros(n_groups * r_size)
    if keep.size and r_size and np.any(e.const):
        c = np.broadcast_to(e.const, e.shape).reshape(n, r_size)[keep]
        rows = (g[:, None] * r_size + np.arange(r_size)).ravel()
        const = np.bincount(rows, weights=c.ravel(), minlength=n_groups * r_size)
    const = const.reshape((n_groups,) + rest)
    if not keep.size or not k or not r_size:
        return LinExpr(np.zeros((n_groups,) + rest + (0,)), np.zeros((n_groups,) + rest + (0,), dtype=np.int64),
                       const)
    ids = np.broadcast_to(e.ids, e.shape + (k,)).reshape(n, r_size, k)
    coeffs = np.broadcast_to(e.coeffs, e.shape + (k,)).reshape(n, r_size, k)
    if keep.size == n and (n < 2 or bool((g[1:] >= g[:-1]).all())):  # items already by group: no copy
        g_sorted, items = g, keep
    else:
        order = np.argsort(g, kind="stable")
        g_sorted = g[order]
        items = keep[order]
        ids, coeffs = ids[items], coeffs[items]
    valid = ids >= 0
    small = np.int32 if valid.size < 2 ** 31 else np.int64  # term counts (positions below are int64)
    if k == 1:
        valid2 = valid[:, :, 0]
        count = valid2.astype(small)
    else:
        count = valid.sum(axis=2, dtype=small)
    # slot of an item's first term in its result element: terms of earlier items of its group
    before = np.cumsum(count, axis=0) - count                 # exclusive count over all earlier items
    head = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])  # first item of each group
    seg = np.repeat(head, np.diff(np.r_[head, items.size]))
    slot = before - before[seg]
    tail = np.r_[head[1:], items.size] - 1
    width = int((before[tail] + count[tail] - before[head]).max())
    out_co = np.zeros((n_groups, r_size, width))
    out_ids = np.full((n_groups, r_size, width), -1, dtype=np.int64)
    start = (g_sorted[:, None] * r_size + np.arange(r_size)) * width + slot  # flat position of each item's first term
    if k == 1:
        pos = start[valid2]
        out_ids.reshape(-1)[pos] = ids[:, :, 0][valid2]
        out_co.reshape(-1)[pos] = coeffs[:, :, 0][valid2]
    else:
        rank = np.cumsum(valid, axis=2, dtype=small) - 1      # rank of a term among its item's stored terms
        pos = (start[:, :, None] + rank)[valid]
        out_ids.reshape(-1)[pos] = ids[valid]
        out_co.reshape(-1)[pos] = coeffs[valid]
    shape = (n_groups,) + rest + (width,)
    return LinExpr(out_co.reshape(shape), out_ids.reshape(shape), const)


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
