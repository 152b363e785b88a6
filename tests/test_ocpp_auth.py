"""Charge point authentication of the OCPP endpoint (OCPP Security Profile 1; 2 with TLS).

The dispatch service's CSMS (:mod:`optev.server.ocpp_bridge`) with ``[ocpp_passwords]``: simulated
charge points of :mod:`test_ocpp_e2e` open their websocket with HTTP Basic credentials. The right
password connects and boots (a charge point named by its identity's pseudonym, another by its
enrolled station id); a wrong password, no ``Authorization`` header, another charge point's
password or credentials, and an unknown identity are answered 401 on the upgrade, reach no OCPP
handler, are reported to the alarm hook (a burst: ``auth_failure_burst``) and audited under
optev's ids only. Config checking refuses ``ocpp_auth = "none"`` off loopback. Every asyncio run
is under a timeout (:func:`test_ocpp_e2e.run`).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping

import pytest
import websockets

from optev.cli import main as cli_main
from optev.errors import OptionError
from optev.privacy.pseudonym import Keyring
from optev.server.app import close_app, create_app
from optev.server.config import load_config
from optev.server.ocpp_auth import ChargePointPasswords, password_sha256
from optev.server.ocpp_bridge import EdgeIds

from test_ocpp_e2e import SimStation, closing, run
from test_server_ocpp import RAW_MARKS, _config, inst, keys  # noqa: F401  (the shared fixtures)

PASSWORDS = {"CP-0008": "n8-password-0123456789", "CP-0010": "n10-password-0123456789"}


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Recorder:
    """The alarm sink of the service, recording every call it gets."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, detail: Mapping[str, Any]) -> None:
        self.calls.append((kind, dict(detail)))
        self.inner(kind, detail)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _app(inst: Any, keys: tuple[Path, Keyring], folder: Path) -> tuple[Any, Recorder]:
    """The service: CP-0008 named by its identity's pseudonym, CP-0010 by its enrolled station id."""
    ring = keys[1]
    passwords = ((ring.pseudonym("CP-0008", kind="cs"), password_sha256(PASSWORDS["CP-0008"])),
                 ("scs_N10", password_sha256(PASSWORDS["CP-0010"])))
    app = create_app(_config(folder, keys, ocpp_passwords=passwords), instance=inst)
    bridge = app.state.ocpp
    recorder = Recorder(bridge.hooks.alarm)
    bridge.hooks = dataclasses.replace(bridge.hooks, alarm=recorder)
    return app, recorder


def test_right_password_connects_and_boots(inst: Any, keys: Any, tmp_path: Path) -> None:
    app, recorder = _app(inst, keys, tmp_path)
    bridge = app.state.ocpp
    assert app.state.config.ocpp_auth_mode == "basic"
    fleet = [SimStation(raw, version, [], headers=basic(raw, PASSWORDS[raw]))
             for raw, version in (("CP-0008", "2.1"), ("CP-0010", "1.6"))]

    async def main() -> None:
        await bridge.start()
        try:
            async with closing(fleet):
                for st in fleet:
                    await st.connect(bridge.csms.url)
                    await st.boot()
                seen = bridge.csms.stations()
        finally:
            await bridge.stop()
        assert {s: (i.connected, i.vendor) for s, i in seen.items()} == {"scs_N8": (True, "SimVendor"),
                                                                          "scs_N10": (True, "SimVendor")}

    try:
        run(main)
    finally:
        close_app(app)
    assert recorder.calls == []


