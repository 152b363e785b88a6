"""``optev run --service FILE``: the interface of the services issue, end to end on the default instance."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from optev.cli import main
from optev.services.evaluate import APPENDIX_A_KEYS, RECORD_COLUMNS
from paths import run_main


@pytest.fixture(scope="module")
def dr_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The shipped demand-response example, 17:00-21:00 on the embedded default."""
    out = tmp_path_factory.mktemp("svc") / "dr"
    code, report = run_main(["run", "--service", "demand_response", "--start", "17:00", "--steps", "16",
                             "--out", str(out)])
    assert code == 0
    return out, report


def test_summary_has_appendix_a_and_the_answer_to_the_request(dr_run: tuple[Path, str]) -> None:
    out, report = dr_run
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["appendix_a"]) == set(APPENDIX_A_KEYS)
    a = summary["appendix_a"]
    assert a["e_dr_kwh"] is not None and a["e_dr_kwh"] > 0 and a["pay"] == pytest.approx(2.96 * a["e_dr_kwh"])
    assert a["mae_kw"] is None and a["i_v"] is None  # not defined by demand response
    assert summary["service"]["id"] == "dr-evening" and summary["service"]["status"] in ("accepted", "partial")
    assert summary["inputs"]["service"].endswith("demand_response.toml")
    # the feeder's losses in the window, both days from the AC check, realised
    steps, base = pd.read_csv(out / "steps.csv"), pd.read_csv(out / "baseline_steps.csv")
    inside = pd.to_datetime(steps["time"]).dt.strftime("%H:%M").between("18:00", "19:45").to_numpy()
    assert summary["service"]["window_loss_kwh"] == pytest.approx(steps["loss_kw"][inside].sum() * 0.25)
    assert summary["service"]["baseline_window_loss_kwh"] == pytest.approx(base["loss_kw"][inside].sum() * 0.25)
    assert "service      dr-evening" in report and "Appendix A   e_dr_kwh" in report
    assert "plots/service_response.png" in summary["plots"] and (out / "plots" / "service_response.png").stat().st_size


def test_records_and_series_are_written_beside_the_other_tables(dr_run: tuple[Path, str]) -> None:
    out, _ = dr_run
    records = pd.read_csv(out / "service_records.csv")
    assert list(records.columns) == list(RECORD_COLUMNS)
    group = records[records["participant_kind"] == "city"]
    assert len(group) == 1 and group["requested_kw"].iloc[0] == 300.0
    summary = json.loads((out / "summary.json").read_text())
    assert group["delivered_kwh"].iloc[0] == pytest.approx(summary["appendix_a"]["e_dr_kwh"], abs=0.05)
    # station shares add up to the group's energy exactly at 0.1 kWh
    stations = records[records["participant_kind"] == "station"]
    assert stations["delivered_kwh"].sum() == pytest.approx(group["delivered_kwh"].iloc[0], abs=1e-9)
    series = pd.read_csv(out / "service_series.csv")
    inside = series.dropna(subset=["p_base_kw"])
    assert len(inside) == 8  # 18:00-20:00 in 15-min steps
    # E_DR is the realised shortfall below the baseline
    e = ((inside["p_base_kw"] - inside["p_act_kw"]).clip(lower=0) * 0.25).sum()
    assert e == pytest.approx(summary["appendix_a"]["e_dr_kwh"], rel=1e-9)


def test_a_bad_service_file_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "svc.toml"
    bad.write_text('[service]\nid = "x"\nproduct = "teleport"\nrule = "zj_dr_energy"\n', encoding="utf-8")
    code = main(["run", "--service", str(bad), "--steps", "2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "product must be one of" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_run_that_misses_the_service_window_is_refused(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--service", "demand_response", "--start", "10:00", "--steps", "2", "--no-plots",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "lies outside the run" in err and not (tmp_path / "o").exists()


def test_an_absurd_quantity_is_a_unit_mistake(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "svc.toml"
    bad.write_text('[service]\nid = "x"\nproduct = "demand_response"\nrule = "zj_dr_energy"\n'
                   '[window]\nstart = "18:00"\nend = "20:00"\n[quantity]\nreduction_kw = 1e12\n'
                   '[baseline]\nrule = "uncontrolled"\n', encoding="utf-8")
    assert main(["run", "--service", str(bad), "--steps", "2", "--out", str(tmp_path / "o")]) == 2
    assert "beyond any city" in capsys.readouterr().err
