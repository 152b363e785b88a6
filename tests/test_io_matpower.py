"""MATPOWER reader: distribution cases in Ω/kW, per-unit cases, and refusal of unknown code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optev.errors import DataError, FormatError
from optev.io import read_matpower
from optev.io.matpower import parse_matpower
from optev.testing import ABS_TOL_KW, RTOL_EXACT
from paths import FEEDERS, need

PU_CASE = """function mpc = tiny
%% a standard per-unit case, no conversion statements
mpc.version = '2';
mpc.baseMVA = 100;
mpc.bus = [
    1  3  0    0    0  0    1  1.0  0  11  1  1.1  0.9;
    2  1  1.5  0.5  0  0.2  1  1.0  0  11  1  1.1  0.9;
    3  1  0.5  0.1  0  0    1  1.0  0  0.4 1  1.1  0.9;
    4  4  0    0    0  0    1  1.0  0  11  1  1.1  0.9;
];
mpc.gen = [
    1  0  0  10  -10  1.02  100  1  20  -5  0  0  0  0  0  0  0  0  0  0  0;
];
mpc.branch = [
    1  2  0.01  0.02  0.001  10  10  10  0      0  1  -360  360;
    2  3  0.02  0.08  0      2   2   2   1.05   0  1  -360  360;
    2  4  0.01  0.02  0      0   0   0   0      0  1  -360  360;
];
mpc.gencost = [
    2  0  0  3  0.01  40  5;
];
"""


def write(tmp_path: Path, text: str, name: str = "case.m") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_distribution_case_conversion_statements_are_applied() -> None:
    fd = read_matpower(need(FEEDERS / "case33bw.m"))
    assert fd.base_mva == 10.0
    assert fd.total_load_kw() == pytest.approx(3715.0, abs=ABS_TOL_KW)
    assert fd.total_load_kvar() == pytest.approx(2300.0, abs=ABS_TOL_KW)
    # first branch 1-2: 0.0922 + j0.0470 Ω in the file, kept in Ω
    line = fd.lines.iloc[0]
    assert (line.from_bus, line.to_bus) == ("1", "2")
    assert line.r_ohm == pytest.approx(0.0922, rel=RTOL_EXACT)
    assert line.x_ohm == pytest.approx(0.0470, rel=RTOL_EXACT)
    assert int(fd.lines["in_service"].sum()) == 32 and len(fd.lines) == 37
    assert fd.substations["bus_id"].tolist() == ["1"]


def test_case141_power_factor_conversion() -> None:
    fd = read_matpower(need(FEEDERS / "case141.m"))
    pf = 0.85
    ratio = fd.buses["q_load_kvar"].sum() / fd.buses["p_load_kw"].sum()
    assert ratio == pytest.approx(np.sin(np.arccos(pf)) / pf, rel=RTOL_EXACT)


def test_per_unit_case(tmp_path: Path) -> None:
    fd = read_matpower(write(tmp_path, PU_CASE))
    assert fd.bus_ids == ["1", "2", "3"]  # isolated bus 4 dropped with its branch
    assert fd.buses.loc[1, "p_load_kw"] == pytest.approx(1500.0)
    assert fd.buses.loc[1, "b_shunt_kvar"] == pytest.approx(200.0)
    zb = 11.0 ** 2 / 100.0
    assert fd.lines.loc[0, "r_ohm"] == pytest.approx(0.01 * zb, rel=RTOL_EXACT)
    assert fd.lines.loc[0, "b_us"] == pytest.approx(0.001 / zb * 1e6, rel=RTOL_EXACT)
    assert fd.lines.loc[0, "ampacity_a"] == pytest.approx(10 * 1e3 / (np.sqrt(3) * 11.0), rel=RTOL_EXACT)
    trafo = fd.transformers.iloc[0]
    assert (trafo.hv_bus, trafo.lv_bus, trafo.tap, trafo.sn_kva) == ("2", "3", 1.05, 2000.0)
    sub = fd.substations.iloc[0]
    assert sub.vm_pu == 1.02 and sub.p_import_max_kw == 20000.0 and sub.p_export_max_kw == 5000.0
    assert sub.price_buy_per_kwh == pytest.approx(40 / 1e3, rel=RTOL_EXACT)


def test_transformer_inferred_from_different_base_voltages(tmp_path: Path) -> None:
    text = PU_CASE.replace("2  3  0.02  0.08  0      2   2   2   1.05", "2  3  0.02  0.08  0      2   2   2   0")
    fd = read_matpower(write(tmp_path, text))
    assert fd.transformers["tap"].tolist() == [1.0]


@pytest.mark.parametrize("statement", [
    "for i = 1:3\n mpc.bus(i, PD) = 0;\nend",
    "mpc = scale_load(2, mpc);",
    "mpc.bus(:, PD) = mpc.bus(:, PD) * rand();",
    "if true\nend",
])
def test_unknown_statements_are_refused(tmp_path: Path, statement: str) -> None:
    with pytest.raises(FormatError, match=r"case\.m: line \d+"):
        read_matpower(write(tmp_path, PU_CASE + statement + "\n"))


def test_supported_conversions_are_evaluated(tmp_path: Path) -> None:
    extra = """
[PQ, PV, REF, NONE, BUS_I, BUS_TYPE, PD, QD, GS, BS, BUS_AREA, VM, ...
    VA, BASE_KV, ZONE, VMAX, VMIN, LAM_P, LAM_Q, MU_VMAX, MU_VMIN] = idx_bus;
k = 2;
mpc.bus(:, [PD, QD]) = mpc.bus(:, [PD, QD]) .* k ^ 2 - 0;
mpc.bus(2, VMIN) = sqrt(0.81);
"""
    fd = read_matpower(write(tmp_path, PU_CASE + extra))
    assert fd.buses.loc[1, "p_load_kw"] == pytest.approx(6000.0)
    assert fd.buses.loc[1, "v_min_pu"] == pytest.approx(0.9)


def test_format_errors(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="cannot read"):
        read_matpower(tmp_path / "missing.m")
    with pytest.raises(FormatError, match="missing mpc.branch"):
        read_matpower(write(tmp_path, "mpc.baseMVA = 1;\nmpc.bus = [1 3 0 0 0 0 1 1 0 11 1 1.1 0.9];\n"
                                      "mpc.gen = [1 0 0 1 -1 1 1 1 1 0];"))
    with pytest.raises(FormatError, match="matrix rows have different lengths"):
        parse_matpower("mpc.bus = [1 2 3; 4 5];")
    with pytest.raises(FormatError, match="unbalanced brackets"):
        parse_matpower("mpc.bus = [1 2 3; 4 5 6;")
    with pytest.raises(FormatError, match="refers to unknown bus 9"):
        read_matpower(write(tmp_path, PU_CASE.replace("2  4  0.01", "2  9  0.01")))
    with pytest.raises(FormatError, match="mpc.bus has 5 columns"):
        read_matpower(write(tmp_path, "mpc.bus = [1 3 0 0 0];\nmpc.branch = [];\nmpc.gen = [];"))


def test_meshed_case_is_refused(tmp_path: Path) -> None:
    text = PU_CASE.replace("    2  4  0.01", "    1  2  0.01  0.02  0  0 0 0 0 0 1 -360 360;\n    2  4  0.01")
    with pytest.raises(DataError, match="closes a loop"):
        read_matpower(write(tmp_path, text))
    fd = read_matpower(write(tmp_path, text), validate=False)
    assert len(fd.lines) == 2
