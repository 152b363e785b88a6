"""Costs carry their currency unit (issue 9, deliverable 8): ``Metadata.currency`` in the
instance folder and the V2Sim reader, a ``currency`` key in the summaries with money, and
the unit after every money figure of the text reports."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import optev
from optev.cli import main
from optev.data.instance import DEFAULT_CURRENCY, Metadata
from optev.data.synthetic import synthetic_charging_instance
from optev.errors import FormatError
from optev.io import read_instance, write_instance
from optev.io.instance_folder import MANIFEST_NAME
from optev.report.text import format_report
from paths import V2SIM, need


def test_default_currency_is_cny() -> None:
    assert Metadata().currency == DEFAULT_CURRENCY == "CNY"


def test_instance_folder_round_trips_the_currency(tmp_path: Path) -> None:
    inst = synthetic_charging_instance(2, seed=0)
    inst.metadata = dataclasses.replace(inst.metadata, currency="EUR")
    folder = write_instance(inst, tmp_path / "inst")
    assert 'currency = "EUR"' in (folder / MANIFEST_NAME).read_text(encoding="utf-8")
    assert read_instance(folder).metadata.currency == "EUR"


def test_a_folder_without_currency_reads_as_cny(tmp_path: Path) -> None:
    folder = write_instance(synthetic_charging_instance(2, seed=0), tmp_path / "inst")
    manifest = folder / MANIFEST_NAME
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace('currency = "CNY"\n', ""), encoding="utf-8")
    assert "currency" not in manifest.read_text(encoding="utf-8")
    assert read_instance(folder).metadata.currency == "CNY"


@pytest.mark.parametrize("value", ['"euro"', '"eu"', '""', "978"])
def test_a_currency_that_is_no_iso_code_is_an_error(tmp_path: Path, value: str) -> None:
    folder = write_instance(synthetic_charging_instance(2, seed=0), tmp_path / "inst")
    manifest = folder / MANIFEST_NAME
    manifest.write_text(manifest.read_text(encoding="utf-8").replace('currency = "CNY"', f"currency = {value}"),
                        encoding="utf-8")
    with pytest.raises(FormatError, match=r"\[metadata\] currency must be"):
        read_instance(folder)


def test_v2sim_cases_are_priced_in_cny() -> None:
    from optev.io import read_v2sim

    assert read_v2sim(need(V2SIM / "ux_12nodes")).metadata.currency == "CNY"


def test_text_report_puts_the_unit_after_every_money_figure() -> None:
    summary = {"cost": 1234.5, "baseline_cost": 1300.0, "ev_energy_cost": 50.25, "baseline_ev_energy_cost": 60.0,
               "currency": "EUR", "cost_parts": {"import": 1200.0, "generation": 34.5, "curtailment": 0.0},
               "baseline_cost_parts": {"import": 1300.0, "generation": 0.0, "curtailment": 0.0}}
    line = next(x for x in format_report(summary).splitlines() if x.startswith("cost"))
    assert line == ("cost         1,234.5 EUR (uncontrolled 1,300.0 EUR): grid import 1,200.0 EUR vs 1,300.0 EUR, "
                    "generation 34.5 EUR vs 0.0 EUR; EV load 50.2 EUR (uncontrolled 60.0 EUR)")


def test_solve_summary_and_report_carry_the_instance_currency(capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    inst = synthetic_charging_instance(4, seed=1)
    inst.metadata = dataclasses.replace(inst.metadata, currency="EUR")
    folder = write_instance(inst, tmp_path / "inst")
    window = ["--start", "08:00", "--steps", "8"]
    assert main(["solve", "ordered_charging", str(folder), *window, "--out", str(tmp_path / "a"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["currency"] == "EUR"
    assert json.loads((tmp_path / "a" / "summary.json").read_text(encoding="utf-8"))["currency"] == "EUR"
    assert main(["solve", "ordered_charging", str(folder), *window, "--out", str(tmp_path / "b")]) == 0
    objective = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("objective"))
    assert objective.endswith(" EUR")


def test_run_summary_and_sweep_table_carry_the_currency() -> None:
    res = optev.run(steps=1, start="09:00", horizon="1h")
    assert res.summary()["currency"] == "CNY"
    assert " CNY (uncontrolled " in res.report()
    table = optev.sweep({"price_scheme": ["flat"]}, steps=1, start="09:00", horizon="1h")
    assert list(table["currency"]) == ["CNY"]
