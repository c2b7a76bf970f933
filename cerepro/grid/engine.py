"""The glue between a grid file and its jobs: parameters, resources, the Snakemake call and the plan.

`workflow/Snakefile` asks here what each job runs (which notebook, with which parameters) and
what it requests from a scheduler (GPUs, CPUs, memory, runtime, from params/). `cerepro grid`
calls Snakemake as a subprocess with an argument list (never a shell string); `cerepro plan`
prints the jobs, their data and a GPU-hours estimate before anything is spent.

This module schedules; it never trains or evaluates in-process.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cerepro.config import (
    EvaluationSettings,
    Grid,
    RunConfig,
    effective_settings,
    evaluation_settings,
    load_grid,
    pair_limit,
)
from cerepro.data.datasets import InputError
from cerepro.grid import fetch, preflight
from cerepro.grid.runner import RunnerError, declared_parameters, notebook_path, run_notebook
from cerepro.lock import FolderLock, LockedError
from cerepro.paths import book_dir, cache_dir, params_dir, project_root, runs_dir
from cerepro.vocab import PRECISIONS, CandidateSource, Precision, RunId, dataset_registry

SNAKEFILE = "workflow/Snakefile"
SLURM_PROFILE = "workflow/profiles/slurm"


@dataclass
class Job:
    """One notebook execution of a grid."""

    notebook: str
    parameters: dict[str, Any] = field(default_factory=dict)
    settings: EvaluationSettings | None = None  # an evaluation's, checked before its kernel starts

    def execute(self, done_path: str, log_path: str | None = None, threads: int | None = None) -> Path:
        """Run the notebook into the folder of ``done_path``. ``threads`` caps the kernel's
        intra-op threads: jobs running side by side on one machine must not oversubscribe it
        (two 2-thread jobs on 2 cores run an order of magnitude slower than two 1-thread jobs)."""
        run_dir = Path(done_path).parent
        kernel_env = {var: str(threads) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")} if threads else {}
        try:
            if self.settings:  # an evaluation; training checks its own inputs (cerepro.training.train.fit)
                check_evaluation(self.settings)
            return run_notebook(self.notebook, run_dir, self.parameters, kernel_env=kernel_env)
        except (RunnerError, InputError, ValueError) as exc:
            if log_path:
                Path(log_path).parent.mkdir(parents=True, exist_ok=True)
                Path(log_path).write_text(str(exc), encoding="utf-8")
            raise


def check_evaluation(settings: EvaluationSettings) -> None:
    """An evaluation's datasets and model, checked before its kernel starts."""
    from cerepro.data.datasets import check_dataset

    for dataset in settings.datasets:
        check_dataset(dataset, "eval_datasets")
    if settings.model:  # a trained folder or a hub checkpoint: refused before scoring
        from cerepro.model.models import check_scorer, resolve_scorer

        check_scorer(resolve_scorer(settings.model, settings.revision))


def check_notebook_parameters(notebook: str, parameters: dict[str, Any]) -> None:
    """What ``cerepro run`` checks before a kernel starts or a folder is made: the run the
    parameters describe (slugs, profile, overrides, seed) is a valid one, its evaluation's
    datasets exist, and a first-stage run it validates on is in place (else how to produce it)."""
    given = {**declared_parameters(notebook), **parameters}
    if not isinstance(given.get("overrides", {}), dict):
        raise RunnerError(
            f"--param overrides: {given['overrides']!r} is not a mapping of params keys to "
            "values, e.g. -p 'overrides={max_steps: 10}'"
        )
    if notebook == "train":
        from cerepro.config import load_config

        config = load_config(
            given["backbone"], given["objective"], given["seed"], given["profile"], given.get("overrides") or {}
        )
        check_first_stage_runs(
            config.validation_first_stage, config.validation_datasets, f"profile {config.profile!r} validates"
        )
    elif notebook == "evaluate":
        settings = evaluation_settings(
            load_grid(given["grid"]),
            given["run_name"],
            model=given["model"],
            revision=given["revision"],
            overrides=given.get("overrides") or {},
        )
        check_evaluation(settings)
        check_first_stage_runs(settings.first_stage, settings.datasets, "this evaluation re-ranks")
    elif notebook == "compare":
        load_grid(given["grid"])


def check_first_stage_runs(source: str | None, datasets, what: str) -> None:
    """A first-stage run the grid would produce (``run:<slug>-top<depth>``) must exist when a
    notebook is run alone; if not, say how to produce it."""
    candidates = None if source is None else CandidateSource.parse(source)
    if candidates is None or candidates.produced() is None:
        return
    from cerepro.data.datasets import load_collection

    name = candidates.run
    for dataset in datasets:
        try:
            load_collection(dataset).run_path(name)
        except FileNotFoundError:
            raise RunnerError(
                f"{what} on the first-stage run {name!r} of {dataset!r}, which does not exist yet: "
                f"produce it with `python -m cerepro.retrieval.first_stage {dataset} {name}` (or run a grid with "
                "this profile, `cerepro grid <grid>`, which produces it first)"
            ) from None


