"""The LP algebra of :mod:`optev.lp` against a dense NumPy reference (issue 11, deliverable 3).

Every expression array is turned into its dense form — an array of the expression's shape
with one row of coefficients per element over the program's columns, plus the constant —
and compared with the same operation carried out by plain NumPy on dense arrays
(:class:`Ref`, which implements the operators independently of ``optev.lp``: element by
element and column by column). Also checked: the value at a random point ``x``
(:meth:`LinearProgram.evaluate`), shapes and broadcasting, operand order (NumPy arrays on
the left), reductions and grouped sums (uneven, nested, without padding blow-up), the rows
and bounds that constraints compile to, and the errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from optev.lp import (
    INF,
    LinearProgram,
    LinExpr,
    VarArray,
    as_expr,
    group_sum,
    scatter,
    stack,
)
from optev.lp.expr import total

N_COLS = 3 * 4 + 4 + 3 + 3  # a_x (3, 4), a_y (4,), a_z (3, 1), a_w (3,)


def program() -> tuple[LinearProgram, dict[str, VarArray]]:
    lp = LinearProgram("algebra")
    v = {"X": lp.add_variables("a_x", (3, 4), -1.0, 2.0), "Y": lp.add_variables("a_y", 4),
         "Z": lp.add_variables("a_z", (3, 1), 0.0, 1.0), "W": lp.add_variables("a_w", 3)}
    assert lp.n_cols == N_COLS
    return lp, v


def dense(expr: Any, n: int = N_COLS) -> np.ndarray:
    """Shape + (n + 1,): coefficients of every column, then the constant (duplicates summed)."""
    e = as_expr(expr)
    k = e.n_terms
    out = np.zeros(e.shape + (n + 1,))
    flat = out.reshape(-1, n + 1)
    size = int(np.prod(e.shape, dtype=np.int64))
    ids = np.broadcast_to(e.ids, e.shape + (k,)).reshape(size, k)
    co = np.broadcast_to(e.coeffs, e.shape + (k,)).reshape(size, k)
    rows = np.repeat(np.arange(ids.shape[0]), k)
    ok = ids.ravel() >= 0
    np.add.at(flat, (rows[ok], ids.ravel()[ok]), co.ravel()[ok])
    flat[:, n] = np.broadcast_to(e.const, e.shape).ravel()
    return out


class Ref:
    """A dense expression array: ``data[..., j]`` coefficient of column j, ``data[..., n]`` constant."""

    __array_ufunc__ = None  # ndarray ⊙ Ref: NumPy defers to Ref's reflected operators

    def __init__(self, data: np.ndarray) -> None:
        self.data = np.asarray(data, float)

    @staticmethod
    def var(v: VarArray, n: int = N_COLS) -> Ref:
        data = np.zeros(v.shape + (n + 1,))
        for idx in np.ndindex(*v.shape):
            data[idx + (int(v.ids[idx]),)] = 1.0
        return Ref(data)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape[:-1]

    @property
    def n(self) -> int:
        return self.data.shape[-1] - 1

    def _const(self, c: Any) -> Ref:
        c = np.asarray(c, float)
        shape = np.broadcast_shapes(self.shape, c.shape)
        data = np.broadcast_to(self.data, shape + (self.n + 1,)).copy()
        data[..., self.n] += c
        return Ref(data)

    def __add__(self, other: Any) -> Ref:
        if isinstance(other, Ref):
            shape = np.broadcast_shapes(self.shape, other.shape)
            return Ref(np.broadcast_to(self.data, shape + (self.n + 1,))
                       + np.broadcast_to(other.data, shape + (self.n + 1,)))
        return self._const(other)

    __radd__ = __add__

    def __neg__(self) -> Ref:
        return Ref(-self.data)

    def __pos__(self) -> Ref:
        return self

    def __sub__(self, other: Any) -> Ref:
        return self + (-other if isinstance(other, Ref) else -np.asarray(other, float))

    def __rsub__(self, other: Any) -> Ref:
        return (-self) + other

    def __mul__(self, other: Any) -> Ref:
        assert not isinstance(other, Ref)
        c = np.asarray(other, float)
        shape = np.broadcast_shapes(self.shape, c.shape)
        return Ref(np.broadcast_to(self.data, shape + (self.n + 1,)) * np.broadcast_to(c, shape)[..., None])

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Ref:
        return self * (1.0 / np.asarray(other, float))

    def _columns(self, f: Callable[[np.ndarray], np.ndarray]) -> Ref:
        return Ref(np.stack([f(self.data[..., j]) for j in range(self.n + 1)], axis=-1))

    def __getitem__(self, key: Any) -> Ref:
        return self._columns(lambda a: a[key])

    def sum(self, axis: int | None = None) -> Ref:
        return self._columns(lambda a: np.sum(a, axis=axis))

    def __matmul__(self, m: Any) -> Ref:
        return self._columns(lambda a: a @ np.asarray(m, float))

    def __rmatmul__(self, m: Any) -> Ref:
        return self._columns(lambda a: np.asarray(m, float) @ a)


def ref_group_sum(r: Ref, groups: np.ndarray, n_groups: int) -> Ref:
    out = np.zeros((n_groups,) + r.data.shape[1:])
    keep = groups >= 0
    np.add.at(out, groups[keep], r.data[keep])
    return Ref(out)


def ref_stack(refs: list[Any], axis: int = 0) -> Ref:
    rs = [r if isinstance(r, Ref) else Ref(np.zeros(np.shape(r) + (N_COLS + 1,))) + r for r in refs]
    shape = np.broadcast_shapes(*(r.shape for r in rs))
    datas = [np.broadcast_to(r.data, shape + (N_COLS + 1,)) for r in rs]
    return Ref(np.stack(datas, axis=axis % (len(shape) + 1)))


def ref_scatter(r: Ref, index: tuple[np.ndarray, ...], shape: tuple[int, ...], fill: Any) -> Ref:
    data = np.zeros(shape + (N_COLS + 1,))
    data[..., N_COLS] = np.broadcast_to(np.asarray(fill, float), shape)
    data[index] = r.data
    return Ref(data)


def constants(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    nz = lambda *s: rng.choice([-1.0, 1.0], size=s) * rng.uniform(0.5, 3.0, size=s)
    return {"A": nz(3, 4), "b": nz(4), "c": nz(3, 1), "d": nz(3), "M": rng.normal(size=(5, 3)),
            "B": rng.normal(size=(4, 2)), "s": float(rng.uniform(0.5, 2.0)), "mask": rng.random((3, 4)) < 0.5}


# each case is applied twice: to the optev expressions and to the dense references
CASES: dict[str, Callable[..., Any]] = {
    "var + var (broadcast)": lambda X, Y, Z, W, k: X + Y,
    "var + var (reversed)": lambda X, Y, Z, W, k: Y + X,
    "var - var (column)": lambda X, Y, Z, W, k: X - Z,
    "column - var": lambda X, Y, Z, W, k: Z - X,
    "var + array": lambda X, Y, Z, W, k: X + k["A"],
    "array + var": lambda X, Y, Z, W, k: k["A"] + X,
    "var - array": lambda X, Y, Z, W, k: X - k["A"],
    "array - var": lambda X, Y, Z, W, k: k["A"] - X,
    "var * array": lambda X, Y, Z, W, k: X * k["A"],
    "array * var": lambda X, Y, Z, W, k: k["A"] * X,
    "row array * column var": lambda X, Y, Z, W, k: k["b"] * Z,
    "column array * row var": lambda X, Y, Z, W, k: k["c"] * Y,
    "scalar * var": lambda X, Y, Z, W, k: k["s"] * Y,
    "numpy scalar * var": lambda X, Y, Z, W, k: np.float64(k["s"]) * Y,
    "var / array": lambda X, Y, Z, W, k: X / k["A"],
    "expr / scalar": lambda X, Y, Z, W, k: (X - Y) / k["s"],
    "unary minus": lambda X, Y, Z, W, k: -X,
    "unary plus": lambda X, Y, Z, W, k: +(X * 2.0),
    "constant + var": lambda X, Y, Z, W, k: 1.5 + X,
    "constant - expr": lambda X, Y, Z, W, k: 1.5 - (X + 0.25),
    "array * expr": lambda X, Y, Z, W, k: k["A"] * (X - Y + 1.0),
    "combination": lambda X, Y, Z, W, k: (X * k["A"] + Y * k["b"] - Z) * k["c"] - 2.0,
    "same variable twice": lambda X, Y, Z, W, k: X + X * k["A"] - Y,
    "index row": lambda X, Y, Z, W, k: (X + Y)[1],
    "slice": lambda X, Y, Z, W, k: (X * k["A"])[:, 1:],
    "fancy index": lambda X, Y, Z, W, k: (X - Z)[[0, 2, 2]],
    "ellipsis": lambda X, Y, Z, W, k: (X + 1.0)[..., 0],
    "new axis": lambda X, Y, Z, W, k: (Y * 2.0)[None, :],
    "boolean mask": lambda X, Y, Z, W, k: (X + Y)[k["mask"]],
    "element": lambda X, Y, Z, W, k: (X + Y)[2, 3],
    "sum all": lambda X, Y, Z, W, k: (X * k["A"] + 1.0).sum(),
    "sum axis 0": lambda X, Y, Z, W, k: (X * k["A"] - Z).sum(0),
    "sum axis 1": lambda X, Y, Z, W, k: (X + Y).sum(1),
    "sum axis -1": lambda X, Y, Z, W, k: (X - 0.5).sum(-1),
    "var sum": lambda X, Y, Z, W, k: X.sum(0) + Y,
    "matrix @ var": lambda X, Y, Z, W, k: k["M"] @ W,
    "matrix @ var 2-D": lambda X, Y, Z, W, k: k["M"] @ (X + 1.0),
    "vector @ var 2-D": lambda X, Y, Z, W, k: k["d"] @ X,
    "var @ vector": lambda X, Y, Z, W, k: X @ k["b"],
    "var @ matrix": lambda X, Y, Z, W, k: (X - Y) @ k["B"],
    "vector var @ matrix": lambda X, Y, Z, W, k: Y @ k["B"],
    "vector @ vector var": lambda X, Y, Z, W, k: k["b"] @ (Y + 2.0),
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_operators_match_the_dense_reference(case: str, seed: int) -> None:
    lp, v = program()
    k = constants(seed)
    got = CASES[case](v["X"], v["Y"], v["Z"], v["W"], k)
    want = CASES[case](*(Ref.var(v[n]) for n in "XYZW"), k)
    assert isinstance(got, (LinExpr, VarArray)), f"{case}: {type(got).__name__}, not an expression"
    assert got.shape == want.shape
    np.testing.assert_allclose(dense(got), want.data, rtol=1e-12, atol=1e-12, err_msg=case)
    x = np.random.default_rng(seed + 100).normal(size=N_COLS)
    value = want.data[..., :N_COLS] @ x + want.data[..., N_COLS]
    np.testing.assert_allclose(lp.evaluate(got, x), value, rtol=1e-12, atol=1e-12, err_msg=case)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stack_scatter_total_group_sum_match_the_reference(seed: int) -> None:
    lp, v = program()
    k = constants(seed)
    X, Y, Z, W = v["X"], v["Y"], v["Z"], v["W"]
    RX, RY, RZ, RW = (Ref.var(v[n]) for n in "XYZW")
    pairs = [
        (stack([X[0], Y * 2.0, k["b"]]), ref_stack([RX[0], RY * 2.0, k["b"]])),
        (stack([X, X * k["A"] + Z], axis=-1), ref_stack([RX, RX * k["A"] + RZ], axis=-1)),
        (total([X, Y, k["A"], Z * 3.0, 1.0]), RX + RY + k["A"] + RZ * 3.0 + 1.0),
        (total([]), Ref(np.zeros(N_COLS + 1))),
    ]
    rows, cols = np.array([0, 1, 2, 2]), np.array([0, 3, 1, 2])
    pairs.append((scatter(Y - 1.0, (rows, cols), (3, 4), fill=k["c"]), ref_scatter(RY - 1.0, (rows, cols), (3, 4),
                                                                                   k["c"])))
    g = np.array([2, -1, 0])
    pairs.append((group_sum(X * k["A"] + 0.5, g, 4), ref_group_sum(RX * k["A"] + 0.5, g, 4)))
    pairs.append((group_sum(W, g, 3), ref_group_sum(RW, g, 3)))
    for got, want in pairs:
        assert got.shape == want.shape
        np.testing.assert_allclose(dense(got), want.data, rtol=1e-12, atol=1e-12)


# -- operand order (the trap of the issue) -----------------------------------------------------


def test_ndarray_on_the_left_gives_the_same_expression_as_on_the_right() -> None:
    """``ndarray * VarArray`` used to be an object array of per-element expressions; now
    NumPy hands the operation to the expression (``__array_ufunc__``)."""
    _, v = program()
    X, Y = v["X"], v["Y"]
    a = np.arange(1.0, 13.0).reshape(3, 4)
    for left, right in [(a * X, X * a), (a + X, X + a), (a * (X + Y), (X + Y) * a), (np.float64(3.0) * X, X * 3.0),
                        (a[:, :1] * Y, Y * a[:, :1]), (np.ones((2, 1, 1)) * X, X * np.ones((2, 1, 1))),
                        (a - X, -(X - a)), (np.add(a, X), X + a), (np.multiply(a, X), X * a),
                        (np.subtract(X, a), X - a), (np.divide(X, a), X / a), (np.negative(X), -X)]:
        assert isinstance(left, LinExpr), type(left)
        assert left.shape == right.shape
        np.testing.assert_array_equal(dense(left), dense(right))
    assert (np.ones((2, 1, 1)) * X).shape == (2, 3, 4)
    m = np.ones((2, 3))
    assert isinstance(m @ v["W"], LinExpr) and (m @ v["W"]).shape == (2,)
    np.testing.assert_array_equal(dense(m @ v["W"]), dense(np.matmul(m, v["W"])))


@pytest.mark.parametrize("call", [
    lambda x, a: np.exp(x),
    lambda x, a: np.maximum(x, 0.0),
    lambda x, a: np.abs(x),
    lambda x, a: a / x,
    lambda x, a: 2.0 / x,
    lambda x, a: a < x,
    lambda x, a: np.add.reduce(x),
    lambda x, a: np.add.accumulate(x),
    lambda x, a: np.add(a, x, out=np.empty((3, 4))),
    lambda x, a: x * x,
    lambda x, a: x / (x + 1.0),
    lambda x, a: (x + 1.0) @ (x * 2.0)[0],
    lambda x, a: np.multiply(x, x + 1.0),
], ids=["exp", "maximum", "abs", "array/expr", "scalar/expr", "comparison", "reduce", "accumulate", "out=",
        "expr*expr", "expr/expr", "expr@expr", "np.multiply(expr, expr)"])
def test_unsupported_operations_raise_type_error(call: Callable[..., Any]) -> None:
    _, v = program()
    with pytest.raises(TypeError, match="not (supported|linear)"):
        call(v["X"], np.ones((3, 4)))


def test_unsupported_ufunc_message_names_the_ufunc_and_the_alternatives() -> None:
    _, v = program()
    with pytest.raises(TypeError, match=r"np\.exp is not supported on LP expressions.*group_sum"):
        np.exp(v["X"] + 1.0)
    with pytest.raises(TypeError, match=r"np\.add\.reduce"):
        np.add.reduce(v["X"])


@pytest.mark.parametrize("call", [
    lambda v: v["X"] + np.ones(5),
    lambda v: np.ones(5) + v["X"],
    lambda v: np.ones(5) * v["X"],
    lambda v: v["X"] + v["W"],
    lambda v: v["X"] - v["W"] * 2.0,
    lambda v: np.ones((5, 4)) @ v["W"],
    lambda v: v["W"] @ np.ones(4),
    lambda v: np.ones((2, 2, 3)) @ v["W"],
    lambda v: stack([v["X"], v["W"]]),
    lambda v: group_sum(v["X"], np.array([0, 1]), 2),
    lambda v: group_sum(v["X"], np.array([0, 1, 2]), 2),
    lambda v: scatter(v["Y"], (np.array([0, 1]),), (3,)),
], ids=["expr+long", "long+expr", "long*expr", "(3,4)+(3,)", "(3,4)-(3,)", "matmul inner", "matmul right",
        "matmul 3-D", "stack", "group_sum length", "group_sum range", "scatter length"])
def test_shape_mismatch_raises_value_error(call: Callable[..., Any]) -> None:
    _, v = program()
    with pytest.raises(ValueError):
        call(v)


# -- grouped sums -------------------------------------------------------------------------------


def ev_like(n: int, T: int, seed: int) -> tuple[LinearProgram, LinExpr, np.ndarray]:
    """A dense (item × step) expression with variables only where ``plugged`` (id −1 elsewhere),
    like the EV block's handles."""
    rng = np.random.default_rng(seed)
    plugged = rng.random((n, T)) < 0.6
    lp = LinearProgram("groups")
    e_idx, t_idx = np.nonzero(plugged)
    p = lp.add_variables("ev_p", e_idx.size, 0.0, 1.0)
    return lp, scatter(p * rng.uniform(0.5, 2.0, e_idx.size), (e_idx, t_idx), (n, T)), plugged


