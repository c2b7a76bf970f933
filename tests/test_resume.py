"""Nothing lost: `cerepro run train` killed with SIGKILL mid-training resumes where it stopped and
ends bit-identical to an uninterrupted run; a second writer into a folder is refused; the folder
lock detects killed holders; --force starts over."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import cerepro_command, run_ok, smoke_train_command
from safetensors.torch import load_file

from cerepro.lock import LOCK_NAME, STALE_AFTER_S, FolderLock, LockedError, wait_for_writers
from cerepro.training.checkpoints import latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = "overrides={max_steps: 300, warmup_steps: 2, checkpoint_every: 20, log_every: 10, validation_datasets: []}"


def train_command(out: Path, *extra: str) -> list[str]:
    return smoke_train_command(out, "bce", OVERRIDES, extra=extra)


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all((x[k] == y[k]).all() for k in x)


def log_records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_cerepro_run_train_killed_midway_resumes_bit_identically_and_refuses_a_second_writer(tmp_path):
    env = {
        **os.environ,
        "CEREPRO_RUNS": str(tmp_path / "runs"),
        "CEREPRO_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    straight = subprocess.run(
        train_command(tmp_path / "straight"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert straight.returncode == 0, straight.stderr[-3000:]

    folder = tmp_path / "killed"
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(
            train_command(folder), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None and not (folder / LOCK_NAME).exists():
        time.sleep(0.05)
    # a second writer into the same folder is refused, naming the folder and the holder
    second = subprocess.run(train_command(folder), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2
    assert f"{folder} is being written by process {first.pid} on host {socket.gethostname()}" in second.stderr
    while time.time() < deadline and first.poll() is None:
        done = latest_checkpoint(folder)
        if done is not None and done.name >= "step-0000040":
            break
        time.sleep(0.05)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not wait_for_writers(folder, 30)  # the killed runner's kernel exits within a second or so
    kept = sorted(p.name for p in (folder / "checkpoints").glob("step-*"))
    assert kept and not (folder / "DONE").exists() and (folder / LOCK_NAME).exists()  # a stale lock

    again = subprocess.run(train_command(folder), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"took over the lock of process {first.pid}" in again.stderr
    assert "is unfinished: running train again in place (resuming" in again.stderr
    records = log_records(folder)
    (note,) = [r for r in records if "resumed_from" in r]
    resumed_at = note["step"]
    assert resumed_at >= 40 and note["resumed_from"] == f"checkpoints/{kept[-1]}"  # the newest it kept
    after = [r["step"] for r in records[records.index(note) + 1 :] if "loss" in r]
    assert after[0] == resumed_at + 10 and after[-1] == 300
    executed = (folder / "train.ipynb").read_text()
    assert f"resuming tiny-bert.bce.s1 at step {resumed_at} of 300 from checkpoints/{kept[-1]}" in executed
    assert json.loads((folder / "meta.json").read_text())["resumed"] is True
    for name in ("model/model.safetensors", "checkpoints/step-0000300/model.safetensors"):
        assert same_weights(tmp_path / "straight" / name, folder / name), name
    assert not (folder / LOCK_NAME).exists()

    # --force starts over: no resume note, a fresh meta
    forced = subprocess.run(
        train_command(folder, "--force"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert not [r for r in log_records(folder) if "resumed_from" in r]
    assert json.loads((folder / "meta.json").read_text())["resumed"] is False
    assert same_weights(tmp_path / "straight/model/model.safetensors", folder / "model/model.safetensors")


# --- the lock itself -----------------------------------------------------------------------------


def write_lock(folder: Path, **holder) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    path.write_text(
        json.dumps(
            {
                "pid": 1,
                "host": socket.gethostname(),
                "started": time.time(),
                "process_start": None,
                "command": "cerepro run train",
                **holder,
            }
        )
    )
    return path


def test_a_live_holder_refuses_and_release_removes_the_lock(tmp_path):
    with FolderLock(tmp_path / "run", command="first") as first:
        holder = json.loads(first.path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(
            LockedError,
            match=rf"{tmp_path / 'run'} is being written by process {os.getpid()} "
            rf"on host .* \(first\)",
        ):
            FolderLock(tmp_path / "run", command="second").acquire()
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []  # no temporary files left


def test_a_dead_holder_on_this_host_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lock(tmp_path, pid=dead.pid)
    with FolderLock(tmp_path) as lock:
        assert f"process {dead.pid} is not running" in lock.taken_over


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs Linux's /proc")
def test_a_takeover_waits_for_the_killed_writers_kernel_and_refuses_one_that_stays(tmp_path, monkeypatch):
    """A kernel outlives its SIGKILLed runner by up to a second and may still write there: the
    next writer waits for it, and refuses (naming it) a writer process that does not go."""
    import cerepro.lock as lock_module

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # stands in for the orphaned kernel: a python process named like one, working in the folder
    # for 3 s after it starts (the setup below takes far less, even on a loaded machine)
    born = time.time()
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)", "ipykernel"], cwd=tmp_path)
    time.sleep(0.2)
    write_lock(tmp_path, pid=dead.pid)
    with FolderLock(tmp_path) as lock:
        assert lock.taken_over
        # it waited for the orphan: the lock is held only once the orphan is gone or in its exit
        # (a process in its exit has already let go of its working folder, before it is reaped)
        assert time.time() - born >= 3.0
        orphan.wait(timeout=5)
    stays = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "ipykernel"], cwd=tmp_path)
    try:
        time.sleep(0.2)
        write_lock(tmp_path, pid=dead.pid)
        monkeypatch.setattr(lock_module, "ORPHAN_WAIT_S", 0.5)
        with pytest.raises(LockedError, match=rf"left processes working in it \(PID {stays.pid}\); stop them first"):
            FolderLock(tmp_path).acquire()
        assert not (tmp_path / LOCK_NAME).exists()  # refused: the lock is not kept
    finally:
        stays.kill()
    shell = subprocess.Popen(["sleep", "30"], cwd=tmp_path)  # a user's shell in the folder is not a writer
    try:
        write_lock(tmp_path, pid=dead.pid)
        with FolderLock(tmp_path) as lock:
            assert lock.taken_over
    finally:
        shell.kill()


def test_a_reused_pid_is_told_apart_by_its_start_time(tmp_path):
    write_lock(tmp_path, pid=os.getpid(), process_start=1.0)  # this PID, but not this process
    with FolderLock(tmp_path) as lock:
        assert "is another process now" in lock.taken_over


def test_another_hosts_lock_is_stale_only_when_its_heartbeat_stopped(tmp_path):
    path = write_lock(tmp_path, host="node-17", pid=4242)
    with pytest.raises(LockedError, match="process 4242 on host node-17"):
        FolderLock(tmp_path).acquire()
    old = time.time() - STALE_AFTER_S - 10
    os.utime(path, (old, old))
    with FolderLock(tmp_path) as lock:
        assert "heartbeat stopped" in lock.taken_over


def test_a_writer_that_waits_takes_the_lock_once_the_live_holder_is_done(tmp_path):
    """``wait=True`` (a folder writers take in turn, as a first-stage index): a live holder is
    waited for, not refused, and the lock is taken as soon as it is released."""
    import threading

    taken = threading.Event()

    def second():
        with FolderLock(tmp_path, command="second", wait=True):
            taken.set()

    with FolderLock(tmp_path, command="first"):
        waiter = threading.Thread(target=second, daemon=True)
        waiter.start()
        assert not taken.wait(1.5)  # the live holder (this process, another thread) is waited for
        assert json.loads((tmp_path / LOCK_NAME).read_text())["command"] == "first"
        assert [p.name for p in tmp_path.iterdir()] == [LOCK_NAME]  # the waiter left nothing there
    assert taken.wait(10)
    waiter.join(10)
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_live_writer_of_the_same_slurm_job_on_this_host_is_not_taken_for_requeued(tmp_path, monkeypatch):
    """Writers of one SLURM job on one host (a grid run inside an allocation) share its job id:
    the holder's process decides, so a live one keeps its lock; elsewhere the job was requeued."""
    import psutil

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        write_lock(tmp_path, pid=alive.pid, process_start=psutil.Process(alive.pid).create_time(), slurm_job_id="991")
        monkeypatch.setenv("SLURM_JOB_ID", "991")
        with pytest.raises(LockedError, match=f"is being written by process {alive.pid}"):
            FolderLock(tmp_path).acquire()
    finally:
        alive.kill()
        alive.wait()
    with FolderLock(tmp_path) as lock:  # its process gone: taken over
        assert f"process {alive.pid} is not running" in lock.taken_over