def grid_dir(grid: Grid) -> Path:
    return runs_dir() / grid.name


def job_parameters(grid: Grid, notebook: str, *, run_id: str | None = None, source: str | None = None) -> Job:
    """The parameters each notebook receives for a grid job (all literal values)."""
    base = {"grid": grid.name, "profile": grid.profile}
    settings = None
    if notebook == "train":
        run = _run(grid, run_id)
        params = {**base, "backbone": run.backbone, "objective": run.objective, "seed": run.seed}
    elif notebook == "evaluate":  # the run's identity; the notebook reads its settings
        settings = evaluation_settings(grid, run_id)
        params = {**base, "run_name": run_id}
    elif notebook == "data":
        run = next(r for r in grid.runs if r.training_source == source) if source else grid.runs[0]
        params = {**base, "source": source, "train_data": run.train_data, "llm_list": run.llm_list}
    elif notebook == "compare":
        params = dict(base)
    else:
        raise RunnerError(f"no job kind for notebook {notebook!r}")
    return Job(notebook, params, settings)


def _run(grid: Grid, run_id: str | None) -> RunConfig:
    for run in grid.runs:
        if run.run_id == run_id:
            return run
    raise RunnerError(f"run id {run_id!r} is not in grid {grid.name!r}; `cerepro runs {grid.name}` lists its run ids")


def run_status(name: str) -> list[dict[str, Any]]:
    """Each run id of grid ``name`` (the first stage's too: what ``-p run_name=`` takes) and
    whether its training and its evaluation finished (a ``DONE`` in its folder)."""
    grid = check_grid(name)
    trained = {run.run_id for run in grid.runs}
    rows = []
    for run_id in ["first-stage", *(job.run_id for job in grid.evaluations)]:
        folder = grid_dir(grid) / run_id
        rows.append(
            {
                "run id": run_id,
                "train": ("done" if (folder / "train" / "DONE").is_file() else "not run") if run_id in trained else "—",
                "evaluate": "done" if (folder / "evaluate" / "DONE").is_file() else "not run",
            }
        )
    return rows


def format_runs(rows: list[dict[str, Any]]) -> str:
    return "\n".join(_table(rows))


def job_resources(grid: Grid, kind: str) -> dict[str, Any]:
    """Snakemake resources for a rule; per-run values are callables of the job's wildcards.

    Training and evaluation take the GPUs, CPUs, memory and runtime of their run's params;
    data, first-stage, compare and book jobs are small CPU jobs.
    """
    runs = {r.run_id: r for r in grid.runs} if kind == "train" else {j.run_id: j.config for j in grid.evaluations}
    if kind in ("train", "evaluate"):
        share = 1.0 if kind == "train" else 0.5
        return {
            "gpu": lambda wc: runs[wc.run_id].gpus,
            "cpus_per_task": lambda wc: runs[wc.run_id].cpus,
            "mem_mb": lambda wc: runs[wc.run_id].mem_gb * 1024,
            "runtime": lambda wc: max(10, int(runs[wc.run_id].runtime_min * share)),
        }
    return {"gpu": 0, "cpus_per_task": 1, "mem_mb": 4096, "runtime": 60}


# ---------------------------------------------------------------------------------------------
# Running a grid


def check_grid(name: str) -> Grid:
    """Everything that can fail before a job starts: params, notebooks, their parameter names."""
    grid = load_grid(name)
    check_inputs(grid)
    for notebook in ("data", "train", "evaluate", "compare"):
        notebook_path(notebook)
    jobs = [job_parameters(grid, "evaluate", run_id=grid.evaluations[0].run_id), job_parameters(grid, "compare")]
    if grid.runs:
        jobs += [
            job_parameters(grid, "train", run_id=grid.runs[0].run_id),
            job_parameters(grid, "data", source=grid.runs[0].training_source),
        ]
    for job in jobs:
        unknown = set(job.parameters) - set(declared_parameters(job.notebook))
        if unknown:
            raise RunnerError(f"notebook {job.notebook!r} does not declare parameter(s) {sorted(unknown)}")
    return grid


def check_inputs(grid: Grid) -> None:
    """Every dataset and local training file the grid's runs name exists (no data is read)."""
    from cerepro.data.training_data import check_inputs as check_run

    seen = set()
    for run in grid.runs or tuple(job.config for job in grid.evaluations):
        key = (run.validation_datasets, run.eval_datasets, run.train_data, run.training_source, run.llm_list)
        if key not in seen:
            seen.add(key)
            check_run(run)


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


