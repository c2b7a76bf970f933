"""The production path end to end: the smoke grid through `cerepro grid` (Snakemake -> papermill
-> notebooks -> cerepro), killed with SIGKILL midway, resumed, and rerun with nothing to do."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def grid_command(cores: int = 2) -> list[str]:
    return [sys.executable, "-m", "cerepro.cli", "grid", "smoke", "--cores", str(cores)]


@pytest.mark.slow
def test_smoke_grid_survives_sigkill_resumes_and_reruns_nothing(tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "CEREPRO_RUNS": str(runs), "CEREPRO_CACHE": str(tmp_path / "cache"),
           "PYTHONUNBUFFERED": "1"}
    grid = runs / "smoke"
    log = open(tmp_path / "first.log", "w")

    # 1. start the grid and SIGKILL the whole process group once the first training run is DONE
    first = subprocess.Popen(grid_command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and first.poll() is None:
        if list(grid.glob("*/train/DONE")):
            break
        time.sleep(0.5)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    finished = {p: p.stat().st_mtime_ns for p in grid.glob("*/*/DONE")}
    assert finished, "nothing finished before the kill"
    assert not (grid / "compare" / "DONE").exists()

    # 2. rerun: completes, and what was DONE is not recomputed
    second = subprocess.run(grid_command(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    for path, mtime in finished.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was recomputed"
    for run_id in ("tiny-bert.bce.s662124363", "tiny-bert.margin-mse.s662124363"):
        for step in ("train", "evaluate"):
            assert (grid / run_id / step / "DONE").is_file()
        assert (grid / run_id / "train" / f"train.ipynb").is_file()
        assert list((grid / run_id / "evaluate" / "results").glob("*/contract.json"))
    assert (grid / "compare" / "DONE").is_file()
    meta = (grid / "tiny-bert.bce.s662124363" / "train" / "meta.json").read_text()
    assert '"git_commit"' in meta and '"torch"' in meta

    # 3. a third run has nothing to do
    started = time.time()
    third = subprocess.run(grid_command(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0
    assert "Nothing to be done" in third.stdout + third.stderr
    assert time.time() - started < 60
