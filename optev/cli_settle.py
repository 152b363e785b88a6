"""``optev settle RUN_DIR --db PATH [--rules FILE] [--event ID] [--telemetry FILE] [--json]``: settle a run
into the ledger (R6.5.2, R6.5.4);
``optev ledger statement|invoices|reconcile|close|reverse``: read and keep the ledger.

Reads an ``optev run`` output folder, meters every session in whole Wh, prices it (the run's own
prices, or the rules file's tariff), and books the postings into the ledger at ``--db`` (an SQLite
file, created if absent, or an SQLAlchemy URL); prints what was added and the reconciliation of
meter, ledger and run totals. Settling the same run again adds nothing (``postings_added: 0``).
``--event ID`` settles one grid-service event's payment and split as soon as its record has
closed (the posting the whole run's settlement makes; that settlement later skips it);
``--telemetry FILE`` meters from 5-s charger samples instead of the run's per-step power
(:mod:`optev.settle.telemetry`).

``optev ledger statement --db PATH --user u-… | --station ID [--month YYYY-MM]`` prints one party's
lines only; ``invoices --month M --out DIR`` writes ``invoices.json`` and one printable HTML page per
invoice (the folder appears complete or not at all); ``close --month M`` freezes a month (later
postings dated in it are booked in the next open month); ``reverse --key K --reason R --day D``
books a correction; ``reconcile --month M`` lists every settled run's days with the meter, ledger
and run totals, their differences and causes.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from optev.errors import DataError
from optev.io.outdir import output_folder
from optev.io.results import jsonable
from optev.settle.ledger import Ledger
from optev.mobility.telemetry import TELEMETRY_PERIOD_S
from optev.privacy.pseudonym import KEY_ENV, load_keyring
from optev.settle.run import load_rules, read_run
from optev.settle.settle import Settlement, Telemetry, settle_event, settle_run
from optev.settle.telemetry import read_telemetry
from optev.settle.statements import invoice_html, invoices, operator_statement, user_statement


def add_settle_parser(sub: Any) -> None:
    """Register ``optev settle`` on the sub-command parsers of :mod:`optev.cli`."""
    st = sub.add_parser("settle", help="settle an optev run folder into the energy and money ledger")
    st.add_argument("run_dir", help="an optev run output folder")
    st.add_argument("--db", required=True, help="ledger: an SQLite file (created if absent) or an SQLAlchemy URL")
    st.add_argument("--rules", help="settlement rules (TOML: [tariff] preset, service_fee_per_kwh, [contract]); "
                                    "default: the run's own prices, no service fee")
    st.add_argument("--event", metavar="SERVICE_ID",
                    help="settle only this grid-service event's payment and split (right after its record closes); "
                         "settling the whole run later skips it")
    st.add_argument("--telemetry", metavar="FILE",
                    help="meter from these 5-s charger samples (Parquet or CSV, as optev simulate --telemetry writes) "
                         "instead of the run's per-step power")
    st.add_argument("--telemetry-origin", metavar="TIMESTAMP",
                    help="what the telemetry's time_s counts from (ISO time with UTC offset; default: midnight of "
                         "the run's first day, the instance start of optev simulate)")
    st.add_argument("--telemetry-period", type=float, default=TELEMETRY_PERIOD_S, metavar="S",
                    help=f"seconds each sample holds for (default {TELEMETRY_PERIOD_S:g})")
    st.add_argument("--pseudonym-keys", metavar="FILE",
                    help="name users with these keys kept outside the ledger (optev.privacy key file; default: "
                         f"${KEY_ENV} if set, else the ledger's own key)")
    st.add_argument("--json", action="store_true", help="print one JSON object")
    st.set_defaults(func=_cmd_settle)


def _cmd_settle(args: argparse.Namespace) -> int:
    rules = load_rules(args.rules)
    keyring = load_keyring(args.pseudonym_keys) if args.pseudonym_keys or os.environ.get(KEY_ENV, "").strip() else None
    ledger = Ledger(args.db, keyring=keyring)
    if args.event is not None:
        if args.telemetry:
            raise DataError("--event settles a service payment only: it reads no telemetry")
        result = settle_event(args.run_dir, ledger, args.event, rules)
    else:
        telemetry = _telemetry(args) if args.telemetry else None
        result = settle_run(args.run_dir, ledger, rules, telemetry)
    if args.json:
        print(json.dumps(jsonable(result.to_dict()), indent=1, sort_keys=True, allow_nan=False))
    else:
        print(report(result))
    return 0


def _telemetry(args: argparse.Namespace) -> Telemetry:
    """The ``--telemetry`` samples, their ``time_s`` dated from ``--telemetry-origin`` (or midnight of
    the run's first day)."""
    if args.telemetry_origin is not None:
        try:
            origin = pd.Timestamp(args.telemetry_origin)
        except ValueError:
            raise DataError(f"--telemetry-origin: not a timestamp: {args.telemetry_origin!r}") from None
        if origin.tz is None:
            raise DataError("--telemetry-origin needs a UTC offset (e.g. 2026-03-02T00:00:00+08:00)")
    else:
        first = pd.DatetimeIndex(read_run(args.run_dir).steps["time"]).min()
        origin = first.normalize()
    return Telemetry(read_telemetry(args.telemetry, origin), period_s=args.telemetry_period)


def report(s: Settlement) -> str:
    """The settlement in a few lines."""
    rec = s.reconciliation
    cur = s.currency or "currency"
    if "receipt_fen" in rec:  # one service event (settle_event)
        return (f"run {s.run}: {s.postings_added} of {s.postings} postings added ({s.rule_version})\n"
                f"service event {rec['event'].split('|')[0]}: received {rec['receipt_fen'] / 100:,.2f} {cur}, "
                f"shared out {rec['parts_fen'] / 100:,.2f} {cur} (difference {rec['difference_fen']:+,} fen)")
    lines = [f"run {s.run}: {s.postings_added} of {s.postings} postings added ({s.rule_version})",
             f"energy {s.energy_wh / 1000:,.1f} kWh imported, {s.export_wh / 1000:,.1f} kWh exported; "
             f"energy charges {s.amount_fen / 100:,.2f} {cur}, service fees {s.service_fen / 100:,.2f} {cur}, "
             f"grid-service payments {s.services_fen / 100:,.2f} {cur}",
             f"reconciliation: meter {rec['meter_wh']:,} Wh, ledger {rec['ledger_wh']:,} Wh, run {rec['run_wh']:,} Wh "
             f"(difference {rec['difference_wh']:+,} Wh); money difference "
             + ("n/a" if rec["difference_fen"] is None else f"{rec['difference_fen']:+,} fen")]
    lines += [f"  cause: {c}" for c in rec["causes"]]
    return "\n".join(lines)


def add_ledger_parser(sub: Any) -> None:
    """Register ``optev ledger statement|invoices|close|reverse`` on the sub-command parsers."""
    lg = sub.add_parser("ledger", help="the settlement ledger: statements, invoices, closing a month, reversals")
    lsub = lg.add_subparsers(dest="ledger_command", required=True, parser_class=type(lg))
    stm = lsub.add_parser("statement", help="the lines of one user (pseudonym u-... or ev-k1-...) or one station's "
                                            "operator")
    who = stm.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="the user's pseudonymous id (u-... under the ledger's key, ev-<version>-... under "
                                    "the pseudonym keys)")
    who.add_argument("--station", help="a station id (its operator's statement)")
    inv = lsub.add_parser("invoices", help="one invoice per account for a month: invoices.json and printable HTML")
    inv.add_argument("--out", required=True, help="folder for the invoices; replaced only if optev wrote it")
    inv.add_argument("--tax-rate", type=float, help="tax rate included in the totals (e.g. 0.13); default none")
    inv.add_argument("--tax-id", help="the seller's tax id printed on every invoice")
    close = lsub.add_parser("close", help="close a month: later postings dated in it go to the next open month")
    recon = lsub.add_parser("reconcile", help="a month's runs and days: meter, ledger and run totals, differences")
    rev = lsub.add_parser("reverse", help="book the reversal of one posting (a correction)")
    rev.add_argument("--key", required=True, help="the posting's idempotency key")
    rev.add_argument("--reason", required=True, help="why (kept in the reversal's memo)")
    rev.add_argument("--day", required=True, help="day the reversal is booked, YYYY-MM-DD")
    for p in (stm, inv, close, rev, recon):
        p.add_argument("--db", required=True, help="ledger: an SQLite file or an SQLAlchemy URL")
    for p in (stm, inv, close, recon):
        p.add_argument("--month", required=p is not stm, help="YYYY-MM")
    for p in (stm, inv, close, rev, recon):
        p.add_argument("--json", action="store_true", help="print one JSON object")
    lg.set_defaults(func=_cmd_ledger)


