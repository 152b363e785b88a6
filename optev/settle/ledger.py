r"""The ledger (R6.5.2, R6.5.4): double-entry postings of money (integer fen) and energy (integer Wh).

Storage
    SQLAlchemy Core on SQLite by default (a file the user names: ``Ledger("ledger.db")``; no server),
    or any SQLAlchemy URL (``postgresql+psycopg://user@host/db`` for a deployment; the schema uses
    only portable types). Tables: ``postings`` (one per business event, with a unique idempotency
    ``key``, the settlement ``period`` — a day ``YYYY-MM-DD`` —, ``kind``, ``source``, ``run``,
    ``event``, the ``rule_version`` used, ``memo``, and ``reverses`` for a correction), ``entries``
    (``posting_id, account, unit, amount, purpose``) and ``months`` (closed months). Posting ids are
    given by optev (the next after the largest, inside the writing transaction): two processes
    settling into one ledger at the same moment make the second fail cleanly (a duplicate id rolls
    its transaction back) rather than interleave; run it again. SQLite files use the WAL journal.

Users' sub-ledger (control accounts)
    A city has a hundred thousand users: one entry per user, leg and posting would be six to
    eight ledger rows for every charging session. As in bookkeeping practice, users' energy and
    charging money are kept in a *subsidiary ledger*, ``user_lines`` — one row per user session
    and posting with its import and export Wh and its energy, service-fee and V2G fen, the user
    by number (``users``: pseudonym ↔ number) — and the posting carries one entry per leg on a *control account*
    (:data:`CONTROL_ACCOUNTS`: ``subledger:ev`` in Wh, ``subledger:user`` in fen) that is the sum of
    its lines, checked on every batch (:data:`LINE_LEGS` gives each column's account, unit, sign
    and purpose). Every read (:meth:`Ledger.entries`, :meth:`Ledger.balances`) shows the lines as
    the entries they stand for — ``ev:<user>`` and ``user:<user>`` — in place of the control
    entries, so a posting balances in the expanded view exactly as on the control accounts.

Rules enforced on every posting
    * *balanced*: the amounts of each unit sum to zero (debits = credits);
    * *idempotent*: a posting whose key is already in the ledger is skipped, so re-running a
      settlement or re-importing a run adds nothing;
    * *append-only*: nothing is updated or deleted; a correction is a reversing posting
      (:meth:`Ledger.reverse`: the same entries negated, key ``reverse:<key>``);
    * *atomic*: :meth:`Ledger.post` writes a batch in one transaction — a crash or an error in
      the middle leaves none of it;
    * *closed months are frozen*: a posting dated in a closed month is booked in the first open
      month after it, ``kind`` prefixed ``late-``, its original day in the memo.

Sign convention: an account's balance is the sum of its entries; money paid by A to B is
``(A, fen, −x), (B, fen, +x)``; energy delivered from the grid to a user is
``(grid, Wh, −w), (user:…, Wh, +w)``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import sqlalchemy as sa

from optev.errors import DataError
from optev.io.database import engine_for
from optev.privacy.pseudonym import Keyring

UNITS = ("fen", "Wh")
"""Units of ledger amounts: money in fen (0.01 CNY), energy in Wh."""

SCHEMA_VERSION = "2"
"""2: users' sub-ledger ``user_lines`` (schema 1 had one entry per user and leg)."""

Entry = tuple[str, str, int, str]
"""``(account, unit, amount, purpose)`` of a posting."""

_META = sa.MetaData()
POSTINGS = sa.Table(
    "postings", _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("key", sa.String(400), nullable=False, unique=True),
    sa.Column("period", sa.String(10), nullable=False, index=True),
    sa.Column("kind", sa.String(60), nullable=False),
    sa.Column("source", sa.String(400), nullable=False),
    sa.Column("run", sa.String(80), nullable=False, index=True),
    sa.Column("event", sa.String(200), nullable=False),
    sa.Column("rule_version", sa.String(400), nullable=False),
    sa.Column("memo", sa.Text, nullable=False),
    sa.Column("reverses", sa.String(400), nullable=True),
    sa.Column("created", sa.String(40), nullable=False))
