r"""Posting a run into the ledger and reconciling it (R6.5.2, R6.5.4); rules in :mod:`optev.settle.run`.

Lines
    One line per session, settlement day (local date of the step) and tariff period (``all``
    under the run's own prices): its import and export Wh (carry-forward registers,
    :mod:`optev.settle.meter`; a step across a period boundary split in proportion to time) and
    their exact values :math:`\sum w\,\pi` (mWh × micro-yuan/kWh).

Money of a batch
    Money is computed on the registers at the meter's internal resolution (mWh) and prices in
    micro-yuan per kWh, exactly in integers. The exact values of a batch (import charges;
    export credits; service fees) are summed and
    rounded once, half up, to the fen; :func:`~optev.settle.meter.largest_remainder` shares the
    total over the lines so that they sum to it (a ``fen`` is a hundredth of the run's currency).

Reconciliation
    Energy: the meters (Σ registers) against the ledger (Σ ``ev:`` entries of the run) against the
    run (the sum of its realised power × step, and the summary's ``energy_delivered_kwh``), per
    day and in total; money: the ledger's energy charges less export credits against the run's
    ``ev_energy_cost`` (under the run's prices only; another tariff is a stated cause). Every
    difference is listed with its cause.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from optev.errors import DataError
from optev.settle.ledger import ENTRY_FIELDS, POSTING_FIELDS, Ledger, Posting
from optev.settle.meter import largest_remainder, meter
from optev.settle.run import Rules, RunTables, read_run
from optev.settle.split import Contract, split_receipt
from optev.settle.tariff import MICRO, PERIODS, step_periods

FEN_DIVISOR = 10_000_000_000
"""mWh × micro-yuan/kWh in one fen."""

LINE_KEYS = ("session_id", "ev_id", "station_id", "day", "period")
"""What identifies a settlement line."""


def round_half_up_fen(exact: int) -> int:
    """Fen of an exact amount in mWh × micro-yuan/kWh, half up (away from zero for negatives)."""
    q, r = divmod(abs(int(exact)), FEN_DIVISOR)
    fen = q + (1 if 2 * r >= FEN_DIVISOR else 0)
    return fen if exact >= 0 else -fen


def share_fen(exact: np.ndarray) -> np.ndarray:
    """Fen per line: the rounded total of the (non-negative, integer) exact amounts, shared by
    largest remainder."""
    values = np.asarray(exact, dtype=object)
    total = round_half_up_fen(int(sum(int(v) for v in values)))
    return largest_remainder(np.asarray(values, float), total)


def pseudonym(secret: bytes, ev_id: str) -> str:
    """The user's pseudonymous id: ``u-`` and 16 hex digits of HMAC-SHA256(secret, ev id)."""
    return "u-" + hmac.new(secret, str(ev_id).encode(), hashlib.sha256).hexdigest()[:16]


