"""Figures quoted in README.md and benchmarks/README.md are the ones in the results files
(issue 9, "figures that cannot go stale"; the marker syntax is in ``benchmarks/quote.py``).

Every quoted figure must equal its results file's value formatted as the marker says — the
tolerance is the quoted precision — and every quoted table what its benchmark prints from
its results file. ``python benchmarks/quote.py`` refreshes them after a benchmark run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import quote  # noqa: E402  (the benchmarks folder is not a package)

DOCUMENTS = quote.DOCUMENTS


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_quoted_figures_match_their_results_files(document: Path) -> None:
    stale = []
    for m in quote.FIG.finditer(document.read_text(encoding="utf-8")):
        assert (quote.RESULTS / m["file"]).is_file(), f"quoted results file {m['file']} does not exist"
        expected = quote.formatted(quote.value_at(quote.load(m["file"]), m["path"]), m["fmt"])
        if m["text"] != expected:
            stale.append(f"{m['file']} {m['path']}: quoted {m['text']!r}, the results file gives {expected!r}")
    assert not stale, "\n".join(stale) + "\n(refresh with python benchmarks/quote.py)"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_quoted_tables_match_their_results_files(document: Path) -> None:
    for b in quote.BLOCK.finditer(document.read_text(encoding="utf-8")):
        assert quote.refresh(b[0]) == b[0], (f"the {b['module']} table of {b['file']} in {document.name} is stale "
                                             "(refresh with python benchmarks/quote.py)")


def test_the_documents_quote_figures() -> None:
    """The main job's and the benchmarks' headline figures are quoted from results files."""
    assert len(list(quote.FIG.finditer((REPO / "README.md").read_text(encoding="utf-8")))) >= 5
    assert len(list(quote.FIG.finditer((REPO / "benchmarks" / "README.md").read_text(encoding="utf-8")))) >= 10


def test_the_marker_syntax(tmp_path: Path) -> None:
    data = {"a": [{"b": 1234.5678}], "c": "x"}
    assert quote.value_at(data, "a.0.b") == 1234.5678 and quote.value_at(data, "a.0.b/1e3") == pytest.approx(1.2345678)
    text = "peak <!-- fig x.json a.0.b ,.1f -->999<!-- /fig --> kW, <!-- fig x.json c - -->y<!-- /fig -->"
    (m1, m2) = quote.FIG.finditer(text)
    assert (m1["file"], m1["path"], m1["fmt"], m1["text"]) == ("x.json", "a.0.b", ",.1f", "999")
    assert quote.formatted(quote.value_at(data, m1["path"]), m1["fmt"]) == "1,234.6"
    assert quote.formatted(quote.value_at(data, m2["path"]), m2["fmt"]) == "x"
