"""Real multi-process training: two CPU processes under ``accelerate launch`` (torchrun, gloo).

The two-process loss curve equals a one-process run with the same global batch (float tolerance:
the gradient is all-reduced instead of summed in one process), the ledger counts two processes,
and a run whose rank 1 is SIGKILLed midway resumes from its checkpoint to the same weights as an
uninterrupted two-process run. ``accelerate launch --cpu --num_processes 2``, which starts one
process, is refused with a message saying what to run instead.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from cerepro.model import backbones
from cerepro.training.checkpoints import TrainingError, latest_checkpoint
from cerepro.training.launch import accelerate_command, check_launch_environment

sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker  # noqa: E402
import test_train  # noqa: E402
from tolerance import assert_scores_close, float_tolerance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ddp_worker.py")


def accelerate_launch(output: Path, pids: Path, steps: int, *extra: str, cache: Path) -> subprocess.Popen:
    command = [
        *accelerate_command(2),
        str(WORKER),
        str(output),
        str(pids),
        str(steps),
        *extra,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CEREPRO_CACHE": str(cache),
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "TQDM_DISABLE": "1",
    }
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def losses_of(folder: Path) -> list[float]:
    return [
        json.loads(line)["loss"]
        for line in (folder / "log.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]


@pytest.mark.slow
def test_two_cpu_processes_train_like_one_and_resume_after_a_rank_is_killed(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CEREPRO_CACHE", str(cache))
    monkeypatch.setattr(backbones, "TINY_BERT_FAMILY", {**backbones.TINY_BERT_FAMILY, **ddp_worker.NO_DROPOUT})
    steps = 12

    # 1. one process, in this one, with the same global batch (4 groups per step)
    single = test_train.train(ddp_worker.config(steps), tmp_path / "one")
    assert single["compute"]["processes"] == 1

    # 2. two processes, uninterrupted
    straight = accelerate_launch(tmp_path / "two", tmp_path / "pids-two", steps, cache=cache)
    _, err = straight.communicate(timeout=300)
    assert straight.returncode == 0, err.decode()[-3000:]
    ledger = json.loads((tmp_path / "two" / "ledger.json").read_text())
    assert ledger["processes"] == 2 and ledger["pairs"] == steps * 4 * 2
    one, two = losses_of(tmp_path / "one"), losses_of(tmp_path / "two")
    assert len(one) == len(two) == steps
    assert_scores_close(two, one)  # the same groups, summed across two processes
    a = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    # margin-mse sees only score differences: the classifier bias's gradient is zero up to rounding,
    # which Adam's normalisation turns into steps of +-lr; every other weight agrees closely
    worst = max(float((a[k] - b[k]).abs().max()) for k in a if k != "classifier.bias")
    assert worst < float_tolerance(*a.values()), worst  # relative to the largest weight (~1)

    # 3. two processes, rank 1 SIGKILLed once a checkpoint past step 3 exists, then rerun
    killed, pids = tmp_path / "killed", tmp_path / "pids-killed"
    child = accelerate_launch(killed, pids, steps, "slow", cache=cache)
    deadline = time.time() + 300
    while time.time() < deadline and child.poll() is None:
        done = latest_checkpoint(killed)
        if done is not None and done.name >= "step-0000006" and (pids / "rank1").is_file():
            break
        time.sleep(0.05)
    assert child.poll() is None, child.stderr.read().decode()[-3000:]
    os.kill(int((pids / "rank1").read_text()), signal.SIGKILL)
    _, err = child.communicate(timeout=120)
    assert child.returncode != 0  # the launcher saw its rank die and stopped the other one
    assert not (killed / "summary.json").exists()
    resumed_from = latest_checkpoint(killed).name
    assert "step-0000006" <= resumed_from < f"step-{steps:07d}"

    again = accelerate_launch(killed, pids, steps, cache=cache)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err.decode()[-3000:]
    final = f"checkpoints/step-{steps:07d}/model.safetensors"
    assert test_train.same(load_file(str(tmp_path / "two" / final)), load_file(str(killed / final)))
    records = [json.loads(line) for line in (killed / "log.jsonl").read_text().splitlines()]
    logged = [r["step"] for r in records if "loss" in r]
    assert logged == list(range(1, steps + 1))  # nothing the killed run logged past its checkpoint
    assert [r["step"] for r in records if "resumed_from" in r] == [int(resumed_from.split("-")[1])]
    assert losses_of(killed) == losses_of(tmp_path / "two")
    ledger = json.loads((killed / "ledger.json").read_text())
    assert ledger["processes"] == 2 and ledger["resumed_from"] == [int(resumed_from.split("-")[1])]


def test_accelerate_cpu_flag_with_several_processes_is_refused():
    # what `accelerate launch --cpu --num_processes 2` gives its single process
    trap = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    with pytest.raises(TrainingError, match="--multi_gpu --num_processes N"):
        check_launch_environment(trap)
    check_launch_environment({**trap, "WORLD_SIZE": "2", "RANK": "0"})  # torchrun's processes
    check_launch_environment({"ACCELERATE_USE_CPU": "True"})  # one process, asked for
