"""Statements and invoices from the ledger (R6.5.4, R6.4.1: a user sees only their own lines).

Statement
    Every entry of one party's accounts — a user's ``user:<id>`` (money), ``ev:<id>`` (energy) and
    ``coupon:<id>``; an operator's ``operator:<station>`` — with the posting's day, kind, event and
    purpose. The query selects those accounts exactly: no other party's line can appear.

Invoice (one per counterparty account and month)
    Lines: the account's entries of the month summed by purpose and unit (energy in 0.1 kWh by
    :func:`~optev.settle.meter.tenths_kwh`, money in fen), the total, and the tax fields as
    parameters (``tax_rate`` — e.g. a VAT rate —, ``tax_id``; none by default: the amounts are
    then stated as tax-inclusive totals without a tax line). The number is
    ``OPTEV-<month>-<10 hex digits of SHA-256 of the account and month>``: unique per account and
    month, and the same every time the invoice is made again.
"""

from __future__ import annotations

import hashlib
import html
from typing import Any

import numpy as np
import pandas as pd

from optev.errors import DataError
from optev.privacy.pseudonym import is_pseudonym
from optev.settle.ledger import Ledger
from optev.settle.meter import tenths_kwh


def _month_entries(ledger: Ledger, accounts: list[str], month: str | None) -> pd.DataFrame:
    frames = [ledger.entries(account=a, month=month) for a in accounts]
    frame = pd.concat(frames, ignore_index=True) if frames else ledger.entries(account="")
    return frame.sort_values(["period", "key", "account"], kind="stable").reset_index(drop=True)


def user_statement(ledger: Ledger, user: str, month: str | None = None) -> pd.DataFrame:
    """The lines of one pseudonymous user (``u-…`` under the ledger's own key, or ``ev-k1-…`` under
    the keyring's), optionally of one month ``YYYY-MM``."""
    if not (user.startswith("u-") or is_pseudonym(user)) or ":" in user:
        raise DataError(f"a user id is a pseudonym (u-… or ev-<key>-…) from the ledger, got {user!r}")
    cols = ["period", "kind", "event", "purpose", "account", "unit", "amount"]
    return _month_entries(ledger, [f"user:{user}", f"ev:{user}", f"coupon:{user}"], month)[cols]


def operator_statement(ledger: Ledger, station: str, month: str | None = None) -> pd.DataFrame:
    """The lines of one station's operator."""
    cols = ["period", "kind", "event", "purpose", "account", "unit", "amount"]
    return _month_entries(ledger, [f"operator:{station}"], month)[cols]


def invoice_number(account: str, month: str) -> str:
    """``OPTEV-<month>-<10 hex>``: stable and unique per account and month."""
    return f"OPTEV-{month}-{hashlib.sha256(f'{account}|{month}'.encode()).hexdigest()[:10]}"


def invoices(ledger: Ledger, month: str, *, tax_rate: float | None = None, tax_id: str | None = None,
             currency: str = "CNY") -> list[dict[str, Any]]:
    """One invoice per account with money or energy in ``month`` (module docstring)."""
    if tax_rate is not None and not (np.isfinite(tax_rate) and 0.0 <= tax_rate < 1.0):
        raise DataError(f"tax_rate must be a share in [0, 1), got {tax_rate!r}")
    frame = ledger.entries(month=month)
    out = []
    for account, rows in frame.groupby("account", sort=True):
        lines = []
        sums = rows.groupby(["purpose", "unit"], sort=True)["amount"].sum().reset_index()
        for purpose, unit, amount in zip(sums["purpose"].astype(str), sums["unit"].astype(str),
                                         sums["amount"].astype(np.int64)):
            line: dict[str, Any] = {"purpose": purpose, "unit": unit, "amount": int(amount)}
            if unit == "Wh":
                units = tenths_kwh(abs(int(amount)), np.array([abs(int(amount))]))[0]
                line["kwh_tenths"] = units if amount >= 0 else -units
            lines.append(line)
        total_fen = int(sum(line["amount"] for line in lines if line["unit"] == "fen"))
        invoice: dict[str, Any] = {"number": invoice_number(str(account), month), "account": account, "month": month,
                                   "currency": currency, "lines": lines, "total_fen": total_fen,
                                   "tax_id": tax_id, "tax_rate": tax_rate}
        if tax_rate is not None:
            tax = int(np.floor(abs(total_fen) * tax_rate / (1.0 + tax_rate) + 0.5)) * (1 if total_fen >= 0 else -1)
            invoice.update(tax_fen=tax, net_fen=total_fen - tax)
        out.append(invoice)
    return out


def invoice_html(invoice: dict[str, Any]) -> str:
    """A printable, self-contained HTML page of one invoice."""
    e = html.escape
    rows = []
    for line in invoice["lines"]:
        if line["unit"] == "fen":
            value = f"{line['amount'] / 100:,.2f} {e(invoice['currency'])}"
        else:
            value = f"{line['kwh_tenths'] / 10:,.1f} kWh"
        rows.append(f"<tr><td>{e(str(line['purpose']))}</td><td class='n'>{value}</td></tr>")
    tax = ""
    if invoice.get("tax_rate") is not None:
        tax = (f"<tr><td>of which tax ({invoice['tax_rate']:.0%})</td>"
               f"<td class='n'>{invoice['tax_fen'] / 100:,.2f}</td></tr>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(invoice['number'])}</title>"
            "<style>body{font-family:sans-serif;max-width:40em;margin:2em auto}td{padding:.2em 1em}"
            ".n{text-align:right}table{border-collapse:collapse}tr+tr td{border-top:1px solid #ccc}</style>"
            f"</head><body><h1>Invoice {e(invoice['number'])}</h1>"
            f"<p>Account <b>{e(str(invoice['account']))}</b>, month {e(invoice['month'])}"
            + (f", tax id {e(str(invoice['tax_id']))}" if invoice.get("tax_id") else "") + "</p>"
            f"<table>{''.join(rows)}<tr><td><b>total</b></td>"
            f"<td class='n'><b>{invoice['total_fen'] / 100:,.2f} {e(invoice['currency'])}</b></td></tr>{tax}</table>"
            "<p>Money in the account's favour is positive. Made by optev from its ledger.</p></body></html>")
