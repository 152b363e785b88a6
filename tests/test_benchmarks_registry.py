"""The benchmark registry (``benchmarks/harness.py``, :data:`REGISTRY`): every benchmark script is
listed, every listed results file is committed, and every command the registry and the
documentation give is one the script accepts."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from paths import REPO, load_benchmark

BENCHMARKS = REPO / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import harness  # noqa: E402  (the benchmarks folder is not a package)

DOCUMENTS = (REPO / "README.md", BENCHMARKS / "README.md")
SPAN = re.compile(r"(?<!`)`(python benchmarks/bench_\w+\.py[^`]*)`(?!`)")
"""A command quoted inline in Markdown (it may wrap onto the next line)."""


@pytest.fixture(scope="module")
def modules() -> dict[str, ModuleType]:
    """Every registered benchmark script, imported."""
    return {b.module: load_benchmark(b.module) for b in harness.REGISTRY}


def parse(command: str, modules: dict[str, ModuleType]) -> tuple[str, argparse.Namespace]:
    """The script and the parsed arguments of a ``python benchmarks/bench_X.py ...`` command."""
    argv = shlex.split(command, comments=True)
    assert argv[0] == "python" and argv[1].startswith("benchmarks/bench_"), command
    module = Path(argv[1]).stem
    assert module in modules, f"{command}: {module} is not in the registry"
    try:
        return module, modules[module].COMMAND.parser().parse_args(argv[2:])
    except SystemExit:
        pytest.fail(f"the script does not accept the command {command!r}")


def normalised(command: str) -> str:
    """``command`` without its comment and with single spaces."""
    return shlex.join(shlex.split(command, comments=True))


def documented_commands() -> list[str]:
    """Every ``python benchmarks/bench_*.py`` command of the READMEs and the scripts' docstrings."""
    commands = []
    for doc in (*DOCUMENTS, *sorted(BENCHMARKS.glob("bench_*.py"))):
        text = doc.read_text(encoding="utf-8")
        commands += SPAN.findall(text)
        commands += [line for line in text.splitlines()
                     if line.strip().startswith("python benchmarks/bench_") and "`" not in line]
    return [normalised(c) for c in commands]


def test_every_script_is_registered_and_every_entry_is_a_script() -> None:
    scripts = {p.stem for p in BENCHMARKS.glob("bench_*.py")}
    assert {b.module for b in harness.REGISTRY} == scripts
    assert len({b.name for b in harness.REGISTRY}) == len(harness.REGISTRY)
    for b in harness.REGISTRY:
        assert b.script.is_file() and (REPO / b.test).is_file(), b
        assert harness.find(b.name) is b and harness.find(b.module) is b
    with pytest.raises(KeyError, match="no benchmark"):
        harness.find("no_such_benchmark")


def test_every_results_file_is_registered_and_committed() -> None:
    registered = [r.name for b in harness.REGISTRY for r in b.results]
    assert len(set(registered)) == len(registered)
    assert set(registered) == {p.name for p in harness.RESULTS.glob("*.json")}
    for name in registered:
        data = json.loads((harness.RESULTS / name).read_text(encoding="utf-8"))
        assert data["mode"] == "full" and data["machine"]["nproc"] >= 1, name


def test_registry_commands_are_accepted(modules: dict[str, ModuleType]) -> None:
    for b in harness.REGISTRY:
        for r in b.results:
            module, args = parse(r.command, modules)
            assert module == b.module and not args.smoke
            assert args.out == Path("benchmarks/results") / r.name
        module, args = parse(b.smoke, modules)
        assert module == b.module and args.smoke and args.out is None


def test_documented_commands_are_accepted(modules: dict[str, ModuleType]) -> None:
    commands = documented_commands()
    assert len(commands) >= 25
    for command in commands:
        parse(command, modules)
    # the commands that reproduce the committed results are the documented ones
    for b in harness.REGISTRY:
        for r in b.results:
            assert normalised(r.command) in commands, r.command


def test_every_script_runs_through_the_harness(modules: dict[str, ModuleType]) -> None:
    for name, module in modules.items():
        assert isinstance(module.COMMAND, harness.Command), name
        assert module.COMMAND.doc == module.__doc__ and module.COMMAND.tables is module.markdown_tables, name
        args = module.COMMAND.parser().parse_args(["--smoke", "--out", "x.json"])
        assert args.smoke and args.out == Path("x.json"), name


def test_list_prints_the_registry() -> None:
    out = subprocess.run([sys.executable, str(BENCHMARKS / "harness.py"), "--list"], capture_output=True,
                         text=True, check=True, cwd=REPO).stdout
    for b in harness.REGISTRY:
        assert f"{b.name} — benchmarks/{b.module}.py" in out and b.smoke in out
        assert all(r.command in out for r in b.results)
    as_json = subprocess.run([sys.executable, "-m", "benchmarks.harness", "--list", "--json"], capture_output=True,
                             text=True, check=True, cwd=REPO).stdout
    assert [e["module"] for e in json.loads(as_json)] == [b.module for b in harness.REGISTRY]
