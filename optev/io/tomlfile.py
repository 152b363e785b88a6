"""Reading a TOML file with one clear error for a syntax error or an unreadable file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from optev.errors import FormatError


def read_toml(path: str | Path) -> dict[str, Any]:
    """The parsed TOML document at ``path``.

    Raises
    ------
    FormatError
        ``<path>: invalid TOML (...)`` or ``<path>: cannot be read (...)`` (a
        :class:`~optev.errors.DataError`: one line on stderr and exit 2 from the CLI).
    """
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise FormatError(f"{path}: invalid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: cannot be read ({exc})") from None
