"""Issue 13, deliverable 4: a frequency reserve offer commits only what the EVs the aggregator can
count on allow (the adjustable-capacity curves' low case), before the window."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from optev.forecast.flex import flex_curves
from optev.io import read
from optev.io.embedded import default_instance
from optev.services.offer import LOW_QUANTILE, reserve_share
from optev.services.request import load_service
from optev.services.run import run_service

OPTIONS = {"start": "13:00", "steps": 12, "horizon": "4h"}


@pytest.fixture(scope="module")
def instance():  # type: ignore[no-untyped-def]
    return read(default_instance())


def _request(up_kw: float, down_kw: float):  # type: ignore[no-untyped-def]
    req = load_service("frequency_secondary")
    return dataclasses.replace(req, quantity={**req.quantity, "reserve_up_kw": up_kw, "reserve_down_kw": down_kw})


def test_the_share_is_the_low_case_span_over_the_reserve(instance) -> None:  # type: ignore[no-untyped-def]
    req = _request(20_000.0, 10_000.0)  # far beyond the default fleet
    stations = tuple(instance.stations["station_id"].astype(str))
    share, reason = reserve_share(instance, req, stations, 20_000.0, 10_000.0, dict(OPTIONS), "city_dispatch")
    # by hand from the curves at 14:00 for the window's 4 steps
    table = flex_curves(instance, "14:00", horizon=4, arrival_quantiles=(LOW_QUANTILE, 1 - LOW_QUANTILE),
                        formulation="city_dispatch")
    low = table[(table["case"] == "low") & (table["scope"] == "city")]
    span = (low["p_ch_max_kw"] + low["p_dis_max_kw"]).to_numpy(float)
    assert span.size == 4 and 0.0 < share < 1.0
    assert share == pytest.approx(span.min() / 30_000.0)
    assert "span only" in reason and f"{span.min():,.0f} kW" in reason
    # a reserve inside the span is committed whole
    assert reserve_share(instance, req, stations, 50.0, 50.0, dict(OPTIONS), "city_dispatch") == (1.0, "")


def test_an_instance_without_sessions_is_not_checked(instance) -> None:  # type: ignore[no-untyped-def]
    bare = dataclasses.replace(instance, sessions=instance.sessions.iloc[:0])
    share, reason = reserve_share(bare, _request(1e5, 1e5), ("x",), 1e5, 1e5, dict(OPTIONS), "city_dispatch")
    assert share == 1.0 and "not checked" in reason


def test_a_reserve_beyond_the_fleet_is_partially_accepted_and_delivered_at_that_size(instance) -> None:  # type: ignore[no-untyped-def]
    sr = run_service(instance, _request(20_000.0, 20_000.0), "city_dispatch", **OPTIONS)
    acc = sr.acceptance
    assert acc.status == "partial" and acc.requested_kw == 20_000.0 and 0.0 < acc.accepted_kw < 20_000.0
    assert "span only" in acc.reason
    # the follower was given the accepted reserve: the tolerance is E0 of it
    assert sr.summary()["service"]["tolerance_kw"] == pytest.approx(0.02 * acc.accepted_kw)
    assert np.isfinite(sr.summary()["appendix_a"]["eta"])
