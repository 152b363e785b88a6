"""Tests of the optev instance folder (optev.io.instance_folder)."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import optev.io
from optev.data import FEEDER_TABLES, INSTANCE_TABLES, Instance, TimeSeries
from optev.errors import DataError, FormatError, OptevError
from optev.io import instance_folder
from optev.io.outdir import MARKER_NAME
from optev.io.instance_folder import (MANIFEST_NAME, InstanceFolderExistsError, read_instance,
                                      write_instance)

FORMATS = ("csv", "parquet")
SEED = 20260101


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def all_tables(instance: Instance) -> dict[str, pd.DataFrame]:
    """Every table of an instance by name, time series included."""
    tables = {name: getattr(instance.feeder, name) for name in FEEDER_TABLES}
    tables["road_nodes"] = instance.road.nodes
    tables["road_links"] = instance.road.links
    tables.update({name: getattr(instance, name) for name in INSTANCE_TABLES})
    tables.update(instance.timeseries.tables())
    return tables


def assert_instances_equal(left: Instance, right: Instance) -> None:
    """Exact equality of every table, the time index, the metadata and the feeder base."""
    lt, rt = all_tables(left), all_tables(right)
    assert lt.keys() == rt.keys()
    for name in lt:
        pd.testing.assert_frame_equal(lt[name], rt[name], check_exact=True, obj=name)
    pd.testing.assert_index_equal(left.timeseries.index, right.timeseries.index, exact=True, check_exact=True)
    assert left.timeseries.index.freq == right.timeseries.index.freq
    assert left.metadata == right.metadata
    assert left.feeder.base_mva == right.feeder.base_mva
    assert left.feeder.name == right.feeder.name


def round_trip(instance: Instance, folder: Path, table_format: str = "auto", **read_kw: bool) -> Instance:
    return read_instance(write_instance(instance, folder, table_format=table_format), **read_kw)


def with_index(instance: Instance, index: pd.DatetimeIndex) -> Instance:
    """``instance`` with the same time-series values on a new time index (and metadata that
    agrees with it: its zone, its first timestamp as the start)."""
    from optev.io.instance_folder import _tz_name

    ts = instance.timeseries
    instance.timeseries = TimeSeries(index=index, **{name: df.set_axis(index) for name, df in ts.tables().items()})
    instance.metadata.timezone = _tz_name(index.tz)
    instance.metadata.start = index[0].isoformat()
    return instance


def manifest(folder: Path) -> dict:
    with open(folder / MANIFEST_NAME, "rb") as fh:
        return tomllib.load(fh)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def siblings(folder: Path) -> list[str]:
    """Names next to ``folder`` other than itself (temporary or backup folders left behind)."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)


@pytest.fixture
def written(small_instance: Instance, tmp_path: Path) -> Path:
    """The small instance written as CSV."""
    return write_instance(small_instance, tmp_path / "case", table_format="csv")


# --------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("table_format", ("auto", *FORMATS))
def test_round_trip_is_exact(small_instance: Instance, tmp_path: Path, table_format: str) -> None:
    back = round_trip(small_instance, tmp_path / "case", table_format)
    assert_instances_equal(small_instance, back)


def test_folder_layout(written: Path, small_instance: Instance) -> None:
    m = manifest(written)
    assert m["format"] == instance_folder.FORMAT_NAME
    assert m["format_version"] == instance_folder.FORMAT_VERSION
    assert m["metadata"]["timezone"] == "Asia/Shanghai"
    assert m["feeder"] == {"name": "small feeder", "base_mva": 1.0}
    # empty tables (transformers, generators, wind) are not written
    assert set(m["tables"]) == {name for name, df in all_tables(small_instance).items() if len(df)}
    files = {p.name for p in written.iterdir()}
    assert files == {MANIFEST_NAME, MARKER_NAME, *m["tables"].values()}
    assert all(name.endswith(".csv") for name in m["tables"].values())
    price = (written / "price.csv").read_text(encoding="utf-8").splitlines()
    assert price[0] == "time,buy_per_kwh,sell_per_kwh"
    assert price[1].startswith("2026-01-01T00:00:00+08:00,")