# --- one params folder ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_from_a_checkout_copy_with_runs_outside_reads_the_copys_params(tmp_path):
    copy = tmp_path / "copy"
    for folder in ("params", "notebooks"):
        shutil.copytree(ROOT / folder, copy / folder)
    kept = [
        line
        for line in (copy / "params/profiles/smoke.yaml").read_text().splitlines()
        if line.split(":")[0] not in ("max_steps", "validation_datasets")
    ]  # a key given twice is refused
    (copy / "params/profiles/copy-only.yaml").write_text("\n".join(kept) + "\nmax_steps: 4\nvalidation_datasets: []\n")
    env = {
        **os.environ,
        "CEREPRO_RUNS": str(tmp_path / "elsewhere"),
        "CEREPRO_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("CEREPRO_PARAMS", None)
    env.pop("CEREPRO_ROOT", None)
    run_ok(cerepro_command("run", "train", "-p", "profile=copy-only"), env=env, cwd=copy)
    (folder,) = (tmp_path / "elsewhere" / "adhoc").glob("tiny-bert.infonce.s1-*/train")  # the run's identity
    config = json.loads((folder / "config.json").read_text())
    assert config["profile"] == "copy-only" and config["max_steps"] == 4
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["parameters"]["run_dir"] == str(folder.resolve())


def test_a_requeued_slurm_job_takes_over_its_own_lock_at_once(tmp_path, monkeypatch):
    write_lock(tmp_path, host="node-17", pid=4242, slurm_job_id="991")
    monkeypatch.setenv("SLURM_JOB_ID", "991")
    with FolderLock(tmp_path) as lock:
        assert "SLURM job 991 was requeued" in lock.taken_over