ENTRIES = sa.Table(
    "entries", _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("posting_id", sa.Integer, sa.ForeignKey("postings.id"), nullable=False, index=True),
    sa.Column("account", sa.String(200), nullable=False, index=True),
    sa.Column("unit", sa.String(8), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("purpose", sa.String(40), nullable=False))
USERS = sa.Table(
    "users", _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("user", sa.String(80), nullable=False, unique=True))
"""Pseudonymous user ids of the sub-ledger, numbered (an integer index keeps inserts fast)."""
USER_LINES = sa.Table(
    "user_lines", _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # no foreign keys: both ids are given by optev in the writing transaction (SQLite's per-row
    # checks would cost a third of a city day's insert)
    sa.Column("posting_id", sa.Integer, nullable=False, index=True),
    sa.Column("user_id", sa.Integer, nullable=False, index=True),
    sa.Column("session", sa.String(200), nullable=False),
    sa.Column("import_wh", sa.BigInteger, nullable=False),
    sa.Column("export_wh", sa.BigInteger, nullable=False),
    sa.Column("energy_fen", sa.BigInteger, nullable=False),
    sa.Column("fee_fen", sa.BigInteger, nullable=False),
    sa.Column("v2g_fen", sa.BigInteger, nullable=False))
"""The users' sub-ledger (module docstring): one row per user session and posting."""
MONTHS = sa.Table(
    "months", _META,
    sa.Column("month", sa.String(7), primary_key=True),
    sa.Column("closed_at", sa.String(40), nullable=False))
RUN_DAYS = sa.Table(
    "run_days", _META,
    sa.Column("run", sa.String(80), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("source", sa.String(400), nullable=False),
    sa.Column("meter_wh", sa.BigInteger, nullable=False),
    sa.Column("run_wh", sa.BigInteger, nullable=False),
    sa.Column("run_fen", sa.BigInteger, nullable=True))
"""What each settled run said of each day (meter and run totals), for the monthly reconciliation."""
META = sa.Table(
    "meta", _META,
    sa.Column("key", sa.String(60), primary_key=True),
    sa.Column("value", sa.Text, nullable=False))


LINE_LEGS: tuple[tuple[str, str, str, int, str], ...] = (
    ("import_wh", "ev", "Wh", 1, "import"),
    ("export_wh", "ev", "Wh", -1, "export"),
    ("energy_fen", "user", "fen", -1, "energy"),
    ("fee_fen", "user", "fen", -1, "service_fee"),
    ("v2g_fen", "user", "fen", 1, "v2g"))
"""Each amount column of ``user_lines``: ``(column, account kind, unit, sign, purpose)`` — the line
stands for the entry ``(<kind>:<user>, unit, sign × amount, purpose)``."""

CONTROL_ACCOUNTS = {"ev": "subledger:ev", "user": "subledger:user"}
"""The control account of each account kind of the sub-ledger."""

LINE_FIELDS = ("key", "user", "session") + tuple(leg[0] for leg in LINE_LEGS)
"""Columns of the sub-ledger lines given to :meth:`Ledger.post_frames` (``key``: the posting's)."""


@dataclass(frozen=True)
class Posting:
    """One business event: balanced entries ``(account, unit, amount, purpose)`` under an idempotency key
    (``purpose``: what the line is for — ``energy``, ``service_fee``, ``v2g``, ``service``, ...)."""

    key: str
    period: str
    """Settlement day, ``YYYY-MM-DD``."""
    kind: str
    entries: tuple[Entry, ...]
    source: str = ""
    run: str = ""
    event: str = ""
    rule_version: str = ""
    memo: str = ""


def pseudonym(secret: bytes, ev_id: str) -> str:
    """The user's pseudonymous id: ``u-`` and 16 hex digits of HMAC-SHA256(secret, ev id)."""
    return "u-" + hmac.new(secret, str(ev_id).encode(), hashlib.sha256).hexdigest()[:16]


@dataclass
class Ledger:
    """The ledger in a database (module docstring)."""

    target: str | Path
    keyring: Keyring | None = None
    """Pseudonymisation keys kept outside the ledger (:mod:`optev.privacy.pseudonym`, the dispatch
    service's): users are then named ``ev-<version>-<hex>`` as the service names them; without
    one, by the ledger's own key (``u-<hex>``, :meth:`secret`)."""
    engine: sa.Engine = field(init=False)
    _names: dict[str, str] = field(init=False, default_factory=dict, repr=False)
    _user_numbers: dict[str, int] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.engine = engine_for(self.target, "ledger")
        try:
            _META.create_all(self.engine)
            with self.engine.begin() as con:
                found = con.execute(sa.select(META.c.value).where(META.c.key == "schema")).scalar()
                if found is None:
                    con.execute(META.insert().values(key="schema", value=SCHEMA_VERSION))
                elif found != SCHEMA_VERSION:
                    raise DataError(f"{self.target}: ledger schema {found}, this optev writes {SCHEMA_VERSION}")
        except sa.exc.DatabaseError as exc:
            raise DataError(f"{self.target}: cannot open the ledger ({exc.orig})") from None

    def secret(self) -> bytes:
        """The ledger's own pseudonymisation key (32 random bytes, made on first use, kept in ``meta``)."""
        with self.engine.begin() as con:
            found = con.execute(sa.select(META.c.value).where(META.c.key == "pseudonym_key")).scalar()
            if found is None:
                found = secrets.token_hex(32)
                con.execute(META.insert().values(key="pseudonym_key", value=found))
        return bytes.fromhex(found)

    def pseudonyms(self, ev_ids: Iterable[Any]) -> dict[str, str]:
        """The pseudonym of each EV id — under :attr:`keyring`'s current key when there is one, else
        :func:`pseudonym` under the ledger's own key —, remembered by this ``Ledger`` object (a city's
        hundred thousand keyed hashes each day cost half a second)."""
        ev_ids = list(ev_ids)
        missing = [str(e) for e in ev_ids if str(e) not in self._names]
        if missing and self.keyring is not None:
            self._names.update(self.keyring.map(missing, kind="ev"))
        elif missing:
            base = hmac.new(self.secret(), digestmod=hashlib.sha256)
            for e in missing:
                h = base.copy()
                h.update(e.encode())
                self._names[e] = "u-" + h.hexdigest()[:16]
        return {str(e): self._names[str(e)] for e in ev_ids}

    def closed_months(self) -> set[str]:
        with self.engine.connect() as con:
            return {r[0] for r in con.execute(sa.select(MONTHS.c.month))}

    def close(self, month: str) -> bool:
        """Close ``YYYY-MM`` (freeze it); False if it was already closed."""
        _month(month)
        with self.engine.begin() as con:
            if con.execute(sa.select(MONTHS.c.month).where(MONTHS.c.month == month)).first():
                return False
            con.execute(MONTHS.insert().values(month=month, closed_at=_now()))
        return True

    def post(self, postings: Iterable[Posting]) -> int:
        """Write the postings whose keys are new, all in one transaction; the number written."""
        batch = list(postings)
        heads = pd.DataFrame([{"key": p.key, "period": p.period, "kind": p.kind, "source": p.source, "run": p.run,
                               "event": p.event, "rule_version": p.rule_version, "memo": p.memo} for p in batch],
                             columns=list(POSTING_FIELDS))
        lines = pd.DataFrame([(p.key, a, u, x, why) for p in batch for a, u, x, why in p.entries],
                             columns=list(ENTRY_FIELDS))
        return self.post_frames(heads, lines)

    def post_frames(self, heads: pd.DataFrame, lines: pd.DataFrame, user_lines: pd.DataFrame | None = None) -> int:
        """:meth:`post` for postings as tables (the bulk path): ``heads`` one row per posting with
        :data:`POSTING_FIELDS`, ``lines`` one row per entry with :data:`ENTRY_FIELDS`, ``user_lines``
        the users' sub-ledger rows with :data:`LINE_FIELDS` (module docstring). Checked as a whole
        (every rule of the module docstring) before anything is written."""
        heads, lines = _checked(heads, lines)
        sub = _checked_lines(user_lines, heads, lines)
        closed = self.closed_months()
        if closed:
            heads = _to_open_months(heads, closed)
        with self.engine.begin() as con:
            existing: set[str] = set()
            for run in heads["run"].unique():
                existing.update(r[0] for r in con.execute(sa.select(POSTINGS.c.key).where(POSTINGS.c.run == str(run))))
            new = ~heads["key"].isin(existing)
            if not new.any():
                return 0
            # rows go in in the order of their indexed keys: each index page is then touched once, which
            # keeps a large ledger's inserts (and the checkpoints writing them out) from growing with it
            heads = heads.loc[new].sort_values("key", kind="stable")
            keep = set(heads["key"])
            lines, sub = lines.loc[lines["key"].isin(keep)], sub.loc[sub["key"].isin(keep)]
            created = _now()
            first = int(con.execute(sa.select(sa.func.coalesce(sa.func.max(POSTINGS.c.id), 0))).scalar() or 0) + 1
            ids = np.arange(first, first + len(heads), dtype=np.int64)
            index = pd.Index(heads["key"])
            _bulk_insert(con, POSTINGS, heads.assign(id=ids, created=created, reverses=None))
            by_account = np.argsort(lines["account"].to_numpy(str), kind="stable")
            _bulk_insert(con, ENTRIES, lines.assign(key=ids[index.get_indexer(lines["key"])])
                         .rename(columns={"key": "posting_id"}).iloc[by_account])
            if len(sub):
                user_ids = _user_ids(con, self._user_numbers, sub["user"])
                by_user = np.argsort(user_ids, kind="stable")
                _bulk_insert(con, USER_LINES, sub.assign(key=ids[index.get_indexer(sub["key"])], user=user_ids)
                             .rename(columns={"key": "posting_id", "user": "user_id"}).iloc[by_user])
            return int(new.sum())

    def reverse(self, key: str, reason: str, period: str) -> bool:
        """Book the reversal of posting ``key`` on day ``period`` (once): its entries and sub-ledger
        lines negated; False if already reversed."""
        with self.engine.connect() as con:
            row = con.execute(sa.select(POSTINGS).where(POSTINGS.c.key == key)).first()
            if row is None:
                raise DataError(f"no posting with key {key!r} to reverse")
            entries = con.execute(sa.select(ENTRIES.c.account, ENTRIES.c.unit, ENTRIES.c.amount, ENTRIES.c.purpose)
                                  .where(ENTRIES.c.posting_id == row.id).order_by(ENTRIES.c.id)).all()
            sub = pd.DataFrame(con.execute(sa.select(USERS.c.user, *(USER_LINES.c[c] for c in LINE_FIELDS[2:]))
                                           .join(USERS, USERS.c.id == USER_LINES.c.user_id)
                                           .where(USER_LINES.c.posting_id == row.id)
                                           .order_by(USER_LINES.c.id)).all(), columns=list(LINE_FIELDS[1:]))
        rev_key = f"reverse:{key}"
        heads = pd.DataFrame([{"key": rev_key, "period": period, "kind": f"reversal-{row.kind}", "source": row.source,
                               "run": row.run, "event": row.event, "rule_version": row.rule_version, "memo": reason}])
        lines = pd.DataFrame([(rev_key, a, u, -int(x), why) for a, u, x, why in entries], columns=list(ENTRY_FIELDS))
        amounts = [leg[0] for leg in LINE_LEGS]
        sub = sub.assign(key=rev_key, **{c: -sub[c].astype(np.int64) for c in amounts})[list(LINE_FIELDS)]
        return self.post_frames(heads, lines, sub) == 1

    def entries(self, *, run: str | None = None, account_prefix: str | None = None,
                account: str | None = None, month: str | None = None) -> pd.DataFrame:
        """Every entry with its posting's fields (``key, period, kind, run, event, rule_version, memo,
        account, unit, amount, purpose``), optionally of one run, one account or the accounts
        starting with a prefix, one month ``YYYY-MM``; the sub-ledger's lines shown as the users'
        entries they stand for (module docstring), in posting order."""
        posting_cols = (POSTINGS.c.id, POSTINGS.c.key, POSTINGS.c.period, POSTINGS.c.kind, POSTINGS.c.run,
                        POSTINGS.c.event, POSTINGS.c.rule_version, POSTINGS.c.memo)
        q = (sa.select(*posting_cols, ENTRIES.c.account, ENTRIES.c.unit, ENTRIES.c.amount, ENTRIES.c.purpose)
             .join(ENTRIES, ENTRIES.c.posting_id == POSTINGS.c.id)
             .where(ENTRIES.c.account.not_in(list(CONTROL_ACCOUNTS.values()))))
        if run is not None:
            q = q.where(POSTINGS.c.run == run)
        if month is not None:
            q = q.where(POSTINGS.c.period.startswith(_month(month)))
        if account is not None:
            q = q.where(ENTRIES.c.account == account)
        if account_prefix is not None:
            q = q.where(ENTRIES.c.account.startswith(account_prefix, autoescape=True))
        with self.engine.connect() as con:
            real = pd.DataFrame(con.execute(q.order_by(ENTRIES.c.id)).all(), columns=list(_VIEW_COLUMNS))
            sub = self._line_entries(con, run, account_prefix, account, month)
        frame = pd.concat([real, sub], ignore_index=True) if len(sub) else real
        frame = frame.sort_values("id", kind="stable") if len(sub) else frame
        return frame.drop(columns="id").reset_index(drop=True)

    def _line_entries(self, con: sa.Connection, run: str | None, account_prefix: str | None,
                      account: str | None, month: str | None) -> pd.DataFrame:
        """The sub-ledger lines that the filters select, as entries (``id``: the posting's)."""
        user_filter = _user_filter(account_prefix, account)
        if user_filter is False:
            return pd.DataFrame(columns=list(_VIEW_COLUMNS))
        q = (sa.select(POSTINGS.c.id, POSTINGS.c.key, POSTINGS.c.period, POSTINGS.c.kind, POSTINGS.c.run,
                       POSTINGS.c.event, POSTINGS.c.rule_version, POSTINGS.c.memo, USERS.c.user,
                       *(USER_LINES.c[leg[0]] for leg in LINE_LEGS))
             .join(USER_LINES, USER_LINES.c.posting_id == POSTINGS.c.id)
             .join(USERS, USERS.c.id == USER_LINES.c.user_id))
        if run is not None:
            q = q.where(POSTINGS.c.run == run)
        if month is not None:
            q = q.where(POSTINGS.c.period.startswith(month))
        if user_filter is not True:
            q = q.where(user_filter)
        rows = pd.DataFrame(con.execute(q.order_by(USER_LINES.c.id)).all(),
                            columns=list(_VIEW_COLUMNS[:8]) + ["user"] + [leg[0] for leg in LINE_LEGS])
        frames = []
        for column, kind, unit, sign, purpose in LINE_LEGS:
            part = rows[rows[column] != 0]
            frames.append(part[list(_VIEW_COLUMNS[:8])].assign(
                account=kind + ":" + part["user"].astype(str), unit=unit,
                amount=sign * part[column].astype(np.int64), purpose=purpose))
        out = pd.concat(frames, ignore_index=True)
        if account is not None:
            out = out[out["account"] == account]
        if account_prefix is not None:
            out = out[out["account"].str.startswith(account_prefix)]
        return out.reset_index(drop=True)

    def record_run_days(self, rows: list[dict[str, Any]]) -> None:
        """Keep the meter and run totals of a settled run's days (once per run and day)."""
        if not rows:
            return
        with self.engine.begin() as con:
            have = {(r, d) for r, d in con.execute(sa.select(RUN_DAYS.c.run, RUN_DAYS.c.day)
                                                   .where(RUN_DAYS.c.run == rows[0]["run"]))}
            new = [r for r in rows if (r["run"], r["day"]) not in have]
            if new:
                con.execute(RUN_DAYS.insert(), new)

    def month_reconciliation(self, month: str) -> pd.DataFrame:
        """Per run and day of ``month``: the meter and run totals kept at settlement beside the
        ledger's energy to the EVs and money for energy now (``meter_wh, ledger_wh, run_wh,
        run_fen, ledger_fen``)."""
        _month(month)
        with self.engine.connect() as con:
            days = pd.DataFrame(con.execute(sa.select(RUN_DAYS).where(RUN_DAYS.c.day.startswith(month))).all(),
                                columns=[c.name for c in RUN_DAYS.columns])
            q = (sa.select(POSTINGS.c.run, POSTINGS.c.period, ENTRIES.c.unit, ENTRIES.c.purpose,
                           sa.func.sum(ENTRIES.c.amount))
                 .join(ENTRIES, ENTRIES.c.posting_id == POSTINGS.c.id)
                 .where(POSTINGS.c.period.startswith(month),
                        sa.or_(sa.and_(sa.or_(ENTRIES.c.account.startswith("ev:"),
                                               ENTRIES.c.account == CONTROL_ACCOUNTS["ev"]),
                                       ENTRIES.c.unit == "Wh", ENTRIES.c.amount > 0),
                               sa.and_(ENTRIES.c.account == "grid", ENTRIES.c.unit == "fen",
                                       ENTRIES.c.purpose.in_(["energy_purchase", "v2g"]))))
                 .group_by(POSTINGS.c.run, POSTINGS.c.period, ENTRIES.c.unit, ENTRIES.c.purpose))
            sums = pd.DataFrame(con.execute(q).all(), columns=["run", "day", "unit", "purpose", "amount"])
        wh = sums[sums["unit"] == "Wh"].groupby(["run", "day"])["amount"].sum().rename("ledger_wh")
        fen = sums[sums["unit"] == "fen"].groupby(["run", "day"])["amount"].sum().rename("ledger_fen")
        out = days.set_index(["run", "day"]).join(wh, how="outer").join(fen, how="outer").reset_index()
        return out.sort_values(["day", "run"]).reset_index(drop=True)

    def events(self, kind: str) -> list[tuple[str, str]]:
        """``(run, event)`` of every posting of ``kind`` that is not a reversal's target."""
        reversed_keys = sa.select(sa.func.substr(POSTINGS.c.key, 9)).where(POSTINGS.c.key.startswith("reverse:"))
        q = (sa.select(POSTINGS.c.run, POSTINGS.c.event).where(POSTINGS.c.kind.in_([kind, f"late-{kind}"]))
             .where(POSTINGS.c.key.not_in(reversed_keys)))
        with self.engine.connect() as con:
            return [(str(r), str(e)) for r, e in con.execute(q)]

    def received_by_day(self, run: str, account_prefix: str, unit: str) -> dict[str, int]:
        """Per posting day, the sum of the positive entries in ``unit`` of accounts starting with
        ``account_prefix`` in the postings of ``run`` (e.g. ``"ev:"``: the energy its EVs received;
        the sub-ledger's lines counted through their control accounts, whose positive entries are
        the sums of the lines' positive legs: a posting's lines all have one sign)."""
        accounts = ENTRIES.c.account.startswith(account_prefix, autoescape=True)
        controls = [c for kind, c in CONTROL_ACCOUNTS.items() if f"{kind}:".startswith(account_prefix)]
        if any(account_prefix.startswith(f"{kind}:") and account_prefix != f"{kind}:" for kind in CONTROL_ACCOUNTS):
            raise DataError(f"received_by_day: {account_prefix!r} selects some users only; use entries()")
        q = (sa.select(POSTINGS.c.period, sa.func.sum(ENTRIES.c.amount))
             .join(ENTRIES, ENTRIES.c.posting_id == POSTINGS.c.id)
             .where(POSTINGS.c.run == run, ENTRIES.c.unit == unit, ENTRIES.c.amount > 0,
                    sa.or_(accounts, ENTRIES.c.account.in_(controls)))
             .group_by(POSTINGS.c.period))
        with self.engine.connect() as con:
            return {str(d): int(x) for d, x in con.execute(q)}

    def balances(self, unit: str) -> dict[str, int]:
        """Balance of every account in ``unit`` (users' accounts from the sub-ledger, module docstring)."""
        q = (sa.select(ENTRIES.c.account, sa.func.sum(ENTRIES.c.amount)).where(ENTRIES.c.unit == unit)
             .where(ENTRIES.c.account.not_in(list(CONTROL_ACCOUNTS.values()))).group_by(ENTRIES.c.account))
        legs = [leg for leg in LINE_LEGS if leg[2] == unit]
        out: dict[str, int] = {}
        with self.engine.connect() as con:
            out.update((a, int(x)) for a, x in con.execute(q))
            for kind in sorted({leg[1] for leg in legs}):
                total = sum(leg[3] * USER_LINES.c[leg[0]] for leg in legs if leg[1] == kind)
                sums = con.execute(sa.select(USERS.c.user, sa.func.sum(total))
                                   .join(USERS, USERS.c.id == USER_LINES.c.user_id).group_by(USERS.c.user))
                for user, x in sums:
                    out[f"{kind}:{user}"] = out.get(f"{kind}:{user}", 0) + int(x)
        return out

    def rule_versions(self, run: str) -> set[str]:
        """Rule versions of the postings of ``run`` not reversed."""
        reversed_keys = sa.select(sa.func.substr(POSTINGS.c.key, 9)).where(POSTINGS.c.key.startswith("reverse:"))
        q = (sa.select(POSTINGS.c.rule_version).where(POSTINGS.c.run == run)
             .where(~POSTINGS.c.key.startswith("reverse:")).where(POSTINGS.c.key.not_in(reversed_keys)).distinct())
        with self.engine.connect() as con:
            return {r[0] for r in con.execute(q)}

    def row_counts(self) -> dict[str, int]:
        """Rows of each table of the ledger (postings, entries, users' sub-ledger lines, users)."""
        with self.engine.connect() as con:
            return {t.name: int(con.execute(sa.select(sa.func.count()).select_from(t)).scalar() or 0)
                    for t in (POSTINGS, ENTRIES, USER_LINES, USERS)}

    def count(self) -> int:
        """Number of postings."""
        with self.engine.connect() as con:
            return int(con.execute(sa.select(sa.func.count()).select_from(POSTINGS)).scalar() or 0)


POSTING_FIELDS = ("key", "period", "kind", "source", "run", "event", "rule_version", "memo")
"""Columns of the postings table given to :meth:`Ledger.post_frames`."""

ENTRY_FIELDS = ("key", "account", "unit", "amount", "purpose")
"""Columns of the entries table given to :meth:`Ledger.post_frames` (``key``: the posting's)."""


_VIEW_COLUMNS = ("id", "key", "period", "kind", "run", "event", "rule_version", "memo", "account", "unit", "amount",
                 "purpose")


def _user_filter(account_prefix: str | None, account: str | None) -> Any:
    """The SQL condition on ``users.user`` for an account filter of :meth:`Ledger.entries`:
    True (every line), False (none) or a condition."""
    kinds = tuple(f"{kind}:" for kind in CONTROL_ACCOUNTS)
    if account is not None:
        kind = next((k for k in kinds if account.startswith(k)), None)
        return False if kind is None else USERS.c.user == account[len(kind):]
    if account_prefix is None or any(k.startswith(account_prefix) for k in kinds):
        return True
    kind = next((k for k in kinds if account_prefix.startswith(k)), None)
    return False if kind is None else USERS.c.user.startswith(account_prefix[len(kind):], autoescape=True)


def _user_ids(con: sa.Connection, known: dict[str, int], users: pd.Series) -> np.ndarray:
    """The number of each user of ``users`` in the ``users`` table, numbering the new ones (inside
    the writing transaction). ``known`` is the caller's copy of the table, refreshed when the
    table has grown since (numbers are given in order and never change, so its count and
    largest number tell)."""
    count, top = con.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.max(USERS.c.id), 0))).one()
    if count != len(known) or max(known.values(), default=0) != top:
        known.clear()
        known.update((str(u), int(i)) for i, u in con.execute(sa.select(USERS.c.id, USERS.c.user)))
    names = pd.unique(users.astype(str).to_numpy(object))
    new = [str(x) for x in names if x not in known]
    if new:
        numbered = pd.DataFrame({"id": np.arange(int(top) + 1, int(top) + 1 + len(new), dtype=np.int64), "user": new})
        _bulk_insert(con, USERS, numbered)
        known.update(zip(new, numbered["id"].tolist()))
    return pd.Series(known).reindex(users.astype(str).to_numpy(object)).to_numpy(np.int64)


