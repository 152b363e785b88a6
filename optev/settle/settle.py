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

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from optev.errors import DataError
from optev.mobility.telemetry import TELEMETRY_PERIOD_S
from optev.settle.ledger import CONTROL_ACCOUNTS, ENTRY_FIELDS, POSTING_FIELDS, Ledger, Posting
from optev.settle.meter import Readings, largest_remainder, meter
from optev.settle.run import Rules, RunTables, read_run
from optev.settle.split import Contract, split_receipt
from optev.settle.tariff import MICRO, PERIODS, step_periods
from optev.settle.telemetry import telemetry_readings

FEN_DIVISOR = 10_000_000_000
"""mWh × micro-yuan/kWh in one fen."""

INT64_MAX = int(np.iinfo(np.int64).max)
LINE_KEYS = ("session_id", "ev_id", "station_id", "day", "period")
"""What identifies a settlement line."""


def round_half_up_fen(exact: int) -> int:
    """Fen of an exact amount in mWh × micro-yuan/kWh, half up (away from zero for negatives)."""
    q, r = divmod(abs(int(exact)), FEN_DIVISOR)
    fen = q + (1 if 2 * r >= FEN_DIVISOR else 0)
    return fen if exact >= 0 else -fen


def share_fen(exact: np.ndarray) -> np.ndarray:
    """Fen per line: the total of the (non-negative, integer) exact amounts rounded half up, shared
    by largest remainder on the exact integers — each line gets its whole fen, and the fen the
    floors lose go to the lines with the largest remainders (ties: the earlier line)."""
    v = np.asarray(exact)
    if v.size and (not np.issubdtype(v.dtype, np.integer) or (v < 0).any()):
        raise DataError("exact amounts must be non-negative integers")
    fen, rest = np.divmod(v.astype(np.int64), FEN_DIVISOR)
    floors = int(fen.sum())
    total = round_half_up_fen(floors * FEN_DIVISOR + int(rest.sum()))
    fen[np.lexsort((np.arange(v.size), -rest))[:total - floors]] += 1
    return fen


def exact_values(mwh: np.ndarray, micro_per_kwh: int | np.ndarray) -> np.ndarray:
    """mWh × micro-currency/kWh in int64, refusing readings and prices whose product could overflow."""
    price = np.asarray(micro_per_kwh, np.int64)
    w = np.asarray(mwh, np.int64)
    if w.size and price.size and int(np.abs(w).max()) * int(np.abs(price).max()) > INT64_MAX:
        raise DataError("readings × prices exceed what the meter's integers hold: a price or a reading is absurd")
    return w * price


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


