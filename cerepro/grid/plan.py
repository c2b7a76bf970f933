"""The plan: what a grid costs before it runs (`cerepro plan`): its jobs, data, downloads, first
stage and an estimate of GPU-hours from stated assumptions, printed with every plan.

This module estimates; it never runs a job.
"""

from __future__ import annotations

from typing import Any

from cerepro.config import RunConfig, pair_limit
from cerepro.grid import fetch
from cerepro.grid.changed import changed_runs, format_changed
from cerepro.grid.checks import check_inputs, grid_problems
from cerepro.grid.engine import text_table
from cerepro.grid.first_stage_jobs import first_stage_jobs, first_stage_plan
from cerepro.grid.inputs import Input, download_volume, format_inputs
from cerepro.grids import Grid, effective_settings, load_grid
from cerepro.vocab import PRECISIONS, Precision, RunId, dataset_registry

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
    volume, unknown = download_volume(inputs)
    return {
        "grid": grid.name,
        "profile": grid.profile,
        "runs": rows,
        "data": data,
        "first_stage": first,
        "first_stage_jobs": len(first_stage_jobs(grid)),
        "first_stage_facts": _scale_facts() if first else {},
        "eval_datasets": list(grid.eval_datasets),
        "input_problems": grid_problems(grid, inputs=inputs),
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
        from cerepro.data.train_files import source_requirements
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
    trained = sum(1 for r in p["runs"] if not r["model"])
    lines = [
        f"grid {p['grid']} (profile {p['profile']}): {trained} training jobs, "
        f"{len(p['runs'])} evaluation jobs over {len(p['eval_datasets'])} datasets, 1 first-stage, 1 compare"
    ]
    lines.append("effective settings per backbone:")
    lines.extend("  " + line for line in text_table(p["settings"]))
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
    items = [Input(**d) for d in p["downloads"]]
    if items:
        lines.append(
            f"downloaded inputs ({sum(i.state == 'present' for i in items)} of {len(items)} in place; "
            f"`cerepro fetch {p['grid']}` brings the others ahead of the run, else the jobs do):"
        )
        lines.append(format_inputs(items, compact=True))
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
