"""Grid services in the hierarchy (issue 12): the city's services shared out to regions, kept by
the station level, and delivered end to end like the monolithic controller."""

from __future__ import annotations

import dataclasses
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from optev.blocks.service import ServiceLimit, ServiceRamp, ServiceReserve, ServiceVoltage
from optev.blocks.window import build_window
from optev.compose.formulation import load_formulation
from optev.data.synthetic import synthetic_charging_instance
from optev.errors import DataError
from optev.hierarchy import HierarchicalStrategy, SerialExecutor
from optev.hierarchy.regions import region_window, split_regions
from optev.hierarchy.services import (aggregate_services, city_import_target, grid_services, region_services,
                                      service_allowances)
from optev.hierarchy.station import bus_aggregates
from optev.mpc import Controller
from optev.services.request import parse_service
from optev.services.run import run_service, with_service_block
from paths import load_benchmark


@pytest.fixture(scope="module")
def city():
    bench: ModuleType = load_benchmark("bench_hierarchy")
    return synthetic_charging_instance(80, feeder=bench.multi_feeder(2, 20, seed=7), n_stations=6, seed=8)


@pytest.fixture(scope="module")
def window(city):
    return build_window(city, start="17:00", steps=16, step="15min")


def _pieces(city, window):
    return [region_window(window, r) for r in split_regions(city, by="feeder")]


def test_limits_and_reserves_are_shared_so_that_the_regions_add_up(city, window) -> None:
    ids = tuple(str(s) for s in window.stations.station_id)
    upper = pd.Series(np.r_[np.full(8, np.nan), np.full(8, 50.0)], index=window.times)
    active = pd.Series(np.arange(16) >= 8, index=window.times)
    share = pd.DataFrame(1.0 / len(ids), index=window.times, columns=list(ids))  # equal baseline shares
    services = [ServiceLimit("by_power", ids, upper, None, 3.0),
                ServiceLimit("by_baseline", ids, upper, None, 3.0, station_share=share),
                ServiceReserve("r", ids, active, 30.0, 10.0, 3.0, duration_h=0.25),
                ServiceRamp("s", ids, active, 0.5, previous_kw=12.0)]
    parts = [region_services(services, window, w, st) for w, _, st in _pieces(city, window)]
    assert len(parts) == 2 and all(len(p) == 4 for p in parts)
    for j in (0, 1):
        total = sum(p[j].upper_kw.fillna(0.0) for p in parts)
        assert np.allclose(total.to_numpy()[8:], 50.0) and total.to_numpy()[:8].sum() == 0.0
    # equal station shares: each region's part is its number of stations over the city's
    for p, (w, _, st) in zip(parts, _pieces(city, window)):
        assert p[1].upper_kw.to_numpy()[8:] == pytest.approx(50.0 * st.size / len(ids))
        assert set(p[0].station_ids) == set(np.asarray(window.stations.station_id)[st].astype(str))
    assert sum(p[2].up_kw for p in parts) == pytest.approx(30.0)
    assert sum(p[2].down_kw for p in parts) == pytest.approx(10.0)
    assert all(p[3].previous_kw is None and p[3].weight_per_kw == 0.5 for p in parts)  # the city's X is not theirs


def test_voltage_support_keeps_each_regions_buses(city, window) -> None:
    buses = tuple(str(b) for b in city.feeder.bus_ids)
    service = ServiceVoltage("v", buses[:3] + buses[-3:], pd.Series(True, index=window.times), 1.0, 0.03, 100.0)
    parts = [region_services([service], window, w, st) for w, _, st in _pieces(city, window)]
    kept = [b for p in parts for s in p for b in s.bus_ids]
    assert sorted(kept) == sorted(service.bus_ids)