def prices_at(tables: RunTables, times: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """The run's grid buy and sell price (currency/kWh) at each of ``times`` (steps of ``ev.csv``);
    sell NaN where the run has no sell prices (a run of an older optev)."""
    steps = tables.steps.set_index("time")
    buy = steps["price_buy_per_kwh"].reindex(times).to_numpy(float)
    if np.isnan(buy).any():
        raise DataError(f"ev.csv has a step ({times[np.flatnonzero(np.isnan(buy))[0]].isoformat()}) that steps.csv "
                        "does not price", table="ev.csv", column="time")
    sell = (steps["price_sell_per_kwh"].reindex(times).to_numpy(float) if "price_sell_per_kwh" in steps
            else np.full(buy.size, np.nan))
    return buy, sell


def days_of(times: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """Code of each time's local date and the dates as ``YYYY-MM-DD``."""
    codes, uniques = pd.factorize(times.normalize(), sort=True)
    return codes, np.asarray(pd.DatetimeIndex(uniques).strftime("%Y-%m-%d"), dtype=object)


def lines(tables: RunTables, rules: Rules, readings: Readings | None = None) -> pd.DataFrame:
    """Settlement lines (module docstring): ``session_id, ev_id, station_id, day, period,
    import_wh, export_wh, import_mwh, import_exact, export_exact`` (exact: mWh × micro-yuan/kWh),
    sorted by session, day and period; of ``readings`` when given (5-s telemetry:
    :mod:`optev.settle.telemetry`), else of the run's realised power."""
    r = meter(tables.ev, tables.step) if readings is None else readings
    time_code, times = pd.factorize(r.time)  # each distinct step is dated and priced once
    day_of_time, days = days_of(pd.DatetimeIndex(times))
    day_code = day_of_time[time_code]
    registers = r.registers
    if rules.tariff is None:
        buy_cny, sell_cny = prices_at(tables, pd.DatetimeIndex(times))
        buy = np.round(buy_cny * MICRO).astype(np.int64)[time_code]
        sell = np.round(np.nan_to_num(sell_cny, nan=-1.0) * MICRO).astype(np.int64)[time_code]
        if ((sell < 0) & (registers["export_wh"] > 0)).any():
            raise DataError("the run exported V2G energy but steps.csv has no price_sell_per_kwh (a run of an older "
                            "optev): settle it with a rules file that prices export")
        values = dict(registers, import_exact=exact_values(registers["import_mwh"], buy),
                      export_exact=exact_values(registers["export_mwh"], np.maximum(sell, 0)))
        rows, period_code = None, np.zeros(r.session_code.size, np.int64)
        periods: tuple[str, ...] = ("all",)
    else:
        rows, period_code, values = _tou_values(registers, time_code, pd.DatetimeIndex(times), tables.step, rules)
        periods = PERIODS
    return _grouped(r, rows, day_code if rows is None else day_code[rows], period_code, values, days, periods)


def _grouped(r: Readings, rows: np.ndarray | None, day_code: np.ndarray, period_code: np.ndarray,
             values: dict[str, np.ndarray], days: np.ndarray, periods: tuple[str, ...]) -> pd.DataFrame:
    """Readings (``rows`` of ``r``, all when None, each with its day, period and ``values``)
    summed per (session, day, period), exactly in int64 (a wrapped sum is refused)."""
    n_day, n_per = max(len(days), 1), len(periods)
    session = r.session_code if rows is None else r.session_code[rows]
    code = (session * n_day + day_code) * n_per + period_code
    order = None if (code[1:] >= code[:-1]).all() else np.argsort(code, kind="stable")
    c = code if order is None else code[order]
    start = np.flatnonzero(np.r_[True, c[1:] != c[:-1]]) if c.size else np.zeros(0, np.int64)
    head = start if order is None else order[start]
    first = session[head]
    out = pd.DataFrame({"session_id": r.sessions[first], "ev_id": r.evs[first], "station_id": r.stations[first],
                        "day": days[day_code[head]], "period": np.asarray(periods, dtype=object)[period_code[head]]})
    for col in ("import_wh", "export_wh", "import_mwh", "import_exact", "export_exact"):
        v = values[col] if order is None else values[col][order]
        out[col] = np.add.reduceat(v, start) if c.size else np.zeros(0, np.int64)
        longest = int(np.diff(np.r_[start, c.size]).max()) if c.size else 0
        if c.size and col.endswith("_exact") and int(np.abs(v).max()) * longest > INT64_MAX:
            # a sum that could wrap: it must equal the float sum
            shadow = np.add.reduceat(v.astype(float), start)
            if (np.abs(shadow - out[col].to_numpy(float)) > 1e-6 * np.abs(shadow) + 1.0).any():
                raise DataError("a settlement line's amount exceeds what the meter's integers hold")
    return out


def _tou_values(registers: dict[str, np.ndarray], time_code: np.ndarray, times: pd.DatetimeIndex, step: pd.Timedelta,
                rules: Rules) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Readings (at ``times[time_code]``) split over the tariff's periods in proportion to time
    (module docstring): the reading of each part, its period and its values."""
    assert rules.tariff is not None
    minutes = step_periods(rules.tariff, times, step)[time_code]
    prices = rules.tariff.period_prices_micro()
    whole = minutes.max(axis=1) == minutes.sum(axis=1)  # the step lies in one period
    split = {c: _split_registers(v, minutes, whole) for c, v in registers.items()}
    parts = [(np.flatnonzero(minutes[:, k] > 0), k) for k in range(len(PERIODS))]
    rows = np.concatenate([idx for idx, _ in parts])
    period_code = np.concatenate([np.full(idx.size, k, np.int64) for idx, k in parts])
    values = {c: np.concatenate([v[idx, k] for idx, k in parts]) for c, v in split.items()}
    price = np.asarray([prices[p] for p in PERIODS], np.int64)[period_code]
    values.update(import_exact=exact_values(values["import_mwh"], price),
                  export_exact=exact_values(values["export_mwh"], rules.tariff.export_micro))
    return rows, period_code, values


def _split_registers(values: np.ndarray, minutes: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """(n, periods) integer parts of each reading, in proportion to its minutes in each period."""
    out = np.zeros_like(minutes)
    out[whole, minutes[whole].argmax(axis=1)] = values[whole]
    for i in np.flatnonzero(~whole):
        out[i] = largest_remainder(minutes[i].astype(float), int(values[i]))
    return out


def charging_frames(table: pd.DataFrame, users: dict[str, str], imp_fen: np.ndarray, exp_fen: np.ndarray,
                    fee_fen: np.ndarray, run_id: str, source: str,
                    version: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The charging postings of the lines, as the tables :meth:`~optev.settle.ledger.Ledger.post_frames`
    takes: one posting per station, day and tariff period (key ``run:<run>:station:<id>:<day>:<period>``)
    with its energy (import, export) and money (energy, service fee, energy purchase, V2G) entries —
    the users' side on the control accounts — and one sub-ledger line per session (module docstring
    of :mod:`optev.settle.ledger`)."""
    station_code, stations = pd.factorize(table["station_id"].astype(str))
    day_code, days = pd.factorize(table["day"].astype(str))
    period_code, periods = pd.factorize(table["period"].astype(str))
    code = (station_code.astype(np.int64) * len(days) + day_code) * len(periods) + period_code
    posting, first = _groups(code)
    n = int(posting.max()) + 1 if posting.size else 0
    st, dy, pe = station_code[first], day_code[first], period_code[first]
    station_names = np.asarray(stations, dtype=object)[st]
    keys = (f"run:{run_id}:station:" + station_names + ":" + np.asarray(days, dtype=object)[dy] + ":"
            + np.asarray(periods, dtype=object)[pe]).astype(object)
    amounts = {"import_wh": table["import_wh"].to_numpy(np.int64), "export_wh": table["export_wh"].to_numpy(np.int64),
               "energy_fen": np.asarray(imp_fen, np.int64), "fee_fen": np.asarray(fee_fen, np.int64),
               "v2g_fen": np.asarray(exp_fen, np.int64)}
    tot = {c: np.rint(np.bincount(posting, weights=v, minlength=n)).astype(np.int64) for c, v in amounts.items()}
    grid = np.full(n, "grid", dtype=object)
    op = ("operator:" + station_names).astype(object)
    ev_c, user_c = (np.full(n, CONTROL_ACCOUNTS[k], dtype=object) for k in ("ev", "user"))
    imp, exp, energy, fee, credit = (tot[c] for c in ("import_wh", "export_wh", "energy_fen", "fee_fen", "v2g_fen"))
    legs = ((grid, "Wh", -imp, "import"), (ev_c, "Wh", imp, "import"),
            (ev_c, "Wh", -exp, "export"), (grid, "Wh", exp, "export"),
            (user_c, "fen", -energy, "energy"), (op, "fen", energy, "energy"),
            (user_c, "fen", -fee, "service_fee"), (op, "fen", fee, "service_fee"),
            (op, "fen", -energy, "energy_purchase"), (grid, "fen", energy, "energy_purchase"),
            (grid, "fen", -credit, "v2g"), (user_c, "fen", credit, "v2g"))
    entries = pd.concat([pd.DataFrame({"key": keys, "account": acc, "unit": unit, "amount": amount, "purpose": why})
                         for acc, unit, amount, why in legs], ignore_index=True)
    entries = entries[entries["amount"] != 0].reset_index(drop=True)
    heads = pd.DataFrame({"key": keys, "period": np.asarray(days, dtype=object)[dy],
                          "kind": np.full(n, "charging", dtype=object), "source": np.full(n, source, dtype=object),
                          "run": np.full(n, run_id, dtype=object),
                          "event": (station_names + "|" + np.asarray(periods, dtype=object)[pe]).astype(object),
                          "rule_version": np.full(n, version, dtype=object), "memo": np.full(n, "", dtype=object)})
    heads = heads[heads["key"].isin(set(entries["key"]))].reset_index(drop=True)
    ev_ids = table["ev_id"].astype(str).to_numpy(object)
    sub = pd.DataFrame({"key": keys[posting], "user": [users[e] for e in ev_ids],
                        "session": table["session_id"].astype(str).to_numpy(object), **amounts})
    nonzero = np.zeros(len(sub), bool)
    for c in amounts:
        nonzero |= sub[c].to_numpy() != 0
    return heads, entries, sub[nonzero].reset_index(drop=True)


def _groups(code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group number of each element of ``code`` (in order of first appearance) and the index of each
    group's first element."""
    group, uniques = pd.factorize(code)
    first = np.full(len(uniques), code.size, np.int64)
    np.minimum.at(first, group, np.arange(code.size))
    return group.astype(np.int64), first


def settle_run(folder: str, ledger: Ledger, rules: Rules | None = None,
               telemetry: Telemetry | None = None) -> Settlement:
    """Settle the run in ``folder`` into ``ledger`` (module docstring); a run settled before adds
    nothing. ``telemetry``: meter from these 5-s samples instead of the run's power."""
    return settle_tables(read_run(folder), ledger, rules, telemetry)


@dataclass(frozen=True)
class Telemetry:
    """5-s charger samples to meter from (:func:`optev.settle.telemetry.read_telemetry`) and their period."""

    samples: pd.DataFrame
    period_s: float = TELEMETRY_PERIOD_S


def settle_tables(tables: RunTables, ledger: Ledger, rules: Rules | None = None,
                  telemetry: Telemetry | None = None) -> Settlement:
    """:func:`settle_run` for run tables already read (:func:`~optev.settle.run.read_run`)."""
    rules = rules or Rules()
    readings, samples = (None, 0) if telemetry is None else telemetry_readings(telemetry.samples, tables,
                                                                                  telemetry.period_s)
    table = lines(tables, rules, readings)
    users = ledger.pseudonyms(table["ev_id"].unique())
    imp_fen = share_fen(table["import_exact"].to_numpy())
    exp_fen = share_fen(table["export_exact"].to_numpy())
    fee_fen = share_fen(exact_values(table["import_mwh"].to_numpy(np.int64), rules.service_fee_micro))
    run_id = tables.digest
    _check_rules(ledger, run_id, rules)
    heads, entries, sub = charging_frames(table, users, imp_fen, exp_fen, fee_fen, run_id, str(tables.folder.name),
                                          rules.version)
    services = service_postings(tables, users, rules.contract, rules.version)
    check_overlaps(ledger, run_id, services)
    if services:
        heads = pd.concat([heads, pd.DataFrame([{f: getattr(p, f) for f in POSTING_FIELDS} for p in services])],
                          ignore_index=True)
        entries = pd.concat([entries, pd.DataFrame([(p.key, *e) for p in services for e in p.entries],
                                                   columns=list(ENTRY_FIELDS))], ignore_index=True)
    added = ledger.post_frames(heads, entries, sub) if len(heads) else 0
    energy = int(table["import_wh"].sum())
    amount = int(imp_fen.sum() - exp_fen.sum())
    result = Settlement(run=run_id, postings_added=added, postings=len(heads), energy_wh=energy,
                        export_wh=int(table["export_wh"].sum()), amount_fen=amount, service_fen=int(fee_fen.sum()),
                        services_fen=sum(int(e[2]) for p in services for e in p.entries if e[3] == "service" and e[2] > 0),
                        currency=str(tables.summary.get("currency") or ""), rule_version=rules.version)
    result.reconciliation = reconcile(tables, table, ledger, rules, amount, samples)
    ledger.record_run_days([{"run": run_id, "day": d["day"], "source": str(tables.folder.name),
                             "meter_wh": d["meter_wh"], "run_wh": d["run_wh"], "run_fen": d.get("run_fen")}
                            for d in result.reconciliation["days"]])
    return result


def _check_rules(ledger: Ledger, run_id: str, rules: Rules) -> None:
    """Refuse to settle a run again under rules other than those of its postings in the ledger."""
    before = ledger.rule_versions(run_id)
    if before - {rules.version}:
        raise DataError(f"run {run_id} is already settled under other rules ({'; '.join(sorted(before))}); "
                        "reverse those postings before settling it again")


def settle_event(folder: str, ledger: Ledger, service_id: str, rules: Rules | None = None) -> Settlement:
    """Settle one grid-service event of a run as soon as its record has closed: the payment and
    its split only — the very posting (same key) that settling the whole run makes, so the run's
    settlement later adds its charging and skips this. The reconciliation checks the split: the
    parts sum to the receipt (``difference_fen``); no energy is posted (``difference_wh`` 0)."""
    tables = read_run(folder)
    rules = rules or Rules()
    users = ledger.pseudonyms(tables.ev["ev_id"].unique())
    services = [p for p in service_postings(tables, users, rules.contract, rules.version)
                if p.event.split("|")[0] == str(service_id)]
    if not services:
        raise DataError(f"{folder}: no paid service event {service_id!r} in service_records.csv")
    _check_rules(ledger, tables.digest, rules)
    check_overlaps(ledger, tables.digest, services)
    added = ledger.post(services)
    receipt = sum(int(e[2]) for p in services for e in p.entries if e[3] == "service" and e[0] == "aggregator")
    parts = sum(int(e[2]) for p in services for e in p.entries if e[0] != "grid" and e[3] in ("service", "service_split"))
    return Settlement(run=tables.digest, postings_added=added, postings=len(services), energy_wh=0, export_wh=0,
                      amount_fen=0, service_fen=0, services_fen=receipt,
                      currency=str(tables.summary.get("currency") or ""), rule_version=rules.version,
                      reconciliation={"receipt_fen": receipt, "parts_fen": parts, "difference_fen": parts - receipt,
                                      "difference_wh": 0, "event": services[0].event, "causes": []})


def reconcile(tables: RunTables, table: pd.DataFrame, ledger: Ledger, rules: Rules, amount_fen: int,
              telemetry_samples: int = 0) -> dict[str, Any]:
    """Meter vs ledger vs run totals per day and in total, every difference with its cause
    (``telemetry_samples``: the meters read that many 5-s samples rather than the run's power)."""
    fleet = run_by_step(tables)
    codes, names = days_of(pd.DatetimeIndex(fleet.index))
    run_kwh = pd.Series(np.bincount(codes, weights=fleet["import_kwh"].to_numpy(float), minlength=len(names)),
                        index=names)
    meter_wh = table.groupby("day")["import_wh"].sum().astype(np.int64)
    ledger_wh = pd.Series(ledger.received_by_day(tables.digest, "ev:", "Wh"), dtype=np.int64)
    run_money = _run_money_by_day(tables, fleet, codes, names) if rules.tariff is None else None
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
    if telemetry_samples:
        causes.append(f"{meter_total - run_total:+d} Wh: metered from {telemetry_samples:,} telemetry samples; the "
                      "run's ev.csv holds each step's mean realised power (money likewise differs)")
    elif abs(ledger_total - run_total) >= 1:
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
        if diff_fen and not telemetry_samples:
            netting = _netting_fen(tables, fleet)
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


def run_by_step(tables: RunTables) -> pd.DataFrame:
    """The fleet's import and export in each step of the run (kWh; index: the step's time), from the
    realised power of ``ev.csv``."""
    codes, times = pd.factorize(pd.DatetimeIndex(tables.ev["time"]))
    p = tables.ev["p_kw"].to_numpy(float)
    dt_h = tables.step.total_seconds() / 3600.0
    return pd.DataFrame({"import_kwh": np.bincount(codes, weights=np.maximum(p, 0.0), minlength=len(times)) * dt_h,
                         "export_kwh": np.bincount(codes, weights=np.maximum(-p, 0.0), minlength=len(times)) * dt_h},
                        index=pd.DatetimeIndex(times))


def _run_money_by_day(tables: RunTables, fleet: pd.DataFrame, codes: np.ndarray, names: np.ndarray) -> pd.Series:
    """The run's energy cost per day at its own prices (each EV's import at buy, export at sell),
    currency: prices are per step, so the fleet's step totals price it exactly."""
    buy, sell = prices_at(tables, pd.DatetimeIndex(fleet.index))
    money = buy * fleet["import_kwh"].to_numpy(float) - np.nan_to_num(sell) * fleet["export_kwh"].to_numpy(float)
    return pd.Series(np.bincount(codes, weights=money, minlength=len(names)), index=names)


def _netting_fen(tables: RunTables, fleet: pd.DataFrame) -> float:
    """Fen by which pricing the fleet's net power per step (the run's ``ev_energy_cost``) differs
    from pricing each EV's import and export (the ledger): ``Σ_t (buy−sell)·min(import_t, export_t)``."""
    if "price_sell_per_kwh" not in tables.steps:
        return 0.0
    buy, sell = prices_at(tables, pd.DatetimeIndex(fleet.index))
    spread = np.where(np.isnan(sell), 0.0, buy - sell)
    return -100.0 * float((spread * np.minimum(fleet["import_kwh"], fleet["export_kwh"])).sum())


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
    contrib["shortfall_wh"] = _shortfalls(contrib, records, str(event["product"]))
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
    :data:`REDUCING`, increase for :data:`FILLING`, |change| otherwise) — ``wh`` — and its weight for
    a share of the request — ``capacity_wh``: its uncontrolled energy in the window for
    :data:`REDUCING` (what it could give up), its plugged-in hours × 1 kW otherwise."""
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
        capacity = base.clip(lower=0.0).groupby(level=0).sum()
    elif product in FILLING:
        moved = (-diff).groupby(level=0).sum().clip(lower=0.0)
        capacity = now.groupby(level=0).size().astype(float)
    else:
        moved = diff.abs().groupby(level=0).sum()
        capacity = now.groupby(level=0).size().astype(float)
    sessions = act.reset_index()[["session_id", "ev_id", "station_id"]]
    wh = np.round(moved.reindex(sessions["session_id"]).fillna(0.0).to_numpy(float) * dt_h * 1000.0)
    cap = np.round(capacity.reindex(sessions["session_id"]).fillna(0.0).to_numpy(float) * dt_h * 1000.0)
    return pd.DataFrame({"station": sessions["station_id"].astype(str).to_numpy(object),
                         "user": [users.get(str(e), str(e)) for e in sessions["ev_id"]],
                         "wh": wh.astype(np.int64), "capacity_wh": cap.astype(np.int64),
                         "shortfall_wh": np.zeros(len(sessions), np.int64)})


def _shortfalls(contrib: pd.DataFrame, records: pd.DataFrame, product: str) -> np.ndarray:
    r"""Wh each session fell short of its share of the request (what a penalty is passed through by).

    The request is the station records' ``requested_kwh`` where they carry one (each station's
    own), else the group record's (all participants together). A session's share of its
    station's or the group's request is in proportion to its ``capacity_wh``
    (:func:`_contributions`); its shortfall is :math:`\max(\text{share} - \text{moved}, 0)`.
    No request recorded: no shortfall (the aggregator then carries a penalty alone).
    """
    out = np.zeros(len(contrib), np.int64)
    if "requested_kwh" not in records or not len(contrib):
        return out
    req = pd.to_numeric(records["requested_kwh"], errors="coerce")
    stations = records["participant_kind"] == "station"
    per_station = req[stations & req.notna()].groupby(records.loc[stations, "participant_id"].astype(str)).sum()
    cap = contrib["capacity_wh"].to_numpy(float)
    if len(per_station):
        for station, kwh in per_station.items():
            rows = np.flatnonzero(contrib["station"].to_numpy(object) == station)
            out[rows] = _short(1000.0 * float(kwh), cap[rows], contrib["wh"].to_numpy(float)[rows])
        return out
    group = req[~stations & req.notna()]
    if len(group):
        out[:] = _short(1000.0 * float(group.iloc[0]), cap, contrib["wh"].to_numpy(float))
    return out


def _short(request_wh: float, capacity: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """Shortfall of each session: its capacity-weighted share of ``request_wh`` less what it moved."""
    if capacity.sum() <= 0:
        return np.zeros(capacity.size, np.int64)
    return np.round(np.maximum(request_wh * capacity / capacity.sum() - moved, 0.0)).astype(np.int64)
