"""Files that ship with optev, found through :mod:`importlib.resources`.

The repository keeps its data at the top level — ``formulations/`` (the formulation
files) and ``instances/`` (the embedded default instance ``ux37_fleet``, the default
feeder ``case33bw.m``, V2Sim's trip statistics) — and ``pyproject.toml`` maps both folders
into the package as data packages (``[tool.setuptools] package-dir``):

============================  ==================  =========================================
package                       repository folder   shipped files (``package-data``)
============================  ==================  =========================================
``optev.formulations``        ``formulations/``   ``*.toml``, ``README.md``
``optev._instances``          ``instances/``      ``ux37_fleet/``, ``case33bw.m``,
                                                  ``data/v2sim_probtable/``, licences, README
============================  ==================  =========================================

Each folder holds an empty ``__init__.py`` so that it is a regular package in every kind
of install; code asks for the package, never for a path next to the source:

- editable install (``pip install -e .``): setuptools' import hook maps the packages to the
  repository's folders, so the files found are the repository's own;
- wheel (``pip install .``, ``pip install optev-*.whl``): the files are copied to
  ``site-packages/optev/formulations/`` and ``site-packages/optev/_instances/``; the
  git-ignored generated instances (``instances/nanjing_100k``) and the recipes are not.

pip installs wheels unzipped, so :func:`importlib.resources.files` of these packages is a
real folder (:class:`pathlib.Path`) and the paths returned here can be handed to code
that opens files or lists folders. An import from a zip archive, where it is not, is
refused with :class:`~optev.errors.DataError` rather than copied to a temporary folder.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from optev.errors import DataError

FORMULATIONS_PACKAGE = "optev.formulations"
"""Data package of the formulation files (the repository's ``formulations/``)."""

INSTANCES_PACKAGE = "optev._instances"
"""Data package of the embedded instances and feeders (the repository's ``instances/``)."""


def package_folder(package: str) -> Path:
    """The folder of a data package shipped with optev, as a file-system path.

    Raises
    ------
    DataError
        When the package is not installed as files on disk (imported from a zip archive),
        or when it cannot be imported (an editable install made before the package existed:
        run ``pip install -e .`` again).
    """
    try:
        root = files(package)
    except ModuleNotFoundError as exc:
        raise DataError(f"optev's data package {package} is missing ({exc}); reinstall optev "
                        "(pip install ., or pip install -e . in a clone)") from None
    if not isinstance(root, Path) or not root.is_dir():
        raise DataError(f"optev's data package {package} is not a folder on disk ({root!s}); install optev "
                        "from a wheel or a source tree, not from a zip archive")
    return root


def formulations_dir() -> Path:
    """Folder of the shipped formulation files (``formulations/*.toml``)."""
    return package_folder(FORMULATIONS_PACKAGE)


def instances_dir() -> Path:
    """Folder of the shipped instances: the default instance and feeder, V2Sim's trip statistics."""
    return package_folder(INSTANCES_PACKAGE)


__all__ = ["FORMULATIONS_PACKAGE", "INSTANCES_PACKAGE", "formulations_dir", "instances_dir", "package_folder"]
