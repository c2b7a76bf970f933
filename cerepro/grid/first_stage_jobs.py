"""The first stage as grid jobs: one encode and one index job per passage set, one search job per
(collection, produced run), each sized from its collection (:mod:`cerepro.retrieval.sizing`), run
in its own process before any model reads the run.

This module schedules and sizes; the retrieval itself is :mod:`cerepro.retrieval.first_stage`.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cerepro.grid.engine import train_run
from cerepro.grid.runner import RunnerError
from cerepro.grids import Grid
from cerepro.paths import params_dir
from cerepro.vocab import CandidateSource, dataset_registry


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
        run = train_run(grid, run_id) if kind == "train" else grid.evaluation(run_id).config
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
