"""Running a grid: `cerepro grid` calls Snakemake (`workflow/Snakefile`) as a subprocess with an
argument list, never a shell string, as the only writer of ``runs/<grid>/``; a SLURM site's
partition and account are checked names; finished jobs whose inputs are gone are run again.

This module starts Snakemake; the jobs it runs are :mod:`cerepro.grid.engine`'s.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from cerepro.grid import fetch
from cerepro.grid.changed import changed_runs, format_changed, set_aside_changed
from cerepro.grid.checks import check_grid_inputs, grid_problems
from cerepro.grid.engine import check_grid, grid_dir
from cerepro.grid.first_stage_jobs import first_stage_jobs
from cerepro.grid.inputs import format_inputs
from cerepro.grid.runner import RunnerError
from cerepro.grids import Grid
from cerepro.lock import FolderLock, LockedError
from cerepro.paths import book_dir, cache_dir, params_dir, project_root, runs_dir

SNAKEFILE = "workflow/Snakefile"
SLURM_PROFILE = "workflow/profiles/slurm"


def snakemake_command(
    grid: str,
    *,
    cores: int | None = None,
    dry_run: bool = False,
    slurm: bool = False,
    book: bool = False,
    partition: str | None = None,
    account: str | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """The Snakemake argument list of ``cerepro grid``. With ``slurm``: the shipped profile, its
    partition (and account) replaced by ``partition`` / ``account`` when given, so a site never
    edits the shipped file; ``extra`` (plugin options such as ``--slurm-status-command squeue``)
    goes last, unchanged."""
    root = project_root()
    extra = check_site_options(list(extra or []))
    for option, value in (("--partition", partition), ("--account", account)):
        if value is not None:
            check_site_name(option, value)
    out = runs_dir() / Path(grid).stem
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(root / SNAKEFILE),
        "-d",
        str(out),
        "--config",
        f"grid={GRID_PREFIX}{grid}",
        f"book={book}",
        "--rerun-incomplete",
        "--keep-going",
        "--show-failed-logs",
    ]
    if slurm:
        cmd += ["--workflow-profile", str(root / SLURM_PROFILE)]
        if partition or account:
            # replaces the profile's default-resources, which set only the partition. Snakemake
            # evaluates a resource value as Python: each goes as a quoted string literal
            resources = [f"slurm_partition={partition or _profile_partition(root)!r}"]
            resources += [f"slurm_account={account!r}"] if account else []
            cmd += ["--default-resources", *resources]
    else:
        # Locally, a SIGKILLed run leaves Snakemake's lock behind; run_grid holds cerepro's
        # folder lock instead (it detects a dead holder), and each job its run folder's.
        # Jobs run as threads of this Snakemake process: a spawned job would start a second
        # Snakemake that parses the Snakefile and builds the DAG again (seconds of CPU per job);
        # each notebook still runs in its own kernel, with its own environment (cerepro.grid.kernel).
        cmd += ["--cores", str(cores or os.cpu_count() or 1), "--nolock", "--force-use-threads"]
    if dry_run:
        cmd += ["--dry-run", "--quiet", "rules"] if not slurm else ["--dry-run"]
    return cmd + list(extra or [])


# A SLURM partition or account name (a partition list is comma-separated); nothing Python or a
# shell could read as anything but this text
SITE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*(,[A-Za-z0-9_][A-Za-z0-9_.+-]*)*")
# Snakemake options whose values it evaluates as Python expressions
EVALUATED_OPTIONS = ("--default-resources", "--set-resources", "--set-threads", "--resources")


def check_site_name(option: str, value: str) -> None:
    if not isinstance(value, str) or not SITE_NAME.fullmatch(value):
        raise RunnerError(
            f"{option} {value!r}: not a SLURM name (letters, digits, '_', '.', '+', '-', "
            "comma-separated for a list); nothing was submitted"
        )


def check_site_options(extra: list[str]) -> list[str]:
    """Options after ``--`` go to Snakemake and its SLURM plugin as strings. Those whose values
    Snakemake evaluates as Python (resources, threads) are refused: --partition and --account
    pass the site's names, params/ the jobs' resources. No value may hold a control character."""
    for item in extra:
        option = item.split("=", 1)[0]
        # argparse takes an unambiguous prefix for the whole option (--default-res)
        if len(option) > 4 and option.startswith("--") and any(o.startswith(option) for o in EVALUATED_OPTIONS):
            raise RunnerError(
                f"-- {option}: Snakemake evaluates its values as Python; cerepro does not pass "
                "it: set the partition and account with --partition/--account, and the "
                "jobs' resources in params/"
            )
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in item):
            raise RunnerError(f"-- {item!r}: holds a control character (a newline?); nothing was submitted")
    return extra


# Snakemake reads a --config value as a number where it can, quotes or not (and its SLURM jobs
# pass the config on the same way): a prefix keeps a grid named `007` the string '007'
GRID_PREFIX = "grid:"


def config_grid(value: Any) -> str:
    """The grid name of Snakemake's ``config["grid"]`` (``grid:<name>``, or a name by hand)."""
    value = str(value)
    return value[len(GRID_PREFIX) :] if value.startswith(GRID_PREFIX) else value