def stored_per_element(e: LinExpr) -> np.ndarray:
    return (np.broadcast_to(e.ids, e.shape + (e.n_terms,)) >= 0).sum(axis=-1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_group_sum_uneven_groups_matches_reference_and_is_not_padded(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, T, G = 40, 6, 7
    lp, p, plugged = ev_like(n, T, seed)
    groups = np.repeat(np.arange(G), [1, 20, 0, 3, 9, 2, 5])  # uneven, group 2 empty
    groups[rng.choice(n, 3, replace=False)] = -1                # some items left out
    got = group_sum(p + 0.25, groups, G)
    want = np.zeros((G, T, lp.n_cols + 1))
    keep = groups >= 0
    np.add.at(want, groups[keep], dense(p + 0.25, lp.n_cols)[keep])
    np.testing.assert_allclose(dense(got, lp.n_cols), want, rtol=1e-12, atol=1e-12)
    # every result element holds exactly its items' stored terms, and the slot count is the
    # most any element receives (not the largest group's size)
    real = np.zeros((G, T), np.int64)
    np.add.at(real, groups[keep], plugged[keep].astype(np.int64))
    np.testing.assert_array_equal(stored_per_element(got), real)
    assert got.n_terms == real.max()
    assert got.n_terms < np.bincount(groups[keep]).max()  # the old layout: largest group × 1 slot
    # terms of an element come in item order (compiled rows sum in the same order as before)
    for gi in range(G):
        for t in range(T):
            items = np.flatnonzero((groups == gi) & plugged[:, t])
            np.testing.assert_array_equal(got.ids[gi, t][:items.size], p.ids[items, t, 0])


def test_group_sum_of_full_even_groups_stores_exactly_the_input_terms() -> None:
    lp = LinearProgram("even")
    x = lp.add_variables("a_x", (12, 5))
    e = x * 2.0 - x[::-1] + 1.0  # two terms per element
    got = group_sum(e, np.arange(12) % 4, 4)
    assert got.ids.size == e.ids.size and got.n_terms == 3 * 2
    assert (got.ids >= 0).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nested_group_sums_do_not_multiply_the_padding(seed: int) -> None:
    """EV → station → bus: the bus-level sum is as wide as the fullest (bus, step) element,
    the same as summing EVs to buses directly — not max stations per bus × max EVs per station."""
    rng = np.random.default_rng(seed)
    n, T, n_st, n_bus = 60, 8, 9, 4
    lp, p, plugged = ev_like(n, T, seed)
    station = np.sort(rng.choice(n_st, n, p=np.array([12, 1, 1, 2, 1, 1, 1, 1, 1]) / 21.0))
    bus_of_station = np.array([0, 1, 1, 1, 1, 2, 2, 3, 3])
    st = group_sum(p, station, n_st)
    nested = group_sum(-st, bus_of_station, n_bus)
    direct = group_sum(-p, bus_of_station[station], n_bus)
    np.testing.assert_array_equal(dense(nested, lp.n_cols), dense(direct, lp.n_cols))
    real = np.zeros((n_bus, T), np.int64)
    np.add.at(real, bus_of_station[station], plugged.astype(np.int64))
    np.testing.assert_array_equal(stored_per_element(nested), real)
    assert nested.n_terms == direct.n_terms == real.max()
    padded = np.bincount(bus_of_station).max() * np.bincount(station, minlength=n_st).max()
    assert nested.ids.size == n_bus * T * real.max() < n_bus * T * padded


def test_group_sum_edge_cases() -> None:
    lp = LinearProgram("edges")
    x = lp.add_variables("a_x", (3, 2))
    none = group_sum(x, np.full(3, -1), 2)
    assert none.shape == (2, 2) and none.n_terms == 0 and not none.const.any()
    empty = group_sum(LinExpr.constant(np.ones((3, 2))), np.array([0, 0, 1]), 3)
    assert empty.n_terms == 0
    np.testing.assert_array_equal(empty.const, [[2, 2], [1, 1], [0, 0]])
    zero_groups = group_sum(x, np.full(3, -1), 0)
    assert zero_groups.shape == (0, 2)
    one_d = group_sum(x[:, 0] * np.array([1.0, 2.0, 3.0]), np.array([1, 1, 1]), 2)
    np.testing.assert_array_equal(dense(one_d, lp.n_cols)[1, :6], [1, 0, 2, 0, 3, 0])
    assert one_d.n_terms == 3


def test_group_sum_compiles_like_the_explicit_sum() -> None:
    """The compiled matrix of a grouped sum is the one of the same sum written out term by
    term: same entries in the same order (bit-identical after summing duplicates)."""
    lp_a, p, _ = ev_like(10, 4, 5)
    lp_b, q, _ = ev_like(10, 4, 5)
    groups = np.array([1, 0, 1, 1, 2, 0, 1, 2, 2, 1])
    lp_a.add_constraints("s_cap", group_sum(p * 3.0 - p * 0.5, groups, 3), "<=", 4.0)
    explicit = stack([total([q[i] * 3.0 - q[i] * 0.5 for i in np.flatnonzero(groups == g)]) for g in range(3)])
    lp_b.add_constraints("s_cap", explicit, "<=", 4.0)
    a, b = lp_a.compile(), lp_b.compile()
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(a.matrix, name), getattr(b.matrix, name))
    np.testing.assert_array_equal(a.row_upper, b.row_upper)


# -- constraints and objective --------------------------------------------------------------------


@pytest.mark.parametrize("sense", ["<=", ">=", "=="])
def test_constraints_compile_to_the_right_rows_and_bounds(sense: str) -> None:
    lp, v = program()
    k = constants(7)
    X, Y, Z = v["X"], v["Y"], v["Z"]
    lp.add_constraints("a_first", Y * 2.0, ">=", 1.0)  # 4 rows before the family under test
    lhs = X * k["A"] + Y - 3.0 + X[0] * 0.0
    rhs = k["c"] * Z + k["b"]
    lp.add_constraints("a_test", lhs, sense, rhs)
    arrays = lp.compile()
    assert arrays.n_rows == 4 + 12
    ref = dense(lhs) - dense(rhs)
    rows = slice(4, 16)
    np.testing.assert_allclose(arrays.matrix.toarray()[rows], ref[..., :N_COLS].reshape(12, N_COLS), rtol=1e-12)
    b = -ref[..., N_COLS].ravel()
    lo = b if sense in (">=", "==") else np.full(12, -INF)
    hi = b if sense in ("<=", "==") else np.full(12, INF)
    np.testing.assert_allclose(arrays.row_lower[rows], lo, rtol=1e-12)
    np.testing.assert_allclose(arrays.row_upper[rows], hi, rtol=1e-12)
    assert lp.row_name(4 + 6) == "a_test[1,2]"
    assert lp.constraints["a_test"].block == "a"
    np.testing.assert_array_equal(arrays.matrix.toarray()[:4], dense(Y * 2.0)[..., :N_COLS])
    # an explicit zero coefficient is not stored; the column bounds are the families'
    assert arrays.matrix.nnz == 4 + np.count_nonzero(ref[..., :N_COLS])
    assert (arrays.col_lower[:12] == -1.0).all() and (arrays.col_upper[:12] == 2.0).all()


def test_constant_rhs_expression_and_ranges() -> None:
    lp, v = program()
    X, W = v["X"], v["W"]
    lp.add_constraints("a_eq", np.full((3, 4), 2.0), "==", X - W[:, None] + 1.0)  # constant on the left
    lp.add_range("a_range", X.sum(1) + 1.0, np.array([0.0, -1.0, -INF]), 5.0)
    arrays = lp.compile()
    np.testing.assert_allclose(arrays.row_lower[:12], np.full(12, -1.0))  # 2 − (X − W + 1) = 0
    np.testing.assert_allclose(arrays.matrix.toarray()[:12], -(dense(X - W[:, None])[..., :N_COLS].reshape(12, -1)))
    np.testing.assert_allclose(arrays.row_lower[12:], [-1.0, -2.0, -INF])
    np.testing.assert_allclose(arrays.row_upper[12:], [4.0, 4.0, 4.0])
    with pytest.raises(ValueError, match="sense"):
        lp.add_constraints("a_bad", X, "<", 0.0)
    with pytest.raises(ValueError, match="twice"):
        lp.add_constraints("a_eq", X, "<=", 0.0)


def test_duplicate_terms_are_summed_and_cancelling_terms_dropped() -> None:
    lp, v = program()
    X = v["X"]
    lp.add_constraints("a_dup", X[0] + X[0] * 2.0 + X[1] - X[1], "<=", 1.0)
    m = lp.compile().matrix.toarray()
    np.testing.assert_array_equal(m[:, :4], 3.0 * np.eye(4))
    assert not m[:, 4:].any()


def test_objective_arrays_and_in_place_update_keep_the_matrix() -> None:
    lp, v = program()
    k = constants(3)
    X, Y = v["X"], v["Y"]
    lp.add_constraints("a_row", X.sum(0) - Y, "<=", 1.0)
    lp.add_objective("a_cost", X * k["A"] + 0.5, 2.0)
    lp.add_objective("a_lin", k["b"] @ Y - 1.0)
    arrays = lp.compile()
    want = 2.0 * dense(X * k["A"] + 0.5).reshape(-1, N_COLS + 1).sum(0) + dense(k["b"] @ Y - 1.0)
    np.testing.assert_allclose(arrays.cost, want[:N_COLS], rtol=1e-12)
    assert arrays.offset == pytest.approx(want[N_COLS], rel=1e-12)
    x = np.random.default_rng(0).normal(size=N_COLS)
    assert sum(lp.objective_values(x).values()) == pytest.approx(arrays.cost @ x + arrays.offset, rel=1e-12)
    # warm-start path: bounds changed in place, the compiled matrix object is reused
    lp.constraints["a_row"].upper[:] = 7.0
    lp.variables["a_y"].lower[:] = -3.0
    again = lp.compile_data(arrays)
    assert again.matrix is arrays.matrix
    np.testing.assert_array_equal(again.row_upper, np.full(4, 7.0))
    assert (again.col_lower[12:16] == -3.0).all()


def test_values_and_evaluate_read_a_solution() -> None:
    lp, v = program()
    x = np.arange(N_COLS, dtype=float)
    np.testing.assert_array_equal(lp.values("a_x", x), x[:12].reshape(3, 4))
    np.testing.assert_array_equal(lp.evaluate(v["Z"][:, 0] + 1.0, x), x[16:19] + 1.0)
    assert lp.column_name(13) == "a_y[1]"