def test_auto_uses_parquet_above_threshold(small_instance: Instance, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(instance_folder, "PARQUET_MIN_ROWS", 3)
    folder = write_instance(small_instance, tmp_path / "case")
    tables = manifest(folder)["tables"]
    assert tables["buses"] == "buses.csv"  # 3 rows: not above the threshold
    assert tables["trips"] == "trips.parquet"  # 4 rows
    assert tables["price"] == "price.parquet"
    assert_instances_equal(small_instance, read_instance(folder))


def test_reader_follows_tables_map_with_mixed_formats(small_instance: Instance, tmp_path: Path) -> None:
    csv_folder = write_instance(small_instance, tmp_path / "csv", table_format="csv")
    pq_folder = write_instance(small_instance, tmp_path / "pq", table_format="parquet")
    (pq_folder / "buses.parquet").replace(csv_folder / "buses.parquet")
    (csv_folder / "buses.csv").unlink()
    edit(csv_folder / MANIFEST_NAME, 'buses = "buses.csv"', 'buses = "buses.parquet"')
    assert_instances_equal(small_instance, read_instance(csv_folder))


@pytest.mark.parametrize("table_format", FORMATS)
def test_floats_round_trip_exactly(small_instance: Instance, tmp_path: Path, table_format: str) -> None:
    rng = np.random.default_rng(SEED)
    n = 2000
    special = [np.inf, -np.inf, np.nan, 0.1, 1 / 3, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
               -0.0, 1e22, 123456789.12345679]
    values = rng.standard_normal(n) * 10.0 ** rng.integers(-300, 300, n)
    values[:len(special)] = special
    # schema columns hold only valid values (finite, plausible): the specials go to an extra column
    plausible = np.isfinite(values) & (np.abs(values) <= 1e8)
    nodes = pd.DataFrame({"node_id": [f"n{i}" for i in range(n)], "x": np.where(plausible, values, 0.1),
                          "y": rng.random(n), "z": values})
    small_instance.road.nodes = pd.concat([small_instance.road.nodes, nodes], ignore_index=True)
    small_instance.feeder.buses["rating"] = [np.inf, np.nan, 1 / 7]
    small_instance.timeseries.load_p_kw.iloc[:, 0] = [5e-324, -0.0, 1 / 3, 2 / 3]
    back = round_trip(small_instance, tmp_path / "case", table_format)
    assert_instances_equal(small_instance, back)
    assert np.isinf(back.feeder.buses["rating"].iloc[0]) and np.isnan(back.feeder.buses["rating"].iloc[1])
    assert np.isinf(back.feeder.lines["ampacity_a"].iloc[1])


WEIRD_STRINGS = ["0012", "1", "1.0", "1e3", "NA", "nan", "None", "TRUE", " padded ", 'quote"d', "comma,sep",
                 "multi\nline", "crlf\r\nline", "中文", "#hash"]


@pytest.mark.parametrize("table_format", FORMATS)
def test_numeric_looking_and_odd_strings_stay_strings(small_instance: Instance, tmp_path: Path,
                                                      table_format: str) -> None:
    n = len(WEIRD_STRINGS)
    extra = pd.DataFrame({"node_id": [f"w{s}" for s in WEIRD_STRINGS], "node_type": WEIRD_STRINGS,
                          "x": np.arange(n, dtype=float)})
    small_instance.road.nodes = pd.concat([small_instance.road.nodes, extra], ignore_index=True)
    back = round_trip(small_instance, tmp_path / "case", table_format)
    assert_instances_equal(small_instance, back)
    assert list(back.feeder.buses["bus_id"]) == ["1", "2", "3"]
    assert list(back.timeseries.load_p_kw.columns) == ["2", "3"]
    assert back.road.nodes["node_id"].iloc[0] == "0012"
    assert list(back.road.nodes["node_type"].iloc[-n:]) == WEIRD_STRINGS
    assert back.road.nodes["node_type"].iloc[2] is None


@pytest.mark.parametrize("table_format", FORMATS)
def test_booleans_round_trip(small_instance: Instance, tmp_path: Path, table_format: str) -> None:
    small_instance.stations["power_class_override"] = [False, True, False]
    small_instance.evs["soc_floor_override"] = [False, True, True]
    back = round_trip(small_instance, tmp_path / "case", table_format)
    assert_instances_equal(small_instance, back)
    assert back.stations["power_class_override"].dtype == bool
    assert list(back.charger_models["v2g"]) == [False, False, True]


def add_extras(instance: Instance) -> Instance:
    """Extra user columns on buses and stations, and free-form metadata (R5.3)."""
    instance.feeder.buses["owner"] = pd.Series(["utility", None, "0042"], dtype=object)  # as read back
    instance.feeder.buses["rating_kva"] = [630.0, np.nan, 1 / 3]
    instance.feeder.buses["section"] = np.array([1, 2, 3], dtype=np.int64)
    instance.stations["operator"] = pd.Series(["State Grid", "007", None], dtype=object)
    instance.stations["open_24h"] = [True, False, True]
    instance.stations["commissioned"] = np.array(["2024-05-01T08:00", "NaT", "2025-01-31T23:59:59.5"],
                                                 dtype="datetime64[ns]")
    instance.stations["ports_small"] = np.array([2, 4, 1], dtype=np.int32)
    instance.metadata.extra = {
        "author": "optev", "revision": 3, "scale": 0.5, "public": True, "tags": ["test", "small"],
        "published": dt.date(2026, 1, 1), "solver": {"name": "highs", "options": {"threads": 2}},
    }
    return instance


@pytest.mark.parametrize("table_format", FORMATS)
def test_extra_columns_and_metadata_survive(small_instance: Instance, tmp_path: Path, table_format: str) -> None:
    instance = add_extras(small_instance)
    folder = write_instance(instance, tmp_path / "case", table_format=table_format)
    back = read_instance(folder)
    assert_instances_equal(instance, back)
    assert list(back.feeder.buses.columns[-3:]) == ["owner", "rating_kva", "section"]
    assert back.feeder.buses["owner"].iloc[2] == "0042"
    assert back.stations["ports_small"].dtype == np.int32
    assert back.metadata.extra["solver"] == {"name": "highs", "options": {"threads": 2}}
    assert manifest(folder)["columns"]["buses"] == {"owner": "str", "rating_kva": "float64", "section": "int64"}


def test_hand_written_table_uses_defaults_and_reads_undeclared_columns_as_text(written: Path) -> None:
    (written / "buses.csv").write_text("bus_id,base_kv,note\n1,10,007\n2,10,\n3,10,x\n", encoding="utf-8")
    back = read_instance(written)
    buses = back.feeder.buses
    assert list(buses["v_max_pu"]) == [1.05, 1.05, 1.05]
    assert list(buses["note"]) == ["007", None, "x"]


@pytest.mark.parametrize("make_index", [
    pytest.param(lambda: pd.date_range("2026-01-01", periods=4, freq="15min", tz="UTC"), id="utc"),
    pytest.param(lambda: pd.date_range("2026-03-29T01:30", periods=4, freq="15min", tz="Europe/Berlin"),
                 id="dst-change"),
    pytest.param(lambda: pd.date_range("2026-10-25T02:30", periods=4, freq="15min", tz="Europe/Berlin",
                                       ambiguous=True), id="dst-end"),
    pytest.param(lambda: pd.date_range("2026-01-01", periods=4, freq="15min",
                                       tz=dt.timezone(dt.timedelta(hours=5, minutes=30))), id="fixed-offset"),
    pytest.param(lambda: pd.DatetimeIndex(pd.date_range("2026-01-01", periods=4, freq="15min",
                                                        tz="Asia/Shanghai"), freq=None), id="no-freq"),
    pytest.param(lambda: pd.date_range("2026-01-01", periods=4, freq="15min", tz="Asia/Shanghai",
                                       unit="s", name="t"), id="unit-s-named"),
])
@pytest.mark.parametrize("table_format", FORMATS)
def test_time_index_round_trips(small_instance: Instance, tmp_path: Path, table_format: str,
                                make_index) -> None:
    instance = with_index(small_instance, make_index())
    back = round_trip(instance, tmp_path / "case", table_format)
    assert_instances_equal(instance, back)


def test_zoneinfo_index_comes_back_as_the_same_zone(small_instance: Instance, tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    index = pd.date_range("2026-01-01", periods=4, freq="15min", tz=ZoneInfo("Asia/Shanghai"))
    back = round_trip(with_index(small_instance, index), tmp_path / "case")
    assert str(back.timeseries.index.tz) == "Asia/Shanghai"
    assert (back.timeseries.index.asi8 == index.asi8).all()


def test_tables_are_conformed_before_writing(small_instance: Instance, tmp_path: Path) -> None:
    raw = small_instance.feeder.buses.assign(bus_id=[1.0, 2.0, 3.0])  # replaced after construction
    small_instance.feeder.buses = raw
    back = round_trip(small_instance, tmp_path / "case")
    assert list(back.feeder.buses["bus_id"]) == ["1", "2", "3"]
    small_instance.feeder.buses = raw.drop(columns="base_kv")
    with pytest.raises(DataError, match=r"table 'buses': missing required column"):
        write_instance(small_instance, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_time_series_with_rows_but_no_columns(small_instance: Instance, tmp_path: Path) -> None:
    ts = small_instance.timeseries
    small_instance.timeseries = TimeSeries(index=ts.index)
    back = round_trip(small_instance, tmp_path / "case", validate=False)
    assert_instances_equal(small_instance, back)
    assert back.timeseries.steps == 4


@pytest.mark.parametrize("table_format", FORMATS)
def test_empty_instance_round_trips(tmp_path: Path, table_format: str) -> None:
    instance = Instance()
    folder = write_instance(instance, tmp_path / "empty", table_format=table_format)
    assert sorted(p.name for p in folder.iterdir()) == sorted([MANIFEST_NAME, MARKER_NAME])
    assert_instances_equal(instance, read_instance(folder))


@pytest.mark.parametrize("table_format", FORMATS)
def test_writing_is_deterministic(small_instance: Instance, tmp_path: Path, table_format: str) -> None:
    a = write_instance(add_extras(small_instance), tmp_path / "a", table_format=table_format)
    b = write_instance(small_instance, tmp_path / "b", table_format=table_format)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_generic_reader_detects_instance_folder(written: Path, small_instance: Instance) -> None:
    assert_instances_equal(small_instance, optev.io.read(written))
    assert_instances_equal(small_instance, read_instance(written / MANIFEST_NAME))


# --------------------------------------------------------------------------------------
# safe writing
# --------------------------------------------------------------------------------------

def test_existing_non_empty_target_is_an_error(written: Path, small_instance: Instance) -> None:
    before = {p.name: p.read_bytes() for p in written.iterdir()}
    small_instance.metadata.name = "changed"
    with pytest.raises(InstanceFolderExistsError, match="overwrite=True"):
        write_instance(small_instance, written)
    assert {p.name: p.read_bytes() for p in written.iterdir()} == before
    assert siblings(written) == []


def test_existing_empty_folder_is_filled(small_instance: Instance, tmp_path: Path) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    write_instance(small_instance, folder)
    assert_instances_equal(small_instance, read_instance(folder))


def test_overwrite_replaces_the_whole_folder(written: Path, small_instance: Instance) -> None:
    small_instance.metadata.name = "changed"
    small_instance.feeder.pv = small_instance.feeder.pv.iloc[:0]
    write_instance(small_instance, written, overwrite=True)
    assert not (written / "pv.csv").exists()
    assert_instances_equal(small_instance, read_instance(written))
    assert siblings(written) == []


def test_overwrite_keeps_files_optev_did_not_write(written: Path, small_instance: Instance) -> None:
    (written / "analysis.py").write_text("keep me", encoding="utf-8")
    before = {p.name: p.read_bytes() for p in written.iterdir()}
    with pytest.raises(InstanceFolderExistsError, match="analysis.py"):
        write_instance(small_instance, written, overwrite=True)
    assert {p.name: p.read_bytes() for p in written.iterdir()} == before
    assert siblings(written) == []


def test_overwrite_refuses_a_folder_that_is_not_an_instance(small_instance: Instance, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(InstanceFolderExistsError, match="not an optev instance folder"):
        write_instance(small_instance, folder, overwrite=True)
    assert (folder / "precious.txt").read_text(encoding="utf-8") == "keep me"


def test_target_that_is_a_file_is_an_error(small_instance: Instance, tmp_path: Path) -> None:
    target = tmp_path / "case"
    target.write_text("x", encoding="utf-8")
    with pytest.raises(InstanceFolderExistsError, match="not a folder"):
        write_instance(small_instance, target, overwrite=True)
    assert isinstance(InstanceFolderExistsError("x"), OptevError)


def test_missing_parent_folders_are_created(small_instance: Instance, tmp_path: Path) -> None:
    folder = write_instance(small_instance, tmp_path / "a" / "b" / "case")
    assert (folder / MANIFEST_NAME).is_file()


def _fail_after(monkeypatch: pytest.MonkeyPatch, n_files: int) -> None:
    """Make the CSV writer raise after ``n_files`` files were written."""
    real = instance_folder._write_csv
    calls = []

    def flaky(df: pd.DataFrame, path: Path, name: str) -> None:
        if len(calls) >= n_files:
            raise OSError("disk full (simulated)")
        calls.append(name)
        real(df, path, name)

    monkeypatch.setattr(instance_folder, "_write_csv", flaky)


def test_failed_write_leaves_nothing(small_instance: Instance, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_after(monkeypatch, 3)
    target = tmp_path / "case"
    with pytest.raises(OSError, match="disk full"):
        write_instance(small_instance, target)
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_folder(written: Path, small_instance: Instance,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p.name: p.read_bytes() for p in written.iterdir()}
    _fail_after(monkeypatch, 5)
    with pytest.raises(OSError, match="disk full"):
        write_instance(small_instance, written, overwrite=True)
    assert {p.name: p.read_bytes() for p in written.iterdir()} == before
    assert siblings(written) == []


def test_failed_rename_puts_the_old_folder_back(written: Path, small_instance: Instance,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p.name: p.read_bytes() for p in written.iterdir()}
    real = instance_folder.os.rename

    def rename(src: Path, dst: Path) -> None:
        if Path(src).name.startswith(f".{written.name}.optev-tmp-"):
            raise OSError("rename failed (simulated)")
        real(src, dst)

    monkeypatch.setattr(instance_folder.os, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        write_instance(small_instance, written, overwrite=True)
    assert {p.name: p.read_bytes() for p in written.iterdir()} == before
    assert siblings(written) == []


def test_unstorable_metadata_is_an_error_before_anything_is_written(small_instance: Instance,
                                                                   tmp_path: Path) -> None:
    small_instance.metadata.extra = {"nested": {"missing": None}}
    with pytest.raises(DataError, match=r"extra\.nested\.missing"):
        write_instance(small_instance, tmp_path / "case")
    assert list(tmp_path.iterdir()) == []


def test_reserved_time_column_is_an_error(small_instance: Instance, tmp_path: Path) -> None:
    small_instance.timeseries.availability["time"] = 0.0
    with pytest.raises(DataError, match="reserved"):
        write_instance(small_instance, tmp_path / "case")


def test_unknown_table_format_is_an_error(small_instance: Instance, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="table_format"):
        write_instance(small_instance, tmp_path / "case", table_format="xlsx")


# --------------------------------------------------------------------------------------
# read errors
# --------------------------------------------------------------------------------------

def test_missing_folder_or_manifest(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="no such instance folder"):
        read_instance(tmp_path / "nothing")
    with pytest.raises(FormatError, match=r"instance\.toml: missing"):
        read_instance(tmp_path)


def test_invalid_toml(written: Path) -> None:
    (written / MANIFEST_NAME).write_text("format_version = \n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"instance\.toml: invalid TOML"):
        read_instance(written)


@pytest.mark.parametrize("old, new, message", [
    ("format_version = 1", "format_version = 2", "unknown format_version 2"),
    ("format_version = 1", "", "missing 'format_version'"),
    ('format = "optev-instance"', 'format = "other"', "format is 'other'"),
    ('buses = "buses.csv"', 'busses = "buses.csv"', "unknown table 'busses'"),
    ('buses = "buses.csv"', 'buses = "../buses.csv"', "outside the folder"),
    ('buses = "buses.csv"', 'buses = "buses.xlsx"', "unknown file type"),
    ('name = "small"', 'name = "small"\nauthor = "me"', r"unknown \[metadata\] key"),
    ("step_minutes = 15.0", 'step_minutes = "15"', "must be a number"),
    ('timezone = "Asia/Shanghai"\nunit', 'timezone = "Mars/Olympus"\nunit', "is not a time zone"),
    ("[feeder]", "[feder]", "unknown key"),
    ('unit = "ns"', 'unit = "ns"\nstep = 15', r"unknown \[timeseries\] key"),
    ('unit = "ns"', 'unit = "minutes"', "is not one of"),
    ('base_mva = 1.0', 'base_mva = "1"', "must be a number"),
])
def test_bad_manifest(written: Path, old: str, new: str, message: str) -> None:
    edit(written / MANIFEST_NAME, old, new)
    with pytest.raises(FormatError, match=message) as info:
        read_instance(written)
    assert MANIFEST_NAME in str(info.value) or ".xlsx" in str(info.value)


def test_listed_table_file_missing(written: Path) -> None:
    (written / "stations.csv").unlink()
    with pytest.raises(FormatError, match=r"stations\.csv: listed for table 'stations'.*missing"):
        read_instance(written)


@pytest.mark.parametrize("content", [
    pytest.param(b"bus_id,base_kv\n1,10,5,6\n2,10\n", id="too-many-fields"),
    pytest.param(b'bus_id,base_kv\n"1,10\n', id="unterminated-quote"),
    pytest.param(b"bus_id,base_kv\n\xff\xfe\x00garbage\n", id="not-utf8"),
    pytest.param(b"", id="empty"),
    pytest.param(b"bus_id,base_kv,bus_id\n1,10,1\n", id="duplicate-column"),
])
def test_unreadable_csv(written: Path, content: bytes) -> None:
    (written / "buses.csv").write_bytes(content)
    with pytest.raises(FormatError, match=r"buses\.csv"):
        read_instance(written)


def test_unreadable_parquet(small_instance: Instance, tmp_path: Path) -> None:
    folder = write_instance(small_instance, tmp_path / "case", table_format="parquet")
    (folder / "evs.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(FormatError, match=r"evs\.parquet: cannot read Parquet"):
        read_instance(folder)


def test_missing_required_column_names_file_and_column(written: Path) -> None:
    (written / "lines.csv").write_text("line_id,from_bus,to_bus,x_ohm\nL1,1,2,0.1\nL2,2,3,0.2\n",
                                       encoding="utf-8")
    with pytest.raises(DataError, match=r"lines\.csv: table 'lines': missing required column\(s\) \['r_ohm'\]"):
        read_instance(written)


@pytest.mark.parametrize("file, old, new, message", [
    ("buses.csv", "2,10.0,", "2,ten,", r"buses\.csv: table 'buses', row \"?1 \(bus_id='2'\)\"?, column 'base_kv'"),
    ("stations.csv", "fcs_1,fcs,dc60,4,", "fcs_1,fcs,dc60,four,", r"stations\.csv: .*column 'n_chargers'"),
    ("stations.csv", "scs_1,scs", "scs_1,xcs", r"stations\.csv: .*column 'kind': value 'xcs'"),
    ("stations.csv", "fcs_1,fcs,dc60,4,2,", "fcs_1,fcs,dc60,4,99,", r"stations\.csv: .*unknown bus '99'"),
    ("evs.csv", "ev1,car_std,0.8", "ev1,car_std,1.8", r"evs\.csv: .*column 'soc_init'.*above the maximum"),
    ("charger_models.csv", "dc60,dc,60.0", "dc60,dc,20.0", r"stations\.csv: .*30 kW"),
])
def test_bad_values_name_the_file(written: Path, file: str, old: str, new: str, message: str) -> None:
    edit(written / file, old, new)
    with pytest.raises(DataError, match=message):
        read_instance(written)


def test_validation_can_be_skipped(written: Path) -> None:
    edit(written / "stations.csv", "fcs_1,fcs,dc60,4,2,", "fcs_1,fcs,dc60,4,99,")
    back = read_instance(written, validate=False)
    assert back.stations["bus_id"].iloc[0] == "99"


def test_bad_extra_column_value_names_file_row_and_column(small_instance: Instance, tmp_path: Path) -> None:
    folder = write_instance(add_extras(small_instance), tmp_path / "case", table_format="csv")
    edit(folder / "buses.csv", ",630.0,1", ",lots,1")
    with pytest.raises(DataError, match=r"buses\.csv: table 'buses', row 0, column 'rating_kva': value 'lots'"):
        read_instance(folder)


def test_bad_extra_integer_names_file_row_and_column(small_instance: Instance, tmp_path: Path) -> None:
    folder = write_instance(add_extras(small_instance), tmp_path / "case", table_format="csv")
    edit(folder / "buses.csv", ",630.0,1", ",630.0,")
    with pytest.raises(DataError, match=r"buses\.csv: table 'buses', row 0, column 'section': empty value"):
        read_instance(folder)


@pytest.mark.parametrize("old, new, message", [
    ("2026-01-01T00:15:00+08:00", "2026-01-01T00:15:00", "needs a UTC offset"),
    ("2026-01-01T00:15:00+08:00", "yesterday+08:00", "cannot parse the timestamps"),
    ("2026-01-01T00:15:00+08:00", "2026-01-01T00:20:00+08:00", "do not follow"),
    ("time,", "when,", "missing the 'time' column"),
    (",0.1\n", ",cheap\n", "value 'cheap' is not a number"),
])
def test_bad_time_series_names_the_file(written: Path, old: str, new: str, message: str) -> None:
    edit(written / "price.csv", old, new)
    with pytest.raises(DataError, match=rf"price\.csv: .*{message}"):
        read_instance(written)


def test_time_series_files_must_share_timestamps(written: Path) -> None:
    edit(written / "load_p_kw.csv", "2026-01-01T00:00:00+08:00", "2025-12-31T23:45:00+08:00")
    edit(written / "load_p_kw.csv", "2026-01-01T00:15:00+08:00", "2026-01-01T00:00:00+08:00")
    edit(written / "load_p_kw.csv", "2026-01-01T00:30:00+08:00", "2026-01-01T00:15:00+08:00")
    edit(written / "load_p_kw.csv", "2026-01-01T00:45:00+08:00", "2026-01-01T00:30:00+08:00")
    with pytest.raises(DataError, match=r"load_p_kw\.csv: .*differ from those in .*price\.csv"):
        read_instance(written)


def test_errors_belong_to_the_optev_hierarchy() -> None:
    assert issubclass(FormatError, DataError) and issubclass(DataError, OptevError)