def _existing_ledger(target: str) -> Ledger:
    if "://" not in target and not Path(target).is_file():
        raise DataError(f"{target}: no such ledger (optev settle creates one)")
    return Ledger(target)


def _cmd_ledger(args: argparse.Namespace) -> int:
    ledger = _existing_ledger(args.db)
    out: dict[str, Any]
    if args.ledger_command == "statement":
        frame = (user_statement(ledger, args.user, args.month) if args.user
                 else operator_statement(ledger, args.station, args.month))
        out = {"party": args.user or args.station, "month": args.month, "lines": frame.to_dict(orient="records"),
               "balance_fen": int(frame.loc[frame["unit"] == "fen", "amount"].sum()),
               "energy_wh": int(frame.loc[frame["unit"] == "Wh", "amount"].sum())}
        text = frame.to_string(index=False) if len(frame) else "no lines"
        text += f"\nbalance {out['balance_fen'] / 100:,.2f}, energy {out['energy_wh'] / 1000:,.3f} kWh"
    elif args.ledger_command == "invoices":
        made = invoices(ledger, _month_arg(args.month), tax_rate=args.tax_rate, tax_id=args.tax_id)
        with output_folder(args.out, "results") as tmp:
            (tmp / "invoices.json").write_text(json.dumps(jsonable(made), indent=1, ensure_ascii=False), encoding="utf-8")
            for inv in made:
                (tmp / f"{inv['number']}.html").write_text(invoice_html(inv), encoding="utf-8")
        out = {"invoices": len(made), "out": str(args.out)}
        text = f"{len(made)} invoices for {args.month} in {args.out}"
    elif args.ledger_command == "reconcile":
        frame = month_report(ledger.month_reconciliation(_month_arg(args.month)))
        out = {"month": args.month, "days": frame.to_dict(orient="records"),
               "difference_wh": int(frame["difference_wh"].sum()), "difference_fen": _sum_or_none(frame["difference_fen"])}
        text = (frame.to_string(index=False) if len(frame) else "no settled runs in this month") + \
            f"\ntotal difference {out['difference_wh']:+,} Wh, " + \
            ("money n/a" if out["difference_fen"] is None else f"{out['difference_fen']:+,} fen")
    elif args.ledger_command == "close":
        done = ledger.close(_month_arg(args.month))
        out = {"month": args.month, "closed": done}
        text = f"{args.month} closed" if done else f"{args.month} was already closed"
    else:
        done = ledger.reverse(args.key, args.reason, args.day)
        out = {"key": args.key, "reversed": done}
        text = f"reversed {args.key}" if done else f"{args.key} was already reversed"
    print(json.dumps(jsonable(out), indent=1, sort_keys=True, allow_nan=False, ensure_ascii=False) if args.json else text)
    return 0


