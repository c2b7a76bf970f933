"""Execute one parametrized notebook into a run folder: jupytext -> papermill -> artifacts.

A run folder (``runs/<grid>/<run_id>/<notebook>/``) holds the executed notebook, whatever the
notebook wrote, ``meta.json`` (merged params, package versions, git commit, hardware) and, last of
all, ``DONE``. A folder without ``DONE`` is never read as a result: the engine reruns it, keeping
only what the notebook continues from (``RESUMABLE``: a training run's checkpoints, log and
selected model, from which ``cerepro.train.fit`` resumes after a kill or a scheduler's cancel).

This module runs notebooks; it never trains or evaluates by itself.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from cerepro.paths import project_root, write_text_atomic

NOTEBOOKS = ("data", "train", "evaluate", "compare")
PACKAGES = ("cerepro", "torch", "transformers", "accelerate", "ir_datasets", "ir_measures",
            "pandas", "scipy", "statsmodels", "papermill", "jupytext", "snakemake", "bm25s")
DONE = "DONE"
# What a rerun of a half-finished folder keeps, by notebook: the rest is cleared.
RESUMABLE = {"train": ("checkpoints", "log.jsonl", "model")}
# A Unix socket path holds at most 107 bytes on Linux (103 on macOS); the kernel appends "-<n>".
_MAX_SOCKET_PREFIX = 96


class RunnerError(RuntimeError):
    """A notebook run that cannot start (bad notebook or parameters) or that failed."""


def notebook_path(name: str) -> Path:
    path = project_root() / "notebooks" / f"{name}.py"
    if not path.is_file():
        raise RunnerError(f"unknown notebook {name!r}: no {path.name} in notebooks/; known: {', '.join(NOTEBOOKS)}")
    return path


def declared_parameters(name: str) -> dict[str, Any]:
    """The literal defaults of the notebook's ``parameters`` cell."""
    import jupytext

    nb = jupytext.read(notebook_path(name))
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            scope: dict[str, Any] = {}
            exec(compile(cell.source, f"{name}:parameters", "exec"), {}, scope)  # literals only
            return scope
    raise RunnerError(f"notebook {name!r} has no cell tagged 'parameters'")


def is_done(run_dir: str | Path) -> bool:
    return (Path(run_dir) / DONE).is_file()


def run_notebook(
    name: str,
    run_dir: str | Path,
    parameters: Mapping[str, Any],
    *,
    force: bool = False,
    progress: bool = False,
) -> Path:
    """Execute ``notebooks/<name>.py`` with ``parameters`` into ``run_dir``; return the folder.

    Unknown parameter names fail before anything runs. A finished folder (``DONE``) is kept as
    is unless ``force``; a half-finished one is cleared, except what the notebook resumes from
    (``RESUMABLE``), and rerun.
    """
    import jupytext

    run_dir = Path(run_dir)
    declared = declared_parameters(name)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise RunnerError(f"notebook {name!r} has no parameter(s) {unknown}; it declares {sorted(declared)}")
    if is_done(run_dir) and not force:
        return run_dir
    if run_dir.exists():
        keep = () if force else RESUMABLE.get(name, ())
        for entry in run_dir.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)

    source = run_dir / f".{name}.source.ipynb"
    jupytext.write(jupytext.read(notebook_path(name)), source)
    executed = run_dir / f"{name}.ipynb"
    partial = run_dir / f".{name}.partial.ipynb"
    params = {**declared, **parameters, "run_dir": str(run_dir.resolve())} if "run_dir" in declared \
        else {**declared, **parameters}
    started = time.time()
    try:
        execute(source, partial, params, cwd=run_dir, progress=progress)
    except Exception as exc:  # papermill raises PapermillExecutionError with the cell's traceback
        raise RunnerError(f"notebook {name!r} failed in {run_dir} (executed copy: {partial.name}): {exc}") from exc
    finally:
        source.unlink(missing_ok=True)
    os.replace(partial, executed)
    meta = {"notebook": name, "parameters": params, "seconds": round(time.time() - started, 2),
            **environment()}
    write_text_atomic(run_dir / "meta.json", json.dumps(meta, indent=2, default=str))
    write_text_atomic(run_dir / DONE, "")
    return run_dir


def execute(source: Path, output: Path, params: Mapping[str, Any], *, cwd: Path, progress: bool = False) -> None:
    """papermill ``source`` -> ``output`` with a kernel reached over Unix sockets in a private folder.

    Over TCP, jupyter_client picks free ports, releases them and hands them to the kernel; a
    kernel started at the same moment by another job can take one of them first, and the loser
    dies with "Kernel died before replying to kernel_info" (jupyter_client#154, papermill#511).
    Grids start kernels in parallel, so cerepro uses IPC sockets under a fresh temporary folder,
    which no other kernel can name. Where Unix sockets are unavailable (Windows) or the folder's
    path would be too long for one, the kernel uses TCP as usual.
    """
    import papermill
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="cerepro-kernel-") as sockets:
        ip = os.path.join(sockets, "k")
        config = Config()
        if os.name == "posix" and len(os.fsencode(ip)) <= _MAX_SOCKET_PREFIX:
            config.KernelManager.transport = "ipc"
            config.KernelManager.ip = ip
        papermill.execute_notebook(
            str(source), str(output), parameters=dict(params), kernel_name="python3",
            cwd=str(cwd), progress_bar=progress, log_output=False, config=config,
        )


def environment() -> dict[str, Any]:
    """What a result needs to be traced back: versions, commit, hardware."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "versions": versions,
        "python": sys.version.split()[0],
        "git_commit": git_commit(),
        "hardware": hardware(),
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True,
                             text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=project_root(), capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"machine": platform.machine(), "cpus": os.cpu_count(),
                            "platform": platform.platform()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return info
