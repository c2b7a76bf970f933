"""Checkpoints of a training run: written atomically, verified before any resume, two kept.

``checkpoints/step-NNNNNNN/`` holds ``model.safetensors``, ``training_state.pt`` (optimiser,
scheduler, data position, best-so-far, totals, the config; loads with
``torch.load(weights_only=True)``), one ``rng-rank<R>.pt`` per process and ``manifest.json`` (the
sha256 of each file and the config fingerprint). It is written to a temporary folder and renamed
into place; ``checkpoints/latest`` names the newest. A checkpoint that does not verify (a kill
while the disk wrote it) is skipped for the one before it; one of another configuration stops the
run.

This module saves and loads training state for :func:`cerepro.training.train.fit`; it never trains.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError

from cerepro.config import RunConfig
from cerepro.config_keys import OPERATIONAL_KEYS
from cerepro.paths import file_sha256, write_text_atomic

CHECKPOINT_FORMAT = 1
KEEP_CHECKPOINTS = 2


# The base of every training error lives here, below train.py, because checkpoint errors are
# training errors and train.py imports this module.
class TrainingError(RuntimeError):
    """A run that cannot start or continue; the message says why and what to do."""


class CheckpointError(TrainingError):
    """A checkpoint that is corrupted, incomplete, or from another configuration."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint whose files do not verify: resuming falls back to the one before it."""