@dataclass
class Settlement:
    """What :func:`settle_run` did: counts, totals and the reconciliation."""

    run: str
    postings_added: int
    postings: int
    energy_wh: int
    export_wh: int
    amount_fen: int
    service_fen: int
    """Service fees charged to users (per kWh), fen."""
    services_fen: int
    """Grid-service payments received (split to aggregator, operators and users), fen."""
    currency: str
    rule_version: str
    reconciliation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def row_prices(tables: RunTables, times: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """The run's grid buy and sell price (currency/kWh) at each of ``times`` (steps of ``ev.csv``);
    sell NaN where the run has no sell prices (a run of an older optev)."""
    steps = tables.steps.set_index("time")
    buy = steps["price_buy_per_kwh"].reindex(times).to_numpy(float)
    if np.isnan(buy).any():
        raise DataError("ev.csv has a step that steps.csv does not price", table="ev.csv",
                        row=int(np.flatnonzero(np.isnan(buy))[0]), column="time")
    sell = (steps["price_sell_per_kwh"].reindex(times).to_numpy(float) if "price_sell_per_kwh" in steps
            else np.full(buy.size, np.nan))
    return buy, sell


def lines(tables: RunTables, rules: Rules) -> pd.DataFrame:
    """Settlement lines (module docstring): ``session_id, ev_id, station_id, day, period,
    import_wh, export_wh, import_mwh, import_exact, export_exact`` (exact: mWh × micro-yuan/kWh),
    sorted by session, day and period."""
    r = meter(tables.ev, tables.step).table
    local = pd.DatetimeIndex(r["time"])
    r["day_code"], days = local_days(local)
    if rules.tariff is None:
        buy_cny, sell_cny = row_prices(tables, local)
        buy = np.round(buy_cny * MICRO).astype(np.int64)
        sell = np.round(np.nan_to_num(sell_cny, nan=-1.0) * MICRO).astype(np.int64)
        if ((sell < 0) & (r["export_wh"].to_numpy() > 0)).any():
            raise DataError("the run exported V2G energy but steps.csv has no price_sell_per_kwh (a run of an older "
                            "optev): settle it with a rules file that prices export")
        frame = r.assign(period_code=0, import_exact=r["import_mwh"].to_numpy(np.int64) * buy,
                         export_exact=r["export_mwh"].to_numpy(np.int64) * np.maximum(sell, 0))
        periods: tuple[str, ...] = ("all",)
    else:
        frame, periods = _tou_lines(r, local, tables.step, rules), PERIODS
    return _grouped(frame, days, periods)


def local_days(local: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """Code of each timestamp's local date and the dates as ``YYYY-MM-DD`` (formatted once each)."""
    codes, uniques = pd.factorize(local.normalize(), sort=True)
    return codes, np.asarray(pd.DatetimeIndex(uniques).strftime("%Y-%m-%d"), dtype=object)


def _grouped(frame: pd.DataFrame, days: np.ndarray, periods: tuple[str, ...]) -> pd.DataFrame:
    """Readings summed per (session, day, period), exactly in int64 (a line's sum stays far below 2^63)."""
    n_day, n_per = max(len(days), 1), len(periods)
    code = (frame["session_code"].to_numpy(np.int64) * n_day + frame["day_code"].to_numpy(np.int64)) * n_per \
        + frame["period_code"].to_numpy(np.int64)
    order = np.argsort(code, kind="stable")
    c = code[order]
    start = np.flatnonzero(np.r_[True, c[1:] != c[:-1]]) if c.size else np.zeros(0, np.int64)
    first = frame.iloc[order[start]]
    out = pd.DataFrame({"session_id": np.asarray(first["session_id"], dtype=object),
                        "ev_id": np.asarray(first["ev_id"], dtype=object),
                        "station_id": np.asarray(first["station_id"], dtype=object),
                        "day": days[first["day_code"].to_numpy(np.int64)],
                        "period": np.asarray(periods, dtype=object)[first["period_code"].to_numpy(np.int64)]})
    for col in ("import_wh", "export_wh", "import_mwh", "import_exact", "export_exact"):
        values = frame[col].to_numpy(np.int64)[order]
        out[col] = np.add.reduceat(values, start) if c.size else np.zeros(0, np.int64)
    return out


def _tou_lines(r: pd.DataFrame, local: pd.DatetimeIndex, step: pd.Timedelta, rules: Rules) -> pd.DataFrame:
    """Readings split over the tariff's periods in proportion to time (module docstring)."""
    assert rules.tariff is not None
    minutes = step_periods(rules.tariff, local, step)
    prices = rules.tariff.period_prices_micro()
    whole = minutes.max(axis=1) == minutes.sum(axis=1)  # the step lies in one period
    split = {c: _split_registers(r[c].to_numpy(np.int64), minutes, whole)
             for c in ("import_wh", "export_wh", "import_mwh", "export_mwh")}
    frames = []
    for k, period in enumerate(PERIODS):
        rows = np.flatnonzero(minutes[:, k] > 0)
        if not rows.size:
            continue
        frames.append(r.iloc[rows].assign(period_code=k, **{c: v[rows, k] for c, v in split.items()},
                                          import_exact=split["import_mwh"][rows, k] * prices[period],
                                          export_exact=split["export_mwh"][rows, k] * rules.tariff.export_micro))
    return pd.concat(frames, ignore_index=True)


def _split_registers(values: np.ndarray, minutes: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """(n, periods) integer parts of each reading, in proportion to its minutes in each period."""
    out = np.zeros_like(minutes)
    out[whole, minutes[whole].argmax(axis=1)] = values[whole]
    for i in np.flatnonzero(~whole):
        out[i] = largest_remainder(minutes[i].astype(float), int(values[i]))
    return out


def charging_frames(table: pd.DataFrame, users: dict[str, str], imp_fen: np.ndarray, exp_fen: np.ndarray,
                    fee_fen: np.ndarray, run_id: str, source: str, version: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The charging postings of the lines (module docstring of :mod:`optev.settle.run`), as the
    tables :meth:`~optev.settle.ledger.Ledger.post_frames` takes: one posting per line with its
    energy (import, export), its money (energy, service fee, energy purchase, V2G) entries."""
    text = {c: table[c].astype(str).to_numpy(object) for c in LINE_KEYS}
    user = np.array([users[e] for e in text["ev_id"]], dtype=object)
    keys = f"run:{run_id}:session:" + text["session_id"] + ":" + text["day"] + ":" + text["period"]
    ev_acc, user_acc, op_acc = "ev:" + user, "user:" + user, "operator:" + text["station_id"]
    grid = np.full(len(table), "grid", dtype=object)
    imp_wh, exp_wh = table["import_wh"].to_numpy(np.int64), table["export_wh"].to_numpy(np.int64)
    energy, fee, credit = (np.asarray(x, np.int64) for x in (imp_fen, fee_fen, exp_fen))
    legs = ((grid, "Wh", -imp_wh, "import"), (ev_acc, "Wh", imp_wh, "import"),
            (ev_acc, "Wh", -exp_wh, "export"), (grid, "Wh", exp_wh, "export"),
            (user_acc, "fen", -energy, "energy"), (op_acc, "fen", energy, "energy"),
            (user_acc, "fen", -fee, "service_fee"), (op_acc, "fen", fee, "service_fee"),
            (op_acc, "fen", -energy, "energy_purchase"), (grid, "fen", energy, "energy_purchase"),
            (grid, "fen", -credit, "v2g"), (user_acc, "fen", credit, "v2g"))
    entries = pd.concat([pd.DataFrame({"key": keys, "account": acc, "unit": unit, "amount": amount, "purpose": why})
                         for acc, unit, amount, why in legs], ignore_index=True)
    entries = entries[entries["amount"] != 0].reset_index(drop=True)
    n = len(table)
    heads = pd.DataFrame({"key": keys, "period": text["day"], "kind": np.full(n, "charging", dtype=object),
                          "source": np.full(n, source, dtype=object), "run": np.full(n, run_id, dtype=object),
                          "event": text["station_id"] + "|" + text["period"],
                          "rule_version": np.full(n, version, dtype=object), "memo": np.full(n, "", dtype=object)})
    return heads[heads["key"].isin(set(entries["key"]))].reset_index(drop=True), entries


def settle_run(folder: str, ledger: Ledger, rules: Rules | None = None) -> Settlement:
    """Settle the run in ``folder`` into ``ledger`` (module docstring); a run settled before adds nothing."""
    return settle_tables(read_run(folder), ledger, rules)


def settle_tables(tables: RunTables, ledger: Ledger, rules: Rules | None = None) -> Settlement:
    """:func:`settle_run` for run tables already read (:func:`~optev.settle.run.read_run`)."""
    rules = rules or Rules()
    table = lines(tables, rules)
    secret = ledger.secret()
    users = {e: pseudonym(secret, e) for e in table["ev_id"].unique()}
    imp_fen = share_fen(table["import_exact"].to_numpy())
    exp_fen = share_fen(table["export_exact"].to_numpy())
    fee_fen = share_fen(np.asarray([int(w) * rules.service_fee_micro for w in table["import_mwh"]], dtype=object))
    run_id = tables.digest
    before = ledger.rule_versions(run_id)
    if before - {rules.version}:
        raise DataError(f"run {run_id} is already settled under other rules ({'; '.join(sorted(before))}); "
                        "reverse those postings before settling it again")
    heads, entries = charging_frames(table, users, imp_fen, exp_fen, fee_fen, run_id, str(tables.folder.name),
                                     rules.version)
    services = service_postings(tables, users, rules.contract, rules.version)
    check_overlaps(ledger, run_id, services)
    if services:
        heads = pd.concat([heads, pd.DataFrame([{f: getattr(p, f) for f in POSTING_FIELDS} for p in services])],
                          ignore_index=True)
        entries = pd.concat([entries, pd.DataFrame([(p.key, *e) for p in services for e in p.entries],
                                                   columns=list(ENTRY_FIELDS))], ignore_index=True)
    added = ledger.post_frames(heads, entries) if len(heads) else 0
    energy = int(table["import_wh"].sum())
    amount = int(imp_fen.sum() - exp_fen.sum())
    result = Settlement(run=run_id, postings_added=added, postings=len(heads), energy_wh=energy,
                        export_wh=int(table["export_wh"].sum()), amount_fen=amount, service_fen=int(fee_fen.sum()),
                        services_fen=sum(int(e[2]) for p in services for e in p.entries if e[3] == "service" and e[2] > 0),
                        currency=str(tables.summary.get("currency") or ""), rule_version=rules.version)
    result.reconciliation = reconcile(tables, table, ledger, rules, amount)
    ledger.record_run_days([{"run": run_id, "day": d["day"], "source": str(tables.folder.name),
                             "meter_wh": d["meter_wh"], "run_wh": d["run_wh"], "run_fen": d.get("run_fen")}
                            for d in result.reconciliation["days"]])
    return result


def reconcile(tables: RunTables, table: pd.DataFrame, ledger: Ledger, rules: Rules, amount_fen: int) -> dict[str, Any]:
    """Meter vs ledger vs run totals per day and in total, every difference with its cause."""
    dt_h = tables.step.total_seconds() / 3600.0
    p = tables.ev["p_kw"].to_numpy(float)
    codes, names = local_days(pd.DatetimeIndex(tables.ev["time"]))
    run_kwh = pd.Series(np.bincount(codes, weights=np.maximum(p, 0.0) * dt_h, minlength=len(names)), index=names)
    meter_wh = table.groupby("day")["import_wh"].sum().astype(np.int64)
    ledger_wh = pd.Series(ledger.received_by_day(tables.digest, "ev:", "Wh"), dtype=np.int64)
    run_money = _run_money_by_day(tables, codes, names) if rules.tariff is None else None
    days = []
    for d in sorted(set(meter_wh.index) | set(run_kwh.index)):
        m, lw, rw = int(meter_wh.get(d, 0)), int(ledger_wh.get(d, 0)), int(round(1000 * float(run_kwh.get(d, 0.0))))
        days.append({"day": d, "meter_wh": m, "ledger_wh": lw, "run_wh": rw, "difference_wh": lw - rw,
                     "run_fen": None if run_money is None else int(round(100 * float(run_money.get(d, 0.0))))})
    meter_total = int(meter_wh.sum())
    ledger_total = int(ledger_wh.sum())
    summary_kwh = tables.summary.get("energy_delivered_kwh")
    run_total = int(round(1000 * float(run_kwh.sum())))
    causes = []
    if abs(ledger_total - run_total) >= 1:
        causes.append(f"{ledger_total - run_total:+d} Wh: whole-Wh registers per session (carry-forward rounding, "
                      f"at most 0.5 Wh per session register)")
    if meter_total != ledger_total:
        causes.append(f"{ledger_total - meter_total:+d} Wh: the ledger holds this run's postings from an earlier "
                      "settlement made with other rules, or late postings moved to an open month")
    run_cost = tables.summary.get("ev_energy_cost")
    run_fen = None if run_cost is None else int(round(float(run_cost) * 100))
    if rules.tariff is not None:
        causes.append(f"money: priced by {rules.tariff.key}, not the run's own prices (the run's cost is not comparable)")
        diff_fen = None
    else:
        diff_fen = None if run_fen is None else amount_fen - run_fen
        if diff_fen:
            netting = _netting_fen(tables)
            if abs(netting) >= 0.5:
                causes.append(f"{netting:+.1f} fen: the run nets charging and V2G discharge of all EVs per step before "
                              "pricing (ev_energy_cost); the ledger prices each EV's import and export registers")
            if abs(diff_fen - netting) >= 0.5:
                causes.append(f"{diff_fen - netting:+.1f} fen: rounding (the ledger rounds its import charges and its "
                              "export credits to the fen each once, the run its net cost once)")
    return {"meter_wh": meter_total, "ledger_wh": ledger_total, "run_wh": run_total,
            "summary_energy_delivered_wh": None if summary_kwh is None else int(round(1000 * float(summary_kwh))),
            "difference_wh": ledger_total - run_total, "ledger_fen": amount_fen, "run_fen": run_fen,
            "difference_fen": diff_fen, "days": days, "causes": causes}


def _run_money_by_day(tables: RunTables, codes: np.ndarray, names: np.ndarray) -> pd.Series:
    """The run's energy cost per day at its own prices (each EV's import at buy, export at sell), currency."""
    buy, sell = row_prices(tables, pd.DatetimeIndex(tables.ev["time"]))
    p = tables.ev["p_kw"].to_numpy(float)
    dt_h = tables.step.total_seconds() / 3600.0
    money = dt_h * (buy * np.maximum(p, 0.0) - np.nan_to_num(sell) * np.maximum(-p, 0.0))
    return pd.Series(np.bincount(codes, weights=money, minlength=len(names)), index=names)


def _netting_fen(tables: RunTables) -> float:
    """Fen by which pricing the fleet's net power per step (the run's ``ev_energy_cost``) differs
    from pricing each EV's import and export (the ledger): ``Σ_t (buy−sell)·min(import_t, export_t)``."""
    steps = tables.steps.set_index("time")
    if "price_sell_per_kwh" not in steps:
        return 0.0
    ev = tables.ev
    dt_h = tables.step.total_seconds() / 3600.0
    g = ev.assign(imp=ev["p_kw"].clip(lower=0.0), exp=(-ev["p_kw"]).clip(lower=0.0)).groupby("time")[["imp", "exp"]].sum()
    buy, sell = row_prices(tables, pd.DatetimeIndex(g.index))
    spread = np.where(np.isnan(sell), 0.0, buy - sell)
    return -100.0 * dt_h * float((spread * np.minimum(g["imp"], g["exp"])).sum())


REDUCING = ("peak_regulation", "demand_response")
"""Products paid for taking load away (a session contributes its reduction against the baseline)."""

FILLING = ("valley_filling",)
"""Products paid for adding load (a session contributes its increase)."""


def service_postings(tables: RunTables, users: dict[str, str], contract: Contract, rules_version: str) -> list[Posting]:
    """The payment of each service event of the run and its split (module docstring of
    :mod:`optev.settle.split`): one posting per event."""
    path = tables.folder / "service_records.csv"
    pay = (tables.summary.get("appendix_a") or {}).get("pay")
    if not path.exists() or pay is None:
        return []
    records = pd.read_csv(path)
    for col in ("service_id", "product", "participant_kind", "participant_id", "start", "end"):
        if col not in records:
            raise DataError(f"missing column {col}", table=str(path))
    events = records.drop_duplicates("service_id")
    if len(events) > 1:
        raise DataError("a run's service records hold one service event; got "
                        f"{', '.join(events['service_id'].astype(str))}", table=str(path))
    stations = set(tables.ev["station_id"].astype(str))
    known = records[records["participant_kind"] == "station"]["participant_id"].astype(str)
    unknown = sorted(set(known) - stations - _all_stations(tables))
    if unknown:
        raise DataError(f"a service record for unknown participant(s) {', '.join(unknown[:3])}", table=str(path))
    event = events.iloc[0]
    try:
        start, end = pd.Timestamp(event["start"]), pd.Timestamp(event["end"])
    except ValueError:
        raise DataError("start or end is not a timestamp", table=str(path), row=0, column="start") from None
    if not end > start:
        raise DataError(f"the event ends ({end}) before it starts ({start})", table=str(path), row=0, column="end")
    for col in ("delivered_kwh", "requested_kwh"):
        if col in records:
            v = pd.to_numeric(records[col], errors="coerce").to_numpy(float)
            bad = np.flatnonzero(v < 0)
            if bad.size:
                raise DataError("negative energy", table=str(path), row=int(bad[0]), column=col)
    receipt = _fen_of(float(pay), "appendix_a.pay")
    contrib = _contributions(tables, start, end, str(event["product"]), users)
    parts = split_receipt(receipt, contrib, contract)
    entries = [("grid", "fen", -receipt, "service"), ("aggregator", "fen", receipt, "service")]
    for account, fen in sorted(parts.items()):
        if account != "aggregator" and fen:
            entries += [("aggregator", "fen", -fen, "service_split"), (account, "fen", fen, "service_split")]
    entries = [e for e in entries if e[2] != 0]
    if not entries:  # an event that paid nothing
        return []
    return [Posting(key=f"run:{tables.digest}:service:{event['service_id']}", period=start.strftime("%Y-%m-%d"),
                    kind="service", entries=tuple(entries), source=str(tables.folder.name),
                    run=tables.digest, event=event_label(str(event["service_id"]), str(event["product"]), start, end),
                    rule_version=rules_version,
                    memo=f"{event['product']} {start.isoformat()}–{end.isoformat()}: pay {pay:.2f} under "
                         f"{event.get('rule', '')} ({event.get('rule_version', '')})")]


def event_label(service_id: str, product: str, start: pd.Timestamp, end: pd.Timestamp) -> str:
    """A service posting's ``event``: ``id|product|start|end`` (ISO), what overlap checks read."""
    return f"{service_id}|{product}|{start.isoformat()}|{end.isoformat()}"


def check_overlaps(ledger: Ledger, run: str, services: list[Posting]) -> None:
    """Refuse a service event whose window overlaps a different event of the same product already
    in the ledger (the same event recorded twice under another id, or two runs claiming one hour)."""
    if not services:
        return
    booked = ledger.events("service")
    for p in services:
        sid, product, start, end = p.event.split("|")
        for other in booked:
            o_run, o_label = other
            o_sid, o_product, o_start, o_end = o_label.split("|")
            if o_run == run and o_sid == sid:
                continue  # this very event, settled before
            if o_product == product and pd.Timestamp(o_start) < pd.Timestamp(end) and pd.Timestamp(start) < pd.Timestamp(o_end):
                raise DataError(f"service event {sid} ({product} {start}–{end}) overlaps event {o_sid} "
                                f"({o_start}–{o_end}) already in the ledger; nothing was posted")


def _all_stations(tables: RunTables) -> set[str]:
    path = tables.folder / "station.csv"
    return set(pd.read_csv(path, usecols=["station_id"])["station_id"].astype(str)) if path.exists() else set()


def _fen_of(value: float, name: str) -> int:
    if not np.isfinite(value):
        raise DataError(f"{name} is not a finite amount: {value!r}")
    fen = int(np.floor(abs(value) * 100 + 0.5))
    return fen if value >= 0 else -fen


def _contributions(tables: RunTables, start: pd.Timestamp, end: pd.Timestamp, product: str,
                   users: dict[str, str]) -> pd.DataFrame:
    """Wh each session moved against the uncontrolled day in ``[start, end)`` (reduction for
    :data:`REDUCING`, increase for :data:`FILLING`, |change| otherwise)."""
    dt_h = tables.step.total_seconds() / 3600.0
    ev = tables.ev
    inside = (ev["time"] >= start) & (ev["time"] < end)
    act = ev.loc[inside].groupby(["session_id", "ev_id", "station_id"])["p_kw"].apply(list)
    now = ev.loc[inside].set_index(["session_id", "time"])["p_kw"]
    base = pd.Series(dtype=float)
    if tables.baseline_ev is not None:
        b = tables.baseline_ev
        base = b.loc[(b["time"] >= start) & (b["time"] < end)].set_index(["session_id", "time"])["p_kw"]
    keys = now.index.union(base.index)
    diff = base.reindex(keys).fillna(0.0) - now.reindex(keys).fillna(0.0)  # kW taken away (+)
    if product in REDUCING:
        moved = diff.groupby(level=0).sum().clip(lower=0.0)
    elif product in FILLING:
        moved = (-diff).groupby(level=0).sum().clip(lower=0.0)
    else:
        moved = diff.abs().groupby(level=0).sum()
    sessions = act.reset_index()[["session_id", "ev_id", "station_id"]]
    wh = np.round(moved.reindex(sessions["session_id"]).fillna(0.0).to_numpy(float) * dt_h * 1000.0)
    return pd.DataFrame({"station": sessions["station_id"].astype(str).to_numpy(object),
                         "user": [users.get(str(e), str(e)) for e in sessions["ev_id"]],
                         "wh": wh.astype(np.int64), "shortfall_wh": np.zeros(len(sessions), np.int64)})
