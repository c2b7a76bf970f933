"""The first stage at growing sizes: peak memory and time of every stage the grid runs, fitted.

    python benchmarks/first_stage_scale.py --sizes 125000 250000 500000 1000000 \
        --queries 100 80 60 40 --table params/expected/first-stage-scale.csv \
        --figure book/appendix/first-stage-scale.png

For each size: synthetic SPLADE-like passage vectors are written as the grid's encoded shards
(``cerepro.retrieval.impacts._write_shard``, 100,000 passages a shard), inverted into the impact index
(``build_index``), searched exactly for the top-1000 of synthetic queries on one thread and on
two (``search(threads=...)``; the two must agree exactly), and the run is written
(``run_frame`` + ``write_produced_run``). Each stage runs in its own child process, so its peak
memory is that process's maximum resident set (``wait4``; it includes Python and numpy, about
100 MB). Times are the stage's own work (imports excluded). The shards stage times the writing
only; generating the synthetic vectors (what the GPU does in the grid) is not counted.

The synthetic vectors (``synthetic``): vocabulary 30,522 (the WordPiece vocabulary of DistilBERT,
which naver/splade-v3-distilbert uses); non-zero terms per passage log-normal with median 180
(sigma 0.45) and per query median 36 (sigma 0.35); term popularity Zipf-like (exponent 1.05)
with a flat head of 40 expansion terms nearly every passage carries; weights log-normal
(sigma 0.6), the head terms light; quantised to round(100 w) as the first stage does. Sources:
these are the shapes of ``benchmarks/first_stage_search.py`` (the search engines' benchmark),
chosen from published figures for SPLADE models on MS MARCO passage: Bruch et al., "Efficient
Inverted Indexes for Approximate Retrieval over Learned Sparse Representations" (SIGIR 2024,
arXiv:2404.18812), whose dataset table gives on the order of 120 non-zeros per passage and 40
per query for SPLADE (CoCondenser-EnsembleDistil) embeddings of MS MARCO (as recalled: the paper
could not be re-read offline when this was written); and Mackenzie et al.,
"Exploring the Representation Power of SPLADE Models" (ICTIR 2023, arXiv:2306.16680) on SPLADE's
heavy use of common (head) posting lists. No SPLADE-v3 encoding of MS MARCO could be made here
(no hub access); the passage length is set above the published SPLADE++ figure so that time and
memory are not under-estimated. The measured postings per passage and terms per query are
written with the table, and time and memory scale with postings: a real index's manifest
(``postings``) rescales the fit.

The fit (``cerepro.retrieval.sizing``): each stage's time and memory as ``a + b * passages``, its relative
error at the largest size held out of a fit on the others; ``cerepro plan`` and the grid's job
requests read the table written here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cerepro.retrieval.sizing import SCALE_COLUMNS  # noqa: E402

VOCAB = 30_522
SHARD = 100_000
DEPTH = 1000
HEAD = 40


def popularity(seed: int = 0):
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, VOCAB + 1) ** 1.05
    p[:HEAD] = p[HEAD]  # a flat head of expansion terms nearly every passage has
    p /= p.sum()
    return np.cumsum(p), rng.permutation(VOCAB)  # popular terms spread over the vocabulary ids


def synthetic(n: int, seed: int, *, median_terms: float, sigma: float, weight_mu: float, head_boost: float):
    """(n, V) CSR integer impacts shaped like SPLADE-v3's (see the module's docstring). Rows are
    built directly in CSR order; a term drawn twice in a row sums its weights."""
    import scipy.sparse as sp

    from cerepro.retrieval import impacts

    cdf, perm = popularity()
    boost = np.ones(VOCAB, dtype=np.float32)
    boost[perm[:HEAD]] = head_boost  # expansion terms weigh little
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(median_terms), sigma, n).astype(np.int64), 5, 600)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    cols = perm[np.minimum(np.searchsorted(cdf, rng.random(int(indptr[-1]), dtype=np.float32)), VOCAB - 1)]
    w = rng.lognormal(weight_mu, 0.6, len(cols)).astype(np.float32) * boost[cols]
    m = sp.csr_matrix((w, cols.astype(np.int32), indptr), shape=(n, VOCAB))
    m.sum_duplicates()
    return impacts.quantise(m)


def passages(n: int, seed: int):
    return synthetic(n, seed, median_terms=180, sigma=0.45, weight_mu=-0.6, head_boost=0.3)


def queries(n: int, seed: int):
    return synthetic(n, seed, median_terms=36, sigma=0.35, weight_mu=-0.2, head_boost=0.5)


# ---------------------------------------------------------------------------------------------
# The stages, each run in a child process (``--stage``)


def stage_shards(work: Path, size: int, threads: int, n_queries: int) -> dict:
    from cerepro.retrieval import impacts

    folder = work / "shards"
    folder.mkdir(parents=True, exist_ok=True)
    seconds, cpu, postings = 0.0, 0.0, 0
    for k, first in enumerate(range(0, size, SHARD)):
        n = min(SHARD, size - first)
        q = passages(n, seed=1000 + k)
        ids = [str(first + i) for i in range(n)]  # MS MARCO-like numeric ids
        started, cpu_started = time.perf_counter(), time.process_time()
        impacts._write_shard(impacts._shard_path(folder, k), ids, q)
        seconds += time.perf_counter() - started
        cpu += time.process_time() - cpu_started
        postings += q.nnz
    return {"shards_wall_s": seconds, "shards_s": cpu, "postings": postings, "shards_mb": _mb(folder)}


def stage_index(work: Path, size: int, threads: int, n_queries: int) -> dict:
    from cerepro.retrieval import impacts

    shards = sorted((work / "shards").glob("passages-*.npz"))
    started, cpu = time.perf_counter(), time.process_time()
    index = impacts.build_index(shards, work / "index", {"model": "synthetic", "revision": "-"}, vocab_size=VOCAB)
    return {
        "index_wall_s": time.perf_counter() - started,
        "index_s": time.process_time() - cpu,
        "index_mb": index.manifest["index_bytes"] / 2**20,
    }


def stage_search(work: Path, size: int, threads: int, n_queries: int) -> dict:
    from cerepro.retrieval import impacts, search

    index = impacts.load_index(work / "index")
    q = queries(n_queries, seed=7)
    started, cpu = time.perf_counter(), time.process_time()
    search.search(index, q[:1], DEPTH)  # loads the postings and builds the product's matrix once
    out = {
        "search_setup_wall_s": time.perf_counter() - started,
        "search_setup_s": time.process_time() - cpu,
        "queries": n_queries,
        "query_terms": q.nnz / n_queries,
    }
    results = {}
    for t in (1, 2, 1, 2):  # alternated, the faster of two tries each: the machine is shared
        started, cpu = time.perf_counter(), time.process_time()
        results[t] = search.search(index, q, DEPTH, threads=t)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        out[f"query_ms_{t}"] = min(out.get(f"query_ms_{t}", np.inf), 1000 * wall / n_queries)
        if t == 1:  # one thread's CPU time: its cost on a core of its own
            out["query_cpu_ms"] = min(out.get("query_cpu_ms", np.inf), 1000 * cpu / n_queries)
    same = all((a == b).all() for a, b in zip(results[1][0], results[2][0])) and all(
        (a == b).all() for a, b in zip(results[1][1], results[2][1])
    )
    if not same:
        raise SystemExit("search on two threads differs from one thread")
    docs, scores = results[1]
    np.savez(
        work / "found.npz",
        lengths=np.array([len(d) for d in docs]),
        docs=np.concatenate(docs),
        scores=np.concatenate(scores),
    )
    out["hits_per_query"] = float(np.mean([len(d) for d in docs]))
    return out


def stage_run(work: Path, size: int, threads: int, n_queries: int) -> dict:
    from cerepro.retrieval import first_stage as fs
    from cerepro.retrieval import impacts

    index = impacts.load_index(work / "index")
    with np.load(work / "found.npz") as found:
        cuts = np.cumsum(found["lengths"])[:-1]
        docs, scores = np.split(found["docs"], cuts), np.split(found["scores"], cuts)
    started, cpu = time.perf_counter(), time.process_time()
    run = fs.run_frame(index, [f"q{i}" for i in range(len(docs))], docs, scores)
    path = fs.write_produced_run(
        run, work / "run" / "synthetic-top1000.trec", "synthetic-top1000", {"dataset": "synthetic"}
    )
    return {
        "run_write_wall_s": time.perf_counter() - started,
        "run_write_s": time.process_time() - cpu,
        "run_rows": len(run),
        "run_mb": path.stat().st_size / 2**20,
    }


STAGES = {"shards": stage_shards, "index": stage_index, "search": stage_search, "run": stage_run}


def _mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 2**20


def child(stage: str, work: Path, size: int, n_queries: int) -> dict:
    """Run one stage in a fresh process; its result and its peak resident memory (MB)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cmd = [
        sys.executable,
        __file__,
        "--stage",
        stage,
        "--work",
        str(work),
        "--size",
        str(size),
        "--n-queries",
        str(n_queries),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage {stage} at {size:,} passages failed (exit {os.waitstatus_to_exitcode(status)})")
    return {**json.loads(out), f"{stage}_peak_mb": usage.ru_maxrss / 1024}


# ---------------------------------------------------------------------------------------------


def measure(sizes: list[int], n_queries: list[int], work: Path) -> list[dict]:
    rows = []
    for size, nq in zip(sizes, n_queries):
        folder = work / f"n{size}"
        shutil.rmtree(folder, ignore_errors=True)
        row = {"passages": size}
        for stage in STAGES:
            started = time.perf_counter()
            row.update(child(stage, folder, size, nq))
            print(
                f"{size:>10,} {stage:<7} {time.perf_counter() - started:7.1f} s wall, "
                f"peak {row[f'{stage}_peak_mb']:8.0f} MB",
                flush=True,
            )
        row["qps_1"], row["qps_2"] = 1000 / row["query_ms_1"], 1000 / row["query_ms_2"]
        row["speedup_2"] = row["query_ms_1"] / row["query_ms_2"]
        rows.append({k: row[k] for k in SCALE_COLUMNS})
        shutil.rmtree(folder)  # gigabytes each; the numbers are what is kept
    return rows


def write_table(rows: list[dict], path: Path, facts: dict) -> None:
    from cerepro.paths import write_text_atomic

    lines = [",".join(SCALE_COLUMNS)] + [",".join(f"{r[k]:.6g}" for k in SCALE_COLUMNS) for r in rows]
    write_text_atomic(path, "\n".join(lines) + "\n")
    write_text_atomic(path.with_suffix(".json"), json.dumps(facts, indent=1) + "\n")


def draw(rows: list[dict], path: Path) -> None:
    """Peak memory, index build time and queries/s against passages, with the fitted lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cerepro.retrieval import sizing

    fits = sizing.fits(rows)
    n = np.array([r["passages"] for r in rows])
    grid = np.linspace(0, n.max() * 1.1, 50)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for key, label in (
        ("index_peak_mb", "index build"),
        ("search_peak_mb", "search"),
        ("shards_peak_mb", "shard writing"),
        ("run_peak_mb", "run writing"),
    ):
        (line,) = axes[0].plot(n / 1e6, [r[key] / 1024 for r in rows], "o", label=label)
        if key in fits:
            axes[0].plot(grid / 1e6, fits[key](grid) / 1024, "-", color=line.get_color(), lw=1)
    axes[0].set(title="peak memory", xlabel="passages (millions)", ylabel="GiB")
    axes[0].legend(fontsize=8)
    for key, label in (
        ("index_s", "build impact index"),
        ("shards_s", "write shards"),
        ("search_setup_s", "load index for search"),
    ):
        (line,) = axes[1].plot(n / 1e6, [r[key] for r in rows], "o", label=label)
        axes[1].plot(grid / 1e6, fits[key](grid), "-", color=line.get_color(), lw=1)
    axes[1].set(title="time of a stage", xlabel="passages (millions)", ylabel="CPU seconds")
    axes[1].legend(fontsize=8)
    (line,) = axes[2].plot(n / 1e6, [1000 / r["query_cpu_ms"] for r in rows], "o", label="1 thread, CPU time")
    span = np.linspace(n.min() * 0.8, n.max() * 1.1, 50)
    axes[2].plot(span / 1e6, 1000 / fits["query_cpu_ms"](span), "-", color=line.get_color(), lw=1)
    for t in (1, 2):
        axes[2].plot(
            n / 1e6,
            [r[f"qps_{t}"] for r in rows],
            "s" if t == 1 else "^",
            mfc="none",
            label=f"{t} thread{'s' * (t > 1)}, wall (shared machine)",
        )
    axes[2].set(
        title="exact top-1000 search", xlabel="passages (millions)", ylabel="queries/s", xscale="log", yscale="log"
    )
    axes[2].legend(fontsize=7, loc="upper right")
    fig.suptitle(
        "First stage at growing sizes (synthetic SPLADE-like vectors; points measured, lines fitted)", fontsize=10
    )
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[125_000, 250_000, 500_000, 1_000_000])
    parser.add_argument(
        "--queries",
        type=int,
        nargs="+",
        default=[100, 80, 60, 40],
        help="queries searched at each size (fewer at large sizes)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=ROOT / "benchmarks" / "out" / "scale",
        help="scratch folder for shards and indexes (deleted size by size)",
    )
    parser.add_argument("--table", type=Path, default=ROOT / "benchmarks" / "out" / "first-stage-scale.csv")
    parser.add_argument("--figure", type=Path, default=ROOT / "benchmarks" / "out" / "first-stage-scale.png")
    parser.add_argument("--redraw", action="store_true", help="only draw --figure from --table")
    parser.add_argument("--stage", choices=list(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--n-queries", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:  # a child: one stage, its result as JSON on stdout
        print(json.dumps(STAGES[args.stage](args.work, args.size, 1, args.n_queries)))
        return
    if args.redraw:  # the figure again from a table already measured
        from cerepro.retrieval import sizing

        draw(sizing.read_table(args.table), args.figure)
        return
    if len(args.queries) != len(args.sizes):
        parser.error(f"--queries needs one count per size ({len(args.sizes)}), got {len(args.queries)}")
    started = time.perf_counter()
    rows = measure(args.sizes, args.queries, args.work)
    from cerepro.retrieval import sizing

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    facts = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": commit,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), {platform.python_version()}",
        "load_average_after": os.getloadavg()[0],
        "wall_s": round(time.perf_counter() - started, 1),
        "vocabulary": VOCAB,
        "depth": DEPTH,
        "shard_passages": SHARD,
        "postings_per_passage": [round(r["postings"] / r["passages"], 1) for r in rows],
        "terms_per_query": [round(r["query_terms"], 1) for r in rows],
        "held_out_relative_error": {
            k: (round(v, 4) if v is not None else None) for k, v in sizing.held_out_errors(rows).items()
        },
    }
    args.table.parent.mkdir(parents=True, exist_ok=True)
    write_table(rows, args.table, facts)
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    draw(rows, args.figure)
    print(json.dumps(facts, indent=1))
    for r in rows:
        print(", ".join(f"{k}={r[k]:.4g}" for k in SCALE_COLUMNS))


if __name__ == "__main__":
    main()
