"""Execute one parametrized notebook into a run folder: jupytext -> papermill -> artifacts.

A run folder (``runs/<grid>/<run_id>/<notebook>/``) holds the executed notebook, whatever the
notebook wrote, ``meta.json`` (merged params, package versions, git commit, hardware) and, last of
all, ``DONE``. A folder without ``DONE`` is never read as a result: the engine reruns it, and the
rerun resumes (the notebook finds what the killed run left, e.g. training checkpoints); only
``force`` clears a folder. One writer per folder (``cerepro.lock``): a second run into a folder
that is being written is refused. The kernel gets the caller's params, cache and runs folders, so
a notebook reads the same params as ``cerepro plan`` and ``cerepro grid`` wherever it runs.

This module runs notebooks; it never trains or evaluates by itself.
"""

from __future__ import annotations

import ast
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from cerepro.lock import LOCK_NAME, FolderLock, LockedError
from cerepro.paths import cache_dir, params_dir, project_root, runs_dir, write_text_atomic
from cerepro.vocab import RunId

NOTEBOOKS = ("data", "train", "evaluate", "compare", "explore")
PACKAGES = (
    "cerepro",
    "torch",
    "transformers",
    "accelerate",
    "ir_datasets",
    "ir_measures",
    "pandas",
    "scipy",
    "statsmodels",
    "papermill",
    "jupytext",
    "snakemake",
    "bm25s",
)
DONE = "DONE"
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
    kernel_env: Mapping[str, str] | None = None,
) -> Path:
    """Execute ``notebooks/<name>.py`` with ``parameters`` into ``run_dir``; return the folder.
    ``kernel_env`` is added to the kernel's environment (this process's own is never changed).

    Unknown parameter names fail before anything runs. A finished folder (``DONE``) is kept as
    is unless ``force``; an unfinished one is run again in place, keeping what it holds (training
    resumes from its checkpoints); ``force`` clears the folder first (start over).
    """
    run_dir = Path(run_dir)
    declared = declared_parameters(name)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise RunnerError(f"notebook {name!r} has no parameter(s) {unknown}; it declares {sorted(declared)}")
    parameters = plain_parameters(parameters)
    check_own_folder(name, run_dir)
    if is_done(run_dir) and not force:
        check_finished_params(name, run_dir, {**declared, **parameters})
        return run_dir
    lock = FolderLock(run_dir, command=f"cerepro run {name} --out {run_dir}")
    try:
        lock.acquire()
    except LockedError as exc:
        raise RunnerError(str(exc)) from None
    try:
        check_own_folder(name, run_dir)
        if is_done(run_dir) and not force:  # finished by the writer before us
            check_finished_params(name, run_dir, {**declared, **parameters})
            return run_dir
        if force:  # everything but our own lock
            for child in run_dir.iterdir():
                if not child.name.startswith(LOCK_NAME):
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        resumed = not force and any(not c.name.startswith((LOCK_NAME, f".{name}.")) for c in run_dir.iterdir())
        if lock.taken_over:
            print(f"cerepro: {run_dir}: {lock.taken_over}", file=sys.stderr)
        if resumed:
            print(
                f"cerepro: {run_dir} is unfinished: running {name} again in place (resuming; --force starts over)",
                file=sys.stderr,
            )
        _execute_into(name, run_dir, declared, parameters, resumed=resumed, progress=progress, kernel_env=kernel_env)
    finally:
        lock.release()
    return run_dir


# ---------------------------------------------------------------------------------------------
# Parameters are plain data; a run folder belongs to one notebook and one set of parameters