def test_wrong_missing_or_foreign_credentials_are_refused(inst: Any, keys: Any, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    app, recorder = _app(inst, keys, tmp_path)
    bridge = app.state.ocpp
    attempts = [("CP-0008", basic("CP-0008", "not-the-password")),          # wrong password
                ("CP-0008", None),                                          # no Authorization header
                ("CP-0008", basic("CP-0008", PASSWORDS["CP-0010"])),        # another charge point's password
                ("CP-0008", basic("CP-0010", PASSWORDS["CP-0010"])),        # another charge point's credentials
                ("CP-STRANGER", basic("CP-STRANGER", PASSWORDS["CP-0008"])),  # no password configured
                ("CP-0008", {"Authorization": "Bearer " + PASSWORDS["CP-0008"]})]  # not Basic

    async def main() -> None:
        await bridge.start()
        try:
            for raw, headers in attempts:
                with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                    await SimStation(raw, "2.1", [], headers=headers).connect(bridge.csms.url)
                assert refused.value.response.status_code == 401
                assert refused.value.response.headers["WWW-Authenticate"].startswith("Basic realm=")
            assert bridge.csms.stations() == {}  # no connection reached the OCPP handlers
        finally:
            await bridge.stop()

    with caplog.at_level(logging.INFO, logger="optev"):
        try:
            run(main)
        finally:
            entries = bridge.hooks.audit.entries(limit=1000)
            alarms = app.state.alarm_store.list()
            close_app(app)
    stranger = keys[1].pseudonym("CP-STRANGER", kind="cs")
    assert [(k, d["principal"], d["status"]) for k, d in recorder.calls] == \
        [("unauthenticated", "scs_N8", 401)] * 4 + [("unauthenticated", stranger, 401),
                                                    ("unauthenticated", "scs_N8", 401)]
    assert "auth_failure_burst" in {a.kind for a in alarms}  # 6 failures from 127.0.0.1, 5 of scs_N8
    refusals = [(e["principal"], e["outcome"]) for e in entries if e["action"] == "OCPP connect"]
    assert refusals == [(d["principal"], "unauthenticated") for _, d in recorder.calls]
    texts = [str(recorder.calls), str(entries), str([a.to_dict() for a in alarms]), caplog.text]
    assert not any(mark in text for text in texts for mark in RAW_MARKS), texts


def test_passwords_resolve_like_the_enrolment() -> None:
    ring = Keyring.new()
    ids = EdgeIds(ring, ["scs_N8", "scs_N10"], [], [(ring.pseudonym("CP-9", kind="cs"), "scs_N10")])
    table = [(ring.pseudonym("CP-8", kind="cs"), password_sha256("a")), ("scs_N10", password_sha256("b").upper())]
    pw = ChargePointPasswords(table, ring, {"scs_N8", "scs_N10"}, ids.station, ids.station_pseudonyms)
    assert pw.check("CP-8", basic("CP-8", "a")["Authorization"]) is None
    assert pw.check("CP-9", basic("CP-9", "b")["Authorization"]) is None      # enrolled as scs_N10
    assert pw.check("scs_N10", basic("scs_N10", "b")["Authorization"]) is None  # is scs_N10
    assert pw.check("CP-8", basic("CP-8", "b")["Authorization"]) == "wrong password"
    assert pw.check("scs_N8", basic("scs_N8", "a")["Authorization"]) == "no password configured for this charge point"
    rotated = ring.rotate()  # a password named by a pseudonym under a retired key still applies
    ids2 = EdgeIds(rotated, ["scs_N8"], [])
    assert ChargePointPasswords(table[:1], rotated, {"scs_N8"}, ids2.station, ids2.station_pseudonyms).check(
        "CP-8", basic("CP-8", "a")["Authorization"]) is None
    with pytest.raises(OptionError, match="neither a charge point pseudonym"):
        ChargePointPasswords([("scs_N99", password_sha256("c"))], ring, {"scs_N8"}, ids.station,
                             ids.station_pseudonyms)


DIGEST = password_sha256("secret-0123456789")
TLS = 'tls_certfile = "cert.pem"\ntls_keyfile = "key.pem"\n'
OFF_LOOPBACK = 'ocpp_port = 0\nocpp_host = "0.0.0.0"\n'


@pytest.mark.parametrize("text,words", [
    (OFF_LOOPBACK + 'ocpp_auth = "none"\n', "ocpp_host 0.0.0.0 is not a loopback address"),
    (OFF_LOOPBACK + TLS, 'ocpp_auth is "none": anyone could connect as any charge point'),
    (OFF_LOOPBACK + TLS + 'ocpp_auth = "none"\n', 'ocpp_auth is "none"'),
    ('ocpp_auth = "basic"\n', 'ocpp_auth = "basic" needs [ocpp_passwords]'),
    ('ocpp_auth = "digest"\n', "ocpp_auth must be one of basic, none"),
    ('[ocpp_passwords]\nscs_N8 = { password = "secret" }\n', "never the password itself"),
    ('[ocpp_passwords]\nscs_N8 = { password_sha256 = "abc" }\n', "password_sha256 must be 64 hex digits"),
    (f'[ocpp_passwords]\n"ev-k1-0123456789abcdef" = {{ password_sha256 = "{DIGEST}" }}\n',
     "not a charge point pseudonym"),
])
def test_config_errors(text: str, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("", encoding="utf-8")
    (tmp_path / "serve.toml").write_text(text, encoding="utf-8")
    assert cli_main(["serve", "--config", "serve.toml"]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("text,mode", [
    (OFF_LOOPBACK + TLS + f'[ocpp_passwords]\nscs_N8 = {{ password_sha256 = "{DIGEST}" }}\n', "basic"),
    (OFF_LOOPBACK + 'ocpp_auth = "none"\ninsecure_http = true\n', "none"),
    ('ocpp_port = 0\n', "none"),
])
def test_config_accepted(text: str, mode: str, tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("", encoding="utf-8")
    (tmp_path / "serve.toml").write_text(text, encoding="utf-8")
    config = load_config(tmp_path / "serve.toml", host="127.0.0.1")
    assert config.ocpp_auth_mode == mode
    assert all(value == DIGEST for _, value in config.ocpp_passwords)
