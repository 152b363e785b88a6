"""Formulation files: declarative TOML compositions of blocks, variants and objective terms.

A formulation file names the blocks to compose, the variant and options of each, the
weights of the objective terms, the default window and solver settings::

    name = "station_v2g"
    description = "Ordered charging with station-level V2G"

    [window]
    steps = 96
    step = "15min"

    [solver]
    soft_limits = false        # true: hard limits become penalised slacks
    slack_penalty = 1000.0     # currency per unit of slack
    time_limit_s = 300

    [blocks.ev]
    variant = "per_ev"
    departure = "hard"

    [blocks.station]
    variant = "per_ev"

    [blocks.network]
    variant = "copperplate"

    [objective]
    energy_cost = 1.0
    peak = 0.0

Every key is validated: an unknown block, variant, option or objective term is an error
that lists the valid ones, and every value is checked for its type and range — one line
naming the file and the key, never a traceback:

- ``name``, ``description``: strings; every section a TOML table.
- ``[window]``: ``steps`` a whole number of at least 1, ``step`` a positive duration
  (``optev.options``, the rules of the ``--steps``/``--step`` options).
- ``[solver]``: ``soft_limits`` a boolean; ``slack_penalty`` and ``time_limit_s`` finite
  numbers above 0; ``threads`` a whole number of at least 1.
- block options: the type of the option's default (boolean, whole number, number, text;
  ``intervals`` may also be a list); numbers finite and at least 0, whole numbers at least
  :data:`OPTION_MINIMUM` where it names them.
- ``[objective]`` weights: finite numbers, at least 0 (a negative weight would reward cost).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from optev.blocks.envelope import OPTIONS as ENVELOPE_OPTIONS
from optev.blocks.lindistflow import OPTIONS as LDF_OPTIONS
from optev.blocks.objectives import TERMS
from optev.errors import DataError, OptionError
from optev.io.tomlfile import read_toml
from optev.options import duration_option, steps_option
from optev.resources import formulations_dir

FORMULATIONS_DIR = formulations_dir()
"""Folder of the shipped formulation files (formulations can be named without a path): the
repository's ``formulations/`` in an editable install, ``site-packages/optev/formulations/``
from a wheel (package data ``optev.formulations``, :mod:`optev.resources`)."""


@dataclass(frozen=True)
class BlockSpec:
    """A block type: its module (with ``build`` and ``OPTIONS``) and its variants."""

    name: str
    module: str
    variants: tuple[str, ...]

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def options(self) -> dict[str, tuple[Any, str]]:
        return dict(getattr(self.load(), "OPTIONS", {}))


BLOCKS: dict[str, BlockSpec] = {
    "ev": BlockSpec("ev", "optev.blocks.ev", ("per_ev", "exclusive")),
    "station": BlockSpec("station", "optev.blocks.station", ("per_ev", "aggregate")),
    "der": BlockSpec("der", "optev.blocks.der", ("default",)),
    "storage": BlockSpec("storage", "optev.blocks.storage", ("default",)),
    "network": BlockSpec("network", "optev.blocks.network", ("copperplate", "lindistflow")),
    "service": BlockSpec("service", "optev.blocks.service", ("default",)),
}
"""Block types in build order: the network block collects all injections; the service block
comes after it because its limits may constrain the grid import the network declares."""

WINDOW_KEYS = {"steps": 96, "step": "15min"}
SOLVER_KEYS = {"soft_limits": False, "slack_penalty": 1e3, "time_limit_s": 600.0, "threads": None}
TOP_KEYS = ("name", "description", "window", "solver", "blocks", "objective")

OPTION_MINIMUM = {"polygon_sides": 4, "pwl_segments": 1, "max_corrections": 0}
"""Smallest value of the whole-number block options (others: at least 1)."""


def objective_terms() -> dict[str, str]:
    """Every objective term with its description (importing the blocks that declare terms).

    In block build order (the shared terms of :mod:`optev.blocks.objectives` first, a network
    variant's after its block), each module's terms in the order it declares them: the order
    does not depend on which modules happened to be imported first.
    """
    for spec in BLOCKS.values():
        spec.load()  # blocks register their own terms on import
    importlib.import_module("optev.blocks.lindistflow")  # network variant modules register terms too
    order = ["optev.blocks.objectives", *(spec.module for spec in BLOCKS.values()), "optev.blocks.lindistflow"]

    def rank(module: str) -> int:
        return order.index(module) if module in order else len(order)

    ranked = sorted(TERMS.items(), key=lambda item: rank(item[1][0].__module__))  # stable: declaration order
    return {name: desc for name, (_, desc) in ranked}


@dataclass
class Formulation:
    """A validated formulation."""

    name: str
    description: str = ""
    window: dict[str, Any] = field(default_factory=lambda: dict(WINDOW_KEYS))
    solver: dict[str, Any] = field(default_factory=lambda: dict(SOLVER_KEYS))
    blocks: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    objective: dict[str, float] = field(default_factory=dict)
    source: str = ""

    def block_options(self, block: str) -> dict[str, Any]:
        return self.blocks[block][1] if block in self.blocks else {}

    def to_dict(self) -> dict[str, Any]:
        blocks = {name: {"variant": variant, **opts} for name, (variant, opts) in self.blocks.items()}
        return {"name": self.name, "description": self.description, "window": dict(self.window),
                "solver": {k: v for k, v in self.solver.items() if v is not None}, "blocks": blocks,
                "objective": dict(self.objective)}


def _unknown(kind: str, name: str, valid: Any, where: str) -> DataError:
    return DataError(f"{where}: unknown {kind} {name!r}; valid: {', '.join(sorted(valid))}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_number(value: Any, where: str, *, positive: bool = False, whole: bool = False,
                  minimum: float = 0.0) -> None:
    """Raise :class:`DataError` unless ``value`` is a finite number (whole, at least ``minimum``
    or above 0 when ``positive``)."""
    kind = "a whole number" if whole else "a finite number"
    if not _is_number(value) or (whole and not float(value).is_integer()):
        raise DataError(f"{where} must be {kind}, not {value!r}")
    if positive and value <= 0:
        raise DataError(f"{where} must be above 0, got {value!r}")
    if value < minimum:
        raise DataError(f"{where} must be at least {minimum:g}, got {value!r}")


def _check_window(window: dict[str, Any], source: str) -> None:
    try:
        steps_option(window["steps"], f"{source}: [window] steps")
        duration_option(window["step"], f"{source}: [window] step")
    except OptionError as exc:
        raise DataError(str(exc)) from None


def _check_solver(solver: dict[str, Any], source: str) -> None:
    if not isinstance(solver["soft_limits"], bool):
        raise DataError(f"{source}: [solver] soft_limits must be true or false, not {solver['soft_limits']!r}")
    for key in ("slack_penalty", "time_limit_s"):
        _check_number(solver[key], f"{source}: [solver] {key}", positive=True)
    if solver["threads"] is not None:
        _check_number(solver["threads"], f"{source}: [solver] threads", whole=True, minimum=1)


def _check_option(key: str, value: Any, default: Any, where: str) -> None:
    """An option value of the type of its default, in range (module docstring)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise DataError(f"{where} must be true or false, not {value!r}")
    elif isinstance(default, int):
        _check_number(value, where, whole=True, minimum=OPTION_MINIMUM.get(key, 1))
    elif isinstance(default, float):
        _check_number(value, where)
    elif isinstance(default, str) and not isinstance(value, str) and not (key == "intervals" and isinstance(value, list)):
        raise DataError(f"{where} must be text, not {value!r}")


def _table(data: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise DataError(f"{source}: {key!r} must be a table ([{key}]), not {value!r}")
    return value


def parse_formulation(data: dict[str, Any], source: str = "<formulation>") -> Formulation:
    """Validate a formulation given as a dict (the parsed TOML)."""
    for key in data:
        if key not in TOP_KEYS:
            raise _unknown("key", key, TOP_KEYS, source)
    if "name" not in data:
        raise DataError(f"{source}: missing key 'name'")
    for key in ("name", "description"):
        if not isinstance(data.get(key, ""), str):
            raise DataError(f"{source}: {key!r} must be text, not {data[key]!r}")
    window = dict(WINDOW_KEYS)
    for key, value in _table(data, "window", source).items():
        if key not in WINDOW_KEYS:
            raise _unknown("window key", key, WINDOW_KEYS, source)
        window[key] = value
    _check_window(window, source)
    solver = dict(SOLVER_KEYS)
    for key, value in _table(data, "solver", source).items():
        if key not in SOLVER_KEYS:
            raise _unknown("solver key", key, SOLVER_KEYS, source)
        solver[key] = value
    _check_solver(solver, source)
    blocks: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, table in _table(data, "blocks", source).items():
        if name not in BLOCKS:
            raise _unknown("block", name, BLOCKS, source)
        spec = BLOCKS[name]
        if not isinstance(table, dict):
            raise DataError(f"{source}: [blocks.{name}] must be a table, not {table!r}")
        table = dict(table)
        variant = table.pop("variant", spec.variants[0])
        if variant not in spec.variants:
            raise _unknown(f"variant of block {name!r}", variant, spec.variants, source)
        known = spec.options()
        if variant == "aggregate" and name == "station":
            known.update(ENVELOPE_OPTIONS)
        if name == "network" and variant == "lindistflow":
            known.update(LDF_OPTIONS)
        options = {k: default for k, (default, _) in known.items()}
        for key, value in table.items():
            if key not in known:
                raise _unknown(f"option of block {name!r}", key, known, source)
            _check_option(key, value, known[key][0], f"{source}: [blocks.{name}] {key}")
            options[key] = value
        blocks[name] = (variant, options)
    for needed in ("ev", "network"):
        if needed not in blocks:
            raise DataError(f"{source}: a formulation needs a [blocks.{needed}] table")
    if "station" not in blocks:
        blocks["station"] = ("per_ev", {k: d for k, (d, _) in BLOCKS["station"].options().items()})
    terms = objective_terms()
    objective: dict[str, float] = {}
    for key, weight in _table(data, "objective", source).items():
        if key not in terms:
            raise _unknown("objective term", key, terms, source)
        _check_number(weight, f"{source}: [objective] {key}")
        objective[key] = float(weight)
    if not any(objective.values()):
        raise DataError(f"{source}: the objective needs at least one term with a non-zero weight; "
                        f"valid terms: {', '.join(sorted(terms))}")
    ordered = {name: blocks[name] for name in BLOCKS if name in blocks}
    return Formulation(str(data["name"]), str(data.get("description", "")), window, solver, ordered, objective,
                       source)


def load_formulation(path_or_name: str | Path) -> Formulation:
    """Read and validate a formulation file; a bare name is looked up in ``formulations/``."""
    p = Path(path_or_name)
    if not p.exists() and p.suffix == "" and (FORMULATIONS_DIR / f"{p.name}.toml").exists():
        p = FORMULATIONS_DIR / f"{p.name}.toml"
    if not p.exists():
        available = sorted(f.stem for f in FORMULATIONS_DIR.glob("*.toml")) if FORMULATIONS_DIR.exists() else []
        raise DataError(f"no formulation file {str(path_or_name)!r}; shipped formulations: {', '.join(available)}")
    return parse_formulation(read_toml(p), str(p))
