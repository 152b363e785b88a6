"""Refresh the figures quoted in the documentation from the benchmarks' results files.

Run from the repository root after a benchmark has written its results file::

    python benchmarks/quote.py                 # README.md and benchmarks/README.md, in place
    python benchmarks/quote.py --check         # exit 1 and list what is stale, change nothing

A quoted figure sits between markers that name its results file (under
``benchmarks/results/``), the value's dotted path in it (``/N`` at the end divides by N)
and a Python format spec (``-`` for ``str``)::

    <!-- fig bench_day.json day.summary.peak_import_kw ,.0f -->5,471<!-- /fig -->

and a table printed by a benchmark between block markers naming the results file and the
benchmark module whose ``markdown_tables`` prints it::

    <!-- block bench_mpc.json bench_mpc -->
    ...
    <!-- /block -->

``tests/test_quoted_figures.py`` fails when a quoted figure differs from its file.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DOCUMENTS = (REPO / "README.md", REPO / "benchmarks" / "README.md")

FIG = re.compile(r"<!-- fig (?P<file>\S+) (?P<path>\S+) (?P<fmt>\S*) -->(?P<text>.*?)<!-- /fig -->", re.S)
BLOCK = re.compile(r"<!-- block (?P<file>\S+) (?P<module>\S+) -->\n(?P<text>.*?)<!-- /block -->", re.S)


def value_at(data: Any, path: str) -> Any:
    """The value at a dotted ``path`` of ``data`` (``/N`` at the end divides by N)."""
    path, _, divisor = path.partition("/")
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data / float(divisor) if divisor else data


def formatted(value: Any, fmt: str) -> str:
    return str(value) if fmt == "-" else format(value, fmt)


def load(name: str) -> Any:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def refresh(text: str) -> str:
    """``text`` with every quoted figure and table replaced by its results file's."""
    def fig(m: re.Match[str]) -> str:
        value = formatted(value_at(load(m["file"]), m["path"]), m["fmt"])
        return f"<!-- fig {m['file']} {m['path']} {m['fmt']} -->{value}<!-- /fig -->"

    def block(m: re.Match[str]) -> str:
        sys.path.insert(0, str(REPO / "benchmarks"))
        try:
            table = importlib.import_module(m["module"]).markdown_tables(load(m["file"])).strip("\n")
        finally:
            sys.path.remove(str(REPO / "benchmarks"))
        return f"<!-- block {m['file']} {m['module']} -->\n{table}\n<!-- /block -->"

    return BLOCK.sub(block, FIG.sub(fig, text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale documents (exit 1)")
    args = parser.parse_args(argv)
    stale = []
    for doc in DOCUMENTS:
        old = doc.read_text(encoding="utf-8")
        new = refresh(old)
        if new != old:
            stale.append(doc)
            if not args.check:
                doc.write_text(new, encoding="utf-8")
    for doc in stale:
        print(f"{doc.relative_to(REPO)}: {'stale' if args.check else 'refreshed'}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