def _checked_lines(user_lines: pd.DataFrame | None, heads: pd.DataFrame, lines: pd.DataFrame) -> pd.DataFrame:
    """The sub-ledger lines of a batch, or a :class:`DataError`: integer amounts, a user id
    without ``:``, a posting in the batch, and each posting's control entries equal to the sums of
    its lines, leg by leg (module docstring)."""
    if user_lines is None:
        user_lines = pd.DataFrame({c: pd.Series(dtype=np.int64 if c.endswith(("_wh", "_fen")) else object)
                                   for c in LINE_FIELDS})
    missing = [c for c in LINE_FIELDS if c not in user_lines]
    if missing:
        raise DataError(f"user lines: missing field(s) {', '.join(missing)}")
    sub = user_lines[list(LINE_FIELDS)].reset_index(drop=True)
    amounts = [leg[0] for leg in LINE_LEGS]
    if len(sub) and not all(pd.api.types.is_integer_dtype(sub[c]) for c in amounts):
        raise DataError("a user line's amount is not an integer (whole Wh and fen)")
    users = sub["user"].astype(str)
    if len(sub) and ((users == "") | users.str.contains(":", regex=False)).any():
        raise DataError("a user line needs a user id without ':'")
    orphan = ~sub["key"].isin(set(heads["key"]))
    if orphan.any():
        raise DataError(f"a user line of no posting in the batch: {sub['key'][orphan].iloc[0]!r}")
    summed = sub.groupby("key", sort=False)[amounts].sum()
    want = pd.concat([pd.DataFrame({"key": summed.index, "account": CONTROL_ACCOUNTS[kind], "purpose": purpose,
                                    "amount": sign * summed[column].to_numpy(np.int64)})
                      for column, kind, _unit, sign, purpose in LINE_LEGS], ignore_index=True)
    controls = lines[lines["account"].isin(list(CONTROL_ACCOUNTS.values()))]
    have = controls.groupby(["key", "account", "purpose"], sort=False)["amount"].sum().rename("booked")
    both = want.set_index(["key", "account", "purpose"]).join(have, how="outer").fillna(0)
    off = both[both["amount"] != both["booked"]]
    if len(off):
        key, account, purpose = off.index[0]
        raise DataError(f"posting {key}: control account {account} ({purpose}) holds {int(off['booked'].iloc[0]):+d} "
                        f"but its user lines sum to {int(off['amount'].iloc[0]):+d}")
    return sub


