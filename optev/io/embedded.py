"""The embedded default inputs that ship with optev (the repository's ``instances/``).

They are package data (``optev._instances``), found with :mod:`importlib.resources` in an
editable install and in a wheel alike: see :mod:`optev.resources`.
"""

from __future__ import annotations

from pathlib import Path

from optev import resources
from optev.errors import DataError

DEFAULT_FEEDER = "case33bw.m"
"""The embedded default feeder (IEEE 33-bus, MATPOWER), for ``optev pf``."""

DEFAULT_INSTANCE = "ux37_fleet"
"""The embedded default instance (V2Sim ux_37nodes with a generated fleet), for the main job."""


def instances_dir() -> Path:
    """The folder of the shipped instances: the repository's ``instances/`` in an editable install,
    ``site-packages/optev/_instances/`` from a wheel (:func:`optev.resources.instances_dir`)."""
    return resources.instances_dir()


def default_feeder() -> Path:
    """Path of the embedded default feeder.

    Raises
    ------
    DataError
        When it is missing (an incomplete install).
    """
    path = instances_dir() / DEFAULT_FEEDER
    if not path.is_file():
        raise DataError(f"embedded default feeder not found at {path} (it ships with optev: reinstall it); "
                        "give a FEEDER path")
    return path


def default_instance() -> Path:
    """Path of the embedded default instance folder.

    Raises
    ------
    DataError
        When it is missing; it can be rebuilt with ``python instances/recipes/build_default.py``.
    """
    path = instances_dir() / DEFAULT_INSTANCE
    if not (path / "instance.toml").is_file():
        raise DataError(f"embedded default instance not found at {path}; rebuild it with "
                        "python instances/recipes/build_default.py, or give an instance folder")
    return path