def plain_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``parameters`` checked to be plain data (strings, finite numbers, booleans, None, lists,
    mappings with string keys; tuples become lists) and rendered into the notebook's code as
    literals that read back as themselves; a RunnerError naming the parameter otherwise. No
    value, whatever it holds (quotes, newlines, triple quotes), can become code."""
    from papermill.translators import PythonTranslator

    def plain(value: Any, where: str) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str):
                    raise RunnerError(f"parameter {where}: key {key!r} is not a string")
            return {k: plain(v, f"{where}[{k!r}]") for k, v in value.items()}
        if isinstance(value, float) and not math.isfinite(value):
            raise RunnerError(f"parameter {where} = {value!r}: not a finite number")
        if value is None or isinstance(value, (str, bool, int, float)):
            return value
        raise RunnerError(
            f"parameter {where} = {value!r} is a {type(value).__name__}, not plain data "
            "(a string, number, boolean, list or mapping)"
        )

    out = {key: plain(value, key) for key, value in parameters.items()}
    for key, value in out.items():
        code = PythonTranslator.translate(value)
        try:
            same = ast.literal_eval(code) == value and type(ast.literal_eval(code)) is type(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            same = False
        if not same:
            raise RunnerError(f"parameter {key} = {value!r} does not render as a literal of itself ({code!r})")
    return out


META = "meta.json"


def check_own_folder(name: str, run_dir: Path) -> None:
    """Refuse a folder that holds something other than a run of notebook ``name``: another
    notebook's run, a grid, a results folder. A run folder starts empty and holds this notebook's
    files: its executed copies (``<name>.ipynb``, ``.<name>.*``) and ``meta.json`` naming it."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise RunnerError(f"{run_dir} is a file, not a run folder")
    entries = [c for c in run_dir.iterdir() if not c.name.startswith(LOCK_NAME)]
    if not entries:
        return
    meta = _meta(run_dir)
    if meta is not None:
        if meta.get("notebook") == name:
            return
        raise RunnerError(
            f"{run_dir} holds a run of the {meta.get('notebook')!r} notebook, not {name!r}: "
            f"give {name} its own folder (--out), or leave --out out for a default one"
        )
    if any(c.name == f"{name}.ipynb" or c.name.startswith(f".{name}.") for c in entries):
        return  # an unfinished run of this notebook: resumed in place, or cleared by --force
    shown = sorted(c.name + ("/" if c.is_dir() else "") for c in entries)
    more = f" and {len(shown) - 8} more" if len(shown) > 8 else ""
    raise RunnerError(
        f"{run_dir} is not a run folder of the {name!r} notebook (nothing in it was written "
        f"by {name}); it holds {', '.join(shown[:8])}{more}: nothing was run or removed. "
        "Give the run an empty folder of its own (--out)"
    )


