"""Command-line interface: ``optev pf``, ``optev info``.

User mistakes (missing file, bad format, unknown option, invalid data) print one line
on stderr and exit with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from optev.errors import OptevError

EXIT_USAGE = 2
DEFAULT_FEEDER = "case33bw.m"
"""The embedded default feeder, in the repository's ``instances/`` folder."""


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, raised instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


def instances_dir() -> Path:
    """The repository's ``instances/`` folder (embedded default instances)."""
    return Path(__file__).resolve().parents[1] / "instances"


def default_feeder() -> Path:
    path = instances_dir() / DEFAULT_FEEDER
    if not path.exists():
        raise OptevError(f"embedded default feeder not found at {path}; give a FEEDER path")
    return path


def _cmd_pf(args: argparse.Namespace) -> int:
    from optev.errors import PowerFlowError
    from optev.io import read
    from optev.powerflow import run_powerflow

    path = Path(args.feeder) if args.feeder else default_feeder()
    instance = read(path)
    feeder = instance.feeder
    if not len(feeder.buses):
        raise OptevError(f"{path}: has no feeder")
    try:
        res = run_powerflow(feeder, load_scale=args.load_scale)
    except PowerFlowError as exc:
        if len(feeder.generators):
            raise PowerFlowError(f"{exc}; note: a plain power flow does not dispatch the feeder's "
                                 f"{len(feeder.generators)} generator(s), try --load-scale below 1") from None
        raise
    s = res.summary().iloc[0]
    out = {"loss_kw": float(s.loss_kw), "loss_kvar": float(s.loss_kvar), "vmin_pu": float(s.vmin_pu),
           "vmin_bus": str(s.vmin_bus), "converged": bool(s.converged), "iterations": int(s.iterations)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"feeder      {path} ({len(feeder.buses)} buses, load scale {args.load_scale:g})")
        print(f"losses      {out['loss_kw']:.3f} kW, {out['loss_kvar']:.3f} kvar")
        print(f"min voltage {out['vmin_pu']:.5f} p.u. at bus {out['vmin_bus']}")
        print(f"converged   {'yes' if out['converged'] else 'no'} in {out['iterations']} iterations")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from optev.io import read

    instance = read(Path(args.path))
    counts = instance.counts()
    if args.json:
        print(json.dumps(counts))
    else:
        print(f"{instance.metadata.name} ({args.path})")
        width = max(len(k) for k in counts)
        for key, value in counts.items():
            shown = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
            print(f"  {key:<{width}}  {shown}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="optev", description="Optimisation toolkit for large-scale EV aggregation "
                                               "and vehicle-grid interaction (T/JES 012-2026).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    pf = sub.add_parser("pf", help="AC power flow of a feeder (MATPOWER file, V2Sim case or instance folder)")
    pf.add_argument("feeder", nargs="?", help=f"input path (default: the embedded {DEFAULT_FEEDER})")
    pf.add_argument("--load-scale", type=float, default=1.0, help="factor applied to every load (default 1)")
    pf.add_argument("--json", action="store_true", help="print one JSON object")
    pf.set_defaults(func=_cmd_pf)
    info = sub.add_parser("info", help="counts and totals of any readable input")
    info.add_argument("path", help="MATPOWER file, V2Sim case folder or instance folder")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``optev`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        code: Any = args.func(args)
        return int(code)
    except _UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except OptevError as exc:
        print(f"optev: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
