"""Reading a small user CSV with its required columns (service histories, signals)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from optev.errors import DataError


def read_columns(path: str | Path, required: Iterable[str]) -> pd.DataFrame:
    """The CSV at ``path``; a one-line :class:`~optev.errors.DataError` when it cannot be read or
    lacks a required column."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    missing = set(required) - set(frame.columns)
    if missing:
        raise DataError(f"missing column(s) {', '.join(sorted(missing))}", table=str(path))
    return frame


def finite_column(frame: pd.DataFrame, column: str, path: str | Path) -> np.ndarray:
    """``frame[column]`` as floats, every value finite (else an error naming the row)."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(float)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError("not a finite number", table=str(path), row=int(bad[0]), column=column)
    return values