def check_writable(folder: Path) -> None:
    """The grid's folder can be written: cerepro grid takes its lock there and Snakemake keeps its
    records there, even when every job is done; refused with what to do, not an OSError."""
    import tempfile

    existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise RunnerError(
            f"{existing}: cannot write there ({exc.strerror}); `cerepro grid` writes its lock and "
            f"Snakemake its records in {folder}, even when every job is done: make it writable, "
            "or set CEREPRO_RUNS to a writable folder"
        ) from None


def outputs_to_redo(grid: Grid, *, book: bool = False) -> list[str]:
    """Finished jobs whose own DONE stands but whose inputs are gone, to be run again: Snakemake
    reruns a job whose output is missing only when something downstream needs it, and the
    compare job's DONE would otherwise hide a deleted run (a grid rerun said "Nothing to be
    done"). A deleted train run makes its evaluation stale; any missing job output, the compare
    job (and the book); a book requested but not built in this checkout, the book job."""
    folder = grid_dir(grid)
    done = lambda path: (folder / path).is_file()  # noqa: E731
    if not done("compare/DONE"):
        return []  # nothing finished downstream to hide what is missing
    outputs = [f"data/{source}/DONE" for source in sorted({run.training_source for run in grid.runs})]
    outputs += [f"first-stage-runs/{key}/DONE" for key in first_stage_jobs(grid)]
    outputs += [f"{run.run_id}/train/DONE" for run in grid.runs]
    outputs += [f"{job.run_id}/evaluate/DONE" for job in grid.evaluations] + ["first-stage/evaluate/DONE"]
    missing = [path for path in outputs if not done(path)]
    redo = [
        f"{run.run_id}/evaluate/DONE"
        for run in grid.runs
        if not done(f"{run.run_id}/train/DONE") and done(f"{run.run_id}/evaluate/DONE")
    ]
    if missing:
        redo.append("compare/DONE")
        print(
            f"cerepro: {folder}: {len(missing)} job output(s) missing ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}): redoing them and what read them",
            file=sys.stderr,
        )
    if book and done("book/DONE") and not (book_dir() / "_build" / "html" / "index.html").is_file():
        print(f"cerepro: the book of {grid.name!r} is not built in {book_dir()}: building it", file=sys.stderr)
        redo.append("book/DONE")
    return redo


def _profile_partition(root: Path) -> str:
    import yaml

    profile = yaml.safe_load((root / SLURM_PROFILE / "config.yaml").read_text())
    return profile["default-resources"]["slurm_partition"]


def run_grid(grid: str, *, offline: bool = False, **kwargs) -> int:
    """Run a grid through Snakemake, as the only writer of ``runs/<grid>/``: locally Snakemake's
    own lock is off (a SIGKILLed run would leave it behind), so cerepro's folder lock, which
    detects a killed holder, refuses a second ``cerepro grid`` into the same folder instead.

    What the jobs will download is printed first (``cerepro.grid.fetch``). ``offline``: every job runs
    with the hub and cerepro's downloads off (``fetch.offline_environment``), and an input that
    ``cerepro fetch`` did not bring is an error before any job is submitted."""
    checked = check_grid(grid)
    name = checked.name
    offline = offline or fetch.offline_requested()
    check_writable(runs_dir() / name)
    env = {
        **os.environ,
        "CEREPRO_ROOT": str(project_root().resolve()),
        "CEREPRO_PARAMS": str(params_dir().resolve()),
        "CEREPRO_RUNS": str(runs_dir().resolve()),
        "CEREPRO_CACHE": str(cache_dir().resolve()),
        "CEREPRO_BOOK": str(book_dir().resolve()),
        "PYTHONUNBUFFERED": "1",
        **(fetch.offline_environment() if offline else {}),
    }
    inputs = fetch.grid_inputs(checked)
    if any(i.state == "missing" for i in inputs) and not offline:
        print(
            f"downloads the grid's jobs will make (or `cerepro fetch {name}` ahead of the run):\n"
            + format_inputs([i for i in inputs if i.state == "missing"], compact=True),
            flush=True,
        )
    if not kwargs.get("dry_run"):
        check_grid_inputs(checked, offline=offline, inputs=inputs)  # before anything is made in runs/<grid>/
    else:
        problems = grid_problems(checked, offline=offline, inputs=inputs)
        if problems:
            print(
                f"`cerepro grid {name}` would refuse to start until these are fixed:\n  - " + "\n  - ".join(problems),
                flush=True,
            )
    rerun_changed = kwargs.pop("rerun_changed", False)
    changed = changed_runs(checked)
    if changed and rerun_changed and not kwargs.get("dry_run"):
        for moved in set_aside_changed(checked, changed):
            print(f"cerepro: params changed: set aside {moved} to run it again", file=sys.stderr)
    elif changed:
        print("cerepro: " + "\n".join(format_changed(grid, changed)), file=sys.stderr)
    command = snakemake_command(grid, **kwargs)
    redo = outputs_to_redo(checked, book=kwargs.get("book", False))
    if redo:
        at = command.index("--show-failed-logs") + 1
        command[at:at] = ["--forcerun", *redo]
    if kwargs.get("dry_run"):
        return subprocess.call(command, env=env)
    try:
        with FolderLock(runs_dir() / name, command=f"cerepro grid {grid}") as lock:
            if lock.taken_over:
                print(f"cerepro: {runs_dir() / name}: {lock.taken_over}", file=sys.stderr)
            return subprocess.call(command, env=env)
    except LockedError as exc:
        raise RunnerError(str(exc)) from None
