"""Hostile output folders, interrupts and I/O faults (issue 10, deliverables 2, 3 and 5).

Every case ends in one line on stderr and a documented exit code, never a traceback,
never a lost file: a folder optev did not write is never replaced, the old results stay
intact when writing fails or is interrupted, and no temporary sibling is left behind.
A new output-folder case is one more line in :data:`FOREIGN` or :data:`PLACES`.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import optev.io.results as results_io
from optev.clean_exit import EXIT_PIPE, EXIT_SIGINT, EXIT_SIGTERM
from optev.cli import main
from optev.data.synthetic import synthetic_charging_instance
from optev.io import write_instance
from optev.io.embedded import default_instance
from optev.io.outdir import (
    MARKER_NAME,
    OutputLockedError,
    claim_target,
    output_folder,
    release_claims,
)
from optev.lp.program import LPArrays
from optev.solvers.highs import HighsSession

WINDOW = ["--steps", "2", "--start", "08:00", "--step", "15min"]
RUN = ["run", "--steps", "1", "--horizon", "1h", "--no-plots", "--json"]
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path → bytes)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Temporary, backup or lock siblings optev left next to ``folder``."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.optev-"))


@pytest.fixture(scope="module")
def instance_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_instance(synthetic_charging_instance(4, seed=3), tmp_path_factory.mktemp("fuzz") / "inst")


def solve(capsys: pytest.CaptureFixture[str], instance: Path, out: Path | str, *extra: str) -> tuple[int, str, str]:
    return cli(capsys, "solve", "station_v2g", instance, *WINDOW, "--out", out, *extra)


@pytest.fixture
def results(capsys: pytest.CaptureFixture[str], instance_dir: Path, tmp_path: Path) -> Path:
    """A results folder written by ``optev solve``."""
    out = tmp_path / "res"
    code, _, err = solve(capsys, instance_dir, out)
    assert code == 0, err
    return out


# ------------------------------------------------------------------ folders optev did not write

FOREIGN = {
    "summary_and_script": {"summary.json": "{}", "analysis.py": "print(1)", "data/x.csv": "a\n1\n"},
    "instance_toml_and_notes": {"instance.toml": "format = 'x'", "notes.txt": "mine"},
    "only_summary": {"summary.json": "{}"},
    "bad_marker": {MARKER_NAME: "not json", "keep.txt": "mine"},
    "marker_not_an_object": {MARKER_NAME: '["results"]', "keep.txt": "mine"},
    "marker_not_listing": {MARKER_NAME: '{"kind": "results", "files": []}', "keep.txt": "mine"},
    "marker_of_other_kind": {MARKER_NAME: '{"kind": "instance", "files": ["keep.txt"]}', "keep.txt": "mine"},
}


def make(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.mark.parametrize("files", FOREIGN.values(), ids=FOREIGN.keys())
def test_solve_never_replaces_a_folder_it_did_not_write(files: dict[str, str], capsys: pytest.CaptureFixture[str],
                                                        instance_dir: Path, tmp_path: Path) -> None:
    out = make(tmp_path / "mine", files)
    before = snapshot(out)
    code, text, err = solve(capsys, instance_dir, out)
    assert code == 2 and text == "" and one_line(err), err
    assert snapshot(out) == before and leftovers(out) == []


def test_results_folder_with_a_file_added_is_kept(results: Path, capsys: pytest.CaptureFixture[str],
                                                  instance_dir: Path) -> None:
    (results / "analysis.py").write_text("mine", encoding="utf-8")
    before = snapshot(results)
    code, _, err = solve(capsys, instance_dir, results)
    assert code == 2 and one_line(err) and "analysis.py" in err
    assert snapshot(results) == before and leftovers(results) == []


def test_results_folder_is_replaced_with_a_marker(results: Path, capsys: pytest.CaptureFixture[str],
                                                  instance_dir: Path) -> None:
    code, _, err = solve(capsys, instance_dir, results, "--format", "parquet")
    assert code == 0, err
    assert (results / MARKER_NAME).is_file() and (results / "ev.parquet").is_file()
    assert not (results / "ev.csv").exists() and leftovers(results) == []


# ------------------------------------------------------------------ places --out may not be

def _copy_default(tmp_path: Path) -> Path:
    return Path(shutil.copytree(default_instance(), tmp_path / "city"))


PLACES = {
    "generate_onto_its_case": lambda case: case,
    "generate_inside_its_case": lambda case: case / "out",
    "generate_onto_the_case_parent": lambda case: case.parent,
}


@pytest.mark.parametrize("where", PLACES.values(), ids=PLACES.keys())
def test_generate_never_writes_over_its_input(where: object, capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    case = _copy_default(tmp_path)
    before = snapshot(case)
    out = where(case)  # type: ignore[operator]
    code, text, err = cli(capsys, "generate", "--case", case, "--evs", "5", "--out", out)
    assert code == 2 and text == "" and one_line(err) and "case" in err, err
    assert snapshot(case) == before and not (case / "out").exists()


def test_generate_keeps_files_beside_an_instance(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = write_instance(synthetic_charging_instance(2, seed=1), tmp_path / "inst")
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    before = snapshot(out)
    code, _, err = cli(capsys, "generate", "--case", default_instance(), "--evs", "5", "--out", out)
    assert code == 2 and one_line(err) and "notes.txt" in err
    assert snapshot(out) == before and leftovers(out) == []


@pytest.mark.parametrize("out", [".", "..", "cwd"])
def test_out_may_not_be_the_current_folder_or_above(out: str, capsys: pytest.CaptureFixture[str],
                                                    instance_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_text("mine", encoding="utf-8")
    monkeypatch.chdir(work)
    code, _, err = solve(capsys, instance_dir, str(work) if out == "cwd" else out)
    assert code == 2 and one_line(err) and "current folder" in err
    assert Path.cwd() == work and (work / "mine.txt").read_text(encoding="utf-8") == "mine"


def test_export_mps_inside_out_is_refused(capsys: pytest.CaptureFixture[str], instance_dir: Path,
                                          tmp_path: Path) -> None:
    out = tmp_path / "r"
    code, text, err = solve(capsys, instance_dir, out, "--export-mps", str(out / "lp.mps"))
    assert code == 2 and text == "" and one_line(err) and "--export-mps" in err
    assert not out.exists() and not (tmp_path / "lp.mps").exists()


def test_out_under_a_file(capsys: pytest.CaptureFixture[str], instance_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("mine", encoding="utf-8")
    code, _, err = solve(capsys, instance_dir, tmp_path / "file.txt" / "sub")
    assert code == 2 and one_line(err) and "not a folder" in err
    assert (tmp_path / "file.txt").read_text(encoding="utf-8") == "mine"


def test_telemetry_inside_out_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(capsys, "simulate", "--out", tmp_path / "s", "--telemetry", tmp_path / "s" / "t.parquet")
    assert code == 2 and one_line(err) and "--telemetry" in err and not (tmp_path / "s").exists()


# ------------------------------------------------------------------ permissions and full disks

@pytest.mark.skipif(ROOT or os.name != "posix", reason="chmod does not restrict root")
@pytest.mark.parametrize("locked", ["parent", "target"])
def test_read_only_parent_or_target(locked: str, results: Path, capsys: pytest.CaptureFixture[str],
                                    instance_dir: Path) -> None:
    folder = results.parent if locked == "parent" else results
    before = snapshot(results)
    folder.chmod(0o555)
    try:
        code, _, err = solve(capsys, instance_dir, results)
    finally:
        folder.chmod(0o755)
    assert code == 2 and one_line(err) and ("read-only" in err or "permission denied" in err)
    assert snapshot(results) == before and leftovers(results) == []


@pytest.mark.parametrize("locked", ["parent", "target"])
def test_read_only_seen_before_any_work(locked: str, results: Path, capsys: pytest.CaptureFixture[str],
                                        instance_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the read-only test above, for root too: the check asks ``os.access``."""
    from optev.io import outdir

    folder = results.parent if locked == "parent" else results
    real = os.access
    monkeypatch.setattr(outdir.os, "access", lambda p, mode: real(p, mode) and Path(p) != folder)
    before = snapshot(results)
    code, _, err = solve(capsys, instance_dir, results)
    assert code == 2 and one_line(err) and ("read-only" in err or "permission denied" in err)
    assert snapshot(results) == before and leftovers(results) == []