def check_grid_inputs(grid: Grid, *, offline: bool = False, inputs: list | None = None) -> None:
    """Refuse to start a grid whose first-stage runs or training files are broken, whose licensed
    inputs are not provided, or (``offline``) whose downloads are not fetched
    (``cerepro.grid.preflight``), naming each, before any job is submitted."""
    problems = preflight.check_inputs(grid, offline=offline, inputs=inputs)
    if problems:
        raise RunnerError(
            f"grid {grid.name!r} cannot start; its inputs are missing or broken:\n  - " + "\n  - ".join(problems)
        )


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
            + fetch.format_inputs([i for i in inputs if i.state == "missing"], compact=True),
            flush=True,
        )
    if not kwargs.get("dry_run"):
        check_grid_inputs(checked, offline=offline, inputs=inputs)  # before anything is made in runs/<grid>/
    else:
        problems = preflight.check_inputs(checked, offline=offline, inputs=inputs)
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


# ---------------------------------------------------------------------------------------------
# The plan: what a grid costs before it runs

# Assumptions of the cost model, stated once and printed with every plan.
PLAN_MFU = 0.40  # sustained model-FLOPs utilisation on a 40-80 GB GPU in bf16/tf32
PLAN_GPU = "H100 SXM"
# Dense peak TFLOP/s of PLAN_GPU at each training precision (cerepro.vocab.GPU_PEAK_TFLOPS): a tf32
# run (fp32 weights, TF32 matmuls, the authors' default) runs at half the bf16 rate; a strict fp32
# one on CUDA cores.
_PEAKS = {name: Precision.parse(name).peak_tflops(PLAN_GPU) for name in PRECISIONS}
PLAN_PEAK_TFLOPS = dict(sorted(_PEAKS.items(), key=lambda item: -item[1]))  # fastest first, as plans print it
# The paper's inputs: a query cut at 32 tokens, a document at 256 (the authors' HFCrossScorer),
# so a pair holds at most 32 + 256 tokens and its special tokens; the means below are assumed.
PAPER_QUERY_TOKENS = 32
PAPER_DOCUMENT_TOKENS = 256
TRAIN_PAIR_TOKENS = 128  # mean tokens of an MS MARCO (query, passage) pair
EVAL_PAIR_TOKENS = 256  # mean tokens of an evaluation pair (longer BEIR/Robust04 documents)


def backbone_params(run: RunConfig) -> float:
    """Parameters of the backbone (:func:`cerepro.model.backbones.backbone_facts`, the book's count too)."""
    try:
        from cerepro.model.backbones import backbone_facts

        return float(backbone_facts(run.backbone)["parameters"])
    except Exception:  # tiny demo models or a missing config: fall back to the params comment
        return float(_params_from_slug(run.backbone))


def _params_from_slug(slug: str) -> float:
    sizes = {
        "ettin-17m": 17e6,
        "ettin-32m": 32e6,
        "minilm-l12": 33e6,
        "ettin-68m": 68e6,
        "bert-base": 110e6,
        "electra-base": 110e6,
        "roberta-base": 125e6,
        "ettin-150m": 150e6,
        "deberta-v3-base": 184e6,
        "minilm-l6": 22e6,
    }
    return sizes.get(slug, 1e6)


