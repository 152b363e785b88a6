"""``formulations/README.md`` (issue 3, deliverable 1): its generated part is up to date
with the code, and its hand-written part documents every model family the blocks
declare, every shipped formulation file, and only data columns and window arrays that
exist.

The generated part (between ``<!-- generated: begin -->`` and ``<!-- generated: end -->``)
is rewritten by ``python -m optev.compose.docs``; when a block's ``OPTIONS``, an objective
term, the block registry or a shipped ``.toml`` changes, the first test fails until it is
regenerated.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from optev.blocks.window import EVArrays, StationArrays, Window, build_window
from optev.compose.docs import (BEGIN_MARKER, END_MARKER, README_MD, formulation_reference, generated_part, main,
                                toml_value, update_readme, variant_options)
from optev.compose.formulation import BLOCKS, FORMULATIONS_DIR, Formulation, objective_terms, parse_formulation
from optev.compose.solve import build_model
from optev.data import ALL_SCHEMAS, Feeder, validate
from optev.data.synthetic import synthetic_charging_instance, synthetic_radial_feeder
from optev.errors import DataError


def _readme() -> str:
    return README_MD.read_text(encoding="utf-8")


def _hand_written(text: str) -> str:
    """The README without its generated part."""
    part = generated_part(text)
    return text.replace(part, "", 1)


# -- the generated part ------------------------------------------------------------------------------
def test_generated_part_is_up_to_date() -> None:
    assert generated_part(_readme()) == formulation_reference(), \
        "formulations/README.md is out of date: run `python -m optev.compose.docs`"


def test_main_checks_and_rewrites_only_the_generated_part(tmp_path: Path) -> None:
    out = tmp_path / "README.md"
    before = "# Title\n\nHand-written prose.\n\n"
    after = "\n## After\n\nMore prose.\n"
    stale = f"{before}{BEGIN_MARKER}\n| an old table |\n{END_MARKER}\n{after}"
    out.write_text(stale, encoding="utf-8")
    assert main(["--check", "--output", str(out)]) == 1
    assert out.read_text(encoding="utf-8") == stale  # --check never writes
    assert main(["--output", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text == f"{before}{BEGIN_MARKER}\n{formulation_reference()}{END_MARKER}\n{after}"
    assert main(["--check", "--output", str(out)]) == 0


@pytest.mark.parametrize("text", ["# no markers\n", f"{END_MARKER}\n{BEGIN_MARKER}\n", f"{BEGIN_MARKER}\nno end\n"])
def test_missing_or_misplaced_markers_are_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValueError, match="generated: begin"):
        update_readme(text)
    out = tmp_path / "README.md"
    out.write_text(text, encoding="utf-8")
    assert main(["--check", "--output", str(out)]) == 2
    assert main(["--output", str(out)]) == 2
    assert out.read_text(encoding="utf-8") == text


def _option_tables(reference: str) -> dict[str, dict[str, list[str]]]:
    """Rows of each block's option table: block → option → cells."""
    tables: dict[str, dict[str, list[str]]] = {}
    section = reference.split("### Block options", 1)[1].split("### Objective terms", 1)[0]
    for chunk in section.split("#### `")[1:]:
        block = chunk.split("`", 1)[0]
        rows = {}
        for line in chunk.splitlines():
            m = re.match(r"\| `(\w+)` \| (.*) \|$", line)
            if m:
                rows[m[1]] = [c.strip() for c in m[2].split(" | ")]
        tables[block] = rows
    return tables


def test_reference_lists_every_block_option_and_term() -> None:
    reference = formulation_reference()
    tables = _option_tables(reference)
    assert list(tables) == list(BLOCKS)
    for block, spec in BLOCKS.items():
        options = {k for v in spec.variants for k in variant_options(block, v)}
        assert set(tables[block]) == options, block
        for variant in spec.variants:
            for key, default in variant_options(block, variant).items():
                assert f"`{toml_value(default)}`" in tables[block][key][0], (block, key)
    # the LinDistFlow options are there even though the network block module declares none
    assert {"loss_correction", "loss_tolerance_pu", "line_limits"} <= set(tables["network"])
    assert {"departed", "intervals", "reservation"} <= set(tables["station"])
    for term, description in objective_terms().items():
        assert f"| `{term}` | {description.replace('|', chr(92) + '|')} |" in reference, term


