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
that lists the valid ones.
"""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from optev.errors import DataError

FORMULATIONS_DIR = Path(__file__).resolve().parents[2] / "formulations"
"""The repository's ``formulations/`` folder (formulations can be named without a path)."""


@dataclass(frozen=True)
class BlockSpec:
    """A block type: its module (with ``build`` and ``OPTIONS``) and its variants."""

    name: str
    module: str
    variants: tuple[str, ...]

    def load(self) -> ModuleType:
        import importlib

        return importlib.import_module(self.module)

    def options(self) -> dict[str, tuple[Any, str]]:
        return dict(getattr(self.load(), "OPTIONS", {}))


BLOCKS: dict[str, BlockSpec] = {
    "ev": BlockSpec("ev", "optev.blocks.ev", ("per_ev", "exclusive")),
    "station": BlockSpec("station", "optev.blocks.station", ("per_ev", "aggregate")),
    "der": BlockSpec("der", "optev.blocks.der", ("default",)),
    "storage": BlockSpec("storage", "optev.blocks.storage", ("default",)),
    "network": BlockSpec("network", "optev.blocks.network", ("copperplate", "lindistflow")),
}
"""Block types in build order: the network block comes last and collects all injections."""

WINDOW_KEYS = {"steps": 96, "step": "15min"}
SOLVER_KEYS = {"soft_limits": False, "slack_penalty": 1e3, "time_limit_s": 600.0, "threads": None}
TOP_KEYS = ("name", "description", "window", "solver", "blocks", "objective")


def objective_terms() -> dict[str, str]:
    """Every objective term with its description (importing the blocks that declare terms)."""
    from optev.blocks.objectives import TERMS

    for spec in BLOCKS.values():
        spec.load()  # blocks register their own terms on import
    importlib.import_module("optev.blocks.lindistflow")  # network variant modules register terms too
    return {name: desc for name, (_, desc) in TERMS.items()}


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


def parse_formulation(data: dict[str, Any], source: str = "<formulation>") -> Formulation:
    """Validate a formulation given as a dict (the parsed TOML)."""
    for key in data:
        if key not in TOP_KEYS:
            raise _unknown("key", key, TOP_KEYS, source)
    if "name" not in data:
        raise DataError(f"{source}: missing key 'name'")
    window = dict(WINDOW_KEYS)
    for key, value in data.get("window", {}).items():
        if key not in WINDOW_KEYS:
            raise _unknown("window key", key, WINDOW_KEYS, source)
        window[key] = value
    solver = dict(SOLVER_KEYS)
    for key, value in data.get("solver", {}).items():
        if key not in SOLVER_KEYS:
            raise _unknown("solver key", key, SOLVER_KEYS, source)
        solver[key] = value
    blocks: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, table in data.get("blocks", {}).items():
        if name not in BLOCKS:
            raise _unknown("block", name, BLOCKS, source)
        spec = BLOCKS[name]
        table = dict(table)
        variant = table.pop("variant", spec.variants[0])
        if variant not in spec.variants:
            raise _unknown(f"variant of block {name!r}", variant, spec.variants, source)
        known = spec.options()
        if variant == "aggregate" and name == "station":
            from optev.blocks.envelope import OPTIONS as ENVELOPE_OPTIONS

            known.update(ENVELOPE_OPTIONS)
        if name == "network" and variant == "lindistflow":
            from optev.blocks.lindistflow import OPTIONS as LDF_OPTIONS

            known.update(LDF_OPTIONS)
        options = {k: default for k, (default, _) in known.items()}
        for key, value in table.items():
            if key not in known:
                raise _unknown(f"option of block {name!r}", key, known, source)
            options[key] = value
        blocks[name] = (variant, options)
    for needed in ("ev", "network"):
        if needed not in blocks:
            raise DataError(f"{source}: a formulation needs a [blocks.{needed}] table")
    if "station" not in blocks:
        blocks["station"] = ("per_ev", {k: d for k, (d, _) in BLOCKS["station"].options().items()})
    terms = objective_terms()
    objective: dict[str, float] = {}
    for key, weight in data.get("objective", {}).items():
        if key not in terms:
            raise _unknown("objective term", key, terms, source)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            raise DataError(f"{source}: objective weight of {key!r} must be a number, got {weight!r}")
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
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{p}: invalid TOML ({exc})") from None
    return parse_formulation(data, str(p))
