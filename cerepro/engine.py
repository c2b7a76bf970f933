"""The glue between a grid file and its jobs: parameters, resources, the Snakemake call and the plan.

`workflow/Snakefile` asks here what each job runs (which notebook, with which parameters) and
what it requests from a scheduler (GPUs, CPUs, memory, runtime, from params/). `cerepro grid`
calls Snakemake as a subprocess with an argument list (never a shell string); `cerepro plan`
prints the jobs, their data and a GPU-hours estimate before anything is spent.

This module schedules; it never trains or evaluates in-process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cerepro.config import Grid, RunConfig, dataset_registry, load_grid
from cerepro.paths import project_root, runs_dir
from cerepro.runner import RunnerError, declared_parameters, notebook_path, run_notebook

SNAKEFILE = "workflow/Snakefile"
SLURM_PROFILE = "workflow/profiles/slurm"


@dataclass
class Job:
    """One notebook execution of a grid."""

    notebook: str
    parameters: dict[str, Any] = field(default_factory=dict)

    def execute(self, done_path: str, log_path: str | None = None, threads: int | None = None) -> Path:
        """Run the notebook into the folder of ``done_path``. ``threads`` caps the kernel's
        intra-op threads: jobs running side by side on one machine must not oversubscribe it
        (two 2-thread jobs on 2 cores run an order of magnitude slower than two 1-thread jobs)."""
        run_dir = Path(done_path).parent
        if threads:
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[var] = str(threads)
        try:
            return run_notebook(self.notebook, run_dir, self.parameters)
        except RunnerError as exc:
            if log_path:
                Path(log_path).parent.mkdir(parents=True, exist_ok=True)
                Path(log_path).write_text(str(exc), encoding="utf-8")
            raise


def grid_dir(grid: Grid) -> Path:
    return runs_dir() / grid.name


def job_parameters(grid: Grid, notebook: str, *, run_id: str | None = None, source: str | None = None) -> Job:
    """The parameters each notebook receives for a grid job (all literal values)."""
    base = {"grid": grid.name, "profile": grid.profile}
    if notebook == "train":
        run = _run(grid, run_id)
        params = {**base, "backbone": run.backbone, "objective": run.objective, "seed": run.seed}
    elif notebook == "evaluate":
        run = grid.runs[0] if run_id == "first-stage" else _run(grid, run_id)
        model_dir = "" if run_id == "first-stage" else str(grid_dir(grid) / run_id / "train" / "model")
        params = {**base, "run_name": run_id, "model_dir": model_dir, "datasets": list(run.eval_datasets),
                  "first_stage": run.first_stage, "depth": run.candidate_depth,
                  "max_length": run.max_length, "query_max_length": run.query_max_length,
                  "passage_max_length": run.passage_max_length}
    elif notebook == "data":
        params = {**base, "source": source, "train_data": grid.runs[0].train_data}
    elif notebook == "compare":
        params = dict(base)
    else:
        raise RunnerError(f"no job kind for notebook {notebook!r}")
    return Job(notebook, params)


def _run(grid: Grid, run_id: str | None) -> RunConfig:
    for run in grid.runs:
        if run.run_id == run_id:
            return run
    raise RunnerError(f"run id {run_id!r} is not in grid {grid.name!r}")


def job_resources(grid: Grid, kind: str) -> dict[str, Any]:
    """Snakemake resources for a rule; per-run values are callables of the job's wildcards.

    Training and evaluation take the GPUs, CPUs, memory and runtime of their run's params;
    data, first-stage, compare and book jobs are small CPU jobs.
    """
    runs = {r.run_id: r for r in grid.runs}
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
    for notebook in ("data", "train", "evaluate", "compare"):
        notebook_path(notebook)
    for job in (job_parameters(grid, "train", run_id=grid.runs[0].run_id),
                job_parameters(grid, "evaluate", run_id=grid.runs[0].run_id),
                job_parameters(grid, "data", source=grid.runs[0].training_source),
                job_parameters(grid, "compare")):
        unknown = set(job.parameters) - set(declared_parameters(job.notebook))
        if unknown:
            raise RunnerError(f"notebook {job.notebook!r} does not declare parameter(s) {sorted(unknown)}")
    return grid


def snakemake_command(grid: str, *, cores: int | None = None, dry_run: bool = False,
                      slurm: bool = False, book: bool = False, partition: str | None = None,
                      account: str | None = None, extra: list[str] | None = None) -> list[str]:
    """The Snakemake argument list of ``cerepro grid``. With ``slurm``: the shipped profile, its
    partition (and account) replaced by ``partition`` / ``account`` when given, so a site never
    edits the shipped file; ``extra`` (plugin options such as ``--slurm-status-command squeue``)
    goes last, unchanged."""
    root = project_root()
    out = runs_dir() / grid
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(root / SNAKEFILE), "-d", str(out),
           "--config", f"grid={grid}", f"book={book}", "--rerun-incomplete", "--keep-going",
           "--show-failed-logs"]
    if slurm:
        cmd += ["--workflow-profile", str(root / SLURM_PROFILE)]
        if partition or account:
            # replaces the profile's default-resources, which set only the partition
            resources = [f"slurm_partition={partition or _profile_partition(root)}"]
            resources += [f"slurm_account={account}"] if account else []
            cmd += ["--default-resources", *resources]
    else:
        # Locally, a SIGKILLed run leaves Snakemake's lock behind; outputs are DONE markers
        # written last, so a rerun is safe without the lock.
        cmd += ["--cores", str(cores or os.cpu_count() or 1), "--nolock"]
    if dry_run:
        cmd += ["--dry-run", "--quiet", "rules"] if not slurm else ["--dry-run"]
    return cmd + list(extra or [])


def check_grid_inputs(grid: Grid) -> None:
    """Refuse to start a grid whose ids, first-stage runs or training files are missing or broken
    (``cerepro.preflight``), naming each, before any job is submitted."""
    from cerepro.preflight import check_inputs

    problems = check_inputs(grid)
    if problems:
        raise RunnerError(f"grid {grid.name!r} cannot start; its inputs are missing or broken:\n  - "
                          + "\n  - ".join(problems))


def _profile_partition(root: Path) -> str:
    import yaml

    profile = yaml.safe_load((root / SLURM_PROFILE / "config.yaml").read_text())
    return profile["default-resources"]["slurm_partition"]


def run_grid(grid: str, **kwargs) -> int:
    checked = check_grid(grid)
    if not kwargs.get("dry_run"):
        check_grid_inputs(checked)
    env = {**os.environ, "CEREPRO_PARAMS": str(project_root() / "params"),
           "CEREPRO_RUNS": str(runs_dir()), "PYTHONUNBUFFERED": "1"}
    return subprocess.call(snakemake_command(grid, **kwargs), env=env)


# ---------------------------------------------------------------------------------------------
# The plan: what a grid costs before it runs

# Assumptions of the cost model, stated once and printed with every plan.
PLAN_MFU = 0.40               # sustained model-FLOPs utilisation on a 40-80 GB GPU in bf16/tf32
PLAN_GPU_TFLOPS = 989.0       # H100 SXM dense bf16 peak (TFLOP/s)
TRAIN_PAIR_TOKENS = 128       # mean tokens of an MS MARCO (query, passage) pair
EVAL_PAIR_TOKENS = 256        # mean tokens of an evaluation pair (longer BEIR/Robust04 documents)


def backbone_params(run: RunConfig) -> float:
    """Parameters of the backbone, from the shipped config.json when available."""
    try:
        from cerepro.models import count_parameters

        return float(count_parameters(run.hf_id))
    except Exception:  # tiny demo models or a missing config: fall back to the params comment
        return float(_params_from_slug(run.backbone))


def _params_from_slug(slug: str) -> float:
    sizes = {"ettin-17m": 17e6, "ettin-32m": 32e6, "minilm-l12": 33e6, "ettin-68m": 68e6,
             "bert-base": 110e6, "electra-base": 110e6, "roberta-base": 125e6, "ettin-150m": 150e6,
             "deberta-v3-base": 184e6, "minilm-l6": 22e6}
    return sizes.get(slug, 1e6)


def plan(name: str) -> dict[str, Any]:
    """Jobs, data and estimated GPU-hours of a grid (6·N·tokens for training, 2·N·tokens for
    re-ranking, at PLAN_MFU of PLAN_GPU_TFLOPS)."""
    grid = load_grid(name)
    registry = dataset_registry()["datasets"]
    rate = PLAN_MFU * PLAN_GPU_TFLOPS * 1e12
    rows = []
    for run in grid.runs:
        n = backbone_params(run)
        train_flops = 6 * n * run.pairs_per_step * run.max_steps * min(TRAIN_PAIR_TOKENS, run.max_length)
        val_pairs = len(run.validation_datasets) * 50 * run.validation_depth * (run.max_steps // run.validate_every)
        pairs = sum(registry.get(d, {}).get("queries", 0) * run.candidate_depth for d in run.eval_datasets)
        eval_flops = 2 * n * (pairs + val_pairs) * min(EVAL_PAIR_TOKENS, run.max_length)
        rows.append({"run_id": run.run_id, "params_m": round(n / 1e6, 1), "steps": run.max_steps,
                     "pairs_per_step": run.pairs_per_step, "eval_pairs": pairs,
                     "train_gpu_h": train_flops / rate / 3600, "eval_gpu_h": eval_flops / rate / 3600,
                     "gpus": run.gpus, "mem_gb": run.mem_gb, "runtime_min": run.runtime_min})
    data = training_data_needs(grid)
    from cerepro.preflight import check_inputs

    problems = check_inputs(grid)
    return {"grid": grid.name, "profile": grid.profile, "runs": rows, "data": data,
            "eval_datasets": list(grid.eval_datasets), "input_problems": problems,
            "assumptions": {"mfu": PLAN_MFU, "gpu_peak_tflops": PLAN_GPU_TFLOPS,
                            "train_pair_tokens": TRAIN_PAIR_TOKENS, "eval_pair_tokens": EVAL_PAIR_TOKENS},
            "total_gpu_h": sum(r["train_gpu_h"] + r["eval_gpu_h"] for r in rows if r["gpus"])}


def training_data_needs(grid: Grid) -> list[dict[str, Any]]:
    """The external files and ir_datasets ids each training source of the grid reads."""
    try:
        from cerepro.training_data import source_requirements
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


def format_plan(p: dict[str, Any]) -> str:
    lines = [f"grid {p['grid']} (profile {p['profile']}): {len(p['runs'])} training jobs, "
             f"{len(p['runs'])} evaluation jobs over {len(p['eval_datasets'])} datasets, 1 first-stage, 1 compare"]
    lines.append(f"{'run id':<40} {'params':>8} {'steps':>8} {'pairs/step':>10} {'eval pairs':>11} {'train GPU-h':>11} {'eval GPU-h':>10}")
    for r in p["runs"]:
        lines.append(f"{r['run_id']:<40} {r['params_m']:>7}M {r['steps']:>8} {r['pairs_per_step']:>10} "
                     f"{r['eval_pairs']:>11,} {r['train_gpu_h']:>11.2f} {r['eval_gpu_h']:>10.2f}")
    if p["data"]:
        lines.append("data:")
        for d in p["data"]:
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in d.items()))
    lines.append("evaluation datasets: " + ", ".join(p["eval_datasets"]))
    if p["input_problems"]:
        lines.append("inputs missing or broken (`cerepro grid` will not start until they are fixed):")
        lines += [f"  - {problem}" for problem in p["input_problems"]]
    else:
        lines.append("inputs: every dataset id, first-stage run and training file is in place")
    a = p["assumptions"]
    lines.append(f"estimate: {p['total_gpu_h']:,.0f} GPU-hours on GPU jobs, assuming {a['mfu']:.0%} MFU of "
                 f"{a['gpu_peak_tflops']:.0f} TFLOP/s, {a['train_pair_tokens']} tokens per training pair and "
                 f"{a['eval_pair_tokens']} per evaluation pair (FLOPs = 6·N·tokens to train, 2·N·tokens to score)")
    return "\n".join(lines)

