"""optev: optimisation toolkit for large-scale EV aggregation and vehicle-grid interaction.

Implements the group standard T/JES 012-2026; requirement IDs (R5.1.4, ...) are used
throughout the code and documentation.

Entry points for studies (imported lazily, so ``import optev`` stays light):

* :func:`optev.run` — the main job as a function: a closed-loop day of an instance
  (default: the embedded ``instances/ux37_fleet``) → :class:`optev.report.run.RunResult`
  with tidy frames, ``summary()``, ``report()``, ``plot()`` and ``write()``;
* :func:`optev.sweep` — a scenario grid (for example V2G share × price scheme) → one
  table, one row per scenario (:mod:`optev.report.sweep`).
"""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "package_version", "run", "sweep"]


def package_version() -> str:
    """optev's version: the installed package's metadata, else :data:`__version__`."""
    try:
        return importlib.metadata.version("optev")
    except importlib.metadata.PackageNotFoundError:
        return __version__


if TYPE_CHECKING:  # pragma: no cover
    from optev.report.run import run
    from optev.report.sweep import sweep


def __getattr__(name: str) -> Any:
    """Lazy entry points: ``optev.run`` and ``optev.sweep`` import :mod:`optev.report` on first use."""
    # Imported here on purpose: importing any optev module runs this file first, so importing
    # optev.report at the top would load the whole stack on `import optev.data` and be a cycle.
    if name == "run":
        from optev.report.run import run  # lazy entry point (see above)

        return run
    if name == "sweep":
        from optev.report.sweep import sweep  # lazy entry point (see above)

        return sweep
    raise AttributeError(f"module 'optev' has no attribute {name!r}")
