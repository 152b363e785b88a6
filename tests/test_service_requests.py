"""Service requests as data: the shipped examples, the presets and every refusal."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest

from optev.errors import DataError
from optev.resources import formulations_dir
from optev.services.presets import PRESETS, PRODUCTS, RULES_VERSION, preset
from optev.services.request import ServiceWindow, load_service, parse_service

SHIPPED = sorted((formulations_dir() / "services").glob("*.toml"))

BASE = {
    "service": {"id": "t", "product": "demand_response", "rule": "zj_dr_energy"},
    "window": {"start": "18:00", "end": "20:00"},
    "quantity": {"reduction_kw": 100.0},
    "baseline": {"rule": "uncontrolled"},
}


def with_(path: tuple[str, ...], value: object) -> dict:
    data = copy.deepcopy(BASE)
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return data


def test_every_family_has_a_shipped_example_that_loads() -> None:
    products = {load_service(p).product for p in SHIPPED}
    assert products == set(PRODUCTS)
    assert load_service("demand_response").id == "dr-evening"  # a bare name finds the shipped file


def test_presets_never_default_an_unverified_price() -> None:
    for rule in PRESETS.values():
        assert rule.source and rule.status and rule.products
        if "✘" in rule.status and "price" in rule.status:
            assert rule.price is None
    assert RULES_VERSION
    with pytest.raises(DataError, match="unknown service rule 'nope'"):
        preset("nope")


def test_request_fills_from_the_preset_and_applies_overrides() -> None:
    req = parse_service(with_(("rule", "price"), 4.0))
    assert req.rule.price == 4.0 and req.rule.key == "zj_dr_energy"
    assert req.baseline == "uncontrolled" and req.participants.scope == "city"
    assert parse_service(with_(("baseline", "rule"), "t0_minus_15min")).baseline == "t0_minus_15min"


def test_the_preset_baseline_applies_and_workdays_need_a_history(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    del data["baseline"]  # zj_dr_energy's own baseline: the 5 last working days
    with pytest.raises(DataError, match="workdays_5 baseline needs the participants' metered load"):
        parse_service(data, str(tmp_path / "svc.toml"))
    data["baseline"] = {"history": "load.csv", "holidays": ["2025-10-01"]}
    req = parse_service(data, str(tmp_path / "svc.toml"))
    assert req.baseline == "workdays_5" and req.baseline_history == str(tmp_path / "load.csv")
    assert req.holidays == ("2025-10-01",)
    with pytest.raises(DataError, match="history is used by the workdays_5 baseline only"):
        parse_service(with_(("baseline", "history"), "x.csv"))


@pytest.mark.parametrize("path, value, message", [
    (("service", "colour"), "red", r"\[service\] unknown key\(s\) colour"),
    (("quantity", "reserve_kw"), 5.0, r"unknown key\(s\) reserve_kw"),
    (("service", "product"), "teleport", "product must be one of"),
    (("service", "rule"), "hn_fr_2025", "prices frequency_secondary, not 'demand_response'"),
    (("quantity", "reduction_kw"), float("nan"), "reduction_kw must be a finite number"),
    (("quantity", "reduction_kw"), -1.0, "reduction_kw must be a finite number ≥ 0"),
    (("quantity", "reduction_kw"), "300", "reduction_kw must be a number"),
    (("quantity", "trigger"), "whim", "trigger must be one of price, command, event"),
    (("window", "start"), "25:00", "not a time of day"),
    (("participants", "scope"), "stations", "scope 'stations' needs ids"),
    (("rule", "colour"), 1.0, r"\[rule\] unknown key\(s\) colour"),
    (("rule", "price_max"), 1.0, "price = 2.96 exceeds price_max = 1"),
    (("extra",), {}, r"unknown table\(s\) extra"),
])
def test_bad_requests_are_refused_naming_the_key(path: tuple[str, ...], value: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_service(with_(path, value), "svc.toml")


def test_a_rule_without_a_verified_price_needs_one() -> None:
    data = with_(("service", "rule"), "sc_dr_market")
    with pytest.raises(DataError, match="has no verified or fixed price"):
        parse_service(data)
    data["rule"] = {"price": 1.5}
    assert parse_service(data).rule.band_low == 0.9


def test_missing_quantity_and_window_are_errors() -> None:
    data = copy.deepcopy(BASE)
    data["quantity"] = {"trigger": "price"}
    with pytest.raises(DataError, match="needs reduction_kw"):
        parse_service(data)
    data = copy.deepcopy(BASE)
    del data["window"]
    with pytest.raises(DataError, match=r"\[window\] table is missing"):
        parse_service(data)


def test_window_masks() -> None:
    times = pd.date_range("2025-07-15 00:00", periods=96 * 2, freq="15min", tz="Asia/Shanghai")
    evening = ServiceWindow("18:00", "20:00").mask(times)
    assert evening.sum() == 2 * 8 and evening[pd.Timestamp("2025-07-15 18:00", tz="Asia/Shanghai")]
    assert not evening[pd.Timestamp("2025-07-15 20:00", tz="Asia/Shanghai")]
    night = ServiceWindow("22:00", "02:00").mask(times)  # runs past midnight
    assert night.sum() == 2 * (8 + 8)  # 00:00-02:00 and 22:00-24:00 of each day
    once = ServiceWindow("2025-07-16T09:00", "2025-07-16T10:30").mask(times)
    assert once.sum() == 6


def test_unreadable_files_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[service\nid=", encoding="utf-8")
    with pytest.raises(DataError, match="invalid TOML"):
        load_service(bad)
    with pytest.raises(DataError, match="no service file"):
        load_service(tmp_path / "missing.toml")


def test_renewable_smoothing_takes_no_price() -> None:
    data = {"service": {"id": "s", "product": "renewable_smoothing", "rule": "smoothing_kpi"},
            "window": {"start": "10:00", "end": "11:00"}, "quantity": {"ramp_weight": 1.0}, "rule": {"price": 1.0}}
    with pytest.raises(DataError, match="measured .A.5., not paid"):
        parse_service(data)
