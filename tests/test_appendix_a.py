"""Appendix A metrics against hand-computed examples, and every edge case the module defines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from optev.errors import DataError
from optev.services import appendix_a as A
from optev.tolerances import RTOL_EXACT

NAN = float("nan")


def approx(x: float) -> object:
    return pytest.approx(x, rel=RTOL_EXACT)


# -- A.2 -------------------------------------------------------------------------------------------

def test_peak_metrics_by_hand() -> None:
    base = [100.0, 150.0, 120.0, 80.0]
    act = [110.0, 130.0, 125.0, 60.0]
    # peaks 150 and 130; below-baseline steps: 20 (k=2) and 20 (k=4), 15-min steps
    assert A.delta_p_peak_kw(base, act) == approx(20.0)
    assert A.e_adj_kwh(base, act, 0.25) == approx(10.0)
    # valley filling: above-baseline steps 10 (k=1) and 5 (k=3)
    assert A.e_fill_kwh(base, act, 0.25) == approx(3.75)


def test_peak_metrics_skip_missing_steps_and_are_nan_when_empty() -> None:
    base = [100.0, NAN, 120.0]
    act = [90.0, 500.0, NAN]
    assert A.delta_p_peak_kw(base, act) == approx(10.0)  # only k=1 is valid in both
    assert A.e_adj_kwh(base, act, 1.0) == approx(10.0)
    assert A.valid_steps(base, act) == 1
    assert math.isnan(A.delta_p_peak_kw([], []))
    assert math.isnan(A.e_adj_kwh([NAN], [1.0], 0.25))


def test_a_worse_peak_is_negative_not_clipped() -> None:
    assert A.delta_p_peak_kw([100.0, 100.0], [90.0, 140.0]) == approx(-40.0)


# -- A.3 -------------------------------------------------------------------------------------------

def test_voltage_metrics_by_hand() -> None:
    assert A.q_ev_mean_kvar([10.0, -20.0, 40.0, NAN]) == approx(10.0)
    v_base = np.array([[0.94, 1.00], [0.96, 1.02], [0.98, 1.01]])
    v_act = np.array([[0.97, 1.00], [0.98, 1.01], [0.99, 1.01]])
    # bus 1: Σ|act−1| = 0.03+0.02+0.01 = 0.06, Σ|base−1| = 0.06+0.04+0.02 = 0.12 → 0.5
    # bus 2: 0.00+0.01+0.01 = 0.02 vs 0.00+0.02+0.01 = 0.03 → 1/3
    np.testing.assert_allclose(A.i_v(v_act, v_base, 1.0), [0.5, 1.0 / 3.0], rtol=1e-12)
    assert A.i_v_total(v_act, v_base, 1.0) == approx(1.0 - 0.08 / 0.15)
    # a per-bus target: bus 1 against 0.95: 0.02+0.03+0.04 = 0.09 vs 0.01+0.01+0.03 = 0.05 (worse)
    np.testing.assert_allclose(A.i_v(v_act, v_base, [0.95, 1.0]), [1.0 - 0.09 / 0.05, 1.0 / 3.0], rtol=1e-12)


def test_voltage_zero_denominator_and_empty_window() -> None:
    flat = np.ones((3, 2))
    worse = flat + np.array([[0.0, 0.01]] * 3)
    # baseline exactly on target: 0 where the controlled run is exact too, undefined where it is not
    out = A.i_v(worse, flat, 1.0)
    assert out[0] == 0.0 and math.isnan(out[1])
    assert math.isnan(A.i_v_total(worse, flat, 1.0))
    assert A.i_v_total(flat, flat, 1.0) == 0.0
    assert np.isnan(A.i_v(np.full((2, 2), NAN), flat[:2], 1.0)).all()
    assert math.isnan(A.q_ev_mean_kvar([]))


# -- A.4 -------------------------------------------------------------------------------------------

def test_frequency_metrics_by_hand() -> None:
    cmd = [100.0, 120.0, 80.0, 100.0, 100.0]
    act = [101.0, 117.0, 80.0, 102.0, NAN]
    # errors 1, 3, 0, 2 over the 4 valid steps
    assert A.mae_kw(act, cmd) == approx(1.5)
    assert A.eta_pct(act, cmd, 2.0) == approx(75.0)  # an error equal to δ passes
    assert A.eta_pct(act, cmd, 0.5) == approx(25.0)
    # mileage over the command: 20 + 40 + 20 + 0
    assert A.mileage_kw(cmd) == approx(80.0)


def test_frequency_tolerance_survives_rounding_and_bad_delta_is_refused() -> None:
    assert A.eta_pct([0.1 + 0.2], [0.0], 0.3) == 100.0
    assert math.isnan(A.eta_pct([], [], 1.0)) and math.isnan(A.mae_kw([NAN], [1.0]))
    with pytest.raises(DataError, match="tolerance"):
        A.eta_pct([1.0], [1.0], -1.0)
    assert math.isnan(A.mileage_kw([]))


# -- A.5 -------------------------------------------------------------------------------------------

def test_smoothing_metrics_by_hand() -> None:
    res = [100.0, 140.0, 90.0, 130.0]        # |Δ| = 40, 50, 40 → S̄ = 130/3
    combined = [100.0, 120.0, 110.0, 120.0]  # |Δ| = 20, 10, 10 → S̄ = 40/3
    assert A.s_bar_kw(res) == approx(130.0 / 3.0)
    assert A.s_impr(combined, res) == approx(1.0 - 40.0 / 130.0)


def test_smoothing_edge_cases() -> None:
    assert math.isnan(A.s_bar_kw([5.0]))                       # N = 1: no step-to-step change
    assert A.s_bar_kw([1.0, NAN, 3.0, 4.0]) == approx(1.0)     # only the valid neighbours 3 → 4
    assert A.s_impr([5.0, 5.0], [7.0, 7.0]) == 0.0             # flat renewables, flat result
    assert math.isnan(A.s_impr([5.0, 6.0], [7.0, 7.0]))        # flat renewables made rougher
    assert math.isnan(A.s_impr([1.0, NAN, 2.0], [1.0, 2.0, NAN]))


# -- A.6 -------------------------------------------------------------------------------------------

def test_demand_response_by_hand() -> None:
    base = [500.0, 500.0, 500.0, 500.0]
    act = [300.0, 350.0, 520.0, 400.0]
    e = A.e_dr_kwh(base, act, 0.25)
    assert e == approx((200.0 + 150.0 + 0.0 + 100.0) * 0.25)
    assert A.pay_energy(3.0, e) == approx(337.5)
    # capacity form: 15 CNY/kW for the mean response over the 1-h event
    assert A.pay_capacity(15.0, e, 1.0) == approx(15.0 * 112.5)


def test_inputs_are_validated() -> None:
    with pytest.raises(DataError, match="infinite"):
        A.e_dr_kwh([1.0, math.inf], [1.0, 1.0], 0.25)
    with pytest.raises(DataError, match="shape"):
        A.mae_kw([1.0, 2.0], [1.0])
    with pytest.raises(DataError, match="dt_h"):
        A.e_adj_kwh([1.0], [1.0], 0.0)