def config_fingerprint(config: RunConfig) -> str:
    """sha256 of the config keys that change the trained weights (not logging, resources...)."""
    kept = {k: v for k, v in config.to_dict().items() if k not in OPERATIONAL_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint folder (named by ``checkpoints/latest``, else the highest step)."""
    folder = Path(output_dir) / "checkpoints"
    pointer = folder / "latest"
    if pointer.is_file():
        named = folder / pointer.read_text().strip()
        if named.is_dir():
            return named
    steps = sorted(p for p in folder.glob("step-*") if p.is_dir())
    return steps[-1] if steps else None


def save_checkpoint(
    output_dir: Path, step: int, model, optimizer, schedule, config: RunConfig, best: dict, totals: dict, accelerator
) -> Path:
    """Write ``checkpoints/step-NNNNNNN`` atomically, point ``latest`` at it, keep the newest two."""
    from safetensors.torch import save_model

    folder = output_dir / "checkpoints"
    final = folder / f"step-{step:07d}"
    tmp = folder / f".step-{step:07d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    rank = accelerator.process_index
    with _writing(tmp / f"rng-rank{rank}.pt") as path:
        torch.save(rng_state(), path)  # every process keeps its own dropout RNG
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with _writing(tmp / "model.safetensors") as path:
            save_model(model, str(path))
        with _writing(tmp / "training_state.pt") as path:
            torch.save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "step": step,
                    "data_position": step * config.groups_per_step,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": schedule.state_dict(),
                    "best": best,
                    "totals": totals,
                    "fingerprint": config_fingerprint(config),
                    "config": json.dumps(config.to_dict()),
                    "world_size": accelerator.num_processes,
                },
                path,
            )
        files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir())}
        manifest = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "fingerprint": config_fingerprint(config),
            "files": files,
        }
        with _writing(tmp / "manifest.json") as path:
            path.write_text(json.dumps(manifest, indent=1))
        if final.exists():  # a rerun of the same step after a crash: replace it whole
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_text_atomic(folder / "latest", final.name)
        for old in sorted(p for p in folder.glob("step-*") if p.is_dir())[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


@contextmanager
def _writing(path: Path):
    """A checkpoint file being written; a failed write (a full disk, the process's file size
    limit: torch reports either as 'basic_ios::clear: iostream error') is a CheckpointError
    naming the file and the limit, and the unfinished folder is removed."""
    try:
        yield path
    except (OSError, RuntimeError, SafetensorError) as exc:
        try:
            import resource  # POSIX only

            limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
            shown = "unlimited" if limit == resource.RLIM_INFINITY else f"{limit:,} bytes"
        except ImportError:
            shown = "unknown"
        shutil.rmtree(path.parent, ignore_errors=True)
        raise CheckpointError(
            f"{path}: writing the checkpoint failed ({exc}); the process's file size limit (ulimit -f) is "
            f"{shown}: raise it, or free disk space if the disk is full, "
            "then run again (it resumes from the previous checkpoint)"
        ) from None


def resume_point(output_dir: Path, config: RunConfig) -> tuple[Path | None, dict | None, list]:
    """The newest checkpoint that verifies, its state, and the newer ones skipped with why.

    A corrupted or incomplete checkpoint (a kill while the disk wrote it, a damaged file) is
    skipped for the one before it, left on disk untouched (training overwrites it when it gets
    there again). A checkpoint of another configuration stops the run: it is not this run's.
    """
    folder = Path(output_dir) / "checkpoints"
    newest = latest_checkpoint(output_dir)
    candidates = sorted((p for p in folder.glob("step-*") if p.is_dir()), reverse=True)
    if newest is not None and newest in candidates:  # the pointer's choice first
        candidates.remove(newest)
        candidates.insert(0, newest)
    skipped = []
    for candidate in candidates:
        try:
            return candidate, load_checkpoint(candidate, config), skipped
        except CorruptCheckpointError as exc:
            skipped.append((candidate, str(exc)))
    if skipped:
        raise CorruptCheckpointError(
            f"no checkpoint in {folder} can be resumed from: "
            + "; ".join(why for _, why in skipped)
            + ". Start over with `cerepro run ... --force`, or train into a new folder"
        )
    return None, None, []


def load_checkpoint(folder: Path, config: RunConfig) -> dict:
    """Verify a checkpoint (manifest, checksums, fingerprint) and return its training state.

    Raises CorruptCheckpointError (files that do not verify) or CheckpointError (another
    configuration) naming the folder and the problem; never modifies or removes files.
    """
    manifest_path = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptCheckpointError(
            f"checkpoint {folder} is incomplete or corrupted: cannot read manifest.json ({exc})"
        ) from None
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            raise CorruptCheckpointError(f"checkpoint {folder} is incomplete: {name} is missing")
        if file_sha256(path) != digest:
            raise CorruptCheckpointError(
                f"checkpoint {folder} is corrupted: {name} does not match its sha256 in manifest.json"
            )
    if manifest.get("fingerprint") != config_fingerprint(config):
        raise CheckpointError(_mismatch_message(folder, config))
    try:
        state = torch.load(folder / "training_state.pt", weights_only=True, map_location="cpu")
        state["rng"] = {
            name: torch.load(folder / name, weights_only=True) for name in files if name.startswith("rng-rank")
        }
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CorruptCheckpointError(f"checkpoint {folder} cannot be loaded: {exc}") from None
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CorruptCheckpointError(
            f"checkpoint {folder} has format {state.get('format')}, expected {CHECKPOINT_FORMAT}"
        )
    return state


def _mismatch_message(folder: Path, config: RunConfig) -> str:
    try:
        saved = json.loads(torch.load(folder / "training_state.pt", weights_only=True)["config"])
    except Exception:  # noqa: BLE001
        saved = {}
    now = config.to_dict()
    diff = [
        f"{k}: {saved.get(k)!r} in the checkpoint, {now.get(k)!r} now"
        for k in sorted(set(now) | set(saved))
        if k not in OPERATIONAL_KEYS and saved.get(k) != now.get(k)
    ]
    return (
        f"checkpoint {folder} was written by another configuration ({'; '.join(diff) or 'fingerprint differs'}); "
        f"resume with the same params, start over with `cerepro run ... --force`, or train into a new folder"
    )


def load_weights(model, folder: Path) -> None:
    from safetensors.torch import load_model

    missing, unexpected = load_model(model, str(folder / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {folder} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def rng_state() -> dict:
    """Every RNG the loop may draw from, as tensors and plain values (weights_only loadable)."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng(states: dict, rank: int) -> None:
    state = states.get(f"rng-rank{rank}.pt")
    if state is None:  # resumed on more processes than saved: the extra ones keep their seeds
        return
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def finished(output_dir: Path, fingerprint: str) -> bool:
    """Whether ``output_dir`` holds the summary of a complete run of this fingerprint."""
    path = output_dir / "summary.json"
    if not path.is_file():
        return False
    try:
        summary = json.loads(path.read_text())
    except ValueError:
        return False
    return summary.get("complete") and summary.get("fingerprint") == fingerprint
