"""A grid's jobs: which notebook each runs, with which parameters, what it requests from a
scheduler (GPUs, CPUs, memory, runtime, from params/), and which of them finished.

`workflow/Snakefile` asks here what each job runs; the Snakemake call is
:mod:`cerepro.grid.workflow`, the plan :mod:`cerepro.grid.plan`, the first stage's jobs
:mod:`cerepro.grid.first_stage_jobs`, inputs are checked by :mod:`cerepro.grid.checks`.

This module schedules; it never trains or evaluates in-process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cerepro.config import RunConfig
from cerepro.data.datasets import InputError
from cerepro.grid.checks import check_evaluate, check_inputs
from cerepro.grid.runner import RunnerError, declared_parameters, notebook_path, run_notebook
from cerepro.grids import EvaluationSettings, Grid, evaluation_settings, load_grid
from cerepro.paths import runs_dir


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
            if self.settings:  # an evaluation; the train notebook checks its run before fit
                check_evaluate(self.settings)
            return run_notebook(self.notebook, run_dir, self.parameters, kernel_env=kernel_env)
        except (RunnerError, InputError, ValueError) as exc:
            if log_path:
                Path(log_path).parent.mkdir(parents=True, exist_ok=True)
                Path(log_path).write_text(str(exc), encoding="utf-8")
            raise


def grid_dir(grid: Grid) -> Path:
    return runs_dir() / grid.name


def job_parameters(grid: Grid, notebook: str, *, run_id: str | None = None, source: str | None = None) -> Job:
    """The parameters each notebook receives for a grid job (all literal values): only those it
    reads, the run's identity; the notebook reads the rest from the run's config."""
    settings = None
    if notebook == "train":
        run = train_run(grid, run_id)
        params = {"profile": grid.profile, "backbone": run.backbone, "objective": run.objective, "seed": run.seed}
    elif notebook == "evaluate":  # the run's identity; the notebook reads its settings
        settings = evaluation_settings(grid, run_id)
        params = {"grid": grid.name, "run_name": run_id}
    elif notebook == "data":
        run = next(r for r in grid.runs if r.training_source == source) if source else grid.runs[0]
        params = {"source": source, "train_data": run.train_data, "llm_list": run.llm_list}
    elif notebook == "compare":
        params = {"grid": grid.name}
    else:
        raise RunnerError(f"no job kind for notebook {notebook!r}")
    return Job(notebook, params, settings)


def train_run(grid: Grid, run_id: str | None) -> RunConfig:
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
    return "\n".join(text_table(rows))


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


def text_table(rows: list[dict[str, Any]]) -> list[str]:
    """Rows of dicts as aligned text columns (header first)."""
    if not rows:
        return []
    keys = list(rows[0])
    width = {k: max(len(str(k)), *(len(str(r[k])) for r in rows)) for k in keys}
    return [" ".join(f"{str(k):<{width[k]}}" for k in keys)] + [
        " ".join(f"{str(r[k]):<{width[k]}}" for k in keys) for r in rows
    ]
