"""What a first-stage job needs, from measurement: the scale benchmark's table, fitted and
extrapolated to a collection's passage and query counts, with a stated margin.

``benchmarks/first_stage_scale.py`` measures every stage the grid runs (writing encoded shards,
building the impact index, exact top-1000 search on one and two threads, writing the run) at
growing sizes of synthetic SPLADE-like passages and writes ``params/expected/first-stage-scale.csv``
(its facts: ``first-stage-scale.json`` beside it). Here each stage's time and peak memory is
fitted as ``a + b * passages`` (``a + b * rows`` for writing the run): every stage's work is
linear in the postings, and a query's exact product touches a share of every posting list. Times
are CPU seconds of the stage's process (what a job with cores of its own takes; the benchmark's
machine is shared, so its wall times, also in the table, are inflated by other work); the search's
speed-up on two threads is measured in wall time, back to back. The fit's error is stated on the
largest measured size, held out of a fit on the others.

A job's request = the fitted need x a margin (:data:`MARGIN`), each figure labelled *measured*
(a size the benchmark ran), *fitted* (extrapolated from the fit) or *assumed* (a stated
constant: GPU encoding rate, query encoding on the CPU, the thread speed-up past two threads).

This module computes sizes; it never runs a job or reads a collection.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from cerepro.paths import params_dir
from cerepro.vocab import Precision

TABLE = "expected/first-stage-scale.csv"  # under params/: the benchmark's measurements
# The columns of that table, as benchmarks/first_stage_scale.py writes them
SCALE_COLUMNS = [
    "passages",
    "postings",
    "queries",
    "query_terms",
    "shards_s",
    "shards_wall_s",
    "shards_peak_mb",
    "shards_mb",
    "index_s",
    "index_wall_s",
    "index_peak_mb",
    "index_mb",
    "search_setup_s",
    "search_setup_wall_s",
    "search_peak_mb",
    "query_cpu_ms",
    "query_ms_1",
    "query_ms_2",
    "qps_1",
    "qps_2",
    "speedup_2",
    "run_rows",
    "run_write_s",
    "run_write_wall_s",
    "run_peak_mb",
    "run_mb",
]

# Stages whose time and peak memory the benchmark measures, fitted against passages.
FITTED = (
    "shards_s",
    "shards_peak_mb",
    "shards_mb",
    "index_s",
    "index_peak_mb",
    "index_mb",
    "search_setup_s",
    "search_peak_mb",
    "query_cpu_ms",
    "query_ms_1",
    "query_ms_2",
)

# The margin every request carries over the fitted need, and the floors of a request.
MARGIN = {"memory": 1.5, "runtime": 2.0, "disk": 1.25}
FLOOR = {"mem_mb": 2048, "runtime_min": 10, "disk_mb": 1024}
MAX_THREADS = 16  # a search job's CPUs at most (the paper profile's CPUs per job)
TARGET_SEARCH_H = 1.0  # threads are chosen so that the search takes about this long

# Assumed, not measured here (no GPU was lent when the benchmark ran): stated with every plan.
ENCODER_PARAMS = 66e6  # splade-v3-distilbert: DistilBERT with its MLM head
ENCODE_MFU = 0.40  # sustained model-FLOPs utilisation of the encoder in bf16
ENCODE_PEAK_TFLOPS = Precision.parse("bf16", scoring=True).peak_tflops("H100 SXM")  # vocab.GPU_PEAK_TFLOPS: 989
# SPLADE's max pooling reads the (B, L, V) logits: V = 30,522 bf16 values a token, written by the
# head, read and written by the padding mask, read by the max (4 passes), at the GPU's bandwidth.
# At MS MARCO's size this, not the FLOPs, bounds the encoding.
ENCODE_VOCAB = 30_522
ENCODE_LOGIT_PASSES = 4
ENCODE_BANDWIDTH_TBS = 3.35  # H100 SXM HBM3
PASSAGE_TOKENS = 128  # mean tokens of an encoded passage (MS MARCO ~80, BEIR longer)
QUERY_TOKENS = 16  # mean tokens of an encoded query
CPU_QUERY_ENCODE_PER_S = 20.0  # queries/s encoded on one CPU core (DistilBERT, fp32)
ENCODE_JOB = {"cpus": 4, "host_mem_mb": 8192}  # model, CUDA context and one shard in host memory


@dataclass(frozen=True)
class Fit:
    """``y = a + b * x`` by least squares over the measured sizes; ``held_out`` is the relative
    error at the largest size of the same fit made without it (None with fewer than 3 sizes)."""

    a: float
    b: float
    held_out: float | None

    def __call__(self, x: float) -> float:
        return self.a + self.b * x


def fit_line(xs: list[float], ys: list[float]) -> Fit:
    """Least-squares line through ``(xs, ys)``, and its relative error at the largest x when that
    point is left out of the fit."""

    def line(x, y):
        n = len(x)
        mx, my = sum(x) / n, sum(y) / n
        sxx = sum((v - mx) ** 2 for v in x)
        b = sum((u - mx) * (v - my) for u, v in zip(x, y)) / sxx if sxx else 0.0
        return my - b * mx, b

    if len(xs) < 2:
        raise ValueError(f"a line needs two sizes or more, got {len(xs)}")
    a, b = line(xs, ys)
    held = None
    if len(xs) >= 3:
        last = max(range(len(xs)), key=xs.__getitem__)
        keep = [i for i in range(len(xs)) if i != last]
        a2, b2 = line([xs[i] for i in keep], [ys[i] for i in keep])
        held = abs(a2 + b2 * xs[last] - ys[last]) / abs(ys[last]) if ys[last] else None
    return Fit(a, b, held)


def read_table(path: Path | None = None) -> list[dict[str, float]]:
    """The benchmark's rows (one per size), numbers as floats; an error names the file and line."""
    path = Path(path) if path else params_dir() / TABLE
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                rows.append({k: float(v) for k, v in row.items()})
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{line}: every column must be a number, got {row}") from None
    if len(rows) < 2:
        raise ValueError(f"{path}: {len(rows)} measured sizes; fitting needs two or more")
    return rows


