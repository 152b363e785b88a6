"""Pick a reader from a path."""

from __future__ import annotations

from pathlib import Path

from optev.data.feeder import Feeder
from optev.data.instance import Instance, Metadata
from optev.errors import FormatError
from optev.io.instance_folder import read_instance
from optev.io.matpower import read_matpower
from optev.io.v2sim import read_v2sim


def read(path: str | Path) -> Instance:
    """Read any supported input into an :class:`Instance`.

    A MATPOWER ``.m`` file gives an instance holding only its feeder; a folder with
    ``instance.toml`` is an optev instance folder; a folder with ``*.grid.xml`` or
    ``*.net.xml[.gz]`` is a V2Sim case.
    """
    p = Path(path)
    if not p.exists():
        raise FormatError(f"no such file or folder: {p}")
    if p.is_file():
        if p.suffix == ".m":
            feeder: Feeder = read_matpower(p)
            return Instance(metadata=Metadata(name=p.stem, source=str(p)), feeder=feeder)
        if p.name == "instance.toml":
            return read_instance(p.parent)
        raise FormatError(f"{p}: unknown file type (expected a MATPOWER .m file, an instance folder "
                          "or a V2Sim case folder)")
    if (p / "instance.toml").exists():
        return read_instance(p)
    if any(p.glob("*.grid.xml")) or any(p.glob("*.net.xml")) or any(p.glob("*.net.xml.gz")):
        return read_v2sim(p)
    raise FormatError(f"{p}: folder is neither an optev instance folder (instance.toml) nor a V2Sim case "
                      "(*.grid.xml, *.net.xml)")
