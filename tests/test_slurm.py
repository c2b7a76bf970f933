"""A real one-node SLURM cluster (tests/slurm_cluster.py): it starts, runs a batch job, cancels
one with scancel, and stops every daemon it started. SLURM that cannot start fails the test."""

import subprocess
import time

import pytest

from slurm_cluster import SlurmCluster


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
    done = subprocess.run([*submit, "--wrap", "echo ran on $SLURM_JOB_NODELIST"], env=cluster.env,
                          capture_output=True, text=True, check=True)
    job = done.stdout.strip().split(";")[0]
    assert wait_state(cluster, job, {"COMPLETED", "FAILED"}) == "COMPLETED"
    assert out.read_text().startswith("ran on ")
    sleeper = subprocess.run([*submit, "--wrap", "sleep 300"], env=cluster.env, capture_output=True,
                             text=True, check=True).stdout.strip().split(";")[0]
    wait_state(cluster, sleeper, {"RUNNING"})
    subprocess.run(["scancel", sleeper], env=cluster.env, check=True)
    assert wait_state(cluster, sleeper, {"CANCELLED"}) == "CANCELLED"
    pids = [int(p.read_text().split()[0]) for _, p in cluster.started]
    cluster.stop()
    time.sleep(0.5)
    alive = subprocess.run(["ps", "-o", "pid=", "-p", ",".join(map(str, pids))], capture_output=True, text=True)
    assert alive.stdout.strip() == ""  # every daemon it started is gone
