"""The ``optev`` command line: pf, info, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from optev.cli import main
from optev.testing import LOSS_RTOL, VM_ATOL_PU
from paths import FEEDERS, V2SIM, need


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_pf_json_on_the_embedded_default(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "pf", "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert set(data) == {"loss_kw", "loss_kvar", "vmin_pu", "vmin_bus", "converged", "iterations"}
    assert data["loss_kw"] == pytest.approx(202.677, rel=LOSS_RTOL)
    assert data["vmin_bus"] == "18" and data["converged"] is True


@pytest.mark.parametrize("case", ["case69", "case141"])
def test_pf_matches_reference(capsys: pytest.CaptureFixture[str], case: str) -> None:
    ref = pd.read_csv(need(FEEDERS / "reference_results.csv")).set_index("case").loc[case]
    code, out, _ = run(capsys, "pf", str(FEEDERS / f"{case}.m"), "--json")
    data = json.loads(out)
    assert code == 0
    assert data["loss_kw"] == pytest.approx(ref.ac_loss_kW, rel=LOSS_RTOL)
    assert data["vmin_pu"] == pytest.approx(ref.vmin_pu, abs=VM_ATOL_PU)
    assert data["vmin_bus"] == str(int(ref.vmin_bus_1based))


def test_pf_load_scale_and_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "pf", "--load-scale", "0.5")
    assert code == 0
    assert "min voltage" in out and "converged   yes" in out
    code, out, _ = run(capsys, "pf", "--load-scale", "0.5", "--json")
    assert json.loads(out)["vmin_pu"] > 0.95


def test_info_json_nanjing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", str(need(V2SIM / "ux_Nanjing")), "--json")
    assert code == 0
    data = json.loads(out)
    assert data == {"buses": 165, "lines": 160, "road_nodes": 3888, "road_links": 8312, "stations_fcs": 315,
                    "stations_scs": 3888, "stations_private": 0, "chargers": 42030,
                    "charger_kw_total": data["charger_kw_total"], "evs": 0,
                    "grid_adequacy": data["grid_adequacy"], "grid_base_violations": data["grid_base_violations"],
                    "grid_loadability": data["grid_loadability"]}
    assert data["charger_kw_total"] > 0
    assert data["grid_base_violations"]["total"] == 0 and data["grid_loadability"] > 1


def test_info_on_matpower_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", str(need(FEEDERS / "case33bw.m")), "--json")
    assert json.loads(out)["buses"] == 33 and json.loads(out)["evs"] == 0
    code, out, _ = run(capsys, "info", str(FEEDERS / "case33bw.m"))
    assert code == 0 and "buses" in out


@pytest.mark.parametrize("argv, message", [
    (["pf", "missing.m"], "no such file or folder: missing.m"),
    (["pf", "--bogus"], "unrecognized arguments: --bogus"),
    (["info"], "the following arguments are required: path"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["pf", "--load-scale", "abc"], "invalid float value: 'abc'"),
])
def test_user_mistakes_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str],
                                               message: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1


def test_bad_file_content_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.m"
    bad.write_text("mpc.bus = [1 3 0 0 0 0 1 1 0 11 1 1.1 0.9];\nsystem('rm -rf /');\n")
    code, _, err = run(capsys, "pf", str(bad))
    assert code == 2 and "unsupported statement" in err and err.count("\n") == 1
    other = tmp_path / "x.txt"
    other.write_text("hello")
    code, _, err = run(capsys, "info", str(other))
    assert code == 2 and "unknown file type" in err


def test_console_script_has_no_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "optev.cli", "pf", "nope.m"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
