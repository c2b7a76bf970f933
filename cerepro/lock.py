"""One writer per folder: a lock file taken atomically, released on exit, stale ones detected.

A run folder (and a grid's folder) has at most one writer. ``FolderLock(folder)`` writes
``folder/.writer.lock`` (who holds it: PID, host, the process's start time, the command) to a
temporary file and hard-links it into place, which fails if a lock is there: two writers can
never both succeed, and a reader never sees a half-written lock. The holder refreshes the lock's
mtime every ``HEARTBEAT_S`` seconds and removes it on exit.

A lock left by a killed writer is stale and taken over: on the same host when its PID is gone
(or now names another process, told apart by start time), on another host (a cluster node that
was preempted) when its heartbeat is older than ``STALE_AFTER_S``, or at once when this process
is the same SLURM job, requeued on another host. A takeover then waits for the processes the
killed writer left working in the folder (its notebook kernel, for up to a second). Anything else
refuses the second writer with a message naming the folder and the holder, or, for a folder that
writers share in turn (``FolderLock(folder, wait=True)``: a first-stage index that collections
sharing passages all need), makes it wait until the holder is done or found stale.

This module guards folders; it never deletes a writer's work.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

LOCK_NAME = ".writer.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0  # ten missed heartbeats: the holder on another host is gone
ORPHAN_WAIT_S = 30.0  # how long a taken-over folder waits for its killed writer's kernel to exit
WAIT_POLL_S = 1.0  # how often a writer that waits for a live holder looks at the lock again


# A writer's processes: notebook kernels, cerepro and Snakemake jobs, training processes (not,
# say, a shell a user left in a run folder).
WRITER_COMMANDS = ("ipykernel", "cerepro", "snakemake", "accelerate", "torch.distributed")

log = logging.getLogger(__name__)


def processes_in(folder: Path) -> list[int]:
    """PIDs of other writer processes (``WRITER_COMMANDS``) whose working directory is ``folder``
    or below it (Linux's /proc; elsewhere none are seen)."""
    proc, found = Path("/proc"), []
    if not proc.is_dir():
        return found
    inside = os.path.realpath(folder)
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:  # gone, or not ours to read
            continue
        if cwd != inside and not cwd.startswith(inside + os.sep):
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(word in command for word in WRITER_COMMANDS):
            found.append(int(entry.name))
    return found


def wait_for_writers(folder: Path, timeout: float) -> list[int]:
    """Wait up to ``timeout`` seconds for the writer processes working in ``folder`` to exit;
    return those still there (none: the folder is quiet)."""
    deadline = time.time() + timeout
    while (left := processes_in(folder)) and time.time() < deadline:
        time.sleep(0.1)
    return left


class LockedError(RuntimeError):
    """The folder has a live writer."""


def _process_start(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def read_holder(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def stale_reason(path: Path, holder: dict[str, Any] | None, *, now: float | None = None) -> str | None:
    """Why the lock at ``path`` is stale, or None while its holder may be alive."""
    now = time.time() if now is None else now
    try:
        age = now - path.stat().st_mtime
    except FileNotFoundError:
        return "it is gone"
    if holder is None:  # never written half (hard link), so a foreign or damaged file
        return None if age < STALE_AFTER_S else f"it is unreadable and {age:.0f} s old"
    job = os.environ.get("SLURM_JOB_ID")
    same_host = holder.get("host") == socket.gethostname()
    if job and holder.get("slurm_job_id") == job and not same_host:
        # the same job started again elsewhere: its old run is gone (on this host, where one job
        # may run several writers at once, the holder's process is looked up instead)
        return f"SLURM job {job} was requeued"
    if same_host:
        pid = int(holder.get("pid", -1))
        started = _process_start(pid) if pid > 0 else None
        if started is None:
            return f"process {pid} is not running"
        if holder.get("process_start") is not None and abs(started - holder["process_start"]) > 1.0:
            return f"process {pid} is another process now"
        return None
    if age > STALE_AFTER_S:
        return f"its heartbeat stopped {age:.0f} s ago"
    return None


def describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "an unknown writer (unreadable lock file)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"process {holder.get('pid')} on host {holder.get('host')} since {since} ({holder.get('command', '?')})"


def busy_message(folder: Path, holder: dict[str, Any] | None) -> str:
    return (
        f"{folder} is being written by {describe(holder)}; one writer per folder: wait for it "
        f"to finish or stop it (a killed writer's lock is taken over automatically)"
    )


def check_free(folder: str | os.PathLike) -> None:
    """Raise LockedError when a live writer holds ``folder`` (nothing is written): a command can
    refuse a busy folder before its slower checks, while that writer is still at work."""
    path = Path(folder) / LOCK_NAME
    if path.exists():
        holder = read_holder(path)
        if stale_reason(path, holder) is None:
            raise LockedError(busy_message(Path(folder), holder))


class FolderLock:
    """``with FolderLock(folder, command=...):`` the block is the folder's only writer.

    ``wait``: a live holder is waited for (looked at every ``WAIT_POLL_S``) instead of refused;
    for a folder writers take in turn, each finding the work of the one before done."""

    def __init__(self, folder: str | os.PathLike, *, command: str | None = None, wait: bool = False):
        self.folder = Path(folder)
        self.wait = wait
        self.path = self.folder / LOCK_NAME
        self.command = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]
        self.token = uuid.uuid4().hex
        self.taken_over: str | None = None  # why a stale lock was replaced, if one was
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "process_start": _process_start(os.getpid()),
            "command": self.command,
            "token": self.token,
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        }
        tmp = self.folder / f".writer.lock.{self.token}.tmp"
        breaks, waited = 0, False
        try:
            while True:
                tmp.write_text(json.dumps({**record, "started": time.time()}), encoding="utf-8")
                try:
                    os.link(tmp, self.path)  # atomic: fails if a lock exists
                    break
                except FileExistsError:
                    holder = read_holder(self.path)
                    why = stale_reason(self.path, holder)
                    if why is None:
                        if not self.wait:
                            raise LockedError(busy_message(self.folder, holder)) from None
                        if not waited:
                            log.info("%s: waiting for %s", self.folder, describe(holder))
                        waited = True
                        tmp.unlink(missing_ok=True)  # nothing of a waiting writer in the folder
                        time.sleep(WAIT_POLL_S)
                        continue
                    if breaks == 3:
                        raise LockedError(f"{self.folder}: could not take the lock {self.path} (contended)") from None
                    breaks += 1
                    self._break(holder, why)
        finally:
            tmp.unlink(missing_ok=True)
        if self.taken_over:
            self._wait_for_orphans()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name=f"lock {self.folder.name}")
        self._beat.start()

    def _wait_for_orphans(self) -> None:
        """After taking over a killed writer's lock, wait for the processes it left working in
        the folder: a notebook kernel outlives its killed runner by up to a second (ipykernel
        polls for its parent's death), and may still write a checkpoint. Refused, naming them,
        if they are still there after ``ORPHAN_WAIT_S``."""
        orphans = wait_for_writers(self.folder, ORPHAN_WAIT_S)
        if orphans:
            self.release()
            raise LockedError(
                f"{self.folder}: the killed writer left processes working in it "
                f"(PID {', '.join(map(str, orphans))}); stop them first"
            )

    def _break(self, holder: dict[str, Any] | None, why: str) -> None:
        """Remove a stale lock, unless another process replaced it meanwhile."""
        aside = self.folder / f".writer.lock.{self.token}.stale"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if read_holder(aside) != holder:  # a fresh lock slipped in between: put it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        else:
            self.taken_over = f"took over the lock of {describe(holder)}: {why}"
        aside.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        holder = read_holder(self.path)
        if holder is not None and holder.get("token") == self.token:
            self.path.unlink(missing_ok=True)
