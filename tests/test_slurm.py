"""A real one-node SLURM cluster (tests/slurm_cluster.py) and the rehearsal grid on it.

The cluster starts, runs a batch job, cancels one with scancel, and stops every daemon it started;
SLURM that cannot start fails the test, never skips it.

The rehearsal grid runs through `cerepro grid --slurm --book` and the shipped profile (partition
overridden; the plugin told to poll squeue, as the test cluster keeps no accounting, and every few
seconds, as its jobs take seconds): a training job is scancelled midway, resubmitted by Snakemake
and resumes from its checkpoint; every job completes; the book builds from the grid's results (a
copy of book/, as a SLURM job too); the daemons are stopped.

Both tests are in one file so that a parallel run (`make test`: pytest-xdist, one file per worker)
never starts two clusters at once: a cluster's configuration is linked at /etc/slurm/slurm.conf.
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import PARTITION, SlurmCluster

from cerepro.data import rehearsal

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cluster(tmp_path):
    c = SlurmCluster(tmp_path / "cerepro-slurm").start()  # ClusterError fails, never skips
    yield c
    c.stop()


def wait_state(cluster, job, states, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = {j["id"]: j["state"] for j in cluster.jobs()}.get(job)
        if state in states:
            return state
        time.sleep(0.3)
    raise AssertionError(f"job {job} not in {states} after {timeout} s: {cluster.jobs()}")


def test_cluster_runs_a_job_cancels_one_and_stops(cluster, tmp_path):
    out = tmp_path / "out.txt"
    submit = ["sbatch", "--parsable", "-c", "1", "--mem", "100", "-o", str(out)]
    done = subprocess.run(
        [*submit, "--wrap", "echo ran on $SLURM_JOB_NODELIST"],
        env=cluster.env,
        capture_output=True,
        text=True,
        check=True,
    )
    job = done.stdout.strip().split(";")[0]
    assert wait_state(cluster, job, {"COMPLETED", "FAILED"}) == "COMPLETED"
    assert out.read_text().startswith("ran on ")
    sleeper = (
        subprocess.run([*submit, "--wrap", "sleep 300"], env=cluster.env, capture_output=True, text=True, check=True)
        .stdout.strip()
        .split(";")[0]
    )
    wait_state(cluster, sleeper, {"RUNNING"})
    subprocess.run(["scancel", sleeper], env=cluster.env, check=True)
    assert wait_state(cluster, sleeper, {"CANCELLED"}) == "CANCELLED"
    pids = [int(p.read_text().split()[0]) for _, p in cluster.started]
    cluster.stop()
    time.sleep(0.5)
    alive = subprocess.run(["ps", "-o", "pid=", "-p", ",".join(map(str, pids))], capture_output=True, text=True)
    assert alive.stdout.strip() == ""  # every daemon it started is gone


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_rehearsal_grid_on_slurm_survives_scancel_and_completes(tmp_path):
    rehearsal.write_rehearsal_inputs(tmp_path / "irds", tmp_path / "cache")
    shutil.copytree(ROOT / "book", tmp_path / "book", ignore=shutil.ignore_patterns("_build"))
    cluster = SlurmCluster(tmp_path / "cerepro-slurm").start()
    try:
        env = {
            **cluster.env,
            "IR_DATASETS_HOME": str(tmp_path / "irds"),
            "CEREPRO_CACHE": str(tmp_path / "cache"),
            "CEREPRO_CHECKSUMS": str(tmp_path / "cache" / "downloads" / "CHECKSUMS"),
            "CEREPRO_RUNS": str(tmp_path / "runs"),
            "CEREPRO_BOOK": str(tmp_path / "book"),
            "IR_DATASETS_SKIP_DISK_FREE": "true",
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        grid = tmp_path / "runs" / "rehearsal"
        log = open(tmp_path / "grid.log", "w")
        started = time.time()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cerepro.cli",
                "grid",
                "rehearsal",
                "--slurm",
                "--book",
                "--partition",
                PARTITION,
                "--",
                "--slurm-status-command",
                "squeue",
                "--slurm-no-account",
                "--slurm-init-seconds-before-status-checks",
                "2",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        cancelled = None
        deadline = time.time() + 1400
        while time.time() < deadline and proc.poll() is None and cancelled is None:
            for latest in grid.glob("*/train/checkpoints/latest"):
                run_id = latest.parents[2].name
                logs = sorted((grid / ".snakemake" / "slurm_logs" / "rule_train" / run_id).glob("*.log"))
                if logs and not (grid / run_id / "train" / "DONE").exists():
                    cancelled = (run_id, logs[-1].stem)
                    subprocess.run(["scancel", cancelled[1]], env=cluster.env, check=True)
                    break
            time.sleep(0.2)
        assert cancelled, (tmp_path / "grid.log").read_text()[-4000:]
        proc.wait(timeout=max(60, deadline - time.time()))
        seconds = time.time() - started
        assert proc.returncode == 0, (tmp_path / "grid.log").read_text()[-4000:]
        states = {j["id"]: j["state"] for j in cluster.jobs()}
        assert states[cancelled[1]] == "CANCELLED"
        # no job failed (one earlier run showed a second CANCELLED job, not yet explained)
        assert set(states.values()) <= {"COMPLETED", "CANCELLED"}, states
        print(f"job states: {states}")
        run_id = cancelled[0]
        ledger = json.loads((grid / run_id / "train" / "ledger.json").read_text())
        assert ledger["processes"] == 2 and ledger["resumed_from"], ledger  # resumed, not restarted
        for run in ("tiny-bert.bce.s662124363", "tiny-bert.margin-mse.s662124363"):
            assert (grid / run / "train" / "DONE").is_file() and (grid / run / "evaluate" / "DONE").is_file()
        assert (grid / "compare" / "DONE").is_file()
        assert (grid / "book" / "DONE").is_file()  # built by a SLURM job from this grid's results
        page = (tmp_path / "book" / "_build" / "html" / "rq" / "rq1.html").read_text()
        assert "tiny-bert" in page and "trec-dl-2019" in page
        print(f"rehearsal grid on SLURM: {seconds:.0f} s")
    finally:
        cluster.stop()
