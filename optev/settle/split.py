r"""Tiered revenue split (R6.5.4): grid/market → aggregator → charging operators → EV users, to the fen.

A receipt :math:`R` (fen, may be negative: a net penalty) for one service event or period is
shared by a contract (``china_rules.md`` §3; every parameter is data, stored with the postings):

1. *aggregator*: ``mode = "share"``: a platform fee :math:`\phi R^+` plus the share
   :math:`\gamma` of the rest; ``mode = "floor_share"`` ("保底 + 分成", Sichuan): the participants
   get the floor :math:`P_f` per kWh of contribution and :math:`\alpha` of the excess of the
   receipt over the floors, the aggregator the rest; ``mode = "fixed"``: the participants get a
   fixed :math:`P_{fix}` per kWh, the aggregator the rest (which may be negative: the
   aggregator carries the price risk);
2. *operators and users*: the participants' part goes to the stations in proportion to their
   contribution (Wh), and of each station's part the share :math:`\beta` to its operator, the
   rest to the users by their own contribution;
3. *penalty pass-through*: a negative receipt (the market's penalty) is passed through as the
   share :math:`\theta` to the participants in proportion to their own *shortfall* (Wh they
   were asked for and did not deliver), the aggregator keeping the rest;
4. *coupons*: ``user_payout = "coupon"`` books the users' part to coupon accounts instead of cash.

Conservation: every level is divided by :func:`~optev.settle.meter.largest_remainder` over
integer fen, so the parts of every split sum to the whole exactly; the last fen of a level goes
to the largest remainder, ties to the first id in sorted order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from optev.errors import DataError
from optev.settle.meter import largest_remainder

MODES = ("share", "floor_share", "fixed")


@dataclass(frozen=True)
class Contract:
    """A revenue-split contract (module docstring); prices in fen per kWh, shares in [0, 1]."""

    mode: str = "share"
    platform_fee: float = 0.0
    aggregator_share: float = 0.3
    floor_fen_per_kwh: float = 0.0
    alpha: float = 0.5
    fixed_fen_per_kwh: float = 0.0
    operator_share: float = 0.3
    penalty_share: float = 1.0
    user_payout: str = "cash"
    version: str = "contract v1"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise DataError(f"unknown contract mode {self.mode!r}; known: {', '.join(MODES)}")
        for name in ("platform_fee", "aggregator_share", "alpha", "operator_share", "penalty_share"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= float(v) <= 1.0):
                raise DataError(f"contract {name} must be a share in [0, 1], got {v!r}")
        for name in ("floor_fen_per_kwh", "fixed_fen_per_kwh"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise DataError(f"contract {name} must be a finite price >= 0, got {v!r}")
        if self.user_payout not in ("cash", "coupon"):
            raise DataError(f"contract user_payout must be cash or coupon, got {self.user_payout!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "Contract":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"unknown contract field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**dict(data))


def split_receipt(receipt_fen: int, contributions: pd.DataFrame, contract: Contract) -> dict[str, int]:
    """Fen of each account from ``receipt_fen``; the values sum to ``receipt_fen`` exactly.

    ``contributions``: one row per participating user session with ``user`` (account id of the
    user), ``station`` (operator account id), ``wh`` (delivered contribution, ≥ 0) and
    ``shortfall_wh`` (≥ 0, used for penalties). Accounts: ``aggregator``, ``operator:<station>``,
    ``user:<user>`` or ``coupon:<user>``.
    """
    c = contributions.sort_values(["station", "user"], kind="stable").reset_index(drop=True)
    if len(c) and ((c["wh"] < 0).any() or (c["shortfall_wh"] < 0).any()):
        raise DataError("split: contributions and shortfalls must be >= 0 Wh")
    out: dict[str, int] = {}
    if receipt_fen < 0:
        passed = int(round(receipt_fen * contract.penalty_share))
        weight = c["shortfall_wh"].to_numpy(float) if len(c) else np.zeros(0)
        if not len(c) or weight.sum() <= 0:
            passed = 0
        _add(out, "aggregator", receipt_fen - passed)
        if passed:
            _to_participants(out, c, weight, passed, contract)
        return out
    participants = _participants_part(receipt_fen, c, contract)
    _add(out, "aggregator", receipt_fen - participants)
    if participants:
        _to_participants(out, c, c["wh"].to_numpy(float), participants, contract)
    return out


def _participants_part(receipt_fen: int, c: pd.DataFrame, contract: Contract) -> int:
    kwh = float(c["wh"].sum()) / 1000.0 if len(c) else 0.0
    if kwh <= 0:
        return 0
    if contract.mode == "share":
        fee = int(np.floor(receipt_fen * contract.platform_fee))
        return int(np.floor((receipt_fen - fee) * (1.0 - contract.aggregator_share)))
    if contract.mode == "floor_share":
        floor = int(np.floor(contract.floor_fen_per_kwh * kwh))
        excess = max(receipt_fen - floor, 0)
        return floor + int(np.floor(contract.alpha * excess))
    return int(np.floor(contract.fixed_fen_per_kwh * kwh))


def _to_participants(out: dict[str, int], c: pd.DataFrame, weight: np.ndarray, amount: int, contract: Contract) -> None:
    """Share ``amount`` (fen, either sign) over stations by ``weight``, then operator / users."""
    sign = 1 if amount >= 0 else -1
    stations = c["station"].to_numpy(object)
    names, which = np.unique(stations, return_inverse=True)
    per_station = largest_remainder(np.bincount(which, weights=weight, minlength=names.size), abs(amount))
    for k, name in enumerate(names):
        rows = np.flatnonzero(which == k)
        total = int(per_station[k])
        op = int(np.floor(total * contract.operator_share))
        _add(out, f"operator:{name}", sign * op)
        users = largest_remainder(weight[rows], total - op)
        prefix = "coupon" if contract.user_payout == "coupon" and sign > 0 else "user"
        for r, fen in zip(rows, users):
            _add(out, f"{prefix}:{c['user'].iloc[r]}", sign * int(fen))


def _add(out: dict[str, int], account: str, fen: int) -> None:
    out[account] = out.get(account, 0) + int(fen)