@pytest.mark.parametrize("error", [errno.EACCES, errno.EROFS, errno.ENOSPC, errno.EIO])
def test_failing_rename_is_one_line_and_keeps_the_old_results(error: int, results: Path,
                                                              capsys: pytest.CaptureFixture[str],
                                                              instance_dir: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(results)
    real = os.rename

    def rename(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        if ".optev-tmp-" in str(src):
            raise OSError(error, os.strerror(error), str(dst))
        real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    code, _, err = solve(capsys, instance_dir, results)
    assert code == 2 and one_line(err) and os.strerror(error) in err and str(results) in err
    assert snapshot(results) == before and leftovers(results) == []


def test_full_disk_keeps_the_old_results(results: Path, capsys: pytest.CaptureFixture[str], instance_dir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(results)
    real = results_io._write_csv
    calls: list[str] = []

    def full(df: object, path: Path, name: str) -> None:
        if calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        calls.append(name)
        real(df, path, name)  # type: ignore[arg-type]

    monkeypatch.setattr(results_io, "_write_csv", full)
    code, _, err = solve(capsys, instance_dir, results)
    assert code == 2 and one_line(err) and "No space left on device" in err
    assert snapshot(results) == before and leftovers(results) == []


def test_full_disk_while_saving_plots_keeps_the_old_run(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import optev.report.run as report_run  # where the plots are rendered and saved

    out = tmp_path / "run"
    monkeypatch.setattr(report_run, "render", lambda tables, summary: {"feeder_load.png": b"png"})
    code, _, err = cli(capsys, *RUN[:-2], "--json", "--out", out)
    assert code == 0, err
    before = snapshot(out)
    assert "plots/feeder_load.png" in before

    def full(rendered: object, folder: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "feeder_load.png"))

    monkeypatch.setattr(report_run, "save", full)
    code, _, err = cli(capsys, *RUN[:-2], "--json", "--out", out)
    assert code == 2 and one_line(err) and "No space left on device" in err
    assert snapshot(out) == before and leftovers(out) == []


def test_interrupt_while_saving_plots_keeps_the_old_run(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import optev.report.run as report_run  # where the plots are rendered and saved

    out = tmp_path / "run"
    monkeypatch.setattr(report_run, "render", lambda tables, summary: {"feeder_load.png": b"png"})
    assert cli(capsys, *RUN[:-2], "--out", out)[0] == 0
    before = snapshot(out)

    def interrupted(rendered: object, folder: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(report_run, "save", interrupted)
    code, _, err = cli(capsys, *RUN[:-2], "--out", out)
    assert code == EXIT_SIGINT and err.strip().splitlines()[-1] == "optev: interrupted" and "Traceback" not in err
    assert snapshot(out) == before and leftovers(out) == []


def test_stdout_on_a_full_device() -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "optev.cli", "info", str(default_instance())], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 2 and one_line(proc.stderr) and "standard output" in proc.stderr, proc.stderr


def test_internal_error_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import optev.cli

    def broken(args: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(optev.cli, "_cmd_info", broken)
    code, _, err = cli(capsys, "info", default_instance())
    assert code == 1 and one_line(err) and "internal error" in err and "please report" in err


# ------------------------------------------------------------------ concurrent writers

HOLD_LOCK = """
import sys, time
from optev.io.outdir import claim_target
claim_target(sys.argv[1], "results")
print("locked", flush=True)
time.sleep(60)
"""


def test_second_writer_gets_a_clear_error(results: Path, capsys: pytest.CaptureFixture[str],
                                          instance_dir: Path) -> None:
    before = snapshot(results)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(results)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        code, _, err = solve(capsys, instance_dir, results)
        assert code == 2 and one_line(err) and "another optev process" in err
        with pytest.raises(OutputLockedError), output_folder(results, "results"):
            pass
    finally:
        holder.kill()
        holder.wait()
    assert snapshot(results) == before
    code, _, err = solve(capsys, instance_dir, results)  # a lock left by a killed process is no obstacle
    assert code == 0, err
    assert leftovers(results) == []


def test_claims_are_released(tmp_path: Path) -> None:
    target = claim_target(tmp_path / "a" / "b", "results")
    assert leftovers(target) == [".b.optev-lock"]
    release_claims()
    assert not (tmp_path / "a").exists()  # the parents it made, still empty, are gone


# ------------------------------------------------------------------ signals, pipes, the solver

def _start_run(out: Path) -> tuple[subprocess.Popen[str], threading.Event, list[str]]:
    """``optev run`` on the embedded default in a subprocess; the event is set at its first progress output."""
    proc = subprocess.Popen([sys.executable, "-m", "optev.cli", "run", "--steps", "96", "--no-plots", "--json",
                             "--progress", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    started, err = threading.Event(), []

    def read() -> None:
        assert proc.stderr is not None
        while chunk := proc.stderr.read(1):
            err.append(chunk)
            started.set()
        started.set()

    threading.Thread(target=read, daemon=True).start()
    return proc, started, err


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize(("signum", "code", "line"), [(signal.SIGINT, EXIT_SIGINT, "optev: interrupted"),
                                                      (signal.SIGTERM, EXIT_SIGTERM, "optev: terminated")])
def test_signal_stops_the_run_and_keeps_the_old_results(signum: int, code: int, line: str,
                                                        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli(capsys, *RUN, "--out", out)[0] == 0
    before = snapshot(out)
    proc, started, err = _start_run(out)
    assert started.wait(120)
    time.sleep(1.0)  # well inside the closed loop
    proc.send_signal(signum)
    assert proc.wait(60) == code
    time.sleep(0.2)
    text = "".join(err).replace("\r", "\n")
    assert "Traceback" not in text and text.strip().splitlines()[-1] == line, text
    assert snapshot(out) == before and leftovers(out) == []


def test_broken_pipe_is_quiet() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "optev.cli", "info", str(default_instance())],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `| head -c1` that has already left
    err = proc.stderr.read().decode()
    assert proc.wait(120) == EXIT_PIPE and err == "", err


def _slow_lp(n: int) -> LPArrays:
    """A transportation problem of n × n routes (seconds for HiGHS at n = 600)."""
    rng = np.random.default_rng(0)
    rows = np.concatenate([np.repeat(np.arange(n), n), n + np.tile(np.arange(n), n)])
    cols = np.concatenate([np.arange(n * n), np.arange(n * n)])
    matrix = sp.csc_matrix((np.ones(2 * n * n), (rows, cols)), shape=(2 * n, n * n))
    supply = rng.uniform(1, 2, n)
    return LPArrays(rng.uniform(0, 1, n * n), 0.0, np.zeros(n * n), np.full(n * n, np.inf),
                    np.concatenate([np.full(n, -np.inf), supply[rng.permutation(n)] * 0.99]),
                    np.concatenate([supply, np.full(n, np.inf)]), matrix)


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_ctrl_c_stops_a_long_solve() -> None:
    session = HighsSession()
    session.load(_slow_lp(600))
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    t0 = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        session.solve()
    assert time.perf_counter() - t0 < 0.5 + 1.0  # HiGHS stopped at its next iteration


def test_time_limit_ends_the_solve() -> None:
    session = HighsSession(time_limit_s=0.05)
    session.load(_slow_lp(400))
    outcome = session.solve()
    assert not outcome.optimal and "time limit of 0.05 s" in session.stop_message(outcome)


_ORPHANS = """
import os, sys, time
from optev.hierarchy.executor import LocalProcessExecutor
executor = LocalProcessExecutor(2)
pool = executor._ensure()
futures = [pool.submit(time.sleep, 60) for _ in range(2)]
while len(pool._processes) < 2 or not all(f.running() for f in futures):
    time.sleep(0.05)
print(*pool._processes, flush=True)
os._exit(0)  # the parent dies without closing its pool, as when it is killed
"""


@pytest.mark.skipif(os.name != "posix", reason="POSIX processes")
def test_workers_do_not_outlive_their_parent(tmp_path: Path) -> None:
    import psutil

    from optev.hierarchy.executor import PARENT_POLL_S

    with open(tmp_path / "pids", "w") as out:  # a file: the forkserver would hold a pipe open
        assert subprocess.run([sys.executable, "-c", _ORPHANS], stdout=out, timeout=120).returncode == 0
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert len(pids) == 2

    def running(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 10 * PARENT_POLL_S + 5
    while any(map(running, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(running, pids)), "worker processes still run after their parent died"
