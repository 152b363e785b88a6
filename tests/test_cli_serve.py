"""``optev serve`` on the command line: argument errors, and a real server started, called and stopped.

Mistakes end as one line on stderr with exit code 2 before anything listens. The server itself is
started in a subprocess on 127.0.0.1 with a free port (``--port 0``) and the embedded default
instance (no INSTANCE argument): it answers ``/health`` and a state, stops on SIGINT (exit 130) and
SIGTERM (143) without a traceback, and a second start on the same database serves the decision the
first one made.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from optev.cli import main
from optev.io import read
from optev.io.embedded import default_instance
from optev.mpc import ReplayPlant

OPERATOR = "op-key-0000000000000001"
READY = re.compile(r"optev serve: listening on (https?://127\.0\.0\.1:(\d+))")
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("OPTEV_API_KEYS", raising=False)
    monkeypatch.delenv("OPTEV_PSEUDONYM_KEYS", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("argv,words", [
    (["serve", "--port", "-1"], "--port must be from 0 to 65535"),
    (["serve", "--port", "http"], "invalid int value"),
    (["serve", "--config", "missing.toml"], "--config: no such file"),
    (["serve", "no_such_instance"], "no instance at 'no_such_instance'"),
    (["serve", "--host", "0.0.0.0"], "not a loopback address"),
    (["serve", "--audit-log", "no/such/folder/audit.log"], "must name a file in an existing folder"),
    (["serve", "--bogus"], "unrecognized arguments"),
])
def test_argument_errors(argv: list[str], words: str, clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(argv, capsys)
    assert code == 2
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert not list(clean_env.glob("*.db"))  # nothing was created


@pytest.mark.parametrize("text,words", [
    ('port = "eighty"\n', "port must be a whole number"),
    ("step = \"45min\"\n", "step"),
    ("colour = \"blue\"\n", "unknown field(s) colour"),
    ("[edge]\nfallback = \"panic\"\n", "edge.fallback must be one of spread, full"),
    ("clock = \"sundial\"\n", "clock must be one of state, wall"),
    ("tls_certfile = \"cert.pem\"\n", "give both tls_certfile and tls_keyfile"),
    ("port = [\n", "invalid TOML"),
    ("[[keys]]\nkey = \"short\"\nrole = \"operator\"\n", "at least 16 characters"),
])
def test_config_errors(text: str, words: str, clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (clean_env / "serve.toml").write_text(text, encoding="utf-8")
    code, err = run_cli(["serve", "--config", "serve.toml"], capsys)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_bad_environment_keys(clean_env: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OPTEV_API_KEYS", "a-secret-key-1234567:superuser")
    code, err = run_cli(["serve"], capsys)
    assert code == 2 and "OPTEV_API_KEYS: entry 1: unknown role 'superuser'" in err
    assert "a-secret-key-1234567" not in err


def test_port_in_use(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code, err = run_cli(["serve", "--port", str(port)], capsys)
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1


class Server:
    """``optev serve`` in a subprocess, its standard error read by a thread."""

    def __init__(self, folder: Path, *extra: str) -> None:
        env = {**os.environ, "OPTEV_API_KEYS": f"{OPERATOR}:operator", "PYTHONUNBUFFERED": "1"}
        env.pop("OPTEV_PSEUDONYM_KEYS", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "optev.cli", "serve", "--port", "0", "--config",
                                      "serve.toml", *extra], cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._ready()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)
            self.lines.put(line)

    def _ready(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            found = READY.search(line)
            if found:
                self._wait_health(found.group(1), deadline)
                return found.group(1)
        self.proc.kill()
        raise AssertionError("optev serve did not start: " + "".join(self.err))

    @staticmethod
    def _wait_health(url: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2.0, verify=False).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)

    def stop(self, sig: int) -> tuple[int, str]:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        time.sleep(0.2)  # the reader thread's last lines
        return code, "".join(self.err)


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "serve.toml").write_text('database = "state.db"\nhorizon = "2h"\n', encoding="utf-8")
    yield tmp_path


def test_serve_answers_and_stops_on_sigint_then_resumes(folder: Path) -> None:
    server = Server(folder)
    try:
        health = httpx.get(f"{server.url}/health", timeout=10.0)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert httpx.get(f"{server.url}/v1/decision/latest", timeout=10.0).status_code == 401
        state = ReplayPlant(read(default_instance()), start_s=9 * 3600.0).control_state()
        r = httpx.post(f"{server.url}/v1/step", content=state.to_json(), timeout=120.0,
                       headers={"Authorization": f"Bearer {OPERATOR}"})
        assert r.status_code == 200 and r.json()["source"] == "controller"
        first: dict[str, Any] = r.json()
    finally:
        code, err = server.stop(signal.SIGINT)
    assert code == 130 and "optev: interrupted" in err and "Traceback" not in err, err
    assert "instance ux37_fleet, formulation city_dispatch" in err  # the embedded default
    assert (folder / "state.db").is_file() and (folder / "state.audit.jsonl").is_file()

    again = Server(folder)
    try:
        latest = httpx.get(f"{again.url}/v1/decision/latest", timeout=10.0,
                           headers={"Authorization": f"Bearer {OPERATOR}"})
        assert latest.status_code == 200
        assert latest.json()["decision_id"] == first["decision_id"]
        assert latest.json()["decision"]["setpoints"] == first["decision"]["setpoints"]
    finally:
        code, err = again.stop(signal.SIGTERM)
    assert code == 143 and "optev: terminated" in err and "Traceback" not in err, err


def _self_signed(folder: Path) -> None:
    """cert.pem and key.pem for 127.0.0.1 (a throw-away certificate authority of its own)."""
    pytest.importorskip("cryptography")  # not a dependency of optev: the test is skipped without it
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))


def test_serve_over_tls(folder: Path) -> None:
    _self_signed(folder)
    (folder / "serve.toml").write_text('database = "state.db"\ntls_certfile = "cert.pem"\ntls_keyfile = "key.pem"\n',
                                       encoding="utf-8")
    server = Server(folder, "--audit-log", "audit.log")
    try:
        assert server.url.startswith("https://")
        r = httpx.get(f"{server.url}/v1/me", headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=10.0,
                      verify=ssl.create_default_context(cafile=str(folder / "cert.pem")))
        assert r.status_code == 200 and r.json()["role"] == "operator"
        with pytest.raises(httpx.TransportError):
            httpx.get(server.url.replace("https://", "http://") + "/health", timeout=5.0)  # no plain HTTP
    finally:
        code, err = server.stop(signal.SIGTERM)
    assert code == 143 and "listening on https://127.0.0.1:" in err and (folder / "audit.log").is_file()
