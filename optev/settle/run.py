r"""What settlement reads (R6.5.2, R6.5.4): an ``optev run`` output folder and the settlement rules.

:func:`read_run` reads ``summary.json`` (step, currency, the run's totals), ``ev.csv`` (each EV's
realised power per step, the meters' source), ``steps.csv`` (the run's grid prices per step) and,
where present, ``baseline_ev.csv``, each value validated with the table, row and column named; the
digest of the run's tables identifies the run in posting keys (the same run settled again, even
from a copy of its folder, adds nothing).

:func:`load_rules` reads a TOML rules file::

    service_fee_per_kwh = 0.6          # CNY/kWh charged to users on top of energy (default 0)

    [tariff]
    preset = "js_tou_2025"             # or "run": the run's own prices per step (the default)
    purchase = 0.424                   # js_tou_2025 parameters (optev.settle.tariff)
    adders = 0.315
    peak_markup = 0.7
    export = 0.85                      # V2G export price, CNY/kWh

    [contract]                         # the revenue split (optev.settle.split.Contract)
    mode = "floor_share"
    floor_fen_per_kwh = 50
    alpha = 0.5

How a run is posted: :mod:`optev.settle.settle`.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from optev.errors import DataError
from optev.settle.split import Contract
from optev.settle.tariff import MICRO, TouRule, jiangsu_2025, to_micro

@dataclass(frozen=True)
class Rules:
    """What a settlement prices with: the energy tariff, the service fee, the split contract."""

    tariff: TouRule | None = None
    """None: the run's own grid prices per step (buy for import, sell for export)."""
    service_fee_micro: int = 0
    """Service fee, micro-yuan per kWh imported (0: none unless the rules give one)."""
    contract: Contract = field(default_factory=Contract)

    @property
    def version(self) -> str:
        tariff = "run prices" if self.tariff is None else f"{self.tariff.key} ({self.tariff.version})"
        return f"tariff {tariff}; service fee {self.service_fee_micro / MICRO:g}/kWh; {self.contract.version}"


def load_rules(path: str | Path | None) -> Rules:
    """Rules from a TOML file (``[tariff]`` ``preset = "js_tou_2025"`` or ``"run"`` and its
    parameters, ``service_fee_per_kwh``, ``[contract]``), or the defaults for None."""
    if path is None:
        return Rules()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DataError(f"{path}: cannot read the settlement rules ({exc})") from None
    unknown = sorted(set(data) - {"tariff", "service_fee_per_kwh", "contract"})
    if unknown:
        raise DataError(f"{path}: unknown rule section(s) {', '.join(unknown)}")
    tariff_spec = dict(data.get("tariff", {"preset": "run"}))
    preset = tariff_spec.pop("preset", "run")
    if preset == "run":
        if tariff_spec:
            raise DataError(f"{path}: the run's prices take no parameters, got {', '.join(tariff_spec)}")
        tariff = None
    elif preset == "js_tou_2025":
        allowed = {"purchase", "adders", "peak_markup", "export"}
        bad = sorted(set(tariff_spec) - allowed)
        if bad:
            raise DataError(f"{path}: unknown js_tou_2025 parameter(s) {', '.join(bad)}; known: {', '.join(sorted(allowed))}")
        tariff = jiangsu_2025(**{k: float(v) for k, v in tariff_spec.items()})
    else:
        raise DataError(f"{path}: unknown tariff preset {preset!r}; known: run, js_tou_2025")
    fee = to_micro(data.get("service_fee_per_kwh", 0.0), "service_fee_per_kwh")
    return Rules(tariff=tariff, service_fee_micro=fee, contract=Contract.from_mapping(data.get("contract", {})))


@dataclass(frozen=True)
class RunTables:
    """What settlement reads from a run folder."""

    folder: Path
    digest: str
    summary: dict[str, Any]
    ev: pd.DataFrame
    steps: pd.DataFrame
    baseline_ev: pd.DataFrame | None
    step: pd.Timedelta


def _csv(folder: Path, name: str, required: tuple[str, ...]) -> pd.DataFrame:
    path = folder / name
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"{folder}: not an optev run folder (no {name})") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)}", table=str(path))
    return frame


def _finite(frame: pd.DataFrame, table: str, column: str) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(float)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError("not a finite number", table=table, row=int(bad[0]), column=column)
    return values


def read_run(folder: str | Path) -> RunTables:
    """The tables of an ``optev run`` folder, validated (one-line errors naming table, row, column)."""
    root = Path(folder)
    try:
        summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{root}: not an optev run folder (no summary.json)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{root / 'summary.json'}: cannot be read ({exc})") from None
    ev = _csv(root, "ev.csv", ("ev_id", "session_id", "station_id", "time", "p_kw"))
    steps = _csv(root, "steps.csv", ("time", "price_buy_per_kwh"))
    for frame, table, cols in ((ev, "ev.csv", ("p_kw",)), (steps, "steps.csv", ("price_buy_per_kwh",))):
        for c in cols:
            _finite(frame, table, c)
    step_min = summary.get("step_minutes")
    if not isinstance(step_min, (int, float)) or not 0 < float(step_min) <= 60:
        raise DataError(f"{root / 'summary.json'}: step_minutes must be a number of minutes in (0, 60], got {step_min!r}")
    for frame, table in ((ev, "ev.csv"), (steps, "steps.csv")):
        times = pd.to_datetime(frame["time"], errors="coerce", format="ISO8601")
        bad = np.flatnonzero(times.isna().to_numpy())
        if bad.size:
            raise DataError("not a timestamp", table=table, row=int(bad[0]), column="time")
        frame["time"] = times
    baseline = _csv(root, "baseline_ev.csv", ("session_id", "time", "p_kw")) if (root / "baseline_ev.csv").exists() else None
    if baseline is not None:
        baseline["time"] = pd.to_datetime(baseline["time"], errors="coerce", format="ISO8601")
    digest = hashlib.sha256()
    for name in ("summary.json", "ev.csv", "steps.csv"):
        digest.update((root / name).read_bytes())
    return RunTables(folder=root, digest=digest.hexdigest()[:16], summary=summary, ev=ev, steps=steps,
                     baseline_ev=baseline, step=pd.Timedelta(minutes=float(step_min)))
