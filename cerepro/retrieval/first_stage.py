"""The learned sparse first stage of a collection: its index, its run, and the grid's jobs.

The paper re-ranks the top-1000 of ``naver/splade-v3-distilbert`` on every test collection and
its top-100 on the NanoBEIR validation sets; like the authors (``precompute_first_stage``), the
grid computes each list once and every model re-ranks the same file. ``produce_run(dataset_id,
name)`` is that one call: ``name`` is ``<model slug>-top<depth>`` with the slug from
``params/first_stage.yaml``, and the run lands where ``load_candidates(dataset_id,
"run:<name>", depth)`` reads it. It encodes with :mod:`cerepro.retrieval.splade`, indexes with
:mod:`cerepro.retrieval.impacts` and searches with :mod:`cerepro.retrieval.search`; query
vectors are encoded at search time (seconds), not cached.

- **One writer**: a collection's index folder has one writer at a time (``cerepro.lock``, the
  project's one lock); collections sharing passages (TREC DL 2019 and 2020) may start their jobs
  together, and the second waits, then finds the index built. A killed job's lock is taken over,
  and the job run again resumes at the first missing shard.
- **Run**: written atomically as ``<name>.trec`` with ``<name>.json`` beside it (what produced
  it, its rows and checksum); ``cerepro.data.datasets`` refuses a run that no longer matches it.
- **Stages**: the grid runs them as separate jobs so that no GPU waits on a CPU:
  ``prepare_index(..., "encode")`` (the shards, on the GPU), ``prepare_index(..., "index")`` (the
  index from the shards, one CPU; a missing shard is refused, never encoded there) and
  ``produce_run(..., encode=False, threads=N)`` (queries, search and run on N CPU threads);
  ``python -m cerepro.retrieval.first_stage`` is each job's command.

Bad input fails before encoding with :class:`FirstStageError` naming the file: a collection
without passages or queries, a run name without a model of ``params/first_stage.yaml``, a run
that does not match its manifest.

This module retrieves; it never trains or re-ranks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cerepro.data.datasets import check_run_manifest, load_collection, run_manifest_path
from cerepro.data.trec import RUN_COLUMNS, write_run
from cerepro.lock import FolderLock
from cerepro.paths import atomic_path, cache_dir, file_sha256
from cerepro.retrieval.impacts import (
    DEFAULT_SHARD_SIZE,
    SCALE,
    ImpactIndex,
    build_index,
    encode_passages,
    index_key,
    load_index,
    quantise,
)
from cerepro.retrieval.search import DEFAULT_ENGINE, ENGINES, search
from cerepro.retrieval.splade import encode_texts, load_encoder
from cerepro.vocab import CandidateSource, FirstStageError, first_stage_models

log = logging.getLogger(__name__)


def run_frame(index: ImpactIndex, query_ids: Sequence[str], docs, scores) -> pd.DataFrame:
    """The search results as DataFrame[query_id, doc_id, score, rank]; score = integer / SCALE²."""
    lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
    flat_docs = np.concatenate(docs) if len(docs) else np.zeros(0, np.int64)
    flat_scores = np.concatenate(scores) if len(scores) else np.zeros(0, np.int64)
    frame = pd.DataFrame(
        {
            "query_id": np.repeat(np.asarray(query_ids, dtype=object), lengths),
            "doc_id": np.asarray(index.doc_ids, dtype=object)[flat_docs],
            "score": flat_scores / SCALE**2,
            "rank": np.concatenate([np.arange(1, n + 1) for n in lengths]) if len(lengths) else [],
        }
    )
    return frame[RUN_COLUMNS]


# ---------------------------------------------------------------------------------------------
# The whole first stage of one collection


def index_collection(
    dataset_id: str,
    model,
    tokenizer,
    identity: dict,
    *,
    max_length: int,
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_tokens: int | None = None,
    precision: str = "auto",
    progress: bool = True,
    encode: bool = True,
) -> ImpactIndex:
    """The impact index of a collection's passages for this encoder, built on first use.

    ``encode=False`` (a CPU job after the GPU's encode job) builds it from the shards on disk
    and refuses to encode a missing one: no passage is ever encoded on a job without the GPU
    the grid planned for it."""
    collection = load_collection(dataset_id)
    docs = collection.docs
    where = getattr(docs, "path", None) or dataset_id
    total = _count_passages(collection, where)
    key = index_key(identity, docs.key, max_length)
    root = cache_dir() / "splade" / key
    root.mkdir(parents=True, exist_ok=True)
    # one writer per folder: collections sharing passages (TREC DL 2019 and 2020) may start
    # their jobs together; the second waits here, then finds the index built
    with FolderLock(root, wait=True):
        if (root / "index" / "manifest.json").is_file():
            return load_index(root / "index", identity)
        return _build_collection_index(
            docs,
            total,
            root,
            model,
            tokenizer,
            identity,
            max_length=max_length,
            shard_size=shard_size,
            max_tokens=max_tokens,
            precision=precision,
            progress=progress,
            encode=encode,
        )


def encode_collection(
    dataset_id: str,
    model,
    tokenizer,
    identity: dict,
    *,
    max_length: int,
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_tokens: int | None = None,
    precision: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """The encoded passage shards of a collection (the GPU's part), written on first use; the
    index is left to a CPU job (:func:`index_collection` with ``encode=False``)."""
    collection = load_collection(dataset_id)
    docs = collection.docs
    total = _count_passages(collection, getattr(docs, "path", None) or dataset_id)
    root = cache_dir() / "splade" / index_key(identity, docs.key, max_length)
    root.mkdir(parents=True, exist_ok=True)
    with FolderLock(root, wait=True):
        return encode_passages(
            iter(docs),
            total,
            model,
            tokenizer,
            root / "shards",
            max_length=max_length,
            shard_size=shard_size,
            max_tokens=max_tokens,
            precision=precision,
            progress=progress,
        )


def _build_collection_index(
    docs,
    total,
    root,
    model,
    tokenizer,
    identity,
    *,
    max_length,
    shard_size,
    max_tokens,
    precision,
    progress,
    encode=True,
) -> ImpactIndex:
    started = time.perf_counter()
    shards = encode_passages(
        iter(docs),
        total,
        model,
        tokenizer,
        root / "shards",
        max_length=max_length,
        shard_size=shard_size,
        max_tokens=max_tokens,
        precision=precision,
        progress=progress,
        encode=encode,
    )
    encode_seconds = time.perf_counter() - started
    meta = {
        **identity,
        "docs": docs.key,
        "max_length": max_length,
        "shard_size": shard_size,
        "quantisation": f"round({SCALE} * weight) as uint16",
        "encode_seconds": round(encode_seconds, 3),
        "device": str(next(model.parameters()).device),
    }
    vocab = model.get_output_embeddings().out_features
    return build_index(shards, root / "index", meta, vocab_size=vocab)


def _count_passages(collection, where) -> int:
    if collection.irds is not None and not collection.irds.has_docs():
        raise FirstStageError(f"{where}: the collection has no passages to index")
    try:
        total = len(collection.docs)
    except (FileNotFoundError, OSError) as exc:
        raise FirstStageError(f"{where}: passages unreadable ({exc})") from None
    if total == 0:
        raise FirstStageError(f"{where}: the collection has no passages (no texts to encode)")
    return total


def produce_run(
    dataset_id: str,
    name: str,
    *,
    engine: str = DEFAULT_ENGINE,
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_tokens: int | None = None,
    precision: str = "auto",
    device: str | None = None,
    progress: bool = True,
    root: Path | None = None,
    threads: int = 1,
    encode: bool = True,
) -> Path:
    """Make ``run:<name>`` (``<model slug>-top<depth>``) of ``dataset_id`` exist; returns its path.

    A run already produced for the same passages, queries and model is kept; a run the user
    placed under that name (no manifest beside it) is used as it is, never overwritten.
    ``threads``: the search's threads (the run is the same on any number); ``encode=False``: the
    index must be built or its shards encoded already (a CPU search job after the GPU's).
    """
    produced = CandidateSource("run", name).produced(root)
    if produced is None:
        known = ", ".join(first_stage_models(root)) or "none"
        raise FirstStageError(
            f"run name {name!r} is not <model>-top<depth> with a model of params/first_stage.yaml (known: {known})"
        )
    spec, depth = produced
    collection = load_collection(dataset_id)
    folder = collection.runs_dirs[-1]
    path = folder / f"{name}.trec"
    for other in collection.runs_dirs:
        placed = other / f"{name}.trec"
        if placed.is_file() and not run_manifest_path(placed).is_file():
            log.info("%s: using the run the user placed at %s", dataset_id, placed)
            return placed
    queries = collection.queries
    if not queries:
        raise FirstStageError(f"{dataset_id}: the collection has no queries to retrieve for")
    queries_key = hashlib.sha256(json.dumps(queries, sort_keys=True).encode()).hexdigest()
    # a produced run is reused only when everything it was made from is the same: the encoder as
    # params/first_stage.yaml names it (hf_id, revision, max_length), passages, queries, engine
    encoder = {"hf_id": spec.hf_id, "revision": spec.revision, "max_length": spec.max_length}
    if path.is_file() and run_manifest_path(path).is_file():
        found = json.loads(run_manifest_path(path).read_text())
        if (
            found.get("queries") == queries_key
            and found.get("docs") == collection.docs.key
            and found.get("engine") == engine
            and found.get("encoder") == encoder
        ):
            check_run_manifest(path)
            return path
        log.info(
            "%s: %s was made from other inputs than params/first_stage.yaml now names; producing it again",
            dataset_id,
            path,
        )
    # bad passages fail here, before a model is downloaded or a GPU is used
    _count_passages(collection, getattr(collection.docs, "path", None) or dataset_id)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer, identity = load_encoder(spec.hf_id, spec.revision, device=device)
    index = index_collection(
        dataset_id,
        model,
        tokenizer,
        identity,
        max_length=spec.max_length,
        shard_size=shard_size,
        max_tokens=max_tokens,
        precision=precision,
        progress=progress,
        encode=encode,
    )
    qids = list(queries)
    started = time.perf_counter()
    q = quantise(
        encode_texts(
            model,
            tokenizer,
            [queries[i] for i in qids],
            max_length=spec.max_length,
            max_tokens=max_tokens,
            precision=precision,
            progress=progress,
        )
    )
    encode_queries = time.perf_counter() - started
    started = time.perf_counter()
    docs, scores = search(index, q, depth, engine=engine, progress=progress, threads=threads)
    search_seconds = time.perf_counter() - started
    run = run_frame(index, qids, docs, scores)
    manifest = {
        "run": name,
        "dataset": dataset_id,
        "depth": depth,
        "engine": engine,
        **identity,
        "encoder": encoder,
        "docs": collection.docs.key,
        "queries": queries_key,
        "quantisation": index.manifest["quantisation"],
        "index": str(index.folder),
        "index_bytes": index.manifest["index_bytes"],
        "postings": index.manifest["postings"],
        "docs_count": index.manifest["docs_count"],
        "encode_passages_seconds": index.manifest["encode_seconds"],
        "encode_queries_seconds": round(encode_queries, 3),
        "search_seconds": round(search_seconds, 3),
        "queries_per_second": round(len(qids) / max(search_seconds, 1e-9), 2),
        "threads": threads,
        "rows": len(run),
        "queries_without_candidates": int(sum(len(d) == 0 for d in docs)),
    }
    write_produced_run(run, path, name, manifest)
    return path


def prepare_index(
    dataset_id: str,
    name: str,
    stage: str,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_tokens: int | None = None,
    precision: str = "auto",
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """One stage of the collection's index for ``run:<name>``'s model, as the grid's jobs split
    it: ``encode`` writes the passage shards (the GPU's work), ``index`` inverts them into the
    impact index (the CPU's; a missing shard is refused, never encoded here). Collections that
    share passages share both. Returns the shards' or the index's folder."""
    produced = CandidateSource("run", name).produced()
    if produced is None:
        known = ", ".join(first_stage_models()) or "none"
        raise FirstStageError(
            f"run name {name!r} is not <model>-top<depth> with a model of params/first_stage.yaml (known: {known})"
        )
    if stage not in ("encode", "index"):
        raise FirstStageError(f"unknown index stage {stage!r}; known: encode, index")
    spec, _ = produced
    collection = load_collection(dataset_id)
    _count_passages(collection, getattr(collection.docs, "path", None) or dataset_id)
    if device is None:
        device = "cuda" if stage == "encode" and torch.cuda.is_available() else "cpu"
    model, tokenizer, identity = load_encoder(spec.hf_id, spec.revision, device=device)
    settings = dict(
        max_length=spec.max_length, shard_size=shard_size, max_tokens=max_tokens, precision=precision, progress=progress
    )
    if stage == "encode":
        return encode_collection(dataset_id, model, tokenizer, identity, **settings)[0].parent
    return index_collection(dataset_id, model, tokenizer, identity, encode=False, **settings).folder


def write_produced_run(run: pd.DataFrame, path: Path, name: str, manifest: dict) -> Path:
    """The run and its manifest (rows, sha256), both atomic: the manifest lands first, so a run
    file never exists under this name without the facts that check it."""
    with atomic_path(path) as tmp:
        write_run(run, tmp, name)
        with atomic_path(run_manifest_path(path)) as m:
            m.write_text(
                json.dumps({**manifest, "sha256": file_sha256(tmp), "rows": len(run)}, indent=1, sort_keys=True),
                encoding="utf-8",
            )
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cerepro.retrieval.first_stage DATASET RUN_NAME``: what a grid's first-stage job runs."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m cerepro.retrieval.first_stage", description=main.__doc__)
    parser.add_argument("dataset", help="ir_datasets id, local:<folder> or demo:<split>")
    parser.add_argument("name", help="<model slug>-top<depth>, e.g. splade-v3-distilbert-top1000")
    parser.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE)
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE)
    parser.add_argument(
        "--stage",
        choices=("all", "encode", "index", "search"),
        default="all",
        help="all: encode, index and search in this process; encode: the passage shards "
        "(GPU); index: the impact index from the shards (CPU); search: the run from "
        "the index (CPU), encoding nothing but the queries",
    )
    parser.add_argument("--threads", type=int, default=1, help="search threads (the run is the same)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        if args.stage in ("encode", "index"):
            path = prepare_index(args.dataset, args.name, args.stage, shard_size=args.shard_size)
        else:
            path = produce_run(
                args.dataset,
                args.name,
                engine=args.engine,
                shard_size=args.shard_size,
                threads=args.threads,
                encode=args.stage == "all",
                device="cpu" if args.stage == "search" else None,
            )
    except (FirstStageError, ValueError, FileNotFoundError) as exc:
        print(f"cerepro.retrieval.first_stage: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.dataset}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
