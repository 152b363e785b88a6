"""The summaries written to disk hold exactly the keys documented in :mod:`optev.summaries`:
no undocumented key, no required key missing (``optev run`` and ``optev solve``)."""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from optev.cli import main
from optev.io.results import summary_json
from optev.summaries import DaySummary, RunSummary, SolveSummary, WindowSummary, summary_keys, to_json

INSTANCE = Path(__file__).resolve().parents[1] / "instances" / "ux37_fleet"

SOLVE_WINDOW_KEYS = {"currency", "build_s", "solve_s", "check_s", "steps", "step_minutes", "start", "max_abs_dv_pu",
                     "loss_correction_dv_pu", "violations", "loss_correction_converged", "loss_error_pu",
                     "loss_correction_rounds", "loss_correction_seeded"}
"""Keys of :class:`WindowSummary` marked "solve_window": present in every ``optev solve`` summary."""


def _cli(*argv: str) -> str:
    stream, saved = io.StringIO(), sys.stdout
    sys.stdout = stream
    try:
        assert main(list(argv)) == 0
    finally:
        sys.stdout = saved
    return stream.getvalue()


def _check(keys: set[str], kind: type, also_required: frozenset[str] | set[str] = frozenset()) -> None:
    required, optional = summary_keys(kind)
    undocumented = keys - required - optional
    missing = (required | also_required) - keys
    assert not undocumented, f"keys not documented in {kind.__name__}: {sorted(undocumented)}"
    assert not missing, f"keys of {kind.__name__} missing: {sorted(missing)}"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("summary_keys") / "run"
    _cli("run", "--steps", "2", "--no-plots", "--out", str(out))
    return out


def test_run_summary_json_has_exactly_the_documented_keys(run_folder: Path) -> None:
    written = json.loads((run_folder / "summary.json").read_text(encoding="utf-8"))
    _check(set(written), RunSummary, {"tables", "plots"})
    assert "out" not in written


def test_day_summary_and_run_summary_api_keys() -> None:
    import optev

    res = optev.run(steps=2)
    _check(set(res.mpc.summary), DaySummary)
    assert not summary_keys(DaySummary)[1]  # every key of a day is always there
    _check(set(res.summary()), RunSummary)
    assert not {"tables", "plots", "out"} & set(res.summary())  # not written yet


@pytest.mark.parametrize("formulation", ["station_v2g", "city_dispatch"])
def test_solve_summary_json_has_exactly_the_documented_keys(formulation: str, tmp_path: Path) -> None:
    out = tmp_path / "solve"
    printed = json.loads(_cli("solve", formulation, str(INSTANCE), "--steps", "4", "--out", str(out), "--json"))
    written = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    _check(set(written), SolveSummary, SOLVE_WINDOW_KEYS | {"tables"})
    _check(set(printed), SolveSummary, SOLVE_WINDOW_KEYS | {"out"})
    window = {k: v for k, v in written.items() if k not in {"inputs", "tables", "grid_adequacy",
                                                              "grid_base_violations", "grid_loadability"}}
    _check(set(window), WindowSummary, SOLVE_WINDOW_KEYS)
    if formulation == "city_dispatch":  # the der and storage blocks report their figures
        assert {"generation_cost", "storage_losses_kwh"} <= set(written)


def test_to_json_is_the_summary_json_text() -> None:
    summary: dict[str, Any] = {"peak_import_kw": math.nan, "cost": 1.5, "excluded_steps": [], "der": {"pv": math.inf}}
    text = to_json(summary)
    assert text == summary_json(summary)
    assert json.loads(text) == {"peak_import_kw": None, "cost": 1.5, "excluded_steps": [], "der": {"pv": None}}
