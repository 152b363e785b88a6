"""Executors: how region (and scenario) jobs run — in this process, in local worker
processes, or on a Dask cluster (issue 5, deliverable 7).

An executor has one method, ``map(fn, items) -> list``, returning ``[fn(x) for x in items]``
in order. The executors here also have ``map_as_completed(fn, items)``, an iterator of
``(index, fn(items[index]))`` pairs in the order the jobs finish (what progress reports
need; :func:`optev.sweep` uses it when an executor has it). ``fn`` must be a module-level
function and every item and result picklable, because they cross process boundaries: the
hierarchy sends each region as an :class:`~optev.data.Instance` plus parameters and
builds the window in the worker (a compiled :class:`~optev.blocks.window.Window` holds a
SuperLU factor, which does not pickle), and gets back plain arrays and frames.

=======================  ==============================================================
executor                 runs jobs
=======================  ==============================================================
:class:`SerialExecutor`  one after the other in this process (tests, debugging, one region)
:class:`LocalProcessExecutor`  in a :class:`concurrent.futures.ProcessPoolExecutor` of
                         ``workers`` processes (default: the machine's cores), started once
                         and reused by every ``map`` until :meth:`close`
:class:`DaskExecutor`    on a ``dask.distributed`` cluster (optional extra ``optev[scale]``):
                         a given ``Client``, a scheduler ``address``, or a
                         ``distributed.LocalCluster`` it starts itself
=======================  ==============================================================

Worker processes are started with the ``forkserver`` method where the platform has it
(``spawn`` otherwise), never ``fork``: HiGHS keeps a thread pool, and forking a process
that has one can deadlock the child. The forkserver preloads optev's solver modules, so
each worker starts in a fraction of a second.

Workers ignore Ctrl-C (the terminal sends SIGINT to the whole process group): the parent
handles it and stops the pool, so an interrupt prints one line, not one traceback per
worker. A worker whose parent has died (killed, or ended without :meth:`close`) exits
within :data:`PARENT_POLL_S` instead of living on as an orphan.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterator, Protocol, Sequence, TypeVar, runtime_checkable

T = TypeVar("T")
R = TypeVar("R")

PRELOAD = ("optev.hierarchy.solve",)
"""Modules the forkserver imports once before forking workers."""

PARENT_POLL_S = 1.0
"""How often a worker checks that the process that started its pool is alive, s."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user (the pid was reused)
        return False
    return True


def _watch_parent(parent_pid: int) -> None:
    """Worker initialiser: ignore SIGINT and exit as soon as ``parent_pid`` is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while _alive(parent_pid):
            time.sleep(PARENT_POLL_S)
        os._exit(1)  # the results have nobody to go to; skip the pool's shutdown handshake

    threading.Thread(target=watch, name="optev-parent-watch", daemon=True).start()


@runtime_checkable
class Executor(Protocol):
    """Runs ``fn`` over ``items`` and returns the results in order."""

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        ...


class SerialExecutor:
    """Runs every job in this process, in order."""

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        return [fn(item) for item in items]

    def map_as_completed(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, R]]:
        """``(index, fn(item))`` as each job finishes (here: in order)."""
        for index, item in enumerate(items):
            yield index, fn(item)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> "SerialExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def default_workers() -> int:
    """Worker processes by default: the cores this process may use."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not on Linux
        return max(os.cpu_count() or 1, 1)


class LocalProcessExecutor:
    """Runs jobs in local worker processes (:class:`concurrent.futures.ProcessPoolExecutor`).

    Parameters
    ----------
    workers : int, optional
        Number of worker processes (default :func:`default_workers`).
    start_method : str, optional
        ``"forkserver"`` (default where available) or ``"spawn"``; see the module docstring.

    The pool starts at the first :meth:`map` and is reused until :meth:`close` (or the end
    of a ``with`` block), so a controller calling the hierarchy every control interval
    pays the start-up once.
    """

    def __init__(self, workers: int | None = None, *, start_method: str | None = None) -> None:
        self.workers = int(workers) if workers is not None else default_workers()
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        methods = multiprocessing.get_all_start_methods()
        self.start_method = start_method or ("forkserver" if "forkserver" in methods else "spawn")
        if self.start_method == "fork":
            raise ValueError("start_method 'fork' is not supported (HiGHS's thread pool does not survive a fork); "
                             "use 'forkserver' or 'spawn'")
        self._pool: ProcessPoolExecutor | None = None

    def _ensure(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context(self.start_method)
            if self.start_method == "forkserver":
                ctx.set_forkserver_preload(list(PRELOAD))
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx,
                                             initializer=_watch_parent, initargs=(os.getpid(),))
        return self._pool

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        items = list(items)
        if not items:
            return []
        return list(self._ensure().map(fn, items))

    def map_as_completed(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, R]]:
        """``(index, fn(item))`` as each job finishes; the first job that raises cancels
        the jobs not started yet and re-raises here."""
        items = list(items)
        if not items:
            return
        pool = self._ensure()
        futures = {pool.submit(fn, item): index for index, item in enumerate(items)}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "LocalProcessExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


class DaskExecutor:
    """Runs jobs on a Dask distributed cluster (optional extra: ``pip install optev[scale]``).

    Parameters
    ----------
    client : distributed.Client, optional
        An existing client (not closed by :meth:`close`).
    address : str, optional
        Scheduler address to connect to (``"tcp://host:8786"``); the client is closed by
        :meth:`close`.
    **cluster_kwargs
        Without ``client`` and ``address``: keyword arguments of
        ``distributed.LocalCluster`` (for example ``n_workers=2, threads_per_worker=1`` or
        ``processes=False``); the cluster and its client are closed by :meth:`close`.

    ``map`` submits one task per item (``client.map(fn, items, pure=False)``) and gathers
    the results in order; exceptions raised by a task are re-raised here.
    """

    def __init__(self, client: Any = None, *, address: str | None = None, **cluster_kwargs: Any) -> None:
        try:
            import distributed  # optional (extra "scale"): imported where used, the core installs without it
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError("DaskExecutor needs dask.distributed: pip install 'optev[scale]'") from None
        self._cluster = None
        self._own_client = client is None
        if client is not None:
            self.client = client
        elif address is not None:
            self.client = distributed.Client(address)
        else:
            self._cluster = distributed.LocalCluster(**cluster_kwargs)
            self.client = distributed.Client(self._cluster)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        items = list(items)
        if not items:
            return []
        futures = self.client.map(fn, items, pure=False)
        return list(self.client.gather(futures))

    def map_as_completed(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, R]]:
        """``(index, fn(item))`` as each task finishes; a task's exception is re-raised here."""
        import distributed  # optional (extra "scale"), as in __init__

        items = list(items)
        if not items:
            return
        futures = self.client.map(fn, items, pure=False)
        index = {future.key: k for k, future in enumerate(futures)}
        for future in distributed.as_completed(futures):
            yield index[future.key], future.result()

    def close(self) -> None:
        """Close the client and cluster this executor created."""
        if self._own_client and self.client is not None:
            self.client.close()
            self.client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self) -> "DaskExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
