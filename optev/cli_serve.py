"""``optev serve``: the dispatch service (issue 15) — an HTTP API around the rolling-horizon controller.

::

    optev serve [INSTANCE] [--host 127.0.0.1] [--port N] [--config FILE] [--audit-log PATH] [--ocpp-port N]

Reads the instance (default: the embedded default), builds the controller and the service
(:func:`optev.server.app.create_app`; configuration :mod:`optev.server.config`, keys also from
``OPTEV_API_KEYS``), listens on ``--host``/``--port`` (port 0: a free port) and prints one line on
standard error when it is ready::

    optev serve: listening on http://127.0.0.1:8000 (instance ux37_fleet, formulation city_dispatch, ...)

With ``--ocpp-port N`` (or ``ocpp_port`` in the config) it is also the OCPP CSMS for smart charging
(:mod:`optev.server.ocpp_bridge`), on ``ocpp_host`` (default: ``--host``) in the same process and
event loop; both sockets are bound before the line above, which then names the OCPP URL too
(``... ; OCPP on ws://127.0.0.1:9000/<station id> (HTTP Basic, OCPP security profile 1)``; charge
point passwords: ``[ocpp_passwords]``, :mod:`optev.server.ocpp_auth`).

It serves until Ctrl-C (SIGINT) or SIGTERM: the calls in progress finish, the database and the
audit log are closed, and the command ends like every optev command stopped by a signal
(``optev: interrupted``, exit 130; ``optev: terminated``, 143). Mistakes (a missing instance or
config file, a bad key, a port in use, a non-loopback ``--host`` without TLS) are one line on
stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import copy
import os
import socket
import sys
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from optev.errors import OptionError
from optev.io.embedded import DEFAULT_INSTANCE
from optev.server.app import create_app
from optev.server.config import ServeConfig, load_config

__all__ = ["add_serve_parser", "listen"]


def add_serve_parser(sub: Any) -> None:
    """Register ``optev serve`` on the sub-command parsers of :mod:`optev.cli`."""
    sv = sub.add_parser("serve", help="the dispatch service: an HTTP API (OpenAPI at /openapi.json) around the "
                                      "controller, with API keys and roles, persisted state and an audit log")
    sv.add_argument("instance", nargs="?", metavar="INSTANCE", help=f"instance folder (default: the config's instance, else the embedded "
                                                f"{DEFAULT_INSTANCE})")
    sv.add_argument("--host", help="address to listen on (default 127.0.0.1; off loopback TLS is required)")
    sv.add_argument("--port", type=int, metavar="N", help="port (default 8000; 0: a free port, printed when ready)")
    sv.add_argument("--config", metavar="FILE", help="TOML config: controller, database, keys and roles, TLS "
                                                     "(optev/server/config.py)")
    sv.add_argument("--audit-log", metavar="PATH", help="the hash-chained audit log (default: beside the database)")
    sv.add_argument("--ocpp-port", type=int, metavar="N", help="also be the OCPP CSMS (2.1, 2.0.1, 1.6) on this port: "
                                                             "ws://HOST:N/<station id> (default: off; 0: a free port)")
    sv.set_defaults(func=_cmd_serve)


def listen(host: str, port: int, option: str = "--port") -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: a free port).

    Raises
    ------
    OptionError
        The address cannot be resolved or bound (in use, not this machine's); ``option`` names the port.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise OptionError(f"{'--host' if option == '--port' else 'ocpp_host'} {host}: cannot be resolved "
                          f"({exc})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise OptionError(f"{option} {port}: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.set_inheritable(True)
    return sock


def _config(args: argparse.Namespace) -> ServeConfig:
    for option, value in (("--port", args.port), ("--ocpp-port", args.ocpp_port)):
        if value is not None and not 0 <= value <= 65535:
            raise OptionError(f"{option} must be from 0 to 65535, got {value}")
    instance = Path(args.instance) if args.instance else None
    if instance is not None and not instance.exists():
        raise OptionError(f"no instance at {args.instance!r}")
    audit = Path(args.audit_log) if args.audit_log else None
    if audit is not None and (audit.is_dir() or not audit.parent.is_dir()):
        raise OptionError(f"--audit-log {args.audit_log}: must name a file in an existing folder")
    config = load_config(args.config, instance=instance, host=args.host, port=args.port, audit_log=audit,
                         ocpp_port=args.ocpp_port)
    return config.with_env_keys(os.environ)


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with the service's loggers (alarms, internal errors) on the same handler."""
    conf = copy.deepcopy(LOGGING_CONFIG)
    for name in ("optev.server", "optev.audit"):
        conf["loggers"][name] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return conf


def _cmd_serve(args: argparse.Namespace) -> int:
    config = _config(args)
    sock = listen(config.host, config.port)
    try:
        ocpp = listen(config.ocpp_bind_host, config.ocpp_port, "--ocpp-port") if config.ocpp_port is not None \
            else None
    except OptionError:
        sock.close()
        raise
    try:
        return _serve(config, sock, ocpp)
    finally:
        sock.close()
        if ocpp is not None:
            ocpp.close()


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _ocpp_auth(config: ServeConfig) -> str:
    if config.ocpp_auth_mode == "none":
        return "no charge point authentication"
    return f"HTTP Basic, OCPP security profile {2 if config.tls else 1}"


def _serve(config: ServeConfig, sock: socket.socket, ocpp: socket.socket | None = None) -> int:
    app = create_app(config, ocpp_socket=ocpp)
    port = int(sock.getsockname()[1])
    scheme = "https" if config.tls else "http"
    dispatcher = app.state.dispatcher
    csms = "" if ocpp is None else (f"; OCPP on {'wss' if config.tls else 'ws'}://{_shown(config.ocpp_bind_host)}:"
                                    f"{int(ocpp.getsockname()[1])}/<station id> ({_ocpp_auth(config)})")
    print(f"optev serve: listening on {scheme}://{_shown(config.host)}:{port} (instance "
          f"{dispatcher.instance.metadata.name}, formulation {dispatcher.controller.formulation.name}, step "
          f"{config.step}, horizon {config.horizon}; database {config.database}; audit log {config.audit_path}; "
          f"{len(app.state.keyring)} API key(s)){csms}; Ctrl-C stops", file=sys.stderr, flush=True)
    if not len(app.state.keyring):
        print("optev serve: warning: no API keys (OPTEV_API_KEYS or [[keys]] in --config): every call but /health "
              "is refused", file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=port, log_config=_log_config(), access_log=False, lifespan="on",
        timeout_keep_alive=int(round(config.keep_alive_s)),
        ssl_certfile=str(config.tls_certfile) if config.tls_certfile else None,
        ssl_keyfile=str(config.tls_keyfile) if config.tls_keyfile else None))
    server.run(sockets=[sock])
    return 0