def _checked(heads: pd.DataFrame, lines: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The postings and entries, or a :class:`DataError` naming the first posting that breaks a rule."""
    missing = [c for c in POSTING_FIELDS if c not in heads] + [c for c in ENTRY_FIELDS if c not in lines]
    if missing:
        raise DataError(f"postings: missing field(s) {', '.join(missing)}")
    heads = heads[list(POSTING_FIELDS)].astype(str).reset_index(drop=True)
    lines = lines[list(ENTRY_FIELDS)].reset_index(drop=True)
    if (heads["key"] == "").any():
        raise DataError("a posting needs an idempotency key")
    dup = heads["key"].duplicated()
    if dup.any():
        raise DataError(f"two postings in one batch share the key {heads['key'][dup].iloc[0]!r}")
    days = pd.to_datetime(heads["period"], format="%Y-%m-%d", errors="coerce")
    if days.isna().any():
        i = int(np.flatnonzero(days.isna().to_numpy())[0])
        raise DataError(f"posting {heads['key'][i]}: period {heads['period'][i]!r} is not a day YYYY-MM-DD")
    if not pd.api.types.is_integer_dtype(lines["amount"]) and len(lines):
        raise DataError("an amount is not an integer (ledger amounts are whole fen and Wh)")
    if (lines["account"].astype(str) == "").any():
        raise DataError(f"posting {lines['key'][lines['account'].astype(str) == ''].iloc[0]}: an entry without account")
    bad_unit = ~lines["unit"].isin(UNITS)
    if bad_unit.any():
        raise DataError(f"unknown unit {lines['unit'][bad_unit].iloc[0]!r}; known: {', '.join(UNITS)}")
    orphan = ~lines["key"].isin(set(heads["key"]))
    if orphan.any():
        raise DataError(f"an entry of no posting in the batch: {lines['key'][orphan].iloc[0]!r}")
    empty = ~heads["key"].isin(set(lines["key"]))
    if empty.any():
        raise DataError(f"posting {heads['key'][empty].iloc[0]}: no entries")
    sums = lines.groupby(["key", "unit"], sort=False)["amount"].sum().reset_index()
    off = sums[sums["amount"] != 0]
    if len(off):
        key = off["key"].iloc[0]
        first = off[off["key"] == key]
        detail = ", ".join(f"{int(t):+d} {u}" for u, t in zip(first["unit"], first["amount"]))
        raise DataError(f"posting {key} does not balance: {detail}")
    return heads, lines


PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
"""Positional placeholder of each DB-API paramstyle :func:`_bulk_insert` writes for."""


def _bulk_insert(con: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    """Insert the rows of ``frame`` (its columns named as the table's) with the driver's
    ``executemany`` and plain tuples: the fast path for hundreds of thousands of rows (SQLAlchemy's
    per-row parameter processing costs more than the database's insert)."""
    cols = [str(c) for c in frame.columns]
    mark = PLACEHOLDERS.get(con.dialect.paramstyle)
    if mark is None:  # a driver with named parameters only: SQLAlchemy's own executemany
        con.execute(table.insert(), [dict(zip(cols, row)) for row in zip(*(frame[c].tolist() for c in cols))])
        return
    quote = con.dialect.identifier_preparer.quote
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in cols)}) "
           f"VALUES ({', '.join([mark] * len(cols))})")
    con.exec_driver_sql(sql, list(zip(*(frame[c].tolist() for c in cols))))


def _to_open_months(heads: pd.DataFrame, closed: set[str]) -> pd.DataFrame:
    """Postings dated in a closed month moved to the first day of the first open month after it."""
    month = heads["period"].str[:7]
    late = month.isin(closed)
    if not late.any():
        return heads
    heads = heads.copy()
    for m in sorted(set(month[late])):
        day = dt.date.fromisoformat(f"{m}-01")
        while day.strftime("%Y-%m") in closed:
            day = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        rows = late & (month == m)
        heads.loc[rows, "memo"] = [f"late: for {p} (month {m} closed)" + (f"; {x}" if x else "")
                                   for p, x in zip(heads.loc[rows, "period"], heads.loc[rows, "memo"])]
        heads.loc[rows, "kind"] = "late-" + heads.loc[rows, "kind"]
        heads.loc[rows, "period"] = day.isoformat()
    return heads


def _month(text: str) -> str:
    try:
        dt.date.fromisoformat(f"{text}-01")
    except ValueError:
        raise DataError(f"a month is YYYY-MM, got {text!r}") from None
    return text


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
