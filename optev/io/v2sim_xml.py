"""Files and XML of a V2Sim case folder: finding them, parsing them, reading attributes.

One job: locate the files of a case folder (:func:`_find_case_files`, with the rule that
a file named after the folder wins when a pattern matches several), parse an XML file
(gzip or plain) into its root element, and read typed attributes of an element with
error messages that name the file, the element and the attribute. Part of the V2Sim
reader (:mod:`optev.io.v2sim`).
"""

from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, overload

from optev.data.validate import finite_float
from optev.errors import FormatError


@dataclass(frozen=True)
class _CaseFiles:
    folder: Path
    net: Path
    grid: Path
    fcs: Path | None
    scs: Path | None
    node_type: Path | None

    def names(self) -> dict[str, str]:
        return {k: p.name for k, p in (("net", self.net), ("grid", self.grid), ("fcs", self.fcs),
                                       ("scs", self.scs), ("node_type", self.node_type)) if p is not None}


@overload
def _pick(folder: Path, patterns: Iterable[str], what: str, required: Literal[True]) -> Path: ...
@overload
def _pick(folder: Path, patterns: Iterable[str], what: str, required: bool) -> Path | None: ...


def _pick(folder: Path, patterns: Iterable[str], what: str, required: bool) -> Path | None:
    found = sorted({p for pat in patterns for p in folder.glob(pat) if p.is_file()})
    if not found:
        if required:
            raise FormatError(f"{folder}: V2Sim case has no {what} file ({' or '.join(patterns)})")
        return None
    if len(found) > 1:
        preferred = [p for p in found if p.name.startswith(folder.name + ".")]
        if len(preferred) != 1:
            raise FormatError(f"{folder}: several {what} files {[p.name for p in found]}; "
                              "keep one, or name it after the folder")
        return preferred[0]
    return found[0]


def _find_case_files(path: str | Path) -> _CaseFiles:
    folder = Path(path)
    if not folder.exists():
        raise FormatError(f"no such V2Sim case folder: {folder}")
    if not folder.is_dir():
        raise FormatError(f"{folder}: a V2Sim case is a folder, not a file")
    node_type = folder / "node_type.txt"
    return _CaseFiles(
        folder=folder,
        net=_pick(folder, ("*.net.xml", "*.net.xml.gz"), "road network", True),
        grid=_pick(folder, ("*.grid.xml",), "grid", True),
        fcs=_pick(folder, ("*.fcs.xml",), "fast charging station", False),
        scs=_pick(folder, ("*.scs.xml",), "slow charging station", False),
        node_type=node_type if node_type.is_file() else None,
    )


def _parse_xml(path: Path) -> ET.Element:
    """Parse an XML file (gzip if it ends in ``.gz``) into its root element."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return ET.parse(fh).getroot()
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        line, col = exc.position
        raise FormatError(f"{path.name}: XML syntax error at line {line}, column {col + 1}") from None
    except (OSError, EOFError) as exc:
        raise FormatError(f"{path.name}: cannot read file ({exc})") from None


def _where(path: Path, elem: ET.Element, attr: str | None = None) -> str:
    ident = next((f" {k}={elem.get(k)!r}" for k in ("ID", "id", "name") if elem.get(k) is not None), "")
    out = f"{path.name}: <{elem.tag}{ident}>"
    return f"{out}, attribute '{attr}'" if attr else out


def _attr(path: Path, elem: ET.Element, name: str) -> str:
    value = elem.get(name)
    if value is None or value == "":
        raise FormatError(f"{_where(path, elem)}: missing attribute '{name}'")
    return value


def _float(path: Path, elem: ET.Element, name: str, default: float | None = None) -> float:
    value = elem.get(name)
    if value is None or value.strip() == "":
        if default is None:
            raise FormatError(f"{_where(path, elem)}: missing attribute '{name}'")
        return default
    try:
        return finite_float(value)
    except ValueError:
        raise FormatError(f"{_where(path, elem, name)}: {value!r} is not a finite number") from None


def _bool(path: Path, elem: ET.Element, name: str, default: bool) -> bool:
    value = elem.get(name)
    if value is None:
        return default
    low = value.strip().lower()
    if low in ("true", "yes", "1"):
        return True
    if low in ("false", "no", "0"):
        return False
    raise FormatError(f"{_where(path, elem, name)}: {value!r} is not true/false")
