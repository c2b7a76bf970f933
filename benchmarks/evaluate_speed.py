"""How long ``cerepro.evaluation.evaluate`` takes on a 1,000-query x 1,000-document run, three measures.

Random scores without ties; the qrels judge 50 documents per query on grades 0-3; the measures
are evaluate's defaults (nDCG@10, RR@10, AP) at the TREC DL threshold (rel >= 2). Two row
orders: as a run file is written (grouped by query, best score first) and shuffled (as after
concatenating shards; the slower case). Prints the wall time (first, best and median of five
calls) and the CPU time of the best call for each order. evaluate runs on one thread, so on a
quiet machine the two agree; on a shared one the wall time grows with the load average (printed)
while the CPU time does not, so the exit status (1 if over the 2-second goal of issue 5) uses the
best shuffled CPU time.

    .venv/bin/python benchmarks/evaluate_speed.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

from cerepro.evaluation.evaluate import evaluate

GOAL_S = 2.0


def synthetic(n_queries: int, n_docs: int, n_judged: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    query_ids = np.repeat([f"q{q}" for q in range(n_queries)], n_docs)
    # Distinct doc ids per query, drawn from an 8.8M-passage-sized id space.
    doc_ids = np.concatenate([rng.choice(8_841_823, size=n_docs, replace=False) for _ in range(n_queries)])
    run = pd.DataFrame({"query_id": query_ids, "doc_id": doc_ids.astype(str), "score": rng.normal(size=len(query_ids))})
    qrels = run.groupby("query_id").head(n_judged)[["query_id", "doc_id"]]
    qrels = qrels.assign(relevance=rng.choice(4, size=len(qrels), p=[0.6, 0.2, 0.15, 0.05]))
    return run, qrels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    run, qrels = synthetic(args.queries, args.docs, n_judged=50)
    orders = {
        "as written": run.sort_values(["query_id", "score"], ascending=[True, False], ignore_index=True),
        "shuffled": run.sample(frac=1.0, random_state=0, ignore_index=True),
    }
    print(
        f"run: {args.queries} queries x {args.docs} documents = {len(run):,} rows; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    best = {}
    for order, frame in orders.items():
        times, cpu = [], []
        for _ in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            result = evaluate(frame, qrels, dataset="bench", run_name="random", rel_threshold=2)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        best[order] = min(cpu)
        print(
            f"{order:>10s}: wall first {times[0]:.3f} s, best of {args.repeats} {min(times):.3f} s, "
            f"median {np.median(times):.3f} s; CPU best {min(cpu):.3f} s (goal < {GOAL_S} s)"
        )
    passed = result.contract["measures"].values()
    print("measures:", ", ".join(f"{m} {v:.4f}" for m, v in zip(passed, result.means["value"])))
    return 0 if best["shuffled"] < GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
