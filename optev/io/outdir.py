"""Output folders optev can be trusted with: marked, locked, written aside and swapped in.

Every folder optev writes (``optev solve``/``run``/``simulate`` results, ``optev generate``
instances, :func:`optev.io.write_results`, :func:`optev.io.write_instance`, ...) goes through
:func:`output_folder`, which applies one set of rules:

* **Marker.** The folder holds ``.optev-output`` (:data:`MARKER_NAME`): JSON with the kind
  of output (:data:`KINDS`), the optev version and the list of files optev wrote.
* **What may be replaced.** A missing or empty folder, or a folder whose marker has the same
  kind and that holds nothing but the files its marker lists. Anything else — a folder
  without a marker (even one holding a ``summary.json`` or ``instance.toml``: optev no
  longer trusts such names), a marker of another kind, a file optev did not write — is an
  :class:`OutputFolderError` and nothing is touched: optev never deletes a file it did not
  write.
* **Where.** The target must not be, contain or lie inside an input of the command (the
  instance, the formulation, the feeder, a telemetry or MPS file), must not be the current
  folder or one of its ancestors, must not be a symbolic link, and its nearest existing
  ancestor must be a writable folder.
* **Atomic.** Everything is written into a fresh hidden sibling (``.NAME.optev-tmp-*``);
  the marker is added last, the old folder is renamed aside (``.NAME.optev-old-*``), the
  new one renamed into place, and only then are the old folder's listed files removed. A
  failure, an interrupt or a full disk before the swap removes the sibling and leaves the
  old folder as it was; the swap itself runs with SIGINT and SIGTERM deferred.
* **Lock.** Writers take an exclusive ``flock`` on ``.NAME.optev-lock`` beside the target;
  a second writer gets :class:`OutputLockedError` at once. The CLI claims the lock when it
  checks ``--out`` (:func:`claim_target`), so a second command fails before it computes
  anything. The lock file is removed when the lock is released; one left by a killed
  process is stale but harmless (the kernel drops the ``flock`` with the process, and the
  next writer takes it over).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import threading
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from optev import package_version
from optev.errors import OptevError

__all__ = ["KINDS", "MARKER_NAME", "OutputFolderError", "OutputLockedError", "check_target", "claim_target",
           "output_folder", "release_claims"]

MARKER_NAME = ".optev-output"
"""File name of the marker optev writes into every folder it creates."""

KINDS = {"results": "results", "run": "results", "instance": "instance", "simulation": "simulation"}
"""Kinds of output folder, with the word used for them in messages."""

Inputs = Mapping[str, "str | os.PathLike[str] | None"]


class OutputFolderError(OptevError, FileExistsError):
    """An output folder may not be written or replaced (the message says why)."""


class OutputLockedError(OutputFolderError):
    """Another process is writing the same output folder."""


# --------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------

def check_target(out: str | os.PathLike[str], kind: str, *, inputs: Inputs | None = None) -> Path:
    """Raise :class:`OutputFolderError` unless ``out`` may be written as a ``kind`` folder.

    Parameters
    ----------
    out : path-like
        The folder to create or replace.
    kind : {"results", "run", "instance", "simulation"}
    inputs : mapping of str to path, optional
        What the command reads or writes elsewhere, by description (``"instance"``,
        ``"--telemetry file"``); ``out`` may not be, contain or lie inside any of them.

    Returns
    -------
    Path
        ``out`` as an absolute path.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    target = Path(os.path.abspath(out))
    _check_place(target, inputs or {})
    if target.exists():
        _replaceable(target, kind)
    return target


