"""Readers and writers: MATPOWER ``.m`` files, V2Sim case folders, optev instance folders.

:func:`read` picks the reader from the path: a ``.m`` file, a folder with
``instance.toml``, or a V2Sim case folder (``*.grid.xml``/``*.net.xml``).
"""

from optev.io.instance_folder import read_instance, write_instance
from optev.io.matpower import read_matpower
from optev.io.v2sim import read_v2sim
from optev.io.detect import read

__all__ = ["read", "read_instance", "read_matpower", "read_v2sim", "write_instance"]
