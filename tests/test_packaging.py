"""Packaging: the shipped files are found through the package, and the wheel carries them.

The formulations and the embedded instances are data packages (``optev.formulations``,
``optev._instances``, mapped from the repository's top-level folders by ``pyproject.toml``)
found with :mod:`importlib.resources` (:mod:`optev.resources`). The fast tests check the
package API and the packaging configuration; the slow one builds the sdist and the wheel
(``python -m build``, as ``.ci/packaging`` does) into a temporary folder and reads their file
lists. Installing the wheel in a fresh venv and running ``optev`` there is ``.ci/packaging``.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from paths import REPO

import optev
from optev import resources
from optev.compose.formulation import FORMULATIONS_DIR, load_formulation
from optev.io.embedded import (
    DEFAULT_FEEDER,
    DEFAULT_INSTANCE,
    default_feeder,
    default_instance,
    instances_dir,
)
from optev.mobility import DEFAULT_PROBTABLE

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
SHIPPED_FORMULATIONS = sorted(p.name for p in (REPO / "formulations").glob("*.toml"))
EDITABLE = Path(optev.__file__).resolve().parent == REPO / "optev"
"""optev is imported from this repository (editable install, the dev workflow and CI)."""


def _files(folder: Path) -> list[str]:
    """Files under ``folder``, relative, without bytecode caches."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


# --- the package API ---------------------------------------------------------------------------------------------

def test_resources_are_folders_found_through_the_package() -> None:
    forms = resources.formulations_dir()
    inst = resources.instances_dir()
    assert isinstance(forms, Path) and isinstance(inst, Path)
    assert sorted(p.name for p in forms.glob("*.toml")) == SHIPPED_FORMULATIONS
    assert FORMULATIONS_DIR == forms
    assert instances_dir() == inst
    assert default_instance() == inst / DEFAULT_INSTANCE and (default_instance() / "instance.toml").is_file()
    assert default_feeder() == inst / DEFAULT_FEEDER
    assert DEFAULT_PROBTABLE == inst / "data" / "v2sim_probtable" and (DEFAULT_PROBTABLE / "soc_dist.csv").is_file()
    assert load_formulation("station_v2g").name


@pytest.mark.skipif(not EDITABLE, reason="optev is not imported from this repository")
def test_editable_install_finds_the_repository_folders() -> None:
    assert resources.formulations_dir() == REPO / "formulations"
    assert resources.instances_dir() == REPO / "instances"


def test_missing_data_package_is_a_clear_error() -> None:
    from optev.errors import DataError

    with pytest.raises(DataError, match="optev._no_such_data"):
        resources.package_folder("optev._no_such_data")


# --- the configuration -----------------------------------------------------------------------------------------

def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "optev").rglob("__init__.py")}
    assert found - listed == set(), "add the new package to [tool.setuptools] packages in pyproject.toml"
    mapped = PYPROJECT["tool"]["setuptools"]["package-dir"]
    assert mapped == {resources.FORMULATIONS_PACKAGE: "formulations", resources.INSTANCES_PACKAGE: "instances"}
    for folder in mapped.values():
        assert (REPO / folder / "__init__.py").is_file()


def test_extras_are_named_by_use() -> None:
    from packaging.requirements import Requirement

    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"dev", "bench", "scale"} <= set(extras)
    names = {e: {Requirement(r).name for r in reqs} for e, reqs in extras.items()}
    assert {"build", "twine", "pytest"} <= names["dev"]
    core = {Requirement(r).name for r in PYPROJECT["project"]["dependencies"]}
    for extra, reqs in names.items():
        assert not reqs & core, f"extra {extra} repeats core dependencies {sorted(reqs & core)}"


# --- the built distributions ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel built from it, as ``.ci/packaging`` builds them (isolated build)."""
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"wheel": next(out.glob("optev-*.whl")), "sdist": next(out.glob("optev-*.tar.gz"))}


@pytest.mark.slow
def test_wheel_ships_formulations_and_default_instance_but_not_big_instances(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as zf:
        names = set(zf.namelist())
    assert {f"optev/formulations/{n}" for n in SHIPPED_FORMULATIONS} <= names
    assert "optev/formulations/README.md" in names
    inst = REPO / "instances"
    for sub in (DEFAULT_INSTANCE, "data/v2sim_probtable"):
        shipped = {n for n in names if n.startswith(f"optev/_instances/{sub}/")}
        assert shipped == {f"optev/_instances/{sub}/{f}" for f in _files(inst / sub)}
    assert {f"optev/_instances/{n}" for n in (DEFAULT_FEEDER, "MATPOWER_LICENSE.txt", "README.md")} <= names
    assert {"optev/py.typed", "optev/data/SCHEMAS.md", "optev/io/INSTANCE_FORMAT.md"} <= names
    code = {f"{p.relative_to(REPO).as_posix()}" for p in (REPO / "optev").rglob("*.py")}
    assert code <= names
    instance_dirs = {n.split("/")[2] for n in names if n.startswith("optev/_instances/") and n.count("/") > 2}
    assert instance_dirs == {DEFAULT_INSTANCE, "data"}  # no nanjing_100k, no recipes
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".parquet"))]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(dists["wheel"]) as zf:
        assert "optev = optev.cli:main" in zf.read(entry_points).decode()
    assert dists["wheel"].stat().st_size < 5_000_000


@pytest.mark.slow
def test_sdist_has_the_data_and_not_the_big_instances(dists: dict[str, Path]) -> None:
    with tarfile.open(dists["sdist"]) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "formulations/__init__.py", "instances/__init__.py",
            f"instances/{DEFAULT_INSTANCE}/instance.toml", f"instances/{DEFAULT_FEEDER}"} <= names
    assert {f"formulations/{n}" for n in SHIPPED_FORMULATIONS} <= names
    assert not [n for n in names if n.startswith("instances/nanjing_100k") or "__pycache__" in n]
    assert dists["sdist"].stat().st_size < 5_000_000
