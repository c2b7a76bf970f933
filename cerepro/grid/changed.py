"""Finished runs whose params changed since they ran: found (``train/config.json`` against the
params now), named by `cerepro plan` and `cerepro grid`, and set aside on ``--rerun-changed``.

This module compares and moves folders; it never deletes a run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cerepro.config_keys import EVALUATION_KEYS, RESOURCE_KEYS
from cerepro.grid.engine import grid_dir
from cerepro.grids import Grid


def changed_runs(grid: Grid) -> list[dict[str, Any]]:
    """The grid's finished training runs whose params now say something else than the config they
    trained with (``train/config.json``): ``{run_id, redo, changes}``, ``redo`` being ``train``
    (a key that changes the model: the run and its evaluation are stale) or ``evaluate`` (only
    what the evaluation reads). Snakemake sees only the DONE files, so without this a changed
    profile reruns nothing while ``cerepro plan`` shows the new values."""
    import json

    out = []
    for run in grid.runs:
        folder = grid_dir(grid) / run.run_id / "train"
        if not (folder / "DONE").is_file() or not (folder / "config.json").is_file():
            continue
        try:
            held = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        now = run.to_dict()
        keys = sorted(k for k in set(now) | set(held) if k not in RESOURCE_KEYS and held.get(k) != now.get(k))
        if keys:
            out.append(
                {
                    "run_id": run.run_id,
                    "redo": "evaluate" if set(keys) <= EVALUATION_KEYS else "train",
                    "changes": [f"{k}: {held.get(k)!r} -> {now.get(k)!r}" for k in keys],
                }
            )
    return out


def format_changed(grid: str, changed: list[dict[str, Any]]) -> list[str]:
    if not changed:
        return []
    lines = [
        f"finished runs whose params changed since they ran ({len(changed)}; kept as they are, "
        f"`cerepro grid {grid} --rerun-changed` reruns them):"
    ]
    for c in changed:
        lines.append(
            f"  {c['run_id']} ({'retrain and evaluate' if c['redo'] == 'train' else 'evaluate again'}): "
            + "; ".join(c["changes"])
        )
    return lines


def set_aside_changed(grid: Grid, changed: list[dict[str, Any]]) -> list[Path]:
    """Move each changed run's stale folder (the run, or only its evaluation) under
    ``runs/<grid>/.replaced/`` (never deleted: the old model stays readable), so the grid's
    Snakemake finds its outputs missing and runs them again."""
    import time

    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved = []
    for c in changed:
        source = grid_dir(grid) / c["run_id"]
        if c["redo"] == "evaluate":
            source = source / "evaluate"
        if not source.exists():
            continue
        target = grid_dir(grid) / ".replaced" / stamp / source.relative_to(grid_dir(grid))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(source, target)
        moved.append(target)
    return moved