def plan(name: str) -> dict[str, Any]:
    """Jobs, data and estimated GPU-hours of a grid (6·N·tokens for training, 2·N·tokens for
    re-ranking, at PLAN_MFU of the peak of the run's training precision, PLAN_PEAK_TFLOPS;
    re-ranking at the fp32 scoring precision's peak is counted at the training one's)."""
    grid = load_grid(name)
    check_inputs(grid)
    registry = dataset_registry()["datasets"]
    rows = []
    for job in grid.evaluations:
        run = job.config
        rate = PLAN_MFU * PLAN_PEAK_TFLOPS[run.precision] * 1e12
        # the same FLOPs with TF32 matmuls: what full fp32 (the table's "32-true") costs more
        tf32_rate = PLAN_MFU * PLAN_PEAK_TFLOPS["tf32" if run.precision == "fp32" else run.precision] * 1e12
        n = backbone_params(run)
        steps = run.max_steps if job.trained else 0
        longest = pair_limit(run)  # 288 tokens under the table's 32 / 256 rule
        train_flops = 6 * n * run.pairs_per_step * steps * min(TRAIN_PAIR_TOKENS, longest)
        val_pairs = len(run.validation_datasets) * 50 * run.validation_depth * (steps // run.validate_every)
        pairs = sum(registry.get(d, {}).get("queries", 0) * run.candidate_depth for d in run.eval_datasets)
        eval_flops = 2 * n * (pairs + val_pairs) * min(EVAL_PAIR_TOKENS, longest)
        rows.append(
            {
                "run_id": job.run_id,
                "model": "" if job.trained else f"{job.model}@{job.revision or 'main'}",
                "precision": run.precision,
                "peak_tflops": PLAN_PEAK_TFLOPS[run.precision],
                "params_m": round(n / 1e6, 1),
                "steps": steps,
                "pairs_per_step": run.pairs_per_step if job.trained else 0,
                "eval_pairs": pairs,
                "train_gpu_h": train_flops / rate / 3600,
                "eval_gpu_h": eval_flops / rate / 3600,
                "tf32_gpu_h": (train_flops + eval_flops) / tf32_rate / 3600,
                "gpus": run.gpus,
                "mem_gb": run.mem_gb,
                "runtime_min": run.runtime_min,
            }
        )
    settings = effective_settings(grid)
    for row in settings:  # GPU-hours per backbone, its runs' training and evaluation
        mine = [r for r in rows if RunId.parse(r["run_id"]).backbone == row["backbone"] and r["gpus"]]
        row["GPU-h"] = round(sum(r["train_gpu_h"] + r["eval_gpu_h"] for r in mine), 1)
    data = training_data_needs(grid)
    first = first_stage_plan(grid)
    inputs = fetch.grid_inputs(grid)
    volume, unknown = fetch.download_volume(inputs)
    return {
        "grid": grid.name,
        "profile": grid.profile,
        "runs": rows,
        "data": data,
        "first_stage": first,
        "first_stage_jobs": len(first_stage_jobs(grid)),
        "first_stage_facts": _scale_facts() if first else {},
        "eval_datasets": list(grid.eval_datasets),
        "input_problems": preflight.check_inputs(grid, inputs=inputs),
        "downloads": [{k: v for k, v in vars(i).items() if k not in ("handle", "action")} for i in inputs],
        "download_bytes": volume,
        "download_unknown": [i.name for i in unknown],
        "settings": settings,
        "changed_runs": changed_runs(grid),
        "assumptions": {
            "mfu": PLAN_MFU,
            "gpu": PLAN_GPU,
            "gpu_peak_tflops": dict(PLAN_PEAK_TFLOPS),
            "train_pair_tokens": TRAIN_PAIR_TOKENS,
            "eval_pair_tokens": EVAL_PAIR_TOKENS,
            "query_tokens": PAPER_QUERY_TOKENS,
            "document_tokens": PAPER_DOCUMENT_TOKENS,
        },
        "total_tf32_gpu_h": sum(r["tf32_gpu_h"] for r in rows if r["gpus"]),
        "early_stopping": any(j.config.early_stopping_steps for j in grid.evaluations if j.trained),
        "total_gpu_h": sum(r["train_gpu_h"] + r["eval_gpu_h"] for r in rows if r["gpus"])
        + (sum(f["encode_gpu_h"] for f in first) if grid.first_config.gpus else 0),
    }


def _scale_facts() -> dict[str, Any]:
    """Where the first stage's sizes come from: the scale benchmark's date, commit, sizes and the
    held-out error of the fits the requests use."""
    from cerepro.retrieval import sizing

    facts, rows = sizing.read_facts(), sizing.read_table()
    errors = sizing.held_out_errors(rows)
    used = ("index_peak_mb", "index_s", "search_peak_mb", "query_cpu_ms")
    return {
        "date": facts.get("date"),
        "commit": facts.get("commit"),
        "sizes": ", ".join(f"{r['passages'] / 1e6:g}M" for r in rows),
        "held_out": ", ".join(f"{k} {errors[k]:.1%}" for k in used if errors.get(k) is not None),
    }


def training_data_needs(grid: Grid) -> list[dict[str, Any]]:
    """The external files and ir_datasets ids each training source of the grid reads."""
    try:
        from cerepro.data.training_data import source_requirements
    except ImportError:
        return []
    seen, out = set(), []
    for run in grid.runs:
        key = (run.training_source, run.train_data, run.llm_list)
        if key in seen:
            continue
        seen.add(key)
        for need in source_requirements(run.training_source, run.train_data, llm_list=run.llm_list):
            out.append({"source": run.training_source, **need})
    return out


def _table(rows: list[dict[str, Any]]) -> list[str]:
    """Rows of dicts as aligned text columns (header first)."""
    if not rows:
        return []
    keys = list(rows[0])
    width = {k: max(len(str(k)), *(len(str(r[k])) for r in rows)) for k in keys}
    return [" ".join(f"{str(k):<{width[k]}}" for k in keys)] + [
        " ".join(f"{str(r[k]):<{width[k]}}" for k in keys) for r in rows
    ]


def format_plan(p: dict[str, Any]) -> str:
    trained = sum(1 for r in p["runs"] if not r["model"])
    lines = [
        f"grid {p['grid']} (profile {p['profile']}): {trained} training jobs, "
        f"{len(p['runs'])} evaluation jobs over {len(p['eval_datasets'])} datasets, 1 first-stage, 1 compare"
    ]
    lines.append("effective settings per backbone:")
    lines.extend("  " + line for line in _table(p["settings"]))
    lines.append(
        f"{'run id':<40} {'precision':>10} {'params':>8} {'steps':>8} {'pairs/step':>10} "
        f"{'eval pairs':>11} {'train GPU-h':>11} {'eval GPU-h':>10}"
    )
    for r in p["runs"]:
        lines.append(
            f"{r['run_id']:<40} {r['precision']:>10} {r['params_m']:>7}M {r['steps']:>8} "
            f"{r['pairs_per_step']:>10} {r['eval_pairs']:>11,} {r['train_gpu_h']:>11.2f} "
            f"{r['eval_gpu_h']:>10.2f}" + (f"  {r['model']}" if r["model"] else "")
        )
    if p.get("first_stage"):
        from cerepro.retrieval import sizing

        lines.append(
            f"first stage: {p['first_stage_jobs']} retrieval jobs over {len(p['first_stage'])} passage sets "
            "(per passage set one encode job on the GPU and one index job on a CPU; per run one "
            "search job on CPUs)"
        )
        for f in p["first_stage"]:
            count = f"{f['passages']:,}" if f["passages"] is not None else "unknown"
            lines.append(
                f"  {f['model']} over {f['passages_of']}: {count} passages, "
                f"{f['encode_gpu_h']:.2f} GPU-h to encode (assumed rate), ~{f['index_gb']:.1f} GB index "
                f"({f['basis']})"
            )
            lines.append(f"    encode: {f['encode']}; index: {f['index']}")
            for r in f["searches"]:
                cpu_h = f"{r['cpu_h']:.2f} CPU-h" if r["cpu_h"] is not None else "unknown CPU-h"
                lines.append(
                    f"    search {r['dataset']} top-{r['depth']} ({r['queries'] or 0:,} queries): "
                    f"{cpu_h} on one thread, peak {r['peak_gb']:.1f} GB ({r['basis']}); "
                    f"request {r['request']}"
                )
        facts = p.get("first_stage_facts") or {}
        if facts:
            lines.append(
                f"  measured: params/{sizing.TABLE} ({facts.get('date')}, commit {facts.get('commit')}, "
                f"sizes {facts.get('sizes')}); fitted: a + b * passages, largest size held out: "
                f"relative error {facts.get('held_out')}"
            )
        lines.append(f"  {sizing.margin_text()}")
        lines.append(f"  {sizing.assumptions_text()}")
    if p["data"]:
        lines.append("data:")
        for d in p["data"]:
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in d.items()))
    lines.append("evaluation datasets: " + ", ".join(p["eval_datasets"]))
    items = [fetch.Input(**d) for d in p["downloads"]]
    if items:
        lines.append(
            f"downloaded inputs ({sum(i.state == 'present' for i in items)} of {len(items)} in place; "
            f"`cerepro fetch {p['grid']}` brings the others ahead of the run, else the jobs do):"
        )
        lines.append(fetch.format_inputs(items, compact=True))
    if p["input_problems"]:
        lines.append("inputs broken or not provided (`cerepro grid` will not start until they are fixed):")
        lines += [f"  - {problem}" for problem in p["input_problems"]]
    else:
        lines.append("inputs: no dataset id, first-stage run or training file is broken or unobtainable")
    lines += format_changed(p["grid"], p.get("changed_runs") or [])
    a = p["assumptions"]
    peaks = ", ".join(f"{v:g} TFLOP/s in {k}" for k, v in a["gpu_peak_tflops"].items())
    lines.append(
        f"estimate: {p['total_gpu_h']:,.0f} GPU-hours on GPU jobs, assuming {a['mfu']:.0%} MFU of "
        f"the {a['gpu']} dense peak ({peaks}), {a['train_pair_tokens']} tokens per training pair and "
        f"{a['eval_pair_tokens']} per evaluation pair on average (assumed; the paper's inputs are cut at "
        f"{a['query_tokens']} query + {a['document_tokens']} document tokens), FLOPs = 6·N·tokens to "
        f"train, 2·N·tokens to score"
        + ("; the first stage's encoding: see its assumptions above" if p.get("first_stage") else "")
    )
    if p["total_tf32_gpu_h"] < p["total_gpu_h"] * 0.999:
        lines.append(
            f'  full fp32 ("32-true" with no TF32, as the table\'s runs trained before 19 Feb 2026) '
            f"costs {p['total_gpu_h']:,.0f} GPU-hours; the same runs with TF32 matmuls would cost "
            f"{p['total_tf32_gpu_h']:,.0f} ({p['total_gpu_h'] / p['total_tf32_gpu_h']:.1f}x less)"
        )
    if p["early_stopping"]:
        lines.append("  with early stopping a run may end before its last step: these are upper bounds")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The first stage: one job per (collection, produced run), before any model reads it


