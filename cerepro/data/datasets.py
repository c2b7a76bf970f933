"""Evaluation collections and the first-stage candidates a cross-encoder re-ranks.

A collection is addressed by one string (``load_collection(dataset_id)``):

- any ir_datasets id, e.g. ``msmarco-passage/trec-dl-2019/judged`` (queries, qrels and the docs
  store come from ir_datasets; passages are looked up lazily, never loaded whole);
- ``local:<folder>``, a user's own data: ``queries.tsv`` (qid, text), ``docs.tsv`` (docid, text)
  or BEIR-style ``corpus.jsonl``, ``qrels.txt`` (TREC qrels) and ``runs/*.trec`` (TREC runs);
- ``demo:<split>``, a split of the synthetic demo world (``cerepro.data.demo_world``), which is a local
  folder generated on first use.

Candidates (``load_candidates(dataset_id, source, depth)``) come from a TREC run (``run:<name>``:
a file in the folder's ``runs/`` or in ``first_stage_dir(dataset_id)``, e.g.
``cache_dir()/first-stage/<dataset id>/``, or a path; a run ``cerepro.retrieval.first_stage`` produced is
checked against the manifest beside it),
from ir_datasets ``scoreddocs``, or from BM25 (``bm25``: bm25s, index cached under
``cache_dir()/bm25/`` and reused, :mod:`cerepro.data.bm25`). Candidates whose passage has no text are counted and reported,
never dropped silently.

Files are read by :mod:`cerepro.data.trec`; malformed input fails with its ``DataFormatError`` naming
the file, the line and what was expected. This module reads and checks data; it never scores with
a neural model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cerepro.data.bm25 import bm25_run
from cerepro.data.irds import IrdsDocs
from cerepro.data.trec import (
    QRELS_COLUMNS,
    RUN_COLUMNS,
    DataFormatError,
    LocalDocs,
    iter_lines,
    read_id_text,
    read_jsonl_texts,
    read_qrels,
    read_run,
)
from cerepro.paths import cache_dir, file_sha256, project_root
from cerepro.vocab import DEMO_PREFIX, LOCAL_PREFIX, CandidateSource

log = logging.getLogger(__name__)


class InputError(ValueError):
    """A dataset or file named in params that does not exist: found before any job runs."""


class MissingTextError(ValueError):
    """Candidates or training rows whose passage or query has no text in the collection."""


# ---------------------------------------------------------------------------------------------
# Collections


class Collection:
    """Queries, qrels, passage texts and first-stage runs of one dataset id (loaded lazily)."""

    def __init__(
        self,
        id: str,
        *,
        queries: Callable[[], dict[str, str]],
        qrels: Callable[[], pd.DataFrame],
        docs,
        runs_dirs: list[Path],
        irds=None,
    ):
        self.id = id
        self._load_queries = queries
        self._load_qrels = qrels
        self.docs = docs
        self.runs_dirs = runs_dirs
        self.irds = irds

    def __repr__(self) -> str:
        return f"Collection({self.id!r})"

    @cached_property
    def queries(self) -> dict[str, str]:
        return self._load_queries()

    @cached_property
    def qrels(self) -> pd.DataFrame:
        return self._load_qrels()

    def doc_text(self, doc_ids: str | Iterable[str]) -> str | list[str]:
        """One passage's text for one id (``doc_text("p00632")``), else the texts in the order of
        ``doc_ids``; any id without text raises MissingTextError. (A string is one id, never
        iterated letter by letter.)"""
        if isinstance(doc_ids, str):
            return self.doc_text([doc_ids])[0]
        doc_ids = list(doc_ids)
        found = self.docs.get_many(dict.fromkeys(doc_ids))
        missing = [d for d in dict.fromkeys(doc_ids) if d not in found]
        if missing:
            raise MissingTextError(
                f"{self.id}: {len(missing)} of {len(set(doc_ids))} doc ids have no text, e.g. {missing[:5]}"
            )
        return [found[d] for d in doc_ids]

    def has_text(self, doc_ids: Iterable[str], *, chunk: int = 100_000) -> set[str]:
        """The subset of ``doc_ids`` with a text in the collection."""
        unique = list(dict.fromkeys(doc_ids))
        found: set[str] = set()
        for start in tqdm(
            range(0, len(unique), chunk), desc="look up candidate texts", leave=False, disable=len(unique) <= chunk
        ):
            found.update(self.docs.get_many(unique[start : start + chunk]))
        return found

    def run_names(self) -> list[str]:
        """Names usable as ``run:<name>``: the ``*.trec`` / ``*.run`` files of the runs folders."""
        names = set()
        for folder in self.runs_dirs:
            if folder.is_dir():
                names.update(p.stem for p in folder.iterdir() if p.suffix in (".trec", ".run"))
        return sorted(names)

    def run_path(self, name: str) -> Path:
        for folder in self.runs_dirs:
            for suffix in (".trec", ".run", ""):
                candidate = folder / f"{name}{suffix}"
                if candidate.is_file():
                    return candidate
        path = Path(name).expanduser()
        if path.is_file():
            return path
        folders = ", ".join(str(f) for f in self.runs_dirs)
        raise FileNotFoundError(
            f"{self.id}: no run {name!r} in {folders} and no file {path}; "
            f"known runs: {', '.join(self.run_names()) or 'none'}"
        )


def check_dataset(dataset_id: str, key: str = "dataset") -> None:
    """Refuse, without reading it, a dataset that cannot load: an unknown ir_datasets id or demo
    split, a ``local:`` folder that is missing or lacks its queries or docs file. ``key`` (the
    params key that named it) goes into the message."""
    if dataset_id.startswith(LOCAL_PREFIX):
        folder = local_folder(dataset_id)
        if not folder.is_dir():
            raise InputError(f"{key}: {dataset_id!r}: no folder {folder}")
        for names in (["queries.tsv", "queries.jsonl"], ["docs.tsv", "corpus.jsonl"], ["qrels.txt"]):
            if not any((folder / n).is_file() for n in names):
                why = " (TREC qrels: an evaluation measures against them)" if names == ["qrels.txt"] else ""
                raise InputError(f"{key}: {dataset_id!r}: {folder} has none of {', '.join(names)}{why}")
        return
    if dataset_id.startswith(DEMO_PREFIX):
        from cerepro.data.demo_world import SPLITS

        if dataset_id[len(DEMO_PREFIX) :] not in SPLITS:
            raise InputError(f"{key}: {dataset_id!r}: unknown demo split; splits: {', '.join(SPLITS)}")
        return
    import ir_datasets

    if dataset_id not in ir_datasets.registry:
        import difflib

        close = difflib.get_close_matches(dataset_id, list(ir_datasets.registry), n=3, cutoff=0.8)
        raise InputError(
            f"{key}: {dataset_id!r} is not an ir_datasets id"
            + (
                f"; did you mean {' or '.join(map(repr, close))}?"
                if close
                else "; see params/datasets.yaml, or use 'demo:<split>' or 'local:<folder>'"
            )
        )


def first_stage_dir(dataset_id: str) -> Path:
    """Where first-stage runs of a collection live: users' files for an ir_datasets id (e.g.
    ``cache/first-stage/msmarco-passage/trec-dl-2019/judged/``) and the runs
    ``cerepro.retrieval.first_stage`` produces (``<model>-top<depth>.trec``). A ``local:`` folder gets one
    keyed by its resolved path, a ``demo:`` split one by its name."""
    if dataset_id.startswith(LOCAL_PREFIX):
        folder = str(local_folder(dataset_id).resolve())
        return cache_dir() / "first-stage" / "local" / hashlib.sha256(folder.encode()).hexdigest()[:16]
    if dataset_id.startswith(DEMO_PREFIX):
        return cache_dir() / "first-stage" / "demo" / dataset_id[len(DEMO_PREFIX) :]
    return cache_dir() / "first-stage" / dataset_id


def run_manifest_path(run_path: str | os.PathLike) -> Path:
    """The manifest ``cerepro.retrieval.first_stage`` writes beside a run it produced (``<name>.json``)."""
    return Path(run_path).with_suffix(".json")


def check_run_manifest(run_path: str | os.PathLike) -> None:
    """A produced run must still be the bytes its manifest describes (not half-written, not
    truncated, not edited); a run without a manifest (placed by a user) is not checked."""
    manifest_path = run_manifest_path(run_path)
    if not manifest_path.is_file():
        return
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{manifest_path}: unreadable run manifest ({exc.msg})") from None
    if file_sha256(run_path) != manifest.get("sha256"):
        raise DataFormatError(
            f"{run_path}: the run does not match its manifest {manifest_path.name} (rows "
            f"{manifest.get('rows')}, sha256 {str(manifest.get('sha256'))[:12]}...): half-written or "
            "changed; delete both files to recompute it"
        )


def load_collection(dataset_id: str, document_text: str = "ir-datasets") -> Collection:
    """The collection of ``dataset_id``; ``document_text``: how an ir_datasets collection's
    documents are read (:func:`document_text`; local and demo collections have one text)."""
    if dataset_id.startswith(LOCAL_PREFIX):
        return load_local(local_folder(dataset_id), dataset_id)
    if dataset_id.startswith(DEMO_PREFIX):
        from cerepro.data import demo_world

        split = dataset_id[len(DEMO_PREFIX) :]
        return load_local(demo_world.split_folder(split), dataset_id)
    return load_irds(dataset_id, document_text)


def local_folder(dataset_id: str) -> Path:
    """The folder of ``local:<folder>``: absolute, or relative to the working directory, else to
    the project root (notebooks run from ``notebooks/`` see the same folders as the shell)."""
    path = Path(dataset_id[len(LOCAL_PREFIX) :]).expanduser()
    if path.is_absolute() or path.is_dir():
        return path
    return project_root() / path


def load_local(folder: Path, dataset_id: str | None = None) -> Collection:
    dataset_id = dataset_id or f"{LOCAL_PREFIX}{folder}"
    if not folder.is_dir():
        raise FileNotFoundError(f"{dataset_id}: no folder {folder}")
    queries_path = _first_existing(folder, ["queries.tsv", "queries.jsonl"], dataset_id)
    docs_path = _first_existing(folder, ["docs.tsv", "corpus.jsonl"], dataset_id)
    qrels_path = folder / "qrels.txt"

    def queries() -> dict[str, str]:
        if queries_path.suffix == ".jsonl":
            return read_jsonl_texts(queries_path, "query")
        return read_id_text(queries_path, "query")

    collection: Collection

    def qrels() -> pd.DataFrame:
        if not qrels_path.is_file():
            return pd.DataFrame({"query_id": [], "doc_id": [], "relevance": []}).astype(
                {"query_id": str, "doc_id": str, "relevance": "int64"}
            )
        table = read_qrels(qrels_path)
        _check_qrels_queries(table, collection.queries, qrels_path)
        return table

    # the folder's own runs first: a user's file wins over a produced one of the same name
    collection = Collection(
        dataset_id,
        queries=queries,
        qrels=qrels,
        docs=LocalDocs(docs_path),
        runs_dirs=[folder / "runs", first_stage_dir(dataset_id)],
    )
    return collection


def collection_facts(collection: Collection, run: pd.DataFrame, texts: dict[str, str] | None = None) -> dict:
    """What the collection says about an evaluation, for its metric contract (and the warnings
    :func:`cerepro.evaluation.evaluate.result_warnings` words): judged documents that are not in the
    collection, the run's queries with empty text, and (given the candidates' ``texts``) empty
    passages among the candidates."""
    judged = list(dict.fromkeys(collection.qrels["doc_id"]))
    present = collection.has_text(judged) if judged else set()
    absent = [d for d in judged if d not in present]
    queries = collection.queries
    empty_queries = [q for q in dict.fromkeys(run["query_id"]) if not str(queries.get(q, "")).strip()]
    empty_passages = [d for d, t in (texts or {}).items() if not str(t).strip()]
    facts = {
        "judged_docs_absent": len(absent),
        "empty_queries": len(empty_queries),
        "empty_passages": len(empty_passages),
    }
    for key, ids in (
        ("judged_docs_absent", absent),
        ("empty_queries", empty_queries),
        ("empty_passages", empty_passages),
    ):
        if ids:
            facts[f"{key}_examples"] = ids[:5]
    return facts


def _first_existing(folder: Path, names: list[str], dataset_id: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{dataset_id}: {folder} has none of {', '.join(names)}")


def _check_qrels_queries(qrels: pd.DataFrame, queries: dict[str, str], path: Path) -> None:
    unknown = set(qrels["query_id"]) - set(queries)
    if unknown:
        # the first offending line: rescanning the file is cheap next to a failed run
        number, first = next((n, line.split()[0]) for n, line in iter_lines(path) if line.split()[0] in unknown)
        unknown = sorted(unknown)
        raise DataFormatError(
            f"{path}:{number}: qrels for query {first!r}, which is not in the queries file; "
            f"{len(unknown)} such queries: {unknown[:10]}"
        )


def load_irds(dataset_id: str, document_text: str = "ir-datasets") -> Collection:
    import ir_datasets

    try:
        dataset = ir_datasets.load(dataset_id)
    except KeyError:
        raise KeyError(f"{dataset_id!r} is neither an ir_datasets id, local:<folder> nor demo:<split>") from None

    def queries() -> dict[str, str]:
        return {
            q.query_id: q.default_text()
            for q in tqdm(dataset.queries_iter(), desc=f"queries {dataset_id}", leave=False, unit=" queries")
        }

    def qrels() -> pd.DataFrame:
        table = pd.DataFrame(((q.query_id, q.doc_id, q.relevance) for q in dataset.qrels_iter()), columns=QRELS_COLUMNS)
        return table.astype({"relevance": "int64"})

    docs_id = ir_datasets.docs_parent_id(dataset_id)
    return Collection(
        dataset_id,
        queries=queries,
        qrels=qrels,
        docs=IrdsDocs(dataset, docs_id, document_text),
        runs_dirs=[first_stage_dir(dataset_id)],
        irds=dataset,
    )


# ---------------------------------------------------------------------------------------------
# Candidates


def load_candidates(dataset_id: str, source: str, depth: int, *, missing_text: str = "error") -> pd.DataFrame:
    """The top-``depth`` candidates per query, DataFrame[query_id, doc_id, score, rank].

    ``source``: a :class:`cerepro.vocab.CandidateSource` or its string (``run:<name or path>``,
    ``scoreddocs``, ``bm25``); an unknown one raises ValueError naming it. Ranks are 1..n by descending
    score (ties keep the file's rank order). Every query of the collection must have candidates.
    Candidates without a passage text raise MissingTextError (``missing_text="error"``), or are
    dropped with a warning and counted in ``run.attrs["missing_text"]`` (``"drop"``).
    """
    if depth < 1:
        raise ValueError(f"depth must be positive, got {depth}")
    if missing_text not in ("error", "drop"):
        raise ValueError(f"missing_text must be 'error' or 'drop', got {missing_text!r}")
    candidates = source if isinstance(source, CandidateSource) else CandidateSource.parse(source)
    collection = load_collection(dataset_id)
    if candidates.kind == "run":
        path = collection.run_path(candidates.run)
        check_run_manifest(path)
        run, origin = read_run(path), str(path)
    elif candidates.kind == "scoreddocs":
        run, origin = _scoreddocs(collection), f"{dataset_id} scoreddocs"
    else:
        run, origin = (
            bm25_run(collection.docs, collection.queries, depth, name=collection.id),
            f"bm25 over {dataset_id}",
        )
    run = top_k(run, depth)
    run = _restrict_to_queries(run, collection, origin)
    return _check_texts(run, collection, origin, missing_text)


def top_k(run: pd.DataFrame, depth: int) -> pd.DataFrame:
    """Keep the ``depth`` best-scored rows per query; re-number ranks from 1."""
    run = run.assign(_order=np.arange(len(run)))
    run = run.sort_values(["query_id", "score", "rank", "_order"], ascending=[True, False, True, True], kind="stable")
    run = run.groupby("query_id", sort=False).head(depth).copy()
    run["rank"] = run.groupby("query_id", sort=False).cumcount() + 1
    return run[RUN_COLUMNS].reset_index(drop=True)


def _restrict_to_queries(run: pd.DataFrame, collection: Collection, origin: str) -> pd.DataFrame:
    queries = collection.queries
    outside = run["query_id"].nunique() - run.loc[run["query_id"].isin(queries.keys()), "query_id"].nunique()
    if outside:
        log.info("%s: ignoring %d queries that are not in %s", origin, outside, collection.id)
        run = run[run["query_id"].isin(queries.keys())].reset_index(drop=True)
    present = set(run["query_id"])
    empty = [q for q in queries if q not in present]
    if empty:
        raise DataFormatError(
            f"{origin}: empty run for {len(empty)} of {len(queries)} queries of {collection.id}, "
            f"e.g. query {empty[0]!r} ({queries[empty[0]][:60]!r}); every query needs candidates"
        )
    return run


def _check_texts(run: pd.DataFrame, collection: Collection, origin: str, missing_text: str) -> pd.DataFrame:
    found = collection.has_text(run["doc_id"])
    lacking = ~run["doc_id"].isin(found)
    n = int(lacking.sum())
    run.attrs["missing_text"] = n
    if not n:
        return run
    examples = run.loc[lacking, ["query_id", "doc_id"]].head(5).itertuples(index=False)
    message = (
        f"{origin}: {n} of {len(run)} candidates ({run.loc[lacking, 'doc_id'].nunique()} "
        f"distinct docs, {run.loc[lacking, 'query_id'].nunique()} queries) have no passage "
        f"text in {collection.id}, e.g. " + ", ".join(f"query {q} doc {d}" for q, d in examples)
    )
    if missing_text == "error":
        raise MissingTextError(message + "; pass missing_text='drop' to drop and count them")
    log.warning("%s; dropped", message)
    kept = run[~lacking].copy()
    kept["rank"] = kept.groupby("query_id", sort=False).cumcount() + 1
    kept.attrs["missing_text"] = n
    return kept.reset_index(drop=True)


def _scoreddocs(collection: Collection) -> pd.DataFrame:
    if collection.irds is None or not collection.irds.has_scoreddocs():
        raise ValueError(f"{collection.id} has no ir_datasets scoreddocs; use run:<name> or bm25")
    rows = (
        (s.query_id, s.doc_id, s.score)
        for s in tqdm(collection.irds.scoreddocs_iter(), desc=f"scoreddocs {collection.id}", leave=False, unit=" rows")
    )
    run = pd.DataFrame(rows, columns=["query_id", "doc_id", "score"])
    run["rank"] = run.groupby("query_id", sort=False).cumcount() + 1
    return run
