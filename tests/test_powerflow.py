"""AC power flow: published references, batching, both solution paths, errors, checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from optev.data import Feeder
from optev.data.synthetic import synthetic_radial_feeder
from optev.errors import DataError, PowerFlowError
from optev.io import read_matpower
from optev.powerflow import compile_network, run_powerflow, violations
from optev.testing import LOSS_RTOL, POWER_BALANCE_ATOL_KW, VM_ATOL_PU, VM_EXACT_ATOL_PU
from paths import FEEDERS, need

CASES = ["case33bw", "case69", "case85", "case141", "case118zh", "case136ma"]


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return pd.read_csv(need(FEEDERS / "reference_results.csv")).set_index("case")


def feeder(case: str) -> Feeder:
    return read_matpower(need(FEEDERS / f"{case}.m"))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", ["numba", "scipy"])
def test_reference_feeders(case: str, method: str, reference: pd.DataFrame) -> None:
    ref = reference.loc[case]
    res = run_powerflow(feeder(case), method=method)
    s = res.summary().iloc[0]
    assert s.converged
    assert s.loss_kw == pytest.approx(ref.ac_loss_kW, rel=LOSS_RTOL)
    assert s.loss_kvar == pytest.approx(ref.ac_loss_kvar, rel=LOSS_RTOL)
    assert s.vmin_pu == pytest.approx(ref.vmin_pu, abs=VM_ATOL_PU)
    assert s.vmin_bus == str(int(ref.vmin_bus_1based))


def test_case33bw_profile_matches_pandapower() -> None:
    pp = pytest.importorskip("pandapower")
    import pandapower.networks as pn

    net = pn.case33bw()
    pp.runpp(net, tolerance_mva=1e-12)
    res = run_powerflow(feeder("case33bw"))
    np.testing.assert_allclose(res.vm_pu[0], net.res_bus.vm_pu.to_numpy(), rtol=0, atol=VM_ATOL_PU)
    np.testing.assert_allclose(res.va_deg[0], net.res_bus.va_degree.to_numpy(), rtol=0, atol=VM_ATOL_PU)


def test_96_snapshots_batched_equal_single_calls() -> None:
    fd = feeder("case69")
    rng = np.random.default_rng(7)
    scale = rng.uniform(0.2, 1.3, size=(96, 1)) * rng.uniform(0.8, 1.2, size=(96, len(fd.buses)))
    p = scale * fd.buses["p_load_kw"].to_numpy()
    q = scale * fd.buses["q_load_kvar"].to_numpy()
    batch = run_powerflow(fd, p, q)
    net = compile_network(fd)
    for k in range(96):
        one = run_powerflow(fd, p[k], q[k], network=net)
        np.testing.assert_allclose(batch.vm_pu[k], one.vm_pu[0], rtol=0, atol=VM_EXACT_ATOL_PU)
        np.testing.assert_allclose(batch.loss_kw[k], one.loss_kw[0], rtol=0, atol=POWER_BALANCE_ATOL_KW)
        assert batch.iterations[k] == one.iterations[0]
    assert batch.converged.all()


def test_numba_and_scipy_paths_agree_on_all_outputs() -> None:
    fd = synthetic_radial_feeder(300, seed=3)
    rng = np.random.default_rng(1)
    p = rng.uniform(0.5, 1.5, size=(20, 1)) * fd.buses["p_load_kw"].to_numpy()
    a = run_powerflow(fd, p, 0.3 * p, method="numba")
    b = run_powerflow(fd, p, 0.3 * p, method="scipy")
    for name in ("vm_pu", "va_deg", "line_p_kw", "line_q_kvar", "line_current_a", "loss_kw", "substation_p_kw"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=0, atol=1e-9)


def test_power_balance_with_shunts_and_line_charging() -> None:
    fd = synthetic_radial_feeder(50, seed=2)
    fd.buses.loc[5, "g_shunt_kw"] = 20.0
    fd.buses.loc[7, "b_shunt_kvar"] = 150.0
    fd.lines["b_us"] = 5.0
    res = run_powerflow(fd)
    vm2 = res.vm_pu[0] ** 2
    shunt_p = (fd.buses["g_shunt_kw"].to_numpy() * vm2).sum()
    shunt_q = -(fd.buses["b_shunt_kvar"].to_numpy() * vm2).sum()
    p_in = res.substation_p_kw.sum()
    q_in = res.substation_q_kvar.sum()
    assert p_in == pytest.approx(fd.total_load_kw() + shunt_p + res.loss_kw[0], abs=POWER_BALANCE_ATOL_KW)
    assert q_in == pytest.approx(fd.total_load_kvar() + shunt_q + res.loss_kvar[0], abs=POWER_BALANCE_ATOL_KW)


def test_transformer_with_tap_matches_hand_iteration() -> None:
    """Two buses joined by a transformer: V2 = V1/tap − z·conj(S/V2), solved by plain iteration."""
    fd = Feeder(
        base_mva=1.0,
        buses=pd.DataFrame({"bus_id": ["hv", "lv"], "base_kv": [10.0, 0.4], "p_load_kw": [0.0, 300.0],
                            "q_load_kvar": [0.0, 100.0]}),
        transformers=pd.DataFrame({"transformer_id": ["T1"], "hv_bus": ["hv"], "lv_bus": ["lv"],
                                   "r_pu": [0.01], "x_pu": [0.04], "tap": [1.025], "sn_kva": [400.0]}),
        substations=pd.DataFrame({"substation_id": ["S"], "bus_id": ["hv"], "vm_pu": [1.02]}),
    )
    s, z, tap, v1 = (0.3 + 0.1j), 0.01 + 0.04j, 1.025, 1.02
    v2 = 1.0 + 0j
    for _ in range(200):
        v2 = v1 / tap - z * np.conj(s / v2)
    res = run_powerflow(fd)
    assert res.vm_pu[0, 1] == pytest.approx(abs(v2), abs=VM_EXACT_ATOL_PU)
    i = np.conj(s / v2)
    assert res.loss_kw[0] == pytest.approx(abs(i) ** 2 * 0.01 * 1e3, abs=POWER_BALANCE_ATOL_KW)
    assert res.trafo_loading[0, 0] == pytest.approx(abs(v1 * np.conj(i / tap)) * 1e3 / 400.0, rel=1e-9)


def test_reversed_line_orientation_reports_flow_from_its_from_bus() -> None:
    base = synthetic_radial_feeder(10, seed=4)
    flipped = Feeder(base_mva=base.base_mva, buses=base.buses, substations=base.substations,
                     lines=base.lines.assign(from_bus=base.lines["to_bus"], to_bus=base.lines["from_bus"]))
    a, b = run_powerflow(base), run_powerflow(flipped)
    np.testing.assert_allclose(a.vm_pu, b.vm_pu, rtol=0, atol=VM_EXACT_ATOL_PU)
    # flow into the line at the (new) from end = −(flow out at the old to end) = −(p_from − losses of the line)
    line_loss = 3 * a.line_current_a ** 2 * base.lines["r_ohm"].to_numpy() * 1e-3  # three phases, kW
    np.testing.assert_allclose(b.line_p_kw, -(a.line_p_kw - line_loss), rtol=0, atol=1e-6)


def test_several_feeders_each_with_its_own_substation() -> None:
    one = synthetic_radial_feeder(20, seed=5)
    two = synthetic_radial_feeder(20, seed=6)
    rename = {b: f"b{b}" for b in two.buses["bus_id"]}
    both = Feeder(
        base_mva=one.base_mva,
        buses=pd.concat([one.buses, two.buses.assign(bus_id=two.buses["bus_id"].map(rename))]),
        lines=pd.concat([one.lines, two.lines.assign(line_id="b" + two.lines["line_id"],
                                                     from_bus=two.lines["from_bus"].map(rename),
                                                     to_bus=two.lines["to_bus"].map(rename))]),
        substations=pd.concat([one.substations,
                               two.substations.assign(substation_id="sub2", bus_id="b0", vm_pu=1.03)]),
    )
    res = run_powerflow(both)
    np.testing.assert_allclose(res.vm_pu[0, :20], run_powerflow(one).vm_pu[0], atol=VM_EXACT_ATOL_PU)
    assert res.vm_pu[0, 20] == pytest.approx(1.03)
    assert res.substation_p_kw.shape == (1, 2)


def test_dataframe_input_aligns_columns_and_keeps_time_index() -> None:
    fd = feeder("case33bw")
    idx = pd.date_range("2026-01-01", periods=3, freq="15min", tz="Asia/Shanghai")
    p = pd.DataFrame([fd.buses["p_load_kw"].to_numpy()] * 3, index=idx, columns=fd.bus_ids)
    q = pd.DataFrame([fd.buses["q_load_kvar"].to_numpy()] * 3, index=idx, columns=fd.bus_ids)
    res = run_powerflow(fd, p[p.columns[::-1]], q)
    assert list(res.index) == list(idx)
    np.testing.assert_allclose(res.vm_pu, run_powerflow(fd).vm_pu.repeat(3, axis=0), atol=VM_EXACT_ATOL_PU)
    assert set(res.bus_frame().columns) == {"time", "bus_id", "vm_pu", "va_deg"}
    assert len(res.line_frame()) == 3 * len(fd.lines)


def test_load_scale_multiplies_loads() -> None:
    fd = feeder("case33bw")
    a = run_powerflow(fd, load_scale=0.5)
    b = run_powerflow(fd, 0.5 * fd.buses["p_load_kw"].to_numpy(), 0.5 * fd.buses["q_load_kvar"].to_numpy())
    np.testing.assert_allclose(a.vm_pu, b.vm_pu, atol=VM_EXACT_ATOL_PU)


def test_input_errors_name_the_problem() -> None:
    fd = feeder("case33bw")
    with pytest.raises(DataError, match="unknown bus 'X'"):
        run_powerflow(fd, pd.DataFrame({"X": [1.0]}))
    with pytest.raises(DataError, match="no column for bus"):
        run_powerflow(fd, pd.DataFrame({"1": [1.0]}))
    with pytest.raises(DataError, match=r"does not match \(steps × 33 buses\)"):
        run_powerflow(fd, np.zeros((2, 5)))
    with pytest.raises(DataError, match="non-finite value at step 0"):
        run_powerflow(fd, np.full(33, np.nan))
    with pytest.raises(DataError, match="unknown power-flow method 'fast'"):
        run_powerflow(fd, method="fast")


def test_nonconvergence_is_an_error_or_flagged() -> None:
    fd = feeder("case33bw")
    with pytest.raises(PowerFlowError, match="did not converge"):
        run_powerflow(fd, load_scale=20.0)
    p = np.vstack([fd.buses["p_load_kw"], 20 * fd.buses["p_load_kw"]])
    res = run_powerflow(fd, p, raise_on_failure=False)
    assert res.converged.tolist() == [True, False]
    assert np.isnan(res.vm_pu[1]).all() and not np.isnan(res.vm_pu[0]).any()
    table = violations(res, fd)
    assert (table["kind"] == "not_converged").sum() == 1


def test_non_radial_feeder_is_refused() -> None:
    fd = feeder("case33bw")
    fd.lines["in_service"] = True  # close the five tie switches
    with pytest.raises(DataError, match="closes a loop"):
        run_powerflow(fd)


def test_zero_impedance_branch_is_refused() -> None:
    fd = synthetic_radial_feeder(5)
    fd.lines.loc[2, ["r_ohm", "x_ohm"]] = 0.0
    with pytest.raises(PowerFlowError, match="zero impedance"):
        run_powerflow(fd)


def test_violations_table() -> None:
    fd = feeder("case33bw")
    fd.buses["v_min_pu"] = 0.95
    fd.lines.loc[0, "ampacity_a"] = 100.0
    res = run_powerflow(fd)
    table = violations(res, fd)
    low = table[table["kind"] == "bus_voltage_low"]
    assert set(low["element_id"]) == {b for b, v in zip(res.bus_ids, res.vm_pu[0]) if v < 0.95}
    assert (low["excess"] > 0).all()
    line = table[table["kind"] == "line_current"]
    assert line["element_id"].tolist() == ["1"] and line["limit"].iloc[0] == 100.0
    assert line["value"].iloc[0] == pytest.approx(res.line_current_a[0, 0])


def test_large_synthetic_feeder_solves() -> None:
    fd = synthetic_radial_feeder(10_000, seed=0)
    res = run_powerflow(fd)
    assert res.converged.all() and 0.85 < np.nanmin(res.vm_pu) < 1.0