def first_stage_jobs(grid: Grid) -> dict[str, tuple[str, str]]:
    """``{job key: (dataset id, run name)}`` for every run the grid's first stages produce: the
    test collections x ``first_stage`` and the validation sets x ``validation_first_stage``
    whenever the source is a ``run:<model>-top<depth>`` of ``params/first_stage.yaml``."""
    jobs = {}
    trained = {run.run_id for run in grid.runs}
    for job in grid.evaluations:
        run = job.config
        validation = (run.validation_first_stage, run.validation_datasets) if job.run_id in trained else (None, ())
        for source, datasets in ((run.first_stage, run.eval_datasets), validation):
            candidates = None if source is None else CandidateSource.parse(source)
            if candidates is None or candidates.produced() is None:
                continue
            name = candidates.run
            for dataset in datasets:
                jobs[first_stage_key(dataset, name)] = (dataset, name)
    return jobs


def first_stage_key(dataset: str, name: str) -> str:
    """A file-name-safe job key: ``msmarco-passage/trec-dl-2019/judged`` + run name ->
    ``msmarco-passage~trec-dl-2019~judged.splade-v3-distilbert-top1000``."""
    return f"{dataset.replace('/', '~').replace(':', '=')}.{name}"


def first_stage_inputs(grid: Grid, run_id: str, kind: str) -> list[str]:
    """The first-stage DONE markers a train (validation sets) or evaluate (test sets) job reads."""
    if run_id == "first-stage":
        run = grid.first_config
    else:
        run = _run(grid, run_id) if kind == "train" else grid.evaluation(run_id).config
    source, datasets = (
        (run.validation_first_stage, run.validation_datasets)
        if kind == "train"
        else (run.first_stage, run.eval_datasets)
    )
    candidates = CandidateSource.parse(source)
    if candidates.produced() is None:
        return []
    name = candidates.run
    return [f"first-stage-runs/{first_stage_key(d, name)}/DONE" for d in datasets]