def test_an_import_cap_becomes_the_city_target(window) -> None:
    cap = pd.Series(np.r_[np.full(4, 900.0), np.full(12, np.nan)], index=window.times)
    other = pd.Series(800.0, index=window.times[2:6])
    target = city_import_target([ServiceLimit("a", None, cap, None, 3.0), ServiceLimit("b", None, other, None, 3.0)],
                                window.times)
    assert target is not None
    assert target.import_max_kw[:6].tolist() == [900.0, 900.0, 800.0, 800.0, 800.0, 800.0]
    assert np.isinf(target.import_max_kw[6:]).all()
    assert city_import_target([ServiceLimit("c", ("x",), cap, None, 3.0)], window.times) is None
    with pytest.raises(DataError, match="import floor"):
        city_import_target([ServiceLimit("d", None, None, cap, 3.0)], window.times)


def test_stations_keep_to_the_plan_where_a_service_is_active(window) -> None:
    ids = np.asarray(window.stations.station_id).astype(str)
    upper = pd.Series(np.r_[np.full(8, np.nan), np.full(8, 50.0)], index=window.times)
    lower = pd.Series(np.r_[np.full(4, 10.0), np.full(12, np.nan)], index=window.times)
    limit = ServiceLimit("l", (ids[0],), upper, lower, 3.0)
    above, below = service_allowances([limit], window, np.full((ids.size, 16), np.inf))
    assert (above[0, 8:] == 0).all() and np.isinf(above[0, :8]).all() and np.isinf(above[1:]).all()
    assert (below[0, :4] == 0).all() and np.isinf(below[0, 4:]).all() and np.isinf(below[1:]).all()


def test_only_grid_services_remain_when_the_stations_are_fixed(window) -> None:
    on = pd.Series(True, index=window.times)
    kept = grid_services([ServiceLimit("cap", None, on.astype(float), None, 1.0),
                          ServiceLimit("dr", ("s",), on.astype(float), None, 1.0),
                          ServiceReserve("r", ("s",), on, 1.0, 1.0, 1.0), ServiceRamp("s", ("s",), on, 1.0),
                          ServiceVoltage("v", None, on, 1.0, 0.0, 1.0)])
    assert [s.name for s in kept] == ["cap", "v"]
    # the re-dispatch window (stations' power fixed as load) keeps only those
    from optev.hierarchy.redispatch import _without_evs

    w = dataclasses.replace(window, extra={**window.extra, "service_limits": [
        ServiceLimit("dr", ("s",), on.astype(float), None, 1.0), ServiceVoltage("v", None, on, 1.0, 0.0, 1.0)]})
    fixed = _without_evs(w, np.zeros((w.stations.n, w.steps)), None)
    assert [s.name for s in fixed.extra["service_limits"]] == ["v"]
    assert len(w.extra["service_limits"]) == 2  # the region's own window is left as it was


def test_bus_aggregates_take_part_for_their_stations(window) -> None:
    merged, group = bus_aggregates(window)
    ids = np.asarray(window.stations.station_id).astype(str)
    limit = ServiceLimit("l", (ids[0],), pd.Series(1.0, index=window.times), None, 3.0)
    (out,) = aggregate_services([limit], window.stations.station_id, group, merged.stations.station_id)
    assert out.station_ids == (str(merged.stations.station_id[group[0]]),)


def test_demand_response_through_the_hierarchy_matches_the_monolithic_controller(city) -> None:
    """The station level keeps the region plans' service: the hierarchy delivers what one LP does."""
    form = with_service_block(load_formulation("station_v2g_aggregate"))
    req = parse_service({"service": {"id": "dr", "product": "demand_response", "rule": "zj_dr_energy"},
                         "window": {"start": "19:00", "end": "21:00"}, "quantity": {"reduction_kw": 60.0},
                         "baseline": {"rule": "uncontrolled"}})
    mono = run_service(city, req, form, start="17:00", steps=20, horizon="4h", ac_check=False)
    with HierarchicalStrategy(form, executor=SerialExecutor()) as strategy:
        ctl = Controller(form, city, horizon="4h", strategy=strategy)
        hier = run_service(city, req, form, controller=ctl, start="17:00", steps=20, ac_check=False)
    e_mono, e_hier = (r.summary()["appendix_a"]["e_dr_kwh"] for r in (mono, hier))
    assert e_mono >= 0.95 * 120.0  # 60 kW for 2 h
    assert e_hier >= 0.9 * e_mono
    assert hier.run.summary["sessions_worse_than_uncontrolled"] == 0
