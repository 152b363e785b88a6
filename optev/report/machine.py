"""What machine a run or a benchmark was measured on (recorded next to every figure)."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numba

PACKAGES = ("numpy", "scipy", "pandas", "highspy", "numba", "pandapower", "psutil", "optev")
"""Packages whose versions :func:`machine_info` records (None when not installed)."""


def _proc_field(path: str, key: str) -> str | None:
    """The value of the first ``key: value`` line of a /proc file, or None."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _version(name: str) -> str | None:
    """The installed distribution's version, from its metadata (nothing is imported; for
    ``highspy`` this is the HiGHS version it bundles)."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_info(packages: tuple[str, ...] = PACKAGES) -> dict[str, Any]:
    """CPU, cores, memory, load and software versions of this machine.

    Returns
    -------
    dict
        ``nproc`` (logical CPUs), ``affinity`` (CPUs this process may use, or None),
        ``cpu_model``, ``ram_gb`` (total memory, GB = 10⁹ bytes), ``loadavg`` (1, 5 and
        15 min, or None), ``python``, ``platform``, ``numba_threads`` and ``versions``
        (package → version or None, :data:`PACKAGES`; HiGHS under ``"highs"``). Plain
        values, JSON-serialisable.
    """
    mem = _proc_field("/proc/meminfo", "MemTotal")
    versions = {("highs" if p == "highspy" else p): _version(p) for p in packages}
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "ram_gb": round(int(mem.split()[0]) * 1024 / 1e9, 1) if mem else None,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(), "platform": platform.platform(),
        "numba_threads": int(numba.get_num_threads()), "versions": versions,
    }
