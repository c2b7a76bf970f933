"""Constant memory on streams: a generated teacher file and passage collection, read through the
code paths training uses, with peak RSS and throughput.

    .venv/bin/python benchmarks/stream_memory.py                 # 2M teacher lines, 1M passages
    .venv/bin/python benchmarks/stream_memory.py --lines 200000 --passages 100000   # quicker

Everything lives in a scratch folder (``--workdir``, default a temporary one): a fake
``IR_DATASETS_HOME`` holding ``msmarco-passage/collection.tsv``, train queries and qrels exactly
where ir_datasets 0.6.3 reads them, and a teacher file in the format of Hofstaetter et al.'s
(``pos_score neg_score qid pos_pid neg_pid``) in cerepro's download cache, registered with its
own md5. Then, each in a fresh process so that peaks do not mix:

1. ``docs store``: ir_datasets builds its lz4 docs store from collection.tsv (the one-off cost);
2. ``passages``: all passages streamed through ``Collection.docs`` (ir_datasets' docs_iter);
3. ``teacher``: every line of the teacher file streamed as groups by
   ``training_source("teacher-pairs", "msmarco-passage")``: record index, seeded permutation,
   query texts, passage texts from the docs store.

Peak RSS is the process's ``ru_maxrss``; "beyond start" subtracts the RSS after the imports (and,
for the teacher phase, after loading the train queries, which training holds anyway). Results go
to benchmarks/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "the of and to in is for on that by with as at from this are be or an was it which "
    "water heat river city law cell energy market protein signal music data light school"
).split()


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(workdir: Path, lines: int, passages: int, queries: int) -> dict:
    import numpy as np
    from tqdm.auto import tqdm

    rng = np.random.default_rng(0)
    base = workdir / "irds" / "msmarco-passage"
    (base / "train").mkdir(parents=True, exist_ok=True)
    (base / "irds_version.txt").write_text("v2")
    words = np.array(WORDS)
    with (base / "collection.tsv").open("w") as f:
        for start in tqdm(range(0, passages, 10_000), desc="collection.tsv", unit_scale=10_000):
            n = min(10_000, passages - start)
            picks = words[rng.integers(len(words), size=(n, 55))]
            f.writelines(f"{start + i}\t{' '.join(row)}\n" for i, row in enumerate(picks))
    with (base / "train" / "queries.tsv").open("w") as f:
        f.writelines(f"{q}\tquery {q} about {WORDS[q % len(WORDS)]}\n" for q in range(queries))
    with (base / "train" / "qrels").open("w") as f:
        f.writelines(f"{q} 0 {q % passages} 1\n" for q in range(queries))
    teacher = workdir / "cache" / "downloads" / "bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv"
    teacher.parent.mkdir(parents=True, exist_ok=True)
    with teacher.open("w") as f:
        for start in tqdm(range(0, lines, 100_000), desc="teacher file", unit_scale=100_000):
            n = min(100_000, lines - start)
            scores = rng.normal(size=(n, 2)).round(4)
            ids = np.stack(
                [rng.integers(queries, size=n), rng.integers(passages, size=n), rng.integers(passages, size=n)], axis=1
            )
            f.writelines(f"{a}\t{b}\t{q}\t{p}\t{m}\n" for (a, b), (q, p, m) in zip(scores, ids))
    return {"teacher_bytes": teacher.stat().st_size, "collection_bytes": (base / "collection.tsv").stat().st_size}


PHASES = {
    "docs store": """
from cerepro.data.datasets import load_collection
docs = load_collection("msmarco-passage/train").docs
docs.store.build()
result = {"items": docs.store.count()}
""",
    "passages": """
from cerepro.data.datasets import load_collection
n = chars = 0
for doc_id, text in load_collection("msmarco-passage/train").docs:
    n += 1
    chars += len(text)
result = {"items": n, "chars": chars}
""",
    "teacher": """
import dataclasses, itertools
from tqdm.auto import tqdm
from cerepro.data import downloads
from cerepro.data.records import RecordFile
from cerepro.data.training_data import training_source
entry = downloads.REGISTRY["hofstaetter-t2-teacher"]
downloads.REGISTRY[entry.name] = dataclasses.replace(entry, md5=downloads.md5sum(entry.path))
from cerepro.data.datasets import load_collection
load_collection("msmarco-passage/train").queries  # held by training anyway
lines = len(RecordFile(entry.path))
start_rss, start_peak = rss_mb(), peak_mb()
t0 = time.perf_counter()
n = 0
groups = training_source("teacher-pairs", "msmarco-passage", seed=0)
for group in tqdm(itertools.islice(groups, lines), total=lines, desc="teacher groups", mininterval=2):
    n += 1
result = {"items": n, "seconds_streaming": time.perf_counter() - t0, "start_rss_mb": start_rss}
""",
}


def run_phase(name: str, workdir: Path) -> dict:
    code = (
        "import json, time, resource, psutil\n"
        "def rss_mb(): return psutil.Process().memory_info().rss / 2**20\n"
        "def peak_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "import ir_datasets, pandas, numpy, cerepro.data.datasets, cerepro.data.training_data\n"
        "start_rss = rss_mb()\n"
        "t0 = time.perf_counter()\n" + PHASES[name] + "\nresult.setdefault('start_rss_mb', start_rss)\n"
        "result.update(seconds=time.perf_counter() - t0, peak_rss_mb=peak_mb())\n"
        "print('RESULT', json.dumps(result))\n"
    )
    env = {
        **os.environ,
        "IR_DATASETS_HOME": str(workdir / "irds"),
        "CEREPRO_CACHE": str(workdir / "cache"),
        "IR_DATASETS_SKIP_DISK_FREE": "true",
    }
    proc = subprocess.run([sys.executable, "-c", code], env=env, text=True, stdout=subprocess.PIPE)
    if proc.returncode:
        raise SystemExit(f"phase {name!r} failed with exit code {proc.returncode}")
    line = next(out for out in proc.stdout.splitlines() if out.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    result["beyond_start_mb"] = result["peak_rss_mb"] - result["start_rss_mb"]
    rate_seconds = result.get("seconds_streaming", result["seconds"])
    result["items_per_s"] = result["items"] / rate_seconds
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=2_000_000, help="teacher file lines")
    parser.add_argument("--passages", type=int, default=1_000_000, help="collection passages")
    parser.add_argument("--queries", type=int, default=100_000, help="train queries")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "stream_memory.json")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cerepro-stream-"))
    t0 = time.perf_counter()
    sizes = generate(workdir, args.lines, args.passages, args.queries)
    report = {
        "lines": args.lines,
        "passages": args.passages,
        "queries": args.queries,
        **sizes,
        "generate_seconds": time.perf_counter() - t0,
        "phases": {},
    }
    for name in PHASES:
        report["phases"][name] = run_phase(name, workdir)
    store = sum(p.stat().st_size for p in (workdir / "irds" / "msmarco-passage").glob("collection.tsv.pklz4/*"))
    report["docs_store_bytes"] = store
    print(
        f"\n{args.lines:,} teacher lines, {args.passages:,} passages, {args.queries:,} train queries "
        f"(docs store {store / 2**20:,.0f} MB on disk)"
    )
    print(f"{'phase':<12} {'items':>11} {'items/s':>10} {'seconds':>8} {'peak RSS MB':>12} {'beyond start MB':>16}")
    for name, r in report["phases"].items():
        print(
            f"{name:<12} {r['items']:>11,} {r['items_per_s']:>10,.0f} {r['seconds']:>8.1f} "
            f"{r['peak_rss_mb']:>12,.0f} {r['beyond_start_mb']:>16,.0f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