def first_stage_corpora(grid: Grid) -> dict[str, tuple[str, str]]:
    """``{corpus key: (dataset id, run name)}``: one encode job and one index job per (model,
    passage set) the grid's first stages search. Collections that share passages in ir_datasets
    (``docs_parent_id``: MS MARCO dev, TREC DL 2019 and 2020) share them; FEVER and Climate-FEVER
    are separate passage sets there (5,416,568 and 5,416,593 passages, two downloads), so each is
    encoded and indexed. The dataset named is the first of its set (any of them reads the same
    passages)."""
    corpora: dict[str, tuple[str, str]] = {}
    for dataset, name in first_stage_jobs(grid).values():
        corpora.setdefault(first_stage_corpus(dataset, name), (dataset, name))
    return corpora


def first_stage_corpus(dataset: str, name: str) -> str:
    """The corpus key of a first-stage run: ``msmarco-passage.splade-v3-distilbert``."""
    model, _ = CandidateSource("run", name).produced()
    docs_id, _ = _passages(dataset)
    return f"{docs_id.replace('/', '~').replace(':', '=')}.{model.slug}"


def first_stage_index_input(grid: Grid, key: str) -> str:
    """The index job's DONE marker a search job (``key`` of :func:`first_stage_jobs`) waits for."""
    dataset, name = first_stage_jobs(grid)[key]
    return f"first-stage-corpora/{first_stage_corpus(dataset, name)}/DONE"