def _check_place(target: Path, inputs: Inputs) -> None:
    """Where ``target`` is: not a link, not cwd or above it, clear of the inputs, writable."""
    if target.is_symlink():
        raise OutputFolderError(f"{target}: is a symbolic link; give the folder itself")
    real = Path(os.path.realpath(target))
    cwd = Path(os.path.realpath(os.getcwd()))
    if cwd == real or real in cwd.parents:
        raise OutputFolderError(f"{target}: is the current folder or contains it; choose a new folder for the output")
    for what, path in inputs.items():
        if path is None:
            continue
        other = Path(os.path.realpath(path))
        if other == real or real in other.parents or other in real.parents:
            relation = "is" if other == real else ("contains" if real in other.parents else "lies inside")
            raise OutputFolderError(f"{target}: {relation} the {what} {path}; choose another folder for the output")
    if target.exists() and not target.is_dir():
        raise OutputFolderError(f"{target}: exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not os.access(target, os.W_OK | os.X_OK):
        raise OutputFolderError(f"{target}: the folder is read-only; cannot replace it")
    existing = next(p for p in target.parents if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise OutputFolderError(f"{target}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputFolderError(f"{target}: cannot write in {existing} (permission denied)")


def _replaceable(target: Path, kind: str) -> list[str]:
    """The files optev wrote in the existing folder ``target``; raise unless it may be replaced."""
    if not target.is_dir():
        raise OutputFolderError(f"{target}: exists and is not a folder")
    entries = _entries(target)
    if not entries:
        return []
    marker = _read_marker(target)
    noun = KINDS[kind]
    if marker is None:
        raise OutputFolderError(f"{target}: refusing to replace a non-empty folder that is not an optev {noun} "
                                f"folder (no valid {MARKER_NAME} marker); choose another folder or empty it")
    if marker["kind"] != kind:
        raise OutputFolderError(f"{target}: holds optev {marker['kind']} output, not {kind}; choose another folder")
    files = marker["files"]
    known = set(files) | {MARKER_NAME} | {str(p) for f in files for p in Path(f).parents if str(p) != "."}
    foreign = sorted(set(entries) - known)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputFolderError(f"{target}: holds files optev did not write ({shown}); move them out or choose "
                                "another folder")
    return list(files)


def _entries(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, relative, with ``/`` separators."""
    out: list[str] = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        out.extend((rel / name).as_posix() for name in (*dirs, *files))
    return out


def _read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of ``folder`` if it is a well-formed optev marker, else None."""
    try:
        data = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    files = data.get("files")
    if data.get("kind") not in KINDS or not isinstance(files, list):
        return None
    if not all(isinstance(f, str) and f and not Path(f).is_absolute() and ".." not in Path(f).parts
               for f in files):
        return None
    return data


def _write_marker(folder: Path, kind: str) -> None:
    files = sorted(e for e in _entries(folder) if (folder / e).is_file() or (folder / e).is_symlink())
    data = {"kind": kind, "optev_version": package_version(), "files": files}
    path = folder / MARKER_NAME
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    _fsync(path)


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------

@contextlib.contextmanager
def output_folder(out: str | os.PathLike[str], kind: str, *, inputs: Inputs | None = None) -> Iterator[Path]:
    """Write a ``kind`` folder at ``out``: yields a fresh empty folder to fill.

    When the block ends normally the folder gets its marker and replaces ``out``
    atomically (module docstring); when it raises, the folder is removed and ``out`` is
    left as it was. Missing parents of ``out`` are created (and removed again on failure).

    Raises
    ------
    OutputFolderError
        ``out`` may not be written (:func:`check_target`).
    OutputLockedError
        Another process is writing ``out``.
    """
    target = check_target(out, kind, inputs=inputs)
    with _locked(target):
        tmp = _unique_sibling(target, "tmp")
        tmp.mkdir()
        try:
            yield tmp
            _write_marker(tmp, kind)
            _fsync(tmp)
            old = _replaceable(target, kind) if target.exists() else None
            _swap(tmp, target, old)
        except BaseException:
            with _signals_deferred():
                shutil.rmtree(tmp, ignore_errors=True)
            raise


def _swap(tmp: Path, target: Path, old_files: list[str] | None) -> None:
    """Rename ``tmp`` to ``target``; the old ``target`` goes aside and its listed files are removed."""
    with _signals_deferred():
        if old_files is None:
            os.rename(tmp, target)
            return
        backup = _unique_sibling(target, "old")
        os.rename(target, backup)
        try:
            os.rename(tmp, target)
        except BaseException:
            os.rename(backup, target)
            raise
        _fsync(target.parent)
    _remove_written(backup, old_files)


def _remove_written(folder: Path, files: list[str]) -> None:
    """Remove the listed files, the marker and the folders left empty; keep anything else."""
    for name in (*files, MARKER_NAME):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            (folder / name).unlink()
    for root, _dirs, _files in sorted(os.walk(folder), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            os.rmdir(root)
    if folder.exists():
        warnings.warn(f"{folder}: kept: it holds files optev did not write", stacklevel=3)


def _unique_sibling(target: Path, tag: str) -> Path:
    """A hidden, not yet existing path next to ``target``."""
    while True:
        candidate = target.parent / f".{target.name}.optev-{tag}-{secrets.token_hex(4)}"
        if not candidate.exists():
            return candidate


def _fsync(path: Path) -> None:
    """Flush a file to disk; for a folder (its entries), best effort on POSIX only."""
    is_dir = path.is_dir()
    if is_dir and os.name != "posix":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if not is_dir:  # some file systems cannot fsync folders; files must be flushed
            raise


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back meanwhile (main thread, POSIX); they are delivered after."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# --------------------------------------------------------------------------------------
# locks
# --------------------------------------------------------------------------------------

_CLAIMS: dict[Path, tuple[int, Path, list[Path]]] = {}
"""Locks held by this process across a command: target → (descriptor, lock file, parents made)."""


def claim_target(out: str | os.PathLike[str], kind: str, *, inputs: Inputs | None = None) -> Path:
    """:func:`check_target`, then take the lock of ``out`` until :func:`release_claims`
    (or the end of the next :func:`output_folder` of ``out``); creates missing parents."""
    target = check_target(out, kind, inputs=inputs)
    if target not in _CLAIMS:
        _CLAIMS[target] = _take_lock(target)
    return target


def release_claims() -> None:
    """Release every lock taken by :func:`claim_target`; remove the parents it made if still empty."""
    for target in list(_CLAIMS):
        fd, lock, made = _CLAIMS.pop(target)
        _release(fd, lock)
        _remove_empty(made)


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Hold the lock of ``target`` meanwhile (taken over from :func:`claim_target` if claimed)."""
    fd, lock, made = _CLAIMS.pop(target) if target in _CLAIMS else _take_lock(target)
    try:
        yield
    finally:
        _release(fd, lock)
        _remove_empty(made)  # only those still empty: after a failure


def _take_lock(target: Path) -> tuple[int, Path, list[Path]]:
    """The lock of ``target`` (descriptor, lock file) and the parents made for it; none left on failure."""
    made = _make_parents(target)
    try:
        fd, lock = _acquire(target)
    except BaseException:
        _remove_empty(made)
        raise
    return fd, lock, made


def _acquire(target: Path) -> tuple[int, Path]:
    """Take the exclusive lock of ``target``; :class:`OutputLockedError` if another process has it."""
    import fcntl  # POSIX-only: imported where used, so that this module imports on any platform

    lock = target.parent / f".{target.name}.optev-lock"
    for _attempt in range(10):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputLockedError(f"{target}: another optev process is writing this folder (lock {lock}); "
                                    "wait for it to finish or choose another folder") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the holder removed the file as we opened it: take the new one
            return fd, lock
        os.close(fd)
    raise OutputLockedError(f"{target}: could not take the lock {lock}; try again")


def _release(fd: int, lock: Path) -> None:
    with contextlib.suppress(OSError):
        lock.unlink()
    os.close(fd)


def _make_parents(target: Path) -> list[Path]:
    """Create the missing parents of ``target``; the ones created, deepest first."""
    missing = [p for p in target.parents if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()
