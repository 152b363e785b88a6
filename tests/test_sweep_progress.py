"""``optev.sweep(..., progress=...)``: a progress report per finished scenario, serial and in
worker processes (issue 9, deliverable 8)."""

from __future__ import annotations

import io
from typing import Any

import pytest

import optev
from optev.errors import DataError
from optev.report.progress import ProgressLine

GRID = {"v2g_share": [0.0, 1.0]}
RUN = {"steps": 1, "start": "12:00", "horizon": "1h"}


class MapOnlyExecutor:
    """An executor with ``map`` only (no per-job completion)."""

    def map(self, fn, items):
        return [fn(x) for x in items]


def _recorder() -> tuple[list[tuple[int, int, dict[str, Any]]], Any]:
    events: list[tuple[int, int, dict[str, Any]]] = []
    return events, lambda done, total, info: events.append((done, total, info))


@pytest.mark.parametrize("executor", ["serial", "processes", MapOnlyExecutor()], ids=["serial", "processes", "map"])
def test_a_callable_hears_of_every_scenario(executor: Any) -> None:
    events, callback = _recorder()
    table = optev.sweep(GRID, executor=executor, progress=callback, **RUN)
    assert [(done, total) for done, total, _ in events] == [(1, 2), (2, 2)]
    assert sorted(info["scenario"] for _, _, info in events) == [0, 1]
    for _, _, info in events:
        k = info["scenario"]
        assert info["parameters"] == {"v2g_share": GRID["v2g_share"][k]}
        assert info["wall_s"] == table.loc[k, "wall_s"]
    assert list(table["scenario"]) == [0, 1]  # rows stay in grid order whatever the finishing order


def test_progress_true_prints_a_line_per_scenario_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    optev.sweep(GRID, progress=True, **RUN)
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 2
    assert "1/2 scenarios" in lines[0] and "scenario 0: v2g_share=0.0" in lines[0]
    assert "2/2 scenarios" in lines[1] and "scenario 1: v2g_share=1.0" in lines[1]


def test_no_progress_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    optev.sweep({"v2g_share": [0.0]}, **RUN)
    assert capsys.readouterr().err == ""


def test_a_bad_progress_value_is_an_error() -> None:
    with pytest.raises(DataError, match="progress must be"):
        optev.sweep(GRID, progress="yes", **RUN)


def test_progress_line_counts_any_unit_at_any_interval() -> None:
    stream = io.StringIO()  # not a terminal
    bar = ProgressLine(40, stream=stream, force=True, unit="scenarios", every=1)
    for k in range(1, 41):
        bar.update(k, 40, {"note": f"scenario {k - 1}"})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 40
    assert "40/40 scenarios" in lines[-1] and "scenario 39" in lines[-1]


def test_dask_executor_reports_jobs_as_they_finish() -> None:
    pytest.importorskip("distributed")
    from optev.hierarchy.executor import DaskExecutor

    with DaskExecutor(processes=False, n_workers=1, threads_per_worker=2) as ex:
        assert sorted(ex.map_as_completed(abs, [-1, -2, -3])) == [(0, 1), (1, 2), (2, 3)]
