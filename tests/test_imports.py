"""Function-level imports are kept for optional dependencies only (issue 11, deliverable 5).

Every ``import`` inside a function or method of ``optev/**/*.py`` must be in :data:`ALLOWED`
(module → why it may not be at the top of its module) and say why on its own line (a ``#``
comment); everything else belongs in the module's top-level import block. An import cycle
this would create is a design problem to fix (a function in the wrong module), not a reason
to import lazily.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from paths import REPO

PACKAGE = REPO / "optev"

ALLOWED: dict[str, str] = {
    "distributed": "optional dependency (extra 'scale', optev.hierarchy.DaskExecutor): imported where used "
                   "so that the core installs without it",
    "fcntl": "POSIX-only module (the output-folder lock in optev.io.outdir)",
    "optev.report.run": "optev.__getattr__'s lazy entry point optev.run: importing any optev module runs "
                        "optev/__init__.py first, so importing optev.report there would load the whole stack "
                        "on `import optev.data` and be an import cycle",
    "optev.report.sweep": "optev.__getattr__'s lazy entry point optev.sweep (as optev.report.run)",
}
"""Modules that may be imported inside a function, and why."""

ONLY_IN: dict[str, str] = {"optev.report.run": "optev/__init__.py", "optev.report.sweep": "optev/__init__.py"}
"""Allowed modules that are allowed in one file only (the package root's lazy entry points)."""

OPTIONAL = ("distributed",)
"""The allowed modules that are optional dependencies (not in ``[project] dependencies``)."""

EXCLUDED: dict[str, str] = {}
"""Files not checked yet (file → why)."""


def _imported(node: ast.Import | ast.ImportFrom) -> str:
    if isinstance(node, ast.ImportFrom):
        return "." * node.level + (node.module or "")
    return node.names[0].name


def _allowed(module: str) -> str | None:
    """The entry of :data:`ALLOWED` that covers ``module`` (itself or a package above it)."""
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in ALLOWED:
            return ".".join(parts[:k])
    return None


def function_level_imports(path: Path) -> list[tuple[int, str, str]]:
    """``(line, imported module, source line)`` of each import inside a function of ``path``."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found: dict[int, tuple[int, str, str]] = {}
    for fn in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    found[id(node)] = (node.lineno, _imported(node), lines[node.lineno - 1])
    return sorted(found.values())


def _files() -> list[tuple[str, Path]]:
    return [(path.relative_to(REPO).as_posix(), path) for path in sorted(PACKAGE.rglob("*.py"))]


def test_function_level_imports_are_allowed_and_say_why() -> None:
    bad = []
    for name, path in _files():
        if name in EXCLUDED:
            continue
        for line, module, text in function_level_imports(path):
            key = _allowed(module)
            if key is None:
                bad.append(f"{name}:{line}: {module} (move it to the top of the module)")
            elif key in ONLY_IN and ONLY_IN[key] != name:
                bad.append(f"{name}:{line}: {module} (allowed in {ONLY_IN[key]} only)")
            elif "#" not in text:
                bad.append(f"{name}:{line}: {module} (allowed: {ALLOWED[key]}; say why in a comment on its line)")
    assert not bad, "function-level imports outside the allowlist:\n" + "\n".join(bad)


def test_allowlist_is_used() -> None:
    used = {_allowed(module) for name, path in _files() if name not in EXCLUDED
            for _, module, _ in function_level_imports(path)}
    assert set(ALLOWED) <= used, f"allowed but no longer imported in a function: {sorted(set(ALLOWED) - used)}"


def test_excluded_files_still_need_it() -> None:
    for name in EXCLUDED:
        path = REPO / name
        assert path.exists(), f"{name} is gone: remove it from EXCLUDED"
        assert function_level_imports(path), f"{name} has no function-level imports any more: remove it from EXCLUDED"


def test_optional_modules_are_not_core_dependencies() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    core = {re.split(r"[\[<>=!~;\s]", spec, maxsplit=1)[0].lower() for spec in pyproject["project"]["dependencies"]}
    assert set(OPTIONAL) <= set(ALLOWED)
    assert not core & set(OPTIONAL), f"core dependencies imported lazily as if optional: {sorted(core & set(OPTIONAL))}"