def read_facts(path: Path | None = None) -> dict:
    """The benchmark's facts (machine, date, commit, statistics of the synthetic vectors)."""
    path = Path(path) if path else params_dir() / TABLE
    return json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))


def fits(rows: list[dict[str, float]]) -> dict[str, Fit]:
    """Every fitted stage against passages, and the run writing against rows."""
    xs = [r["passages"] for r in rows]
    out = {name: fit_line(xs, [r[name] for r in rows]) for name in FITTED}
    out["run_write_s"] = fit_line([r["run_rows"] for r in rows], [r["run_write_s"] for r in rows])
    out["run_mb"] = fit_line([r["run_rows"] for r in rows], [r["run_mb"] for r in rows])
    return out


def speedup(rows: list[dict[str, float]]) -> float:
    """The measured 2-thread speed-up of the search (median over sizes), at least 1."""
    values = sorted(r["speedup_2"] for r in rows)
    return max(1.0, values[len(values) // 2])


def _label(passages: int, rows) -> str:
    return "measured" if any(int(r["passages"]) == passages for r in rows) else "fitted"


def _mb(x: float) -> int:
    return int(math.ceil(x))


def requests(passages: int, queries: int, depth: int, *, rows=None) -> dict:
    """The three jobs of one collection's first stage and what each asks for.

    ``encode`` (GPU): passages to shards; ``index`` (CPU, one thread): shards to the impact
    index; ``search`` (CPU, ``threads``): the queries encoded on the CPU, the exact top-``depth``
    and the run written. Needs are fitted (or measured) figures; requests add :data:`MARGIN`.
    """
    rows = rows if rows is not None else read_table()
    f = fits(rows)
    label = _label(passages, rows)
    # encode: the GPU's FLOPs or logit traffic at an assumed rate, whichever bounds it, plus
    # writing the shards (measured on the CPU); host memory holds one shard at a time, so the
    # shard stage's peak is the largest measured, not a line in passages
    tokens = passages * PASSAGE_TOKENS
    encode_s = max(
        2 * ENCODER_PARAMS * tokens / (ENCODE_MFU * ENCODE_PEAK_TFLOPS * 1e12),
        tokens * ENCODE_VOCAB * 2 * ENCODE_LOGIT_PASSES / (ENCODE_BANDWIDTH_TBS * 1e12),
    )
    encode_need_s = encode_s + max(0.0, f["shards_s"](passages))
    encode_mem = ENCODE_JOB["host_mem_mb"] + max(r["shards_peak_mb"] for r in rows)
    shards_mb = max(0.0, f["shards_mb"](passages))
    index_s = max(0.0, f["index_s"](passages))
    index_mem = max(0.0, f["index_peak_mb"](passages))
    index_mb = max(0.0, f["index_mb"](passages))
    # search: one-thread cost per query, spread over threads at the measured 2-thread efficiency
    query_s = max(1e-6, f["query_cpu_ms"](passages)) / 1000
    search_1_s = queries * query_s
    eff = speedup(rows) / 2
    threads = max(1, min(MAX_THREADS, math.ceil(search_1_s / 3600 / TARGET_SEARCH_H / eff)))
    search_s = search_1_s / (1 if threads == 1 else threads * eff)
    run_rows = queries * depth
    encode_q_s = queries / (CPU_QUERY_ENCODE_PER_S * threads)
    search_need_s = (
        max(0.0, f["search_setup_s"](passages)) + encode_q_s + search_s + max(0.0, f["run_write_s"](run_rows))
    )
    search_mem = max(0.0, f["search_peak_mb"](passages)) + 1024  # + the encoder on the CPU (assumed)

    def job(gpus, cpus, mem_mb, seconds, disk_mb):
        return {
            "gpus": gpus,
            "cpus": cpus,
            "mem_mb": max(FLOOR["mem_mb"], _mb(mem_mb * MARGIN["memory"])),
            "runtime_min": max(FLOOR["runtime_min"], _mb(seconds * MARGIN["runtime"] / 60)),
            "disk_mb": max(FLOOR["disk_mb"], _mb(disk_mb * MARGIN["disk"])),
            "need": {"mem_mb": round(mem_mb), "seconds": round(seconds, 1), "disk_mb": round(disk_mb)},
        }

    return {
        "passages": passages,
        "queries": queries,
        "depth": depth,
        "basis": label,
        "encode": {
            **job(1, ENCODE_JOB["cpus"], encode_mem, encode_need_s, shards_mb),
            "gpu_h": encode_s / 3600,
            "basis": "assumed (GPU rate) + " + label + " (shards)",
        },
        "index": {**job(0, 1, index_mem, index_s, shards_mb + index_mb), "index_mb": round(index_mb), "basis": label},
        "search": {
            **job(0, threads, search_mem, search_need_s, _mb(f["run_mb"](run_rows))),
            "threads": threads,
            "cpu_h": search_1_s / 3600,
            "query_ms": query_s * 1000,
            "basis": label + (" (threads past 2: assumed at the 2-thread efficiency)" if threads > 2 else ""),
        },
    }


def held_out_errors(rows=None) -> dict[str, float | None]:
    """Each fit's relative error at the largest measured size, held out of the fit."""
    rows = rows if rows is not None else read_table()
    return {name: fit.held_out for name, fit in fits(rows).items()}


def margin_text() -> str:
    return (
        f"requests = fitted need x {MARGIN['memory']:g} (memory), x {MARGIN['runtime']:g} (runtime), "
        f"x {MARGIN['disk']:g} (disk); at least {FLOOR['mem_mb'] // 1024} GB, "
        f"{FLOOR['runtime_min']} min and {FLOOR['disk_mb'] // 1024} GB"
    )


def assumptions_text() -> str:
    return (
        f"assumed (no GPU measured): encoding {PASSAGE_TOKENS} tokens a passage with a "
        f"{ENCODER_PARAMS / 1e6:.0f}M-parameter encoder at {ENCODE_MFU:.0%} of "
        f"{ENCODE_PEAK_TFLOPS:g} TFLOP/s (bf16) or, where slower, its {ENCODE_VOCAB:,} logits a "
        f"token read and written {ENCODE_LOGIT_PASSES} times at {ENCODE_BANDWIDTH_TBS:g} TB/s; "
        f"queries encoded on the CPU at {CPU_QUERY_ENCODE_PER_S:g}/s per core; past 2 threads the "
        f"search keeps the measured 2-thread efficiency"
    )


def measured_table(rows=None):
    """The benchmark's table as the book shows it: one row per size."""
    import pandas as pd

    rows = rows if rows is not None else read_table()
    return pd.DataFrame(
        [
            {
                "passages": int(r["passages"]),
                "postings / passage": r["postings"] / r["passages"],
                "terms / query": r["query_terms"],
                "peak GB: shards": r["shards_peak_mb"] / 1024,
                "index build": r["index_peak_mb"] / 1024,
                "search": r["search_peak_mb"] / 1024,
                "run writing": r["run_peak_mb"] / 1024,
                "index build s (CPU)": r["index_s"],
                "index GB on disk": r["index_mb"] / 1024,
                "search: CPU ms / query": r["query_cpu_ms"],
                "queries/s, 1 thread": r["qps_1"],
                "queries/s, 2 threads": r["qps_2"],
                "speed-up": r["speedup_2"],
            }
            for r in rows
        ]
    )


def fit_table(rows=None):
    """Each fit: ``a + b * passages`` (b per million passages; run writing per million rows) and
    its relative error at the largest size, held out of the fit."""
    import pandas as pd

    rows = rows if rows is not None else read_table()
    return pd.DataFrame(
        [
            {
                "quantity": name,
                "a": fit.a,
                "b (per million)": fit.b * 1e6,
                "held-out error at the largest size": fit.held_out,
            }
            for name, fit in fits(rows).items()
        ]
    )