def month_report(frame: pd.DataFrame) -> pd.DataFrame:
    """The month's rows with their differences and causes (ledger vs run energy and money)."""
    out = frame.copy()
    for col in ("meter_wh", "ledger_wh", "run_wh"):
        out[col] = pd.to_numeric(out[col], errors="coerce").fillna(0).astype("int64")
    out["difference_wh"] = out["ledger_wh"] - out["run_wh"]
    run_fen = pd.to_numeric(out["run_fen"], errors="coerce")
    ledger_fen = pd.to_numeric(out["ledger_fen"], errors="coerce").fillna(0)
    out["difference_fen"] = (ledger_fen - run_fen).astype("Int64")
    meter, ledger = out["meter_wh"].to_numpy(np.int64), out["ledger_wh"].to_numpy(np.int64)
    d_wh = out["difference_wh"].to_numpy(np.int64)
    no_fen = out["difference_fen"].isna().to_numpy(bool)
    d_fen = out["difference_fen"].fillna(0).to_numpy(np.int64)
    causes = []
    for i in range(len(out)):
        why = []
        if meter[i] != ledger[i]:
            why.append("ledger ≠ meter: postings moved to another month (late) or reversed")
        if d_wh[i]:
            why.append("whole-Wh session registers (rounding)")
        if no_fen[i]:
            why.append("money priced by a tariff other than the run's")
        elif d_fen[i]:
            why.append("fen rounding of import and export batches, netting of V2G per step")
        causes.append("; ".join(why))
    out["causes"] = causes
    return out


def _sum_or_none(values: pd.Series) -> int | None:
    return None if values.isna().any() else int(values.sum())


def _month_arg(month: str) -> str:
    try:
        pd.Timestamp(f"{month}-01")
    except ValueError:
        raise DataError(f"a month is YYYY-MM, got {month!r}") from None
    if len(month) != 7:
        raise DataError(f"a month is YYYY-MM, got {month!r}")
    return month
