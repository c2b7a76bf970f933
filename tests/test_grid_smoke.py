"""The production path end to end: the smoke grid through `cerepro grid` (Snakemake -> papermill
-> notebooks -> cerepro), killed with SIGKILL while a training job is midway, resumed (that job
from its checkpoint, bit-identical to an uninterrupted run), and rerun with nothing to do; a
second `cerepro grid` into the same folder is refused meanwhile; a run's evaluation deleted
afterwards is redone by the next `cerepro grid`."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import run_ok, smoke_train_command
from safetensors.torch import load_file

from cerepro.lock import wait_for_writers

ROOT = Path(__file__).resolve().parents[1]


def grid_command(cores: int = 2) -> list[str]:
    return [sys.executable, "-m", "cerepro.cli", "grid", "smoke", "--cores", str(cores)]


# The smoke profile with enough steps to be killed midway (in a copy of params/).
LONGER = {"max_steps": 200, "checkpoint_every": 20, "validate_every": 100, "log_every": 10}
SEED = 662124363


def longer_params(tmp_path: Path) -> Path:
    params = tmp_path / "params"
    shutil.copytree(ROOT / "params", params)
    profile = params / "profiles" / "smoke.yaml"
    kept = [line for line in profile.read_text().splitlines() if line.split(":")[0] not in LONGER]
    profile.write_text("\n".join(kept + [f"{k}: {v}" for k, v in LONGER.items()]) + "\n")
    return params


def midway(grid: Path) -> list[Path]:
    """Train folders with a checkpoint at step 40 or later and no DONE."""
    return [
        t
        for t in grid.glob("*/train")
        if not (t / "DONE").exists() and any(p.name >= "step-0000040" for p in (t / "checkpoints").glob("step-*"))
    ]


@pytest.mark.slow
def test_smoke_grid_survives_sigkill_resumes_and_reruns_nothing(tmp_path):
    runs = tmp_path / "runs"
    env = {
        **os.environ,
        "CEREPRO_RUNS": str(runs),
        "CEREPRO_CACHE": str(tmp_path / "cache"),
        "CEREPRO_PARAMS": str(longer_params(tmp_path)),
        "PYTHONUNBUFFERED": "1",
    }
    grid = runs / "smoke"
    log = open(tmp_path / "first.log", "w")

    # 1. start the grid; a second grid into its folder is refused; SIGKILL the whole process group
    #    once a training job is midway
    first = subprocess.Popen(
        grid_command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.time() + 600
    while time.time() < deadline and first.poll() is None and not (grid / ".writer.lock").exists():
        time.sleep(0.1)
    rival = subprocess.run(grid_command(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rival.returncode == 2 and f"{grid} is being written by process {first.pid}" in rival.stderr
    while time.time() < deadline and first.poll() is None and not midway(grid):
        time.sleep(0.05)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not wait_for_writers(grid, 30)  # the killed jobs' kernels exit within a second or so
    killed = midway(grid)
    assert killed, "no training job was midway"
    checkpoints = {t: sorted(p.name for p in (t / "checkpoints").glob("step-*")) for t in killed}
    finished = {p: p.stat().st_mtime_ns for p in grid.glob("*/*/DONE")}
    assert not (grid / "compare" / "DONE").exists()

    # 2. rerun: completes, and what was DONE is not recomputed
    second = subprocess.run(grid_command(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    for path, mtime in finished.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was recomputed"
    for run_id in ("tiny-bert.bce.s662124363", "tiny-bert.margin-mse.s662124363"):
        for step in ("train", "evaluate"):
            assert (grid / run_id / step / "DONE").is_file()
        assert (grid / run_id / "train" / "train.ipynb").is_file()
        assert list((grid / run_id / "evaluate" / "results").glob("*/contract.json"))
    assert (grid / "compare" / "DONE").is_file()
    meta = (grid / "tiny-bert.bce.s662124363" / "train" / "meta.json").read_text()
    assert '"git_commit"' in meta and '"torch"' in meta

    # the killed job resumed from its newest checkpoint, and ends as an uninterrupted run does
    for train in killed:
        records = [json.loads(line) for line in (train / "log.jsonl").read_text().splitlines()]
        (note,) = [r for r in records if "resumed_from" in r]
        assert note["step"] >= 40 and note["resumed_from"] == f"checkpoints/{checkpoints[train][-1]}"
        after = [r["step"] for r in records[records.index(note) + 1 :] if "loss" in r]
        assert after[0] > note["step"] > 0 and after[-1] == LONGER["max_steps"]
        objective = train.parent.name.split(".")[1]
        straight = tmp_path / f"straight-{objective}"
        run_ok(
            smoke_train_command(straight, objective, f"seed={SEED}"),
            env={**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        )
        for name in ("model/model.safetensors", f"checkpoints/step-{LONGER['max_steps']:07d}/model.safetensors"):
            a, b = load_file(str(straight / name)), load_file(str(train / name))
            assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), f"{train}: {name}"

    # 3. a third run has nothing to do
    started = time.time()
    third = subprocess.run(grid_command(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0
    assert "Nothing to be done" in third.stdout + third.stderr
    assert time.time() - started < 60

    # 4. a deleted run's evaluation is redone by the next run, and the compare job reads it again
    #    (its DONE once hid the missing folder: "Nothing to be done")
    gone = grid / "tiny-bert.bce.s662124363" / "evaluate"
    shutil.rmtree(gone)
    compared = (grid / "compare" / "DONE").stat().st_mtime_ns
    trained = {p: p.stat().st_mtime_ns for p in grid.glob("*/train/DONE")}
    fourth = subprocess.run(grid_command(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert fourth.returncode == 0, fourth.stdout[-3000:] + fourth.stderr[-3000:]
    assert "Nothing to be done" not in fourth.stdout + fourth.stderr
    assert f"{gone.relative_to(grid)}/DONE" in fourth.stderr  # named as missing
    assert (gone / "DONE").is_file() and list((gone / "results").glob("*/contract.json"))
    assert (grid / "compare" / "DONE").stat().st_mtime_ns > compared
    assert {p: p.stat().st_mtime_ns for p in grid.glob("*/train/DONE")} == trained  # nothing retrained