def first_stage_sizes(grid: Grid) -> dict[str, dict[str, Any]]:
    """What each first-stage job needs and requests (:func:`cerepro.retrieval.sizing.requests`): per corpus
    key its ``encode`` and ``index`` jobs, per run key its ``search`` job. A collection whose
    size is unknown offline gets the profile's resources, labelled assumed. A grid that trains
    on the CPU (the offline smoke and rehearsal grids: their ir_datasets ids announce the real
    collections' sizes while their files are small stand-ins) encodes on the CPU and asks at
    most its profile's memory, runtime and CPUs."""
    from cerepro.retrieval import sizing

    run = grid.first_config
    table = sizing.read_table()
    jobs = first_stage_jobs(grid)
    by_corpus: dict[str, list[str]] = {}
    for key, (dataset, name) in jobs.items():
        by_corpus.setdefault(first_stage_corpus(dataset, name), []).append(key)
    sizes: dict[str, dict[str, Any]] = {}
    fallback = {
        "gpus": run.gpus,
        "cpus": run.cpus,
        "mem_mb": run.mem_gb * 1024,
        "runtime_min": max(10, run.runtime_min // 2),
        "disk_mb": 0,
        "basis": "assumed (size unknown)",
    }
    for corpus, keys in by_corpus.items():
        dataset, name = jobs[keys[0]]
        _, passages = _passages(dataset)
        for key in keys:
            d, n = jobs[key]
            depth = CandidateSource("run", n).produced()[1]
            queries = _queries(d)
            if passages is None or queries is None:
                sizes[key] = {"search": {**fallback, "gpus": 0, "threads": 1}}
                continue
            sizes[key] = sizing.requests(passages, queries, depth, rows=table)
        if passages is None:
            sizes[corpus] = {"encode": dict(fallback), "index": {**fallback, "gpus": 0, "cpus": 1}}
            continue
        first = sizing.requests(passages, 0, 1, rows=table)
        encode = dict(first["encode"])
        if not run.gpus:  # a CPU grid encodes on one CPU thread, as before
            encode.update(gpus=0, cpus=1)
        sizes[corpus] = {"passages": passages, "encode": encode, "index": first["index"]}
    if not run.gpus:
        cap = {"mem_mb": run.mem_gb * 1024, "runtime_min": max(10, run.runtime_min // 2)}
        for size in sizes.values():
            for stage, job in size.items():
                if isinstance(job, dict) and "mem_mb" in job:
                    size[stage] = {
                        **job,
                        **{k: min(job[k], v) for k, v in cap.items()},
                        "cpus": min(job["cpus"], run.cpus),
                        **({"threads": min(job["threads"], run.cpus)} if "threads" in job else {}),
                        "basis": f"{job['basis']}, capped by the profile (a CPU grid)",
                    }
    return sizes


_SIZES: dict[str, dict[str, dict[str, Any]]] = {}


def first_stage_resources(grid: Grid, stage: str) -> dict[str, Any]:
    """Snakemake resources of a first-stage rule, sized from its collection (callables of the
    job's wildcards: ``corpus`` for ``encode`` and ``index``, ``key`` for ``search``). Only the
    encode job holds a GPU; indexing and searching are CPU work."""
    key = f"{params_dir()}:{grid.name}"

    def pick(wc):  # sized on first use: a job that is no first-stage job never reads the table
        if key not in _SIZES:
            _SIZES[key] = first_stage_sizes(grid)
        return _SIZES[key][wc.corpus if stage != "search" else wc.key][stage]

    return {
        "gpu": lambda wc: pick(wc)["gpus"],
        "cpus_per_task": lambda wc: pick(wc).get("threads", pick(wc)["cpus"]),
        "mem_mb": lambda wc: pick(wc)["mem_mb"],
        "runtime": lambda wc: pick(wc)["runtime_min"],
        "disk_mb": lambda wc: pick(wc)["disk_mb"],
    }


def first_stage_threads(grid: Grid, stage: str):
    """A first-stage rule's threads, as a callable of its wildcards (the CPUs it requests)."""
    resources = first_stage_resources(grid, stage)
    return lambda wc: resources["cpus_per_task"](wc)


def produce_first_stage(
    grid: Grid, key: str, done_path: str, log_path: str, threads: int = 1, stage: str = "all"
) -> Path:
    """Run ``python -m cerepro.retrieval.first_stage`` for one job in its own process (a crash or an
    out-of-memory kill takes that process only; finished shards stay for the rerun), then write
    the DONE marker. ``stage``: ``encode`` or ``index`` for a corpus key of
    :func:`first_stage_corpora`, ``search`` (or ``all``: every stage in one process) for a run
    key of :func:`first_stage_jobs`."""
    import json

    from cerepro.paths import write_text_atomic

    dataset, name = (first_stage_corpora(grid) if stage in ("encode", "index") else first_stage_jobs(grid))[key]
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [
        sys.executable,
        "-m",
        "cerepro.retrieval.first_stage",
        dataset,
        name,
        "--stage",
        stage,
        "--threads",
        str(threads if stage in ("search", "all") else 1),
    ]
    with open(log_path, "w", encoding="utf-8") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise RunnerError(f"first stage {name} of {dataset} ({stage}) failed (exit {code}); see {log_path}")
    return write_text_atomic(done_path, json.dumps({"dataset": dataset, "run": name, "stage": stage}) + "\n")


def first_stage_plan(grid: Grid) -> list[dict[str, Any]]:
    """Per passage set the grid's first stages index: passages, encode GPU-hours, index size, and
    per run its search CPU-hours, threads and peak memory, each figure labelled measured, fitted
    or assumed (:mod:`cerepro.retrieval.sizing`), with every job's request.

    Collections sharing passages (MS MARCO dev and TREC DL) share one index; passage counts
    come from ir_datasets' metadata (no download), local and demo folders are counted.
    """
    sizes = first_stage_sizes(grid)
    rows: dict[str, dict[str, Any]] = {}
    for key, (dataset, name) in first_stage_jobs(grid).items():
        model, depth = CandidateSource("run", name).produced()
        docs_id, passages = _passages(dataset)
        corpus = first_stage_corpus(dataset, name)
        size = sizes[corpus]
        row = rows.setdefault(
            corpus,
            {
                "model": model.hf_id,
                "passages_of": docs_id,
                "passages": passages,
                "runs": [],
                "encode_gpu_h": size["encode"].get("gpu_h", 0.0),
                "index_gb": size["index"].get("index_mb", 0) / 1024,
                "basis": size["index"]["basis"],
                "encode": _request(size["encode"]),
                "index": _request(size["index"]),
                "searches": [],
            },
        )
        row["runs"].append(f"{dataset} top-{depth}")
        search = sizes[key]["search"]
        row["searches"].append(
            {
                "dataset": dataset,
                "depth": depth,
                "queries": _queries(dataset),
                "cpu_h": search.get("cpu_h"),
                "threads": search.get("threads", 1),
                "peak_gb": search.get("need", {}).get("mem_mb", 0) / 1024,
                "basis": search["basis"],
                "request": _request(search),
            }
        )
    return list(rows.values())


def first_stage_requests(grid: Grid):
    """Every first-stage job of a grid and what it asks for, one row a job (the book's table)."""
    import pandas as pd

    sizes = first_stage_sizes(grid)
    rows = []
    for corpus, (dataset, _) in first_stage_corpora(grid).items():
        for stage in ("encode", "index"):
            rows.append(
                {
                    "job": stage,
                    "collection": _passages(dataset)[0],
                    **_request_row(sizes[corpus][stage]),
                    "passages": sizes[corpus].get("passages"),
                    "queries": None,
                }
            )
    for key, (dataset, name) in first_stage_jobs(grid).items():
        rows.append(
            {
                "job": f"search top-{CandidateSource('run', name).produced()[1]}",
                "collection": dataset,
                **_request_row(sizes[key]["search"]),
                "passages": _passages(dataset)[1],
                "queries": _queries(dataset),
            }
        )
    return pd.DataFrame(rows)


def _request_row(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "GPUs": job["gpus"],
        "CPUs": job.get("threads", job["cpus"]),
        "memory GB": job["mem_mb"] / 1024,
        "runtime min": job["runtime_min"],
        "disk GB": job.get("disk_mb", 0) / 1024,
        "basis": job["basis"],
    }


def _request(job: dict[str, Any]) -> str:
    return (
        f"{job['gpus']} GPU, {job.get('threads', job['cpus'])} CPU, {job['mem_mb'] / 1024:.0f} GB, "
        f"{job['runtime_min']} min" + (f", {job['disk_mb'] / 1024:.0f} GB disk" if job.get("disk_mb") else "")
    )


def _queries(dataset: str) -> int | None:
    """Queries of a collection: params/datasets.yaml, else ir_datasets' metadata, else counted."""
    known = dataset_registry()["datasets"].get(dataset, {}).get("queries")
    if known:
        return int(known)
    try:
        if dataset.startswith(("local:", "demo:")):
            from cerepro.data.datasets import load_collection

            return len(load_collection(dataset).queries)
        import ir_datasets

        return int(ir_datasets.load(dataset).queries_count())
    except Exception:  # an id ir_datasets does not know offline: counted as unknown
        return None


@functools.cache
def _passages(dataset: str) -> tuple[str, int | None]:
    if dataset.startswith(("local:", "demo:")):
        try:
            from cerepro.data.datasets import load_collection

            docs = load_collection(dataset).docs
            return docs.key, len(docs)
        except (FileNotFoundError, OSError):
            return dataset, None
    try:
        import ir_datasets

        return ir_datasets.docs_parent_id(dataset), int(ir_datasets.load(dataset).docs_count())
    except Exception:  # an id ir_datasets does not know offline: counted as unknown
        return dataset, None


# ---------------------------------------------------------------------------------------------
# Finished runs whose params changed since they ran

# Keys that change neither a trained model nor its results: resources and logging.
RESOURCE_KEYS = {
    "log_every",
    "checkpoint_every",
    "gpus",
    "processes",
    "cpus",
    "mem_gb",
    "runtime_min",
    "compile",
    "gradient_checkpointing",
    "profile",
}
# Keys an evaluation reads and training does not (cerepro.training.checkpoints.OPERATIONAL_KEYS minus resources).
EVALUATION_KEYS = {"eval_datasets", "first_stage", "candidate_depth"}


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