def _formulation(block: str, variant: str, options: dict[str, Any]) -> Formulation:
    blocks: dict[str, Any] = {"ev": {}, "network": {}}
    blocks[block] = {"variant": variant, **options}
    return parse_formulation({"name": "probe", "blocks": blocks, "objective": {"energy_cost": 1.0}}, "probe")


def test_option_rows_name_the_variants_that_accept_them() -> None:
    """The "variants" column agrees with validation: an option is accepted by exactly the
    variants its row names, and rejected, listing the valid options, by the others."""
    for block, rows in _option_tables(formulation_reference()).items():
        variants = BLOCKS[block].variants
        for key, cells in rows.items():
            listed = variants if cells[1] == "all" else tuple(re.findall(r"`(\w+)`", cells[1]))
            assert set(listed) <= set(variants)
            assert listed, (block, key)
            default = variant_options(block, listed[0])[key]
            for variant in variants:
                if variant in listed:
                    assert _formulation(block, variant, {key: default}).blocks[block][1][key] == default
                else:
                    with pytest.raises(DataError, match=f"unknown option of block '{block}' '{key}'; valid:"):
                        _formulation(block, variant, {key: default})


# -- the hand-written part -----------------------------------------------------------------------
def test_every_shipped_formulation_is_described_by_hand() -> None:
    text = _hand_written(_readme())
    table = text.split("## 2. Shipped formulations", 1)[1].split("\n## 3.", 1)[0]
    for path in sorted(FORMULATIONS_DIR.glob("*.toml")):
        assert f"| `{path.name}` |" in table, f"add {path.name} to section 2 of formulations/README.md"


def _rich_window() -> Window:
    """12 quarter-hours of 8 EV sessions (most may discharge) at 2 capped stations on a
    6-bus feeder with PV, wind, a generator with a quadratic cost and a battery, so that
    every conditional family of the blocks is declared."""
    fd = synthetic_radial_feeder(6, seed=1, total_load_kw=200.0)
    inst = synthetic_charging_instance(8, seed=1, feeder=fd, hours=3.0, n_stations=2, site_limit_kw=20.0,
                                       v2g_share=0.7)
    inst.stations["p_site_dis_max_kw"] = 5.0
    inst.feeder = Feeder(
        base_mva=fd.base_mva, name=fd.name, buses=fd.buses, lines=fd.lines, substations=fd.substations,
        pv=pd.DataFrame({"pv_id": ["pv1"], "bus_id": ["2"], "p_rated_kw": [30.0],
                         "curtailment_cost_per_kwh": [0.05]}),
        wind=pd.DataFrame({"wind_id": ["w1"], "bus_id": ["3"], "p_rated_kw": [20.0],
                           "curtailment_cost_per_kwh": [0.02]}),
        generators=pd.DataFrame({"gen_id": ["g1"], "bus_id": ["4"], "p_max_kw": [50.0], "q_min_kvar": [-10.0],
                                 "q_max_kvar": [10.0], "cost_a_per_kw2h": [0.001], "cost_b_per_kwh": [0.3],
                                 "cost_c_per_h": [1.0]}),
        storage=pd.DataFrame({"storage_id": ["b1"], "bus_id": ["5"], "e_max_kwh": [100.0], "e_init_kwh": [50.0],
                              "p_ch_max_kw": [20.0], "p_dis_max_kw": [20.0]}),
    )
    return build_window(validate(inst), steps=12, step="15min")


ALL_TERMS = {"energy_cost": 1.0, "peak": 0.01, "peak_valley": 0.01, "user_cost": 0.1, "generation_cost": 1.0,
             "network_losses": 0.05, "voltage_deviation": 1.0}


