"""Privacy (R6.4.1, issue 15): keyed pseudonyms and their keys, the consent registry, k-suppression."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import stat
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from optev.errors import DataError
from optev.mpc.state import EVState
from optev.privacy.aggregate import aggregate_publishable, suppress_small_cells
from optev.privacy.consent import ConsentRegistry, control_consent, honour_consent, restrict_evs
from optev.privacy.pseudonym import (DIGEST_HEX, KEY_ENV, Keyring, create_keyfile, is_pseudonym, key_version,
                                     load_keyring, parse_pseudonym, rotate_keyfile, save_keyring)

T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.timezone.utc)
SECRET = bytes(range(32))


def _ring(secret: bytes = SECRET, version: str = "k1") -> Keyring:
    return Keyring.from_compact(f"{version}:{secret.hex()}")


# -- pseudonyms ------------------------------------------------------------------------------------------------
def test_pseudonym_is_the_documented_hmac_with_its_version() -> None:
    p = _ring().pseudonym("  VIN-LSV123  ")
    mac = hmac.new(SECRET, b"ev:VIN-LSV123", hashlib.sha256).hexdigest()[:DIGEST_HEX]
    assert p == f"ev-k1-{mac}"
    assert parse_pseudonym(p) == ("ev", "k1", mac)
    assert key_version(p) == "k1" and is_pseudonym(p)


@settings(max_examples=60, deadline=None)
@given(raw=st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != ""),
       other=st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != ""))
def test_pseudonyms_are_stable_within_a_key_version(raw: str, other: str) -> None:
    ring = _ring()
    again = Keyring.from_json(ring.to_json())  # the same key read back from its file form
    p = ring.pseudonym(raw)
    assert p == ring.pseudonym(raw) == again.pseudonym(raw)
    assert ring.matches(raw, p)
    if other.strip() != raw.strip():
        assert not ring.matches(other, p)


def test_pseudonyms_are_unlinkable_across_keys_and_kinds() -> None:
    ids = [f"EV{i:05d}" for i in range(300)]
    a, b = _ring(), _ring(bytes(range(1, 33)), "k2")
    da = [parse_pseudonym(a.pseudonym(i))[2] for i in ids]
    db = [parse_pseudonym(b.pseudonym(i))[2] for i in ids]
    assert not set(da) & set(db)
    # bits agree by chance only: about half of the 64 bits differ between the two keys' digests of one id
    flips = [bin(int(x, 16) ^ int(y, 16)).count("1") for x, y in zip(da, db)]
    assert 28 < sum(flips) / len(flips) < 36
    assert a.pseudonym("same", kind="ev") != a.pseudonym("same", kind="u")
    # the same version id with another secret is another key: unrelated pseudonyms
    assert _ring(bytes(range(2, 34))).pseudonym("EV00001") != a.pseudonym("EV00001")


def test_bad_ids_are_refused() -> None:
    ring = _ring()
    with pytest.raises(DataError, match="empty"):
        ring.pseudonym("   ")
    with pytest.raises(DataError, match="already is a pseudonym"):
        ring.pseudonym(ring.pseudonym("EV1"))
    with pytest.raises(DataError, match="version 'k9'"):
        ring.pseudonym("EV1", version="k9")
    with pytest.raises(DataError, match="not a pseudonym"):
        parse_pseudonym("EV1")


def test_rotation_keeps_old_versions_for_their_retention_then_prunes_them() -> None:
    ring = Keyring.new(now=T0)
    old = ring.pseudonym("EV1")
    rotated = ring.rotate(now=T0 + dt.timedelta(days=1))
    assert rotated.current == "k2" and rotated.versions == ("k1", "k2")
    new = rotated.pseudonym("EV1")
    assert key_version(new) == "k2" and new != old
    assert rotated.pseudonyms("EV1") == {"k1": old, "k2": new}
    assert rotated.matches("EV1", old) and rotated.matches("EV1", new)
    kept = rotated.prune(now=T0 + dt.timedelta(days=1 + rotated.retention_days - 1))
    assert kept.versions == ("k1", "k2")
    gone = rotated.prune(now=T0 + dt.timedelta(days=1 + rotated.retention_days))
    assert gone.versions == ("k2",)
    with pytest.raises(DataError, match="pruned"):
        gone.matches("EV1", old)


def test_key_file_is_private_never_overwritten_and_rotates(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "pseudonym.json"
    path.parent.mkdir()
    ring = create_keyfile(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["format"] == "optev-pseudonym-keys"
    assert load_keyring(path).pseudonym("EV1") == ring.pseudonym("EV1")
    with pytest.raises(DataError, match="already exists"):
        create_keyfile(path)
    rotated = rotate_keyfile(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keyring(path).current == rotated.current == "k2"
    assert load_keyring(path).pseudonyms("EV1")["k1"] == ring.pseudonym("EV1")
    assert [p.name for p in path.parent.iterdir()] == ["pseudonym.json"]  # no temporary file left


def test_key_file_is_refused_when_readable_by_others_or_inside_the_data(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.json"
    create_keyfile(path)
    os.chmod(path, 0o644)
    with pytest.raises(DataError, match="chmod 600"):
        load_keyring(path)
    os.chmod(path, 0o600)
    with pytest.raises(DataError, match="inside the data folder"):
        load_keyring(path, data_dirs=[tmp_path])
    with pytest.raises(DataError, match="inside the data folder"):
        create_keyfile(tmp_path / "db" / "k.json", data_dirs=[tmp_path / "db"])
    with pytest.raises(DataError, match="no such key file"):
        load_keyring(tmp_path / "missing.json")
    other = tmp_path / "notes.txt"
    other.write_text("not a key file\n")
    with pytest.raises(DataError, match="not a pseudonymisation key file"):
        save_keyring(Keyring.new(), other)
    assert other.read_text() == "not a key file\n"


def test_keyring_from_the_environment() -> None:
    compact = f"k1:{SECRET.hex()},k2:{bytes(range(1, 33)).hex()}"
    ring = load_keyring(environ={KEY_ENV: compact})
    assert ring.current == "k2" and ring.versions == ("k1", "k2")
    assert load_keyring(environ={KEY_ENV: ring.to_json()}).pseudonym("EV1") == ring.pseudonym("EV1")
    with pytest.raises(DataError, match=KEY_ENV):
        load_keyring(environ={})
    with pytest.raises(DataError, match="at least 32"):
        load_keyring(environ={KEY_ENV: "k1:00ff"})


# -- consent ---------------------------------------------------------------------------------------------------
@pytest.fixture
def registry(tmp_path: Path) -> ConsentRegistry:
    return ConsentRegistry(tmp_path / "consent.db")


EV_A, EV_B, EV_C = (_ring().pseudonym(x) for x in ("EV-A", "EV-B", "EV-C"))


def test_withdrawal_before_t_is_seen_by_a_query_at_t(registry: ConsentRegistry) -> None:
    registry.grant(EV_A, ["controlled_charging", "v2g"], "notice-1", at=T0)
    t1 = T0 + dt.timedelta(hours=2)
    registry.revoke(EV_A, "v2g", at=t1)
    assert registry.allowed(EV_A, "v2g", T0 + dt.timedelta(hours=1))
    assert not registry.allowed(EV_A, "v2g", t1)
    assert not registry.allowed(EV_A, "v2g", t1 + dt.timedelta(microseconds=1))
    assert registry.allowed(EV_A, "controlled_charging", t1 + dt.timedelta(days=1))
    assert not registry.allowed(EV_A, "v2g", T0 - dt.timedelta(seconds=1))  # no decision yet: no consent
    assert [e.action for e in registry.history(EV_A)] == ["granted", "granted", "withdrawn"]
    assert set(ConsentRegistry(registry.engine).query(EV_A, t1)) == {"controlled_charging"}


def test_modify_and_revoke_all(registry: ConsentRegistry) -> None:
    registry.grant(EV_A, "controlled_charging", "notice-1", at=T0)
    events = registry.modify(EV_A, {"controlled_charging": True, "v2g": True, "data_sharing": False}, "notice-2",
                             at=T0 + dt.timedelta(minutes=5))
    assert [(e.purpose, e.action) for e in events] == [("controlled_charging", "modified"), ("v2g", "granted")]
    state = registry.query(EV_A, T0 + dt.timedelta(minutes=6))
    assert {p: e.notice_version for p, e in state.items()} == {"controlled_charging": "notice-2", "v2g": "notice-2"}
    gone = registry.revoke(EV_A, at=T0 + dt.timedelta(minutes=7))
    assert sorted(e.purpose for e in gone) == ["controlled_charging", "v2g"]
    assert registry.query(EV_A, T0 + dt.timedelta(minutes=7)) == {}


def test_registry_is_append_only_and_refuses_raw_ids(registry: ConsentRegistry, tmp_path: Path) -> None:
    registry.grant(EV_A, "v2g", "notice-1", at=T0)
    with pytest.raises(DataError, match="earlier than the latest"):
        registry.record(EV_A, "v2g", "withdrawn", "notice-1", at=T0 - dt.timedelta(hours=1))
    with pytest.raises(DataError, match="must be a pseudonym"):
        registry.grant("LSVAB12345", "v2g", "notice-1", at=T0)
    with pytest.raises(DataError, match="unknown consent purpose"):
        registry.grant(EV_A, "marketing", "notice-1", at=T0)
    with pytest.raises(DataError, match="not in force"):
        registry.record(EV_B, "v2g", "modified", "notice-2", at=T0)
    with pytest.raises(DataError, match="time zone"):
        registry.grant(EV_B, "v2g", "notice-1", at=dt.datetime(2026, 1, 1))
    for sql in ("UPDATE consent_events SET action = 'granted'", "DELETE FROM consent_events"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with registry.engine.begin() as con:
                con.exec_driver_sql(sql)
    again = ConsentRegistry(tmp_path / "consent.db")
    assert again.allowed(EV_A, "v2g", T0)


def test_control_consent_decides_the_next_step(registry: ConsentRegistry) -> None:
    registry.grant(EV_A, ["controlled_charging", "v2g"], "n1", at=T0)
    registry.grant(EV_B, "controlled_charging", "n1", at=T0)
    registry.grant(EV_C, ["controlled_charging", "v2g"], "n1", at=T0)
    registry.revoke(EV_C, at=T0 + dt.timedelta(minutes=10))
    at = T0 + dt.timedelta(minutes=15)
    consent = control_consent(registry, [EV_A, EV_B, EV_C], at)
    assert consent.controlled == {EV_A, EV_B} and consent.discharge == {EV_A} and consent.uncontrolled == {EV_C}
    kw = honour_consent({EV_A: -7.0, EV_B: -5.0, EV_C: -3.0}, consent, {EV_C: 11.0})
    assert kw == {EV_A: -7.0, EV_B: 0.0, EV_C: 11.0}
    with pytest.raises(DataError, match="not in the consent check"):
        honour_consent({_ring().pseudonym("EV-D"): 1.0}, consent, {})
    with pytest.raises(DataError, match="full charging power"):
        honour_consent({EV_C: 1.0}, consent, {})
    evs = [EVState(e, f"s-{i}", "st1", 20.0, 0.5, 0.0, None, 0.9, p_dis_max_kw=10.0)
           for i, e in enumerate((EV_A, EV_B, EV_C))]
    assert [e.p_dis_max_kw for e in restrict_evs(evs, consent)] == [10.0, 0.0, 0.0]
    with pytest.raises(DataError, match="must be pseudonyms"):
        control_consent(registry, ["EV-A"], at)


def test_consent_of_many_evs_and_an_existing_engine() -> None:
    registry = ConsentRegistry(sa.create_engine("sqlite://"))
    ring = _ring()
    ids = [ring.pseudonym(f"EV{i}") for i in range(1200)]
    for e in ids[::3]:
        registry.grant(e, "controlled_charging", "n1", at=T0)
    consent = control_consent(registry, ids, T0)
    assert consent.controlled == set(ids[::3]) and len(consent.uncontrolled) == 800


# -- aggregates ------------------------------------------------------------------------------------------------
def _records() -> pd.DataFrame:
    rows = [("s1", 0, f"e{i}", 7.0) for i in range(6)] + [("s2", 0, f"e{i}", 3.0) for i in range(10, 12)]
    rows += [("s2", 0, "e10", 1.0), ("s3", 0, "e20", 2.0)] + [("s3", 0, f"e{i}", 2.0) for i in range(21, 26)]
    return pd.DataFrame(rows, columns=["station_id", "step", "ev_id", "p_kw"])


def test_cells_of_fewer_than_k_evs_are_suppressed() -> None:
    out = aggregate_publishable(_records(), ["station_id", "step"], {"p_kw": "sum"}, k=5)
    assert "ev_id" not in out.columns
    by_station = out.set_index("station_id")
    assert by_station.loc["s1", "p_kw"] == 42.0 and by_station.loc["s1", "n_evs"] == 6
    assert by_station.loc["s2", "suppressed"] and by_station["p_kw"].isna()["s2"]
    assert by_station["n_evs"].isna()["s2"]  # 2 distinct EVs in 3 rows: the count is hidden too
    assert not by_station.loc["s3", "suppressed"] and by_station.loc["s3", "n_evs"] == 6
    loose = aggregate_publishable(_records(), ["station_id", "step"], {"p_kw": "sum"}, k=2)
    assert not loose["suppressed"].any()


def test_complementary_suppression_hides_a_cell_recoverable_from_the_total() -> None:
    table = pd.DataFrame({"station_id": ["s1", "s2", "s3"], "step": [0, 0, 0], "n_evs": [9, 2, 6],
                          "p_kw": [50.0, 10.0, 30.0]})
    plain = suppress_small_cells(table, ["station_id", "step"], k=5)
    assert plain["suppressed"].tolist() == [False, True, False]
    both = suppress_small_cells(table, ["station_id", "step"], k=5, totals_by=["step"])
    assert both["suppressed"].tolist() == [False, True, True]  # s3 has fewer EVs than s1
    assert table["p_kw"].tolist() == [50.0, 10.0, 30.0]  # the input is not changed


@pytest.mark.parametrize("column", ["ev_id", "session_id", "evse_id", "user_id"])
def test_ev_level_tables_are_refused(column: str) -> None:
    table = pd.DataFrame({"station_id": ["s1"], column: ["x"], "n_evs": [9], "p_kw": [1.0]})
    with pytest.raises(DataError, match="EV-level"):
        suppress_small_cells(table, ["station_id"])
    with pytest.raises(DataError, match="EV-level"):
        aggregate_publishable(_records(), ["station_id", "ev_id"], {"p_kw": "sum"})


def test_a_published_table_needs_a_station_level_key_and_valid_counts() -> None:
    with pytest.raises(DataError, match="station or coarser"):
        suppress_small_cells(pd.DataFrame({"step": [0], "n_evs": [9], "p_kw": [1.0]}), ["step"])
    with pytest.raises(DataError, match="whole numbers"):
        suppress_small_cells(pd.DataFrame({"station_id": ["s1"], "n_evs": [2.5], "p_kw": [1.0]}), ["station_id"])
    with pytest.raises(DataError, match="k must be"):
        suppress_small_cells(pd.DataFrame({"station_id": ["s1"], "n_evs": [2], "p_kw": [1.0]}), ["station_id"], k=0)
