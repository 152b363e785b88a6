"""MATPOWER case files (``.m``) → :class:`~optev.data.Feeder`.

MATPOWER's case files are MATLAB functions. The data matrices (``mpc.bus``,
``mpc.branch``, ``mpc.gen``, ``mpc.gencost``) are read statically; MATPOWER's
distribution cases (``case33bw``, ``case69``, ``case141``, …) give branch impedances
in Ω and loads in kW (or kVA) and convert them with statements at the end of the file::

    Vbase = mpc.bus(1, BASE_KV) * 1e3;
    Sbase = mpc.baseMVA * 1e6;
    mpc.branch(:, [BR_R BR_X]) = mpc.branch(:, [BR_R BR_X]) / (Vbase^2 / Sbase);
    mpc.bus(:, [PD, QD]) = mpc.bus(:, [PD, QD]) / 1e3;
    pf = 0.85;
    mpc.bus(:, QD) = mpc.bus(:, PD) * sin(acos(pf));

Those statements are executed by a small, closed interpreter for the subset of MATLAB
they use: assignments to variables or to ``mpc.M(rows, cols)``, the column-name
constants of ``idx_bus``/``idx_brch``/``idx_gen``/``idx_cost``, numbers, ``+ - * / ^``
(and their element-wise forms), parentheses, ``[...]`` lists, ``:`` and the functions
``sin cos tan asin acos atan sqrt abs exp log log10``. A statement outside that subset
(a loop, a call to another function, …) is refused with :class:`~optev.errors.FormatError`
naming its line: a case is never silently misread.

Every error of the interpreter — a division by zero, an overflow, ``sqrt`` of a negative
number, a shape mismatch, an expression nested deeper than :data:`MAX_NESTING` levels — is
a :class:`~optev.errors.FormatError` naming the file and line. The data are then checked
column by column (:data:`_COLUMN_RULES`), naming the line of the offending matrix row:
``baseMVA`` a finite number above 0; the data fields numeric matrices (not cell arrays or
strings) of MATPOWER's width; bus, branch-end and generator-bus numbers positive whole
numbers (2.5 is an error, never truncated), unique, and branch ends and generators on
existing buses; bus types 1–4; loads, shunts, angles, reactances finite (a NaN load is an
error, never 0 kW); base voltages, branch resistances, ratings and taps finite and at least
0; voltage limits and set points finite and above 0; branch status 0 or 1; generator
limits not NaN (``Inf`` means no limit); cost rows of model 1 or 2 with NCOST finite
coefficients. Loads and generation may be negative (MATPOWER allows them). The converted
tables then pass the optev schemas' own rules (:mod:`optev.data.schema`).

Mapping to optev (MATPOWER's per-unit values are on ``baseMVA`` and each bus's ``baseKV``):

=========================  ==============================================================
MATPOWER                   optev
=========================  ==============================================================
bus BUS_I                  buses.bus_id (the number as written, as a string)
bus PD, QD (MW, MVAr)      buses.p_load_kw, q_load_kvar (× 1000)
bus GS, BS (MW, MVAr @1pu) buses.g_shunt_kw, b_shunt_kvar (× 1000)
bus BASE_KV, VMIN, VMAX    buses.base_kv, v_min_pu, v_max_pu
bus type 3 (REF)           a substations row; vm_pu from the in-service generator's VG
bus type 4 (isolated)      dropped with its branches
branch, TAP = 0 and same   lines: r_ohm = r_pu · Z_base, x_ohm likewise, b_us = b_pu / Z_base,
baseKV at both ends        ampacity_a = RATE_A / (√3 · baseKV) (inf when RATE_A = 0)
other branches             transformers: r_pu, x_pu on the system base, tap (1 when 0),
                           sn_kva = RATE_A · 1000
BR_STATUS                  in_service
gen at a REF bus           substations: vm_pu = VG, import limit PMAX, export limit −PMIN
                           (none when PMIN ≥ 0), import price = gencost linear term / 1000
other gens                 generators (PMIN/PMAX, QMIN/QMAX in kW/kvar, polynomial cost)
=========================  ==============================================================
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from optev.data.feeder import Feeder
from optev.data.validate import validate_feeder
from optev.errors import DataError, FormatError

# MATPOWER column-name constants (1-based), as defined by idx_bus, idx_brch, idx_gen, idx_cost.
_IDX: dict[str, dict[str, int]] = {
    "idx_bus": {n: i + 1 for i, n in enumerate(
        "BUS_I BUS_TYPE PD QD GS BS BUS_AREA VM VA BASE_KV ZONE VMAX VMIN LAM_P LAM_Q MU_VMAX "
        "MU_VMIN".split())} | {"PQ": 1, "PV": 2, "REF": 3, "NONE": 4},
    "idx_brch": {n: i + 1 for i, n in enumerate(
        "F_BUS T_BUS BR_R BR_X BR_B RATE_A RATE_B RATE_C TAP SHIFT BR_STATUS PF QF PT QT MU_SF MU_ST "
        "ANGMIN ANGMAX MU_ANGMIN MU_ANGMAX".split())},
    "idx_gen": {n: i + 1 for i, n in enumerate(
        "GEN_BUS PG QG QMAX QMIN VG MBASE GEN_STATUS PMAX PMIN PC1 PC2 QC1MIN QC1MAX QC2MIN QC2MAX "
        "RAMP_AGC RAMP_10 RAMP_30 RAMP_Q APF MU_PMAX MU_PMIN MU_QMAX MU_QMIN".split())},
    "idx_cost": {n: i + 1 for i, n in enumerate("MODEL STARTUP SHUTDOWN NCOST COST".split())}
    | {"PW_LINEAR": 1, "POLYNOMIAL": 2},
}

_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
    "atan": np.arctan, "sqrt": np.sqrt, "abs": np.abs, "exp": np.exp, "log": np.log, "log10": np.log10,
}

_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_TOKEN = re.compile(
    rf"\s*(?:(?P<num>{_NUMBER})|(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)"
    r"|(?P<op>\.\*|\./|\.\^|[-+*/^()\[\],:;=])|(?P<str>'[^']*'))")


@dataclass
class _Statement:
    text: str
    line: int


def _split_statements(source: str) -> list[_Statement]:
    """Split MATLAB source into statements: strip comments and ``...`` continuations,
    end statements at ``;``, ``,`` or newline outside brackets; keep line numbers."""
    out: list[_Statement] = []
    buf: list[str] = []
    depth = 0
    line = 1
    start_line = 1
    i, n = 0, len(source)
    in_str = False
    while i < n:
        c = source[i]
        if in_str:
            buf.append(c)
            if c == "'":
                in_str = False
            elif c == "\n":
                raise FormatError(f"line {line}: unterminated string")
            i += 1
            continue
        if c == "%" or source.startswith("...", i):
            j = source.find("\n", i)
            j = n if j < 0 else j
            if source.startswith("...", i):
                # continuation: the newline does not end the statement (\v keeps count of the line)
                i = j + 1
                line += 1
                buf.append("\v")
                continue
            i = j
            continue
        if c == "'" and (not buf or not (buf[-1].isalnum() or buf[-1] in ")]_.'")):
            in_str = True
            buf.append(c)
            i += 1
            continue
        if c in "[{(":
            depth += 1
        elif c in "]})":
            depth -= 1
        if depth <= 0 and c in ";,\n":
            text = "".join(buf).strip()
            if text:
                out.append(_Statement(text, start_line))
            buf = []
            if c == "\n":
                line += 1
            start_line = line
            i += 1
            continue
        if c == "\n":
            line += 1
            buf.append("\n" if depth and _in_square(buf) else " ")  # a row break, kept to number rows
            i += 1
            continue
        if not buf or not "".join(buf).strip():
            start_line = line
        buf.append(c)
        i += 1
    text = "".join(buf).strip()
    if text:
        out.append(_Statement(text, start_line))
    if depth:
        raise FormatError(f"line {start_line}: unbalanced brackets")
    return out


def _in_square(buf: list[str]) -> bool:
    """True when the innermost open bracket in ``buf`` is ``[`` or ``{`` (a newline is a row break)."""
    depth = 0
    for c in reversed(buf):
        if c in "])}":
            depth += 1
        elif c in "[({":
            if depth == 0:
                return c in "[{"
            depth -= 1
    return False


def _matrix_rows(body: str, line: int) -> list[tuple[str, int]]:
    """The rows of a ``[...]`` literal (ended by ``;`` or a line break) with the line each starts on."""
    rows: list[tuple[str, int]] = []
    buf: list[str] = []
    start: int | None = None
    for ch in body + ";":
        if ch in ";\n":
            if start is not None:
                rows.append(("".join(buf), start))
            buf, start = [], None
            line += ch == "\n"
            continue
        if ch == "\v":  # a continuation: same row, next line
            line += 1
            ch = " "
        if start is None and not ch.isspace():
            start = line
        buf.append(ch)
    return rows


def _parse_matrix(body: str, line: int) -> tuple[np.ndarray, np.ndarray]:
    """A numeric matrix literal and the file line of each of its rows."""
    data, lines = [], []
    for text, row_line in _matrix_rows(body, line):
        items = [t for t in re.split(r"[\s,]+", text) if t]
        try:
            data.append([_num(t) for t in items])
        except ValueError:
            bad = next(t for t in items if not _is_num(t))
            raise FormatError(f"line {row_line}: {bad!r} is not a number (a data matrix holds numbers only)") from None
        lines.append(row_line)
    if not data:
        return np.zeros((0, 0)), np.zeros(0, dtype=np.int64)
    width = max(len(r) for r in data)
    short = next((k for k, r in enumerate(data) if len(r) != width), None)
    if short is not None:
        raise FormatError(f"line {lines[short]}: matrix rows have different lengths")
    return np.array(data, dtype=float), np.array(lines, dtype=np.int64)


def _is_num(t: str) -> bool:
    try:
        _num(t)
    except ValueError:
        return False
    return True


def _num(t: str) -> float:
    low = t.lower()
    if low in ("inf", "+inf"):
        return math.inf
    if low == "-inf":
        return -math.inf
    if low == "nan":
        return math.nan
    return float(t)


class _Cell(list):
    """A MATLAB cell array of strings (``{'a', 'b'}``), such as ``mpc.bus_name``."""


_EVALUATION_ERRORS = (ArithmeticError, ValueError, IndexError, TypeError, KeyError, AttributeError,
                      RecursionError, MemoryError)
"""What evaluating a statement can raise besides :class:`FormatError`: each becomes a
:class:`FormatError` naming the line (a division by zero, an overflow, a shape mismatch, ...)."""

MAX_NESTING = 64
"""Deepest nesting of parentheses, brackets, function calls and signs in one expression."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ZeroDivisionError) or (isinstance(exc, FloatingPointError) and "divide" in str(exc)):
        return "division by zero"
    return str(exc) or type(exc).__name__


class _Interpreter:
    """Evaluates the closed MATLAB subset described in the module docstring."""

    def __init__(self) -> None:
        self.mpc: dict[str, Any] = {}
        self.vars: dict[str, Any] = {}
        self.lines: dict[str, int] = {}
        """Line of the statement that last assigned each ``mpc`` field."""
        self.row_lines: dict[str, np.ndarray] = {}
        """Line of each row of the ``mpc`` matrices written as literals."""

    # -- statements ---------------------------------------------------------------------
    def run(self, st: _Statement) -> None:
        text = st.text
        if text.startswith("function"):
            return
        m = re.fullmatch(r"\[([\w\s,]+)\]\s*=\s*(idx_\w+)", text)
        if m:
            table = _IDX.get(m.group(2))
            if table is None:
                raise FormatError(f"line {st.line}: unsupported function {m.group(2)!r}")
            for name in (s for s in re.split(r"[\s,]+", m.group(1)) if s):
                if name not in table:
                    raise FormatError(f"line {st.line}: {m.group(2)} does not define {name!r}")
                self.vars[name] = float(table[name])
            return
        m = re.fullmatch(r"mpc\.(\w+)\s*=\s*\[(.*)\]", text, flags=re.S)
        if m:
            first = st.line + len(re.findall(r"[\n\v]", text[:m.start(2)]))
            self.lines[m.group(1)] = st.line
            self.mpc[m.group(1)], self.row_lines[m.group(1)] = _parse_matrix(m.group(2), first)
            return
        m = re.fullmatch(r"mpc\.(\w+)\s*=\s*\{(.*)\}", text, flags=re.S)
        if m:
            self._set(m.group(1), _Cell(re.findall(r"'([^']*)'", m.group(2))), st.line)
            return
        m = re.fullmatch(r"mpc\.(\w+)\s*=\s*'([^']*)'", text)
        if m:
            self._set(m.group(1), m.group(2), st.line)
            return
        if "=" not in text or text.count("=") != 1:
            raise FormatError(f"line {st.line}: unsupported statement {text!r} (optev reads MATPOWER data "
                              "and simple unit conversions only)")
        lhs, rhs = (s.strip() for s in text.split("="))
        shown = text if len(text) <= 80 else text[:77] + "..."
        try:
            with np.errstate(divide="raise", over="raise", invalid="raise", under="ignore"):
                value = _Parser(rhs, self).parse()
                self._assign(lhs, value, st.line)
        except FormatError as exc:
            raise FormatError(f"line {st.line}: {exc} in statement {shown!r}") from None
        except _EVALUATION_ERRORS as exc:
            raise FormatError(f"line {st.line}: cannot evaluate {shown!r} ({_describe(exc)})") from None

    def _set(self, name: str, value: Any, line: int) -> None:
        """Replace the ``mpc`` field ``name`` as a whole (its row lines are no longer known)."""
        self.mpc[name] = value
        self.lines[name] = line
        self.row_lines.pop(name, None)

    def _assign(self, lhs: str, value: Any, line: int) -> None:
        m = re.fullmatch(r"mpc\.(\w+)", lhs)
        if m:
            self._set(m.group(1), value, line)
            return
        m = re.fullmatch(r"[A-Za-z_]\w*", lhs)
        if m:
            if lhs in _FUNCTIONS:
                raise FormatError(f"cannot assign to function name {lhs!r}")
            self.vars[lhs] = value
            return
        m = re.fullmatch(r"mpc\.(\w+)\s*\((.*)\)", lhs)
        if m:
            name = m.group(1)
            if name not in self.mpc or not isinstance(self.mpc[name], np.ndarray):
                raise FormatError(f"unknown matrix mpc.{name}")
            mat = self.mpc[name]
            rows, cols = _Parser(m.group(2), self).parse_index(mat.shape)
            mat[np.ix_(rows, cols)] = np.broadcast_to(np.asarray(value, float), (rows.size, cols.size)) \
                if np.ndim(value) < 2 else value
            return
        raise FormatError(f"unsupported assignment target {lhs!r}")


class _Parser:
    """Recursive-descent parser/evaluator of one expression."""

    def __init__(self, text: str, interp: _Interpreter) -> None:
        self.tokens = self._tokenize(text)
        self.pos = 0
        self.interp = interp
        self.depth = 0

    def _nest(self, step: int) -> None:
        """Count one level of nesting in (``step=1``) or out (``-1``); refuse deep nesting
        before Python's recursion limit is near."""
        self.depth += step
        if self.depth > MAX_NESTING:
            raise FormatError(f"expression nested more than {MAX_NESTING} levels deep")

    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, str]]:
        tokens = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise FormatError(f"unexpected character {text[pos:].strip()[:1]!r}")
            kind = m.lastgroup
            assert kind is not None
            tokens.append((kind, m.group(kind)))
            pos = m.end()
        return tokens

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, value: str | None = None) -> tuple[str, str]:
        tok = self._peek()
        if tok is None or (value is not None and tok[1] != value):
            raise FormatError(f"expected {value or 'a value'}")
        self.pos += 1
        return tok

    def parse(self) -> Any:
        value = self._expr()
        if self._peek() is not None:
            raise FormatError(f"unexpected {self._peek()[1]!r}")  # type: ignore[index]
        return value

    def parse_index(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        args = self._index_args(shape)
        if self._peek() is not None or len(args) != 2:
            raise FormatError("matrix indexing needs (rows, cols)")
        return args[0], args[1]

    def _index_args(self, shape: tuple[int, ...]) -> list[np.ndarray]:
        args = []
        for dim in range(2):
            if self._peek() == ("op", ":"):
                self._take(":")
                args.append(np.arange(shape[dim]))
            else:
                idx = np.atleast_1d(np.asarray(self._expr(), float)).ravel()
                if (idx != np.round(idx)).any() or (idx < 1).any() or (idx > shape[dim]).any():
                    raise FormatError(f"index {idx.tolist()} out of range 1..{shape[dim]}")
                args.append(idx.astype(int) - 1)
            if dim == 0:
                self._take(",")
        return args

    def _expr(self) -> Any:
        self._nest(1)
        value = self._term()
        while self._peek() in (("op", "+"), ("op", "-")):
            op = self._take()[1]
            rhs = self._term()
            value = value + rhs if op == "+" else value - rhs
        self._nest(-1)
        return value

    def _term(self) -> Any:
        value = self._unary()
        while self._peek() in (("op", "*"), ("op", "/"), ("op", ".*"), ("op", "./")):
            op = self._take()[1]
            rhs = self._unary()
            if op in ("*", "/") and np.ndim(value) and np.ndim(rhs):
                raise FormatError(f"matrix operator {op!r} between two arrays is not supported")
            value = value * rhs if op in ("*", ".*") else value / rhs
        return value

    def _unary(self) -> Any:
        if self._peek() in (("op", "-"), ("op", "+")):
            op = self._take()[1]
            self._nest(1)
            value = self._unary()
            self._nest(-1)
            return -value if op == "-" else value
        return self._power()

    def _power(self) -> Any:
        base = self._primary()
        if self._peek() in (("op", "^"), ("op", ".^")):
            op = self._take()[1]
            self._nest(1)
            exponent = self._unary()
            self._nest(-1)
            if op == "^" and np.ndim(base):
                raise FormatError("matrix power is not supported")
            return np.power(base, exponent)
        return base

    def _primary(self) -> Any:
        tok = self._take()
        kind, text = tok
        if kind == "num":
            return float(text)  # may be inf (1e999): caught with the matrix it ends up in
        if tok == ("op", "("):
            value = self._expr()
            self._take(")")
            return value
        if tok == ("op", "["):
            items = []
            while self._peek() != ("op", "]"):
                items.append(self._expr())
                if self._peek() == ("op", ","):
                    self._take(",")
            self._take("]")
            return np.array(items, float)
        if kind == "name":
            return self._name(text)
        raise FormatError(f"unexpected {text!r}")

    def _name(self, name: str) -> Any:
        if name in ("pi",):
            return math.pi
        if name in ("Inf", "inf"):
            return math.inf
        if name.startswith("mpc."):
            key = name[4:]
            if key not in self.interp.mpc:
                raise FormatError(f"unknown field {name}")
            value = self.interp.mpc[key]
            if self._peek() == ("op", "("):
                self._take("(")
                if not isinstance(value, np.ndarray):
                    raise FormatError(f"{name} is not a matrix")
                rows, cols = self._index_args(value.shape)
                self._take(")")
                picked = value[np.ix_(rows, cols)].copy()
                return float(picked[0, 0]) if picked.size == 1 else picked
            return value.copy() if isinstance(value, np.ndarray) else value
        if name in _FUNCTIONS:
            self._take("(")
            arg = self._expr()
            self._take(")")
            return _FUNCTIONS[name](arg)
        if name in self.interp.vars:
            return self.interp.vars[name]
        raise FormatError(f"unknown name {name!r}")


def parse_matpower(text: str) -> dict[str, Any]:
    """Parse MATPOWER source into a dict of ``mpc`` fields (matrices as numpy arrays).

    Raises
    ------
    FormatError
        On syntax errors or statements outside the supported subset.
    """
    interp = _Interpreter()
    for st in _split_statements(text):
        interp.run(st)
    for key in ("bus", "branch", "gen"):
        if key not in interp.mpc:
            raise FormatError(f"missing mpc.{key}")
    return _Case(interp.mpc, interp.lines, interp.row_lines)


class _Case(dict):
    """Parsed ``mpc`` fields that remember the file line of each field and matrix row."""

    def __init__(self, fields: dict[str, Any], lines: dict[str, int], row_lines: dict[str, np.ndarray]) -> None:
        super().__init__(fields)
        self.lines = lines
        self.row_lines = row_lines

    def where(self, key: str, row: int | None = None) -> str:
        """``line N: mpc.key`` (and the row), as far as the lines are known."""
        rows = self.row_lines.get(key)
        line = int(rows[row]) if row is not None and rows is not None and row < rows.size else self.lines.get(key)
        text = f"mpc.{key}" + (f" row {row + 1}" if row is not None else "")
        return f"line {line}: {text}" if line is not None else text


# Value rules of the MATPOWER columns optev reads (1-based, as in idx_bus, idx_brch, idx_gen):
# id: positive whole number; finite; positive: finite and > 0; nonneg: finite and >= 0;
# limit: not NaN (±Inf means no limit); a tuple: one of these values.
_COLUMN_RULES: dict[str, tuple[tuple[str, Any], ...]] = {
    "bus": (("BUS_I", "id"), ("BUS_TYPE", (1, 2, 3, 4)), ("PD", "finite"), ("QD", "finite"), ("GS", "finite"),
            ("BS", "finite"), ("VM", "positive"), ("VA", "finite"), ("BASE_KV", "nonneg"), ("VMAX", "positive"),
            ("VMIN", "positive")),
    "branch": (("F_BUS", "id"), ("T_BUS", "id"), ("BR_R", "nonneg"), ("BR_X", "finite"), ("BR_B", "finite"),
               ("RATE_A", "nonneg"), ("TAP", "nonneg"), ("SHIFT", "finite"), ("BR_STATUS", (0, 1))),
    "gen": (("GEN_BUS", "id"), ("QMAX", "limit"), ("QMIN", "limit"), ("VG", "positive"), ("GEN_STATUS", "finite"),
            ("PMAX", "limit"), ("PMIN", "limit")),
}
_MIN_COLUMNS = {"bus": 13, "branch": 11, "gen": 10}
_IDX_OF = {"bus": "idx_bus", "branch": "idx_brch", "gen": "idx_gen"}
_PROBLEMS = {"id": "is not a positive whole number", "finite": "is not a finite number",
             "positive": "must be a finite number above 0", "nonneg": "must be a finite number, at least 0",
             "limit": "is not a number (Inf is a valid limit)"}


def _breaks(rule: Any, v: np.ndarray) -> np.ndarray:
    """Element-wise: which values of ``v`` break ``rule`` (see :data:`_COLUMN_RULES`)."""
    with np.errstate(invalid="ignore"):
        if isinstance(rule, tuple):
            return ~np.isin(v, rule)
        return {"id": lambda: ~(np.isfinite(v) & (v >= 1) & (v == np.round(v)) & (v < 2 ** 53)),
                "finite": lambda: ~np.isfinite(v), "positive": lambda: ~(np.isfinite(v) & (v > 0)),
                "nonneg": lambda: ~(np.isfinite(v) & (v >= 0)), "limit": lambda: np.isnan(v)}[rule]()


def _matrix(case: _Case, key: str) -> np.ndarray:
    """``mpc.key`` as a 2-D float matrix, or :class:`FormatError` if it is something else."""
    value = case.get(key, np.zeros((0, 0)))
    where = case.where(key)
    if isinstance(value, list):
        raise FormatError(f"{where} is a cell array {{...}}; MATPOWER data are a numeric matrix [...]")
    if isinstance(value, str):
        raise FormatError(f"{where} is the string {value!r}; MATPOWER data are a numeric matrix [...]")
    try:
        mat = np.atleast_2d(np.asarray(value, dtype=float))
    except (TypeError, ValueError):
        raise FormatError(f"{where} is not a numeric matrix") from None
    if mat.ndim != 2:
        raise FormatError(f"{where} is not a 2-D matrix")
    return mat if mat.size else np.zeros((0, _MIN_COLUMNS.get(key, 0)))


def _check_matrix(case: _Case, key: str, mat: np.ndarray) -> None:
    """Check the width and every column rule of ``mpc.bus``, ``branch`` or ``gen``."""
    where = case.where
    if mat.shape[1] < _MIN_COLUMNS[key]:
        raise FormatError(f"{where(key)} has {mat.shape[1]} columns, MATPOWER needs {_MIN_COLUMNS[key]}")
    for column, rule in _COLUMN_RULES[key]:
        j = _IDX[_IDX_OF[key]][column] - 1
        bad = np.flatnonzero(_breaks(rule, mat[:, j]))
        if bad.size:
            problem = _PROBLEMS[rule] if isinstance(rule, str) else f"is not one of {list(rule)}"
            raise FormatError(f"{where(key, int(bad[0]))}, column {column}: {float(mat[bad[0], j])!r} {problem}")


def _check_case(case: dict[str, Any]) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``baseMVA``, ``bus``, ``branch``, ``gen`` and ``gencost``, checked; :class:`FormatError` naming the line."""
    case = case if isinstance(case, _Case) else _Case(case, {}, {})
    where = case.where
    base = case.get("baseMVA", 100.0)
    if isinstance(base, np.ndarray) and base.size == 1:
        base = float(base.ravel()[0])
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not 0 < base < math.inf:
        raise FormatError(f"{where('baseMVA')} = {base!r}: the system base must be a finite number of MVA above 0")
    mats = {key: _matrix(case, key) for key in ("bus", "branch", "gen", "gencost")}
    if not mats["bus"].shape[0]:
        raise FormatError(f"{where('bus')} has no rows")
    for key in ("bus", "branch", "gen"):
        if mats[key].shape[0]:
            _check_matrix(case, key, mats[key])
    numbers = mats["bus"][:, 0]
    dup = np.flatnonzero(pd.Series(numbers).duplicated().to_numpy())
    if dup.size:
        raise FormatError(f"{where('bus', int(dup[0]))}: bus number {int(numbers[dup[0]])} is used twice")
    for key, col in (("branch", "F_BUS"), ("branch", "T_BUS"), ("gen", "GEN_BUS")):
        j = _IDX[_IDX_OF[key]][col] - 1
        unknown = np.flatnonzero(~np.isin(mats[key][:, j], numbers)) if mats[key].shape[0] else np.zeros(0, int)
        if unknown.size:
            raise FormatError(f"{where(key, int(unknown[0]))}, column {col}: refers to unknown bus "
                              f"{int(mats[key][unknown[0], j])}")
    _check_gencost(case, mats["gencost"], where)
    return float(base), mats["bus"], mats["branch"], mats["gen"], mats["gencost"]


def _check_gencost(case: dict[str, Any], cost: np.ndarray, where: Callable[..., str]) -> None:
    """Polynomial (2) or piecewise-linear (1) models with as many finite coefficients as NCOST says."""
    if not cost.size:
        return
    if cost.shape[1] < 4:
        raise FormatError(f"{where('gencost')} has {cost.shape[1]} columns, MATPOWER needs at least 4")
    for k, row in enumerate(cost):
        n = row[3]
        width = 4 + (2 * n if row[0] == 1 else n)
        if row[0] not in (1, 2) or not (np.isfinite(n) and n >= 0 and n == round(n)) or width > row.size:
            raise FormatError(f"{where('gencost', k)}: not a MATPOWER cost row (MODEL 1 or 2, NCOST a whole "
                              "number, NCOST coefficients)")
        if not np.isfinite(row[4:int(width)]).all():
            raise FormatError(f"{where('gencost', k)}: a cost coefficient is not a finite number")


def read_matpower(path: str | Path, *, validate: bool = True) -> Feeder:
    """Read a MATPOWER case file into a :class:`Feeder`.

    Parameters
    ----------
    path : str or Path
        The ``.m`` file.
    validate : bool
        Run :func:`optev.data.validate_feeder` (radial, one substation per feeder).

    Raises
    ------
    FormatError
        Missing file, syntax error, unsupported statement or malformed matrix.
    DataError
        The data break a rule of the data model (e.g. a loop in the feeder).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise FormatError(f"{p}: cannot read ({exc.strerror})") from None
    try:
        mpc = parse_matpower(text)
        feeder = mpc_to_feeder(mpc, name=p.stem)
    except DataError as exc:  # FormatError included: every message names the file
        new = type(exc)(f"{p}: {exc}")
        new.table, new.row, new.column = exc.table, exc.row, exc.column
        raise new from None
    if validate:
        validate_feeder(feeder)
    return feeder


def _col(mat: np.ndarray, idx: int, default: float = 0.0) -> np.ndarray:
    if mat.shape[1] >= idx:
        return mat[:, idx - 1]
    return np.full(mat.shape[0], default)


def mpc_to_feeder(mpc: dict[str, Any], name: str = "") -> Feeder:
    """Convert parsed MATPOWER fields (per unit, MW) into a :class:`Feeder` (Ω, kW)."""
    case = mpc if isinstance(mpc, _Case) else _Case(mpc, {}, {})
    base_mva, bus, branch, gen, gencost = _check_case(case)
    bus = bus[bus[:, 1] != 4]
    num = bus[:, 0].astype(np.int64)
    ids = np.array([str(n) for n in num], dtype=object)
    kv = bus[:, 9]
    kv_of = dict(zip(num, kv))
    buses = pd.DataFrame({
        "bus_id": ids, "base_kv": kv, "v_min_pu": bus[:, 12], "v_max_pu": bus[:, 11],
        "p_load_kw": bus[:, 2] * 1e3, "q_load_kvar": bus[:, 3] * 1e3,
        "g_shunt_kw": bus[:, 4] * 1e3, "b_shunt_kvar": bus[:, 5] * 1e3,
    })
    known = set(num.tolist())
    if branch.size:
        f = branch[:, 0].astype(np.int64)
        t = branch[:, 1].astype(np.int64)
        live = np.array([a in known and b in known for a, b in zip(f.tolist(), t.tolist())], bool)
        branch, f, t = branch[live], f[live], t[live]
        row_no = np.flatnonzero(live) + 1
        tap = branch[:, 8]
        shift = branch[:, 9]
        if np.any(shift != 0):
            k = int(np.flatnonzero(shift != 0)[0])
            raise FormatError(f"{case.where('branch', int(row_no[k]) - 1)}: phase-shifting transformers are not "
                              "supported")
        kv_f = np.array([kv_of[b] for b in f.tolist()])
        kv_t = np.array([kv_of[b] for b in t.tolist()])
        is_trafo = (tap != 0) | ~np.isclose(kv_f, kv_t)
        zb = kv_f ** 2 / base_mva
        rate = branch[:, 5]
        status = branch[:, 10] > 0
        ln = ~is_trafo
        with np.errstate(divide="ignore"):
            amp = np.where(rate > 0, rate * 1e3 / (np.sqrt(3.0) * np.where(kv_f > 0, kv_f, 1.0)), np.inf)
        lines = pd.DataFrame({
            "line_id": [str(r) for r in row_no[ln]],
            "from_bus": f[ln].astype(str), "to_bus": t[ln].astype(str),
            "r_ohm": branch[ln, 2] * zb[ln], "x_ohm": branch[ln, 3] * zb[ln],
            "b_us": branch[ln, 4] / zb[ln] * 1e6, "ampacity_a": amp[ln], "in_service": status[ln],
        })
        transformers = pd.DataFrame({
            "transformer_id": [str(r) for r in row_no[is_trafo]],
            "hv_bus": f[is_trafo].astype(str), "lv_bus": t[is_trafo].astype(str),
            "sn_kva": np.where(rate[is_trafo] > 0, rate[is_trafo] * 1e3, np.inf),
            "r_pu": branch[is_trafo, 2], "x_pu": branch[is_trafo, 3],
            "tap": np.where(tap[is_trafo] == 0, 1.0, tap[is_trafo]), "in_service": status[is_trafo],
        })
    else:
        lines, transformers = pd.DataFrame(), pd.DataFrame()  # no branches: empty tables (Feeder conforms them)
    ref_buses = set(num[bus[:, 1] == 3].tolist())
    subs, gens = [], []
    for k in range(gen.shape[0] if gen.size else 0):
        g = gen[k]
        b = int(g[0])
        if g[7] <= 0 or b not in known:
            continue
        cost_b = cost_a = cost_c = 0.0
        if gencost.size and gencost.shape[0] > k and int(gencost[k, 0]) == 2:
            n = int(gencost[k, 3])
            coeffs = gencost[k, 4:4 + n][::-1]  # c0, c1, c2, ... per MW^i·h
            cost_c = coeffs[0] if n > 0 else 0.0
            cost_b = coeffs[1] / 1e3 if n > 1 else 0.0
            cost_a = coeffs[2] / 1e6 if n > 2 else 0.0
        if b in ref_buses:
            subs.append({"substation_id": f"sub_{b}", "bus_id": str(b), "vm_pu": g[5],
                         "p_import_max_kw": g[8] * 1e3 if g[8] > 0 else np.inf,
                         "p_export_max_kw": -g[9] * 1e3 if g[9] < 0 else np.inf,
                         "price_buy_per_kwh": cost_b})
            ref_buses.discard(b)
        else:
            gens.append({"gen_id": f"gen_{k + 1}", "bus_id": str(b), "p_min_kw": g[9] * 1e3,
                         "p_max_kw": g[8] * 1e3, "q_min_kvar": g[4] * 1e3, "q_max_kvar": g[3] * 1e3,
                         "cost_a_per_kw2h": cost_a, "cost_b_per_kwh": cost_b, "cost_c_per_h": cost_c})
    for b in sorted(ref_buses):  # a reference bus without an in-service generator
        vm = float(bus[num == b, 7][0])
        subs.append({"substation_id": f"sub_{b}", "bus_id": str(b), "vm_pu": vm})
    if not subs:
        raise FormatError(f"{case.where('bus')}: no reference (type 3) bus")
    subs_df = pd.DataFrame(subs)
    return Feeder(base_mva=base_mva, buses=buses, lines=lines, transformers=transformers,
                  substations=subs_df, generators=pd.DataFrame(gens) if gens else pd.DataFrame(), name=name)