def _meta(run_dir: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((run_dir / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def check_finished_params(name: str, run_dir: Path, requested: Mapping[str, Any]) -> None:
    """A finished folder answers only the parameters it ran with: any that differ from
    ``requested`` (``run_dir`` aside) are refused, naming both values."""
    meta = _meta(run_dir)
    if meta is None:
        return
    held = meta.get("parameters") or {}
    differ = [key for key in requested if key != "run_dir" and key in held and held[key] != requested[key]]
    if differ:
        both = "; ".join(
            f"{key}: the folder ran with {held[key]!r}, this run asks {requested[key]!r}" for key in differ
        )
        raise RunnerError(
            f"{run_dir} holds a finished {name} run with other parameters ({both}): nothing "
            "was run. Give this run its own folder (--out, or leave --out out for one named "
            "after its parameters), or start that folder over with --force"
        )


def default_run_dir(name: str, parameters: Mapping[str, Any]) -> Path:
    """``runs/adhoc/<identity>-<digest>/<name>/`` for ``cerepro run`` without ``--out``: the
    identity readable (a train run's id, an evaluation's run name, a data source, a grid), the
    digest over every parameter given and declared, so two runs that differ in anything get two
    folders, and the same run finds its own."""
    import hashlib

    merged = {**declared_parameters(name), **plain_parameters(parameters)}
    merged.pop("run_dir", None)
    if name == "train":
        label = str(RunId.trained(merged.get("backbone"), merged.get("objective"), merged.get("seed")))
    elif name == "evaluate":
        label = str(merged.get("model") or merged.get("run_name"))
    elif name == "data":
        label = str(merged.get("source"))
    else:
        label = str(merged.get("grid"))
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._")[:60] or name
    digest = hashlib.sha256(json.dumps(merged, sort_keys=True).encode()).hexdigest()[:10]
    return runs_dir() / "adhoc" / f"{label}-{digest}" / name


def _execute_into(
    name: str,
    run_dir: Path,
    declared: Mapping[str, Any],
    parameters: Mapping[str, Any],
    *,
    resumed: bool,
    progress: bool,
    kernel_env: Mapping[str, str] | None,
) -> None:
    import jupytext

    source = run_dir / f".{name}.source.ipynb"
    jupytext.write(jupytext.read(notebook_path(name)), source)
    executed = run_dir / f"{name}.ipynb"
    partial = run_dir / f".{name}.partial.ipynb"
    params = (
        {**declared, **parameters, "run_dir": str(run_dir.resolve())}
        if "run_dir" in declared
        else {**declared, **parameters}
    )
    started = time.time()
    try:
        execute(source, partial, params, cwd=run_dir, progress=progress, kernel_env=kernel_env)
    except Exception as exc:  # papermill raises PapermillExecutionError with the cell's traceback
        raise RunnerError(f"notebook {name!r} failed in {run_dir} (executed copy: {partial.name}): {exc}") from exc
    finally:
        source.unlink(missing_ok=True)
    widgets_as_text(partial)
    os.replace(partial, executed)
    meta = {
        "notebook": name,
        "parameters": params,
        "seconds": round(time.time() - started, 2),
        "resumed": resumed,
        **environment(),
    }
    write_text_atomic(run_dir / META, json.dumps(meta, indent=2, default=str))
    write_text_atomic(run_dir / DONE, "")


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def widgets_as_text(path: Path) -> None:
    """Replace each widget output of an executed notebook (tqdm's bars, which render as widgets
    in JupyterLab) by the text of its final state, and drop the widget state: an executed copy
    reads the same offline, in the book's run pages, with no widget script from a CDN."""
    import html

    import nbformat

    nb = nbformat.read(path, as_version=4)
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})

    def text(model_id: str) -> str:
        model = state.get(model_id, {})
        values = model.get("state", {})
        if "children" in values:
            return " ".join(t for t in (text(c.removeprefix("IPY_MODEL_")) for c in values["children"]) if t)
        value = values.get("value")
        return html.unescape(value).strip() if isinstance(value, str) else ""

    changed = "widgets" in nb.metadata
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view is not None:
                shown = text(view.get("model_id", "")) or output["data"].get("text/plain", "")
                output["data"] = {"text/plain": shown}
                changed = True
    if changed:
        nb.metadata.pop("widgets", None)
        nbformat.write(nb, path)


def kernel_environment() -> dict[str, str]:
    """The folders this process resolved, for the kernel: its working directory is the run folder,
    from which ``cerepro.paths`` could otherwise find another checkout's params (or none)."""
    return {
        "CEREPRO_ROOT": str(project_root().resolve()),
        "CEREPRO_PARAMS": str(params_dir().resolve()),
        "CEREPRO_CACHE": str(cache_dir().resolve()),
        "CEREPRO_RUNS": str(runs_dir().resolve()),
    }


def execute(
    source: Path,
    output: Path,
    params: Mapping[str, Any],
    *,
    cwd: Path,
    progress: bool = False,
    kernel_env: Mapping[str, str] | None = None,
) -> None:
    """papermill ``source`` -> ``output`` with a kernel reached over Unix sockets in a private folder.

    Over TCP, jupyter_client picks free ports, releases them and hands them to the kernel; a
    kernel started at the same moment by another job can take one of them first, and the loser
    dies with "Kernel died before replying to kernel_info" (jupyter_client#154, papermill#511).
    Grids start kernels in parallel, so cerepro uses IPC sockets under a fresh temporary folder,
    which no other kernel can name. Where Unix sockets are unavailable (Windows) or the folder's
    path would be too long for one, the kernel uses TCP as usual.

    The kernel starts in ``cwd``, its environment this process's plus the folders it resolved and
    ``kernel_env``, given to that kernel alone: Snakemake runs a grid's local jobs as threads of
    one process, where changing ``os.environ`` or the working directory for one job would change
    it for every other (``cerepro.grid.kernel``).
    """
    import papermill
    from traitlets.config import Config

    from cerepro.grid.kernel import JobKernelManager

    with tempfile.TemporaryDirectory(prefix="cerepro-kernel-") as sockets:
        ip = os.path.join(sockets, "k")
        config = Config()
        if os.name == "posix" and len(os.fsencode(ip)) <= _MAX_SOCKET_PREFIX:
            config.KernelManager.transport = "ipc"
            config.KernelManager.ip = ip
        config.JobKernelManager.job_environment = {**kernel_environment(), **(kernel_env or {})}
        config.JobKernelManager.job_cwd = str(Path(cwd).resolve())
        # no papermill cwd: it would os.chdir this whole process (every job thread) for the run
        papermill.execute_notebook(
            str(Path(source).resolve()),
            str(Path(output).resolve()),
            parameters=dict(params),
            kernel_name="python3",
            progress_bar=progress,
            log_output=False,
            config=config,
            kernel_manager_class=JobKernelManager,
        )


# Variables that keep a job off the network (`cerepro grid --offline`), recorded when set
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "CEREPRO_OFFLINE")


def environment() -> dict[str, Any]:
    """What a result needs to be traced back: versions, commit, hardware, and whether the job ran
    offline (the offline variables that were set)."""
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
        "offline": [v for v in OFFLINE_VARIABLES if os.environ.get(v, "") not in ("", "0")],
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True, timeout=10, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=project_root(),
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"machine": platform.machine(), "cpus": os.cpu_count(), "platform": platform.platform()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return info