def _variants() -> list[tuple[str, dict[str, Any], bool]]:
    """(shipped file, changes to its blocks/objective, soft limits) of every model built."""
    out: list[tuple[str, dict[str, Any], bool]] = []
    for path in sorted(FORMULATIONS_DIR.glob("*.toml")):
        out += [(path.stem, {}, False), (path.stem, {}, True)]
    out += [
        ("station_v2g", {"ev": {"variant": "exclusive"}}, False),
        ("station_v2g", {"ev": {"departure": "soft"}}, False),
        ("station_v2g_aggregate", {"ev": {"departure": "soft"}}, False),
        ("city_dispatch", {"der": {"reactive": True}, "storage": {"reactive": True}, "objective": ALL_TERMS}, False),
    ]
    return out


def _model_families() -> set[str]:
    window = _rich_window()
    names: set[str] = set()
    for stem, changes, soft in _variants():
        data = tomllib.loads((FORMULATIONS_DIR / f"{stem}.toml").read_text(encoding="utf-8"))
        for key, value in changes.items():
            if key == "objective":
                data["objective"] = dict(value)
            else:
                data["blocks"][key].update(value)
        lp = build_model(parse_formulation(data, stem), window, soft_limits=soft).lp
        names |= set(lp.variables) | set(lp.constraints) | set(lp.objective)
    return names


def test_every_model_family_is_documented() -> None:
    """Every variable family, constraint family and objective term or contribution that the
    shipped formulations and their variants declare is named in the hand-written part;
    slack families ``slack_<limit>`` / ``slack_<limit>_penalty`` through their limit."""
    names = _model_families()
    # the probe is rich enough to reach the conditional families of every block
    assert {"ev_mode", "ev_shortfall", "station_shortfall", "station_energy_lower", "station_apparent_power",
            "station_discharge_cap", "line_apparent_power", "pv_q", "wind_apparent_power", "storage_q",
            "gen_cost_tangent", "pv_curtailment_cost", "bus_v2_dev_below", "grid_pv_low_bound", "user_cost",
            "slack_bus_voltage_min_penalty", "slack_ev_departure"} <= names
    text = _hand_written(_readme())
    soft = text.split("**Soft limits.**", 1)[1].split("- **Diagnostics.**", 1)[0]
    missing = []
    for name in sorted(names):
        if name.startswith("slack_"):
            limit = name.removeprefix("slack_").removesuffix("_penalty")
            if f"`{limit}`" not in soft and not (limit.startswith("bus_voltage_") and "`bus_voltage_min`" in soft):
                missing.append(name)
        elif f"`{name}" not in text:
            missing.append(name)
    assert not missing, f"families not documented in formulations/README.md: {missing}"


def test_symbol_sources_exist() -> None:
    """Every ``table.column`` of the data model and every window attribute (``w.…``) that
    the table of symbols names exists."""
    text = _hand_written(_readme())
    symbols = text.split("## 9. Table of symbols", 1)[1].split("\n## 10.", 1)[0]
    columns = {(name, col) for name, schema in ALL_SCHEMAS.items() for col in schema.columns}
    checked = 0
    for table, column in re.findall(r"`(\w+)\.(\w+)`", symbols):
        if table in ALL_SCHEMAS:
            assert (table, column) in columns, f"{table}.{column} is not a column of the data model"
            checked += 1
    fields = {"w": {f.name for f in dataclasses.fields(Window)} | {"steps", "n_bus"},
              "w.evs": {f.name for f in dataclasses.fields(EVArrays)},
              "w.stations": {f.name for f in dataclasses.fields(StationArrays)}}
    for owner, attr in re.findall(r"`(w(?:\.evs|\.stations)?)\.(\w+)", symbols):
        if owner == "w" and attr in ("evs", "stations"):
            continue
        assert attr in fields[owner], f"{owner}.{attr} is not an attribute of the window"
        checked += 1
    assert checked > 60
