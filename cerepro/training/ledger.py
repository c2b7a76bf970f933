"""What a training run records about itself: the windows of ``log.jsonl`` (loss, lr, grad norm,
pairs/s, memory) and the compute ledger of ``ledger.json`` (wall time, device, steps, estimated
FLOPs, MFU against the GPU's dense peak, the CPU's name from ``/proc/cpuinfo``).

Used by :func:`cerepro.training.train.fit`; it measures and writes, it never trains.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from cerepro.config import RunConfig
from cerepro.model import backbones
from cerepro.paths import write_text_atomic
from cerepro.vocab import Precision


def zero_window() -> dict:
    return {"pairs": 0, "tokens": 0, "flops": 0.0, "losses": [], "grad_norms": [], "cpu_start": time.process_time()}


def zero_totals() -> dict:
    return {"steps": 0, "pairs": 0, "tokens": 0, "flops": 0.0, "train_s": 0.0, "validation_s": 0.0, "wall_s": 0.0}


def accumulate(totals: dict, window: dict, seconds: float) -> None:
    totals["steps"] += len(window["losses"])
    for key in ("pairs", "tokens", "flops"):
        totals[key] += window[key]
    totals["train_s"] += seconds


def log_record(step: int, window: dict, started: float, schedule, accelerator, device) -> dict:
    seconds = max(time.perf_counter() - started, 1e-9)
    loss = torch.stack(window["losses"]).mean()
    loss = accelerator.reduce(loss, reduction="mean") if accelerator.num_processes > 1 else loss
    record = {
        "step": step,
        "seconds": seconds,
        "cpu_seconds": time.process_time() - window["cpu_start"],
        "loss": float(loss),
        "lr": schedule.get_last_lr()[0],
        "grad_norm": float(torch.stack(window["grad_norms"]).mean()),
        "pairs_per_s": window["pairs"] * accelerator.num_processes / seconds,
        "tokens_per_s": window["tokens"] * accelerator.num_processes / seconds,
    }
    record.update(_memory(device))
    return record


def _memory(device) -> dict:
    import psutil

    out = {"rss_mb": psutil.Process().memory_info().rss / 2**20}
    if device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the resumed step (a killed run may have logged beyond its checkpoint)."""
    if path.is_file():
        kept = [
            line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        write_text_atomic(path, "".join(line + "\n" for line in kept))


def last_logged_loss(path: Path) -> float | None:
    losses_ = (
        [
            json.loads(line)["loss"]
            for line in path.read_text().splitlines()
            if line.strip() and "loss" in json.loads(line)
        ]
        if path.is_file()
        else []
    )
    return losses_[-1] if losses_ else None


def broadcast(obj, accelerator):
    if accelerator.num_processes == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj])[0]


def peak_flops(device, precision: str) -> float | None:
    """Dense peak FLOP/s of one GPU at the run's precision, or None if unknown (and on CPU)."""
    if device.type != "cuda":
        return None
    peak = Precision.parse(precision).peak_tflops(torch.cuda.get_device_name(device))
    return None if peak is None else peak * 1e12


def run_ledger(config: RunConfig, totals: dict, model, device, world: int, autocast_bf16: bool) -> dict:
    """Wall time, device, steps, pairs/s, estimated FLOPs and MFU (GPU) of the whole run
    (``autocast_bf16``: whether the loop ran under bf16 autocast)."""
    train_s = max(totals["train_s"], 1e-9)
    peak = peak_flops(device, config.precision)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    flops_per_s = totals["flops"] * world / train_s
    return {
        "run_id": config.run_id,
        "device": name,
        "device_type": device.type,
        "processes": world,
        "threads": torch.get_num_threads(),
        "precision": config.precision,
        "matmul_precision": torch.get_float32_matmul_precision(),
        "autocast_bf16": autocast_bf16,
        "params": backbones.count_params(model),
        "steps": totals["steps"],
        "pairs": totals["pairs"] * world,
        "tokens": totals["tokens"] * world,
        "wall_s": round(totals["wall_s"], 3),
        "train_s": round(totals["train_s"], 3),
        "validation_s": round(totals["validation_s"], 3),
        "pairs_per_s": totals["pairs"] * world / train_s,
        "tokens_per_s": totals["tokens"] * world / train_s,
        "flops": totals["flops"] * world,
        "flops_per_s": flops_per_s,
        "peak_flops_per_device": peak,
        "mfu": flops_per_s / (peak * world) if peak else None,
        "flops_method": "cerepro.model.backbones.pair_flops: 3 x forward matmul FLOPs on unpadded tokens",
        "resumed_from": list(totals.get("resumed_from", [])),  # checkpoint steps this run resumed at
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU {line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"CPU ({os.cpu_count()} cores)"
