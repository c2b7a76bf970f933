"""Evaluation collections and the first-stage candidates a cross-encoder re-ranks.

A collection is addressed by one string (``load_collection(dataset_id)``):

- any ir_datasets id, e.g. ``msmarco-passage/trec-dl-2019/judged`` (queries, qrels and the docs
  store come from ir_datasets; passages are looked up lazily, never loaded whole);
- ``local:<folder>``, a user's own data: ``queries.tsv`` (qid, text), ``docs.tsv`` (docid, text)
  or BEIR-style ``corpus.jsonl``, ``qrels.txt`` (TREC qrels) and ``runs/*.trec`` (TREC runs);
- ``demo:<split>``, a split of the synthetic demo world (``cerepro.demo_world``), which is a local
  folder generated on first use.

Candidates (``load_candidates(dataset_id, source, depth)``) come from a TREC run (``run:<name>``:
a file in the folder's ``runs/`` or in ``first_stage_dir(dataset_id)``, e.g.
``cache_dir()/first-stage/<dataset id>/``, or a path; a run ``cerepro.first_stage`` produced is
checked against the manifest beside it),
from ir_datasets ``scoreddocs``, or from BM25 (``bm25``: bm25s, index cached under
``cache_dir()/bm25/`` and reused). Candidates whose passage has no text are counted and reported,
never dropped silently.

Malformed input fails with :class:`DataFormatError` naming the file, the line and what was
expected. This module reads and checks data; it never scores with a neural model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cerepro.paths import atomic_dir, atomic_path, cache_dir, project_root

log = logging.getLogger(__name__)

LOCAL_PREFIX = "local:"
DEMO_PREFIX = "demo:"
RUN_PREFIX = "run:"
QRELS_COLUMNS = ["query_id", "doc_id", "relevance"]
RUN_COLUMNS = ["query_id", "doc_id", "score", "rank"]
# Pyserini's BM25 parameters for MS MARCO passage (k1=0.9, b=0.4), Lucene's scoring variant, and
# an English Snowball stemmer with bm25s' English stop words: close to Anserini's default analyser.
BM25_PARAMS = {"k1": 0.9, "b": 0.4, "method": "lucene", "stemmer": "english", "stopwords": "en"}


def rank_by_score(run: pd.DataFrame) -> pd.DataFrame:
    """``run`` (query_id, doc_id, score) sorted by query id, score descending and, for exact ties,
    doc id descending, with ``rank`` from 1 per query.

    That tie-break is trec_eval's (``cerepro.evaluate`` ranks the same way), so the ranks written
    in a run file are the ones every evaluator reads.
    """
    run = run.sort_values(
        ["query_id", "score", "doc_id"], ascending=[True, False, False], kind="mergesort", ignore_index=True
    )
    run["rank"] = run.groupby("query_id", sort=False).cumcount() + 1
    return run


class DataFormatError(ValueError):
    """A data file that cannot be read as what it claims to be: names file, line and expectation."""


class InputError(ValueError):
    """A dataset or file named in params that does not exist: found before any job runs."""


class MissingTextError(ValueError):
    """Candidates or training rows whose passage or query has no text in the collection."""


# ---------------------------------------------------------------------------------------------
# Line-level readers shared by local folders, training files and the demo world


def open_text(path: str | os.PathLike):
    """A text file for reading; a UTF-8 byte-order mark (as Windows editors write) is dropped, so
    it never becomes part of the first id."""
    path = Path(path)
    if path.suffix == ".gz":
        import gzip

        return gzip.open(path, "rt", encoding="utf-8-sig")
    return path.open("r", encoding="utf-8-sig")


LARGE_FILE = 50 << 20  # bytes: reading a larger file shows a progress bar


def iter_lines(path: str | os.PathLike, *, desc: str | None = None) -> Iterator[tuple[int, str]]:
    """``(line number, line without its newline)`` for each non-blank line; 1-based numbers."""
    path = Path(path)
    with open_text(path) as f:
        large = desc is not None and path.stat().st_size > LARGE_FILE
        lines = tqdm(f, desc=desc, unit=" lines", unit_scale=True, leave=False) if large else f
        for number, line in enumerate(lines, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


def split_columns(path, number: int, line: str, names: list[str], sep: str | None = "\t",
                  *, maxsplit: int = -1) -> list[str]:
    """Split a line into exactly ``len(names)`` columns or fail naming the missing ones."""
    cols = line.split(sep, maxsplit) if sep else line.split()
    if len(cols) != len(names):
        what = "tab-separated" if sep == "\t" else "whitespace-separated"
        raise DataFormatError(
            f"{path}:{number}: expected {len(names)} {what} columns ({', '.join(names)}), "
            f"found {len(cols)}: {line[:120]!r}"
        )
    return cols


def parse_float(path, number: int, value: str, column: str) -> float:
    try:
        result = float(value)
    except ValueError:
        raise DataFormatError(f"{path}:{number}: {column} must be a number, found {value!r}") from None
    if not np.isfinite(result):
        raise DataFormatError(f"{path}:{number}: {column} must be finite, found {value!r}")
    return result


def parse_int(path, number: int, value: str, column: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataFormatError(f"{path}:{number}: {column} must be an integer, found {value!r}") from None


def read_id_text(path: str | os.PathLike, what: str) -> dict[str, str]:
    """``id<TAB>text`` lines (queries.tsv, docs.tsv); duplicate ids are an error."""
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in iter_lines(path, desc=f"read {Path(path).name}"):
        key, text = split_columns(path, number, line, [f"{what} id", "text"], maxsplit=1)
        if key in out:
            raise DataFormatError(
                f"{path}:{number}: duplicate {what} id {key!r} (first on line {first_line[key]})"
            )
        out[key] = text
        first_line[key] = number
    return out


def read_jsonl_texts(path: str | os.PathLike, what: str) -> dict[str, str]:
    """BEIR-style ``{"_id", "title"?, "text"}`` lines; the title, if any, precedes the text."""
    out: dict[str, str] = {}
    for number, line in iter_lines(path, desc=f"read {Path(path).name}"):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        if not isinstance(record, dict) or "_id" not in record or "text" not in record:
            raise DataFormatError(f'{path}:{number}: expected a JSON object with "_id" and "text"')
        key = str(record["_id"])
        if key in out:
            raise DataFormatError(f"{path}:{number}: duplicate {what} id {key!r}")
        title = str(record.get("title") or "").strip()
        out[key] = f"{title} {record['text']}".strip() if title else str(record["text"])
    return out


# Relevance grades a qrels file may hold. TREC's graded judgements run 0-3 (DL), 0-2 (Robust04,
# BEIR), 0-4 at most, and -2/-1 mark spam or junk (ClueWeb, Touché); anything outside is a column
# mix-up (a score, a rank or a doc id read as the grade), which would silently weigh nDCG.
MIN_RELEVANCE, MAX_RELEVANCE = -2, 4


def read_qrels(path: str | os.PathLike) -> pd.DataFrame:
    """TREC qrels ``qid iteration docid relevance`` as a DataFrame[query_id, doc_id, relevance]."""
    rows, seen = [], {}
    names = ["query id", "iteration", "doc id", "relevance"]
    for number, line in iter_lines(path, desc=f"read {Path(path).name}"):
        qid, _, did, rel = split_columns(path, number, line, names, sep=None)
        relevance = parse_int(path, number, rel, "relevance")
        if not MIN_RELEVANCE <= relevance <= MAX_RELEVANCE:
            raise DataFormatError(
                f"{path}:{number}: relevance {relevance} for query {qid!r} and doc {did!r} is outside "
                f"{MIN_RELEVANCE}..{MAX_RELEVANCE}, the grades TREC-style judgements use; are the "
                f"columns 'query iteration doc relevance'?")
        if (qid, did) in seen:
            raise DataFormatError(
                f"{path}:{number}: duplicate judgement for query {qid!r} and doc {did!r} "
                f"(first on line {seen[qid, did]})"
            )
        seen[qid, did] = number
        rows.append((qid, did, relevance))
    return pd.DataFrame(rows, columns=QRELS_COLUMNS).astype({"relevance": "int64"})


def read_run(path: str | os.PathLike) -> pd.DataFrame:
    """A TREC run ``qid Q0 docid rank score tag`` as DataFrame[query_id, doc_id, score, rank].

    Rows keep the file's order; ``rank`` is the file's rank column. A large, well-formed file takes
    pandas' C parser; anything it cannot type is scanned line by line for a precise message.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, sep=r"\s+", header=None, dtype=str, engine="c", encoding="utf-8-sig",
                            names=["query_id", "q0", "doc_id", "rank", "score", "tag"],
                            compression="infer", keep_default_na=False, on_bad_lines="error")
        score = pd.to_numeric(frame["score"], errors="coerce")
        rank = pd.to_numeric(frame["rank"], errors="coerce")
        complete = (frame["tag"] != "").all() and not frame.isna().any().any()
        if complete and score.notna().all() and rank.notna().all() and np.isfinite(score).all() \
                and (rank == rank.round()).all() \
                and not frame.duplicated(["query_id", "doc_id"]).any():
            return pd.DataFrame({"query_id": frame["query_id"], "doc_id": frame["doc_id"],
                                 "score": score.astype("float64"), "rank": rank.astype("int64")})
    except (pd.errors.ParserError, ValueError):
        pass
    return _scan_run(path)


def _scan_run(path: Path) -> pd.DataFrame:
    rows, seen = [], {}
    names = ["query id", "Q0", "doc id", "rank", "score", "run tag"]
    for number, line in iter_lines(path):
        qid, _, did, rank, score, _ = split_columns(path, number, line, names, sep=None)
        rank = parse_int(path, number, rank, "rank")
        score = parse_float(path, number, score, "score")
        if (qid, did) in seen:
            raise DataFormatError(
                f"{path}:{number}: doc {did!r} appears twice for query {qid!r} "
                f"(first on line {seen[qid, did]})"
            )
        seen[qid, did] = number
        rows.append((qid, did, score, rank))
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def write_run(run: pd.DataFrame, path: str | os.PathLike, tag: str) -> Path:
    """Write DataFrame[query_id, doc_id, score, rank] as a TREC run, atomically."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for qid, did, score, rank in run[RUN_COLUMNS].itertuples(index=False):
            f.write(f"{qid} Q0 {did} {rank} {score:.4f} {tag}\n")
    return Path(path)


def write_qrels(qrels: pd.DataFrame, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for qid, did, rel in qrels[QRELS_COLUMNS].itertuples(index=False):
            f.write(f"{qid} 0 {did} {rel}\n")
    return Path(path)


def write_id_text(texts: dict[str, str], path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for key, text in texts.items():
            f.write(f"{key}\t{text}\n")
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Passage stores: a dict for local folders, ir_datasets' docs store for everything else


class LocalDocs:
    """Passages of a local folder, read once from docs.tsv or corpus.jsonl."""

    def __init__(self, path: Path):
        self.path = path

    @cached_property
    def texts(self) -> dict[str, str]:
        if self.path.name.endswith(".jsonl"):
            return read_jsonl_texts(self.path, "doc")
        return read_id_text(self.path, "doc")

    def get_many(self, doc_ids: Iterable[str]) -> dict[str, str]:
        texts = self.texts
        return {d: texts[d] for d in doc_ids if d in texts}

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.texts.items())

    def __len__(self) -> int:
        return len(self.texts)

    @cached_property
    def key(self) -> str:
        """Content hash: folders with the same passages share one BM25 index."""
        digest = hashlib.md5()
        with self.path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()


class IrdsDocs:
    """Passages of an ir_datasets collection, looked up in its docs store (built on first use)."""

    def __init__(self, dataset, docs_id: str):
        self.dataset = dataset
        self.key = docs_id

    @cached_property
    def store(self):
        return self.dataset.docs_store()

    def get_many(self, doc_ids: Iterable[str]) -> dict[str, str]:
        return {doc.doc_id: doc.default_text() for doc in self.store.get_many_iter(list(doc_ids))}

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for doc in self.dataset.docs_iter():
            yield doc.doc_id, doc.default_text()

    def __len__(self) -> int:
        # what the files hold: the docs store counts its records (it is built on first use, and
        # re-ranking needs it anyway); ir_datasets' own docs_count() is the count the release
        # announces, whatever was downloaded
        count = getattr(self.store, "count", None)
        return count() if callable(count) else self.dataset.docs_count()


# ---------------------------------------------------------------------------------------------
# Collections


class Collection:
    """Queries, qrels, passage texts and first-stage runs of one dataset id (loaded lazily)."""

    def __init__(self, id: str, *, queries: Callable[[], dict[str, str]],
                 qrels: Callable[[], pd.DataFrame], docs, runs_dirs: list[Path],
                 irds=None):
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

    def doc_text(self, doc_ids: Iterable[str]) -> list[str]:
        """Texts in the order of ``doc_ids``; any id without text raises MissingTextError."""
        doc_ids = list(doc_ids)
        found = self.docs.get_many(dict.fromkeys(doc_ids))
        missing = [d for d in dict.fromkeys(doc_ids) if d not in found]
        if missing:
            raise MissingTextError(
                f"{self.id}: {len(missing)} of {len(set(doc_ids))} doc ids have no text, "
                f"e.g. {missing[:5]}"
            )
        return [found[d] for d in doc_ids]

    def has_text(self, doc_ids: Iterable[str], *, chunk: int = 100_000) -> set[str]:
        """The subset of ``doc_ids`` with a text in the collection."""
        unique = list(dict.fromkeys(doc_ids))
        found: set[str] = set()
        for start in tqdm(range(0, len(unique), chunk), desc="look up candidate texts",
                          leave=False, disable=len(unique) <= chunk):
            found.update(self.docs.get_many(unique[start:start + chunk]))
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
        for names in (["queries.tsv", "queries.jsonl"], ["docs.tsv", "corpus.jsonl"]):
            if not any((folder / n).is_file() for n in names):
                raise InputError(f"{key}: {dataset_id!r}: {folder} has none of {', '.join(names)}")
        return
    if dataset_id.startswith(DEMO_PREFIX):
        from cerepro.demo_world import SPLITS

        if dataset_id[len(DEMO_PREFIX):] not in SPLITS:
            raise InputError(f"{key}: {dataset_id!r}: unknown demo split; splits: {', '.join(SPLITS)}")
        return
    import ir_datasets

    if dataset_id not in ir_datasets.registry:
        import difflib

        close = difflib.get_close_matches(dataset_id, list(ir_datasets.registry), n=3, cutoff=0.8)
        raise InputError(f"{key}: {dataset_id!r} is not an ir_datasets id"
                         + (f"; did you mean {' or '.join(map(repr, close))}?" if close else
                            "; see params/datasets.yaml, or use 'demo:<split>' or 'local:<folder>'"))


def first_stage_dir(dataset_id: str) -> Path:
    """Where first-stage runs of a collection live: users' files for an ir_datasets id (e.g.
    ``cache/first-stage/msmarco-passage/trec-dl-2019/judged/``) and the runs
    ``cerepro.first_stage`` produces (``<model>-top<depth>.trec``). A ``local:`` folder gets one
    keyed by its resolved path, a ``demo:`` split one by its name."""
    if dataset_id.startswith(LOCAL_PREFIX):
        folder = str(local_folder(dataset_id).resolve())
        return cache_dir() / "first-stage" / "local" / hashlib.sha256(folder.encode()).hexdigest()[:16]
    if dataset_id.startswith(DEMO_PREFIX):
        return cache_dir() / "first-stage" / "demo" / dataset_id[len(DEMO_PREFIX):]
    return cache_dir() / "first-stage" / dataset_id


def run_manifest_path(run_path: str | os.PathLike) -> Path:
    """The manifest ``cerepro.first_stage`` writes beside a run it produced (``<name>.json``)."""
    return Path(run_path).with_suffix(".json")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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
            "changed; delete both files to recompute it")


def load_collection(dataset_id: str) -> Collection:
    if dataset_id.startswith(LOCAL_PREFIX):
        return load_local(local_folder(dataset_id), dataset_id)
    if dataset_id.startswith(DEMO_PREFIX):
        from cerepro import demo_world

        split = dataset_id[len(DEMO_PREFIX):]
        return load_local(demo_world.split_folder(split), dataset_id)
    return load_irds(dataset_id)


def local_folder(dataset_id: str) -> Path:
    """The folder of ``local:<folder>``: absolute, or relative to the working directory, else to
    the project root (notebooks run from ``notebooks/`` see the same folders as the shell)."""
    path = Path(dataset_id[len(LOCAL_PREFIX):]).expanduser()
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
                {"query_id": str, "doc_id": str, "relevance": "int64"})
        table = read_qrels(qrels_path)
        _check_qrels_queries(table, collection.queries, qrels_path)
        return table

    # the folder's own runs first: a user's file wins over a produced one of the same name
    collection = Collection(dataset_id, queries=queries, qrels=qrels, docs=LocalDocs(docs_path),
                            runs_dirs=[folder / "runs", first_stage_dir(dataset_id)])
    return collection


def _first_existing(folder: Path, names: list[str], dataset_id: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{dataset_id}: {folder} has none of {', '.join(names)}")


def _check_qrels_queries(qrels: pd.DataFrame, queries: dict[str, str], path: Path) -> None:
    unknown = set(qrels["query_id"]) - set(queries)
    if unknown:
        # the first offending line: rescanning the file is cheap next to a failed run
        number, first = next((n, line.split()[0]) for n, line in iter_lines(path)
                             if line.split()[0] in unknown)
        unknown = sorted(unknown)
        raise DataFormatError(
            f"{path}:{number}: qrels for query {first!r}, which is not in the queries file; "
            f"{len(unknown)} such queries: {unknown[:10]}"
        )


def load_irds(dataset_id: str) -> Collection:
    import ir_datasets

    try:
        dataset = ir_datasets.load(dataset_id)
    except KeyError:
        raise KeyError(f"{dataset_id!r} is neither an ir_datasets id, local:<folder> nor demo:<split>") from None

    def queries() -> dict[str, str]:
        return {q.query_id: q.default_text() for q in tqdm(
            dataset.queries_iter(), desc=f"queries {dataset_id}", leave=False, unit=" queries")}

    def qrels() -> pd.DataFrame:
        table = pd.DataFrame(((q.query_id, q.doc_id, q.relevance) for q in dataset.qrels_iter()),
                             columns=QRELS_COLUMNS)
        return table.astype({"relevance": "int64"})

    docs_id = ir_datasets.docs_parent_id(dataset_id)
    return Collection(dataset_id, queries=queries, qrels=qrels, docs=IrdsDocs(dataset, docs_id),
                      runs_dirs=[first_stage_dir(dataset_id)], irds=dataset)


# ---------------------------------------------------------------------------------------------
# Candidates


def load_candidates(dataset_id: str, source: str, depth: int, *,
                    missing_text: str = "error") -> pd.DataFrame:
    """The top-``depth`` candidates per query, DataFrame[query_id, doc_id, score, rank].

    ``source``: ``run:<name or path>``, ``scoreddocs`` or ``bm25``. Ranks are 1..n by descending
    score (ties keep the file's rank order). Every query of the collection must have candidates.
    Candidates without a passage text raise MissingTextError (``missing_text="error"``), or are
    dropped with a warning and counted in ``run.attrs["missing_text"]`` (``"drop"``).
    """
    if depth < 1:
        raise ValueError(f"depth must be positive, got {depth}")
    if missing_text not in ("error", "drop"):
        raise ValueError(f"missing_text must be 'error' or 'drop', got {missing_text!r}")
    collection = load_collection(dataset_id)
    if source.startswith(RUN_PREFIX):
        path = collection.run_path(source[len(RUN_PREFIX):])
        check_run_manifest(path)
        run, origin = read_run(path), str(path)
    elif source == "scoreddocs":
        run, origin = _scoreddocs(collection), f"{dataset_id} scoreddocs"
    elif source == "bm25":
        run, origin = bm25_run(collection, depth), f"bm25 over {dataset_id}"
    else:
        raise ValueError(f"unknown candidate source {source!r}: use run:<name>, scoreddocs or bm25")
    run = top_k(run, depth)
    run = _restrict_to_queries(run, collection, origin)
    return _check_texts(run, collection, origin, missing_text)


def top_k(run: pd.DataFrame, depth: int) -> pd.DataFrame:
    """Keep the ``depth`` best-scored rows per query; re-number ranks from 1."""
    run = run.assign(_order=np.arange(len(run)))
    run = run.sort_values(["query_id", "score", "rank", "_order"], ascending=[True, False, True, True],
                          kind="stable")
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
    message = (f"{origin}: {n} of {len(run)} candidates ({run.loc[lacking, 'doc_id'].nunique()} "
               f"distinct docs, {run.loc[lacking, 'query_id'].nunique()} queries) have no passage "
               f"text in {collection.id}, e.g. " + ", ".join(f"query {q} doc {d}" for q, d in examples))
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
    rows = ((s.query_id, s.doc_id, s.score) for s in tqdm(
        collection.irds.scoreddocs_iter(), desc=f"scoreddocs {collection.id}", leave=False, unit=" rows"))
    run = pd.DataFrame(rows, columns=["query_id", "doc_id", "score"])
    run["rank"] = run.groupby("query_id", sort=False).cumcount() + 1
    return run


# ---------------------------------------------------------------------------------------------
# BM25 with bm25s, the index cached on disk per passage set


def _tokenizer():
    import snowballstemmer
    from bm25s.tokenization import Tokenizer

    return Tokenizer(stopwords=BM25_PARAMS["stopwords"],
                     stemmer=snowballstemmer.stemmer(BM25_PARAMS["stemmer"]))


def bm25_index_dir(collection: Collection) -> Path:
    import bm25s

    settings = json.dumps({**BM25_PARAMS, "docs": collection.docs.key, "bm25s": bm25s.__version__},
                          sort_keys=True)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", collection.docs.key if isinstance(collection.docs, IrdsDocs)
                  else collection.id.split("/")[-1])[:60]
    return cache_dir() / "bm25" / f"{slug}-{hashlib.md5(settings.encode()).hexdigest()[:12]}"


def bm25_index(collection: Collection):
    """``(retriever, tokenizer, doc_ids)``, built once per passage set and reused from disk."""
    import bm25s

    folder = bm25_index_dir(collection)
    if not (folder / "doc_ids.json").is_file():
        _build_bm25_index(collection, folder)
    retriever = bm25s.BM25.load(folder, show_progress=False)
    tokenizer = _tokenizer()
    tokenizer.load_vocab(folder)
    tokenizer.load_stopwords(folder)
    doc_ids = json.loads((folder / "doc_ids.json").read_text(encoding="utf-8"))
    return retriever, tokenizer, doc_ids


def _build_bm25_index(collection: Collection, folder: Path) -> None:
    import bm25s

    doc_ids, texts = [], []
    for doc_id, text in tqdm(collection.docs, desc=f"bm25 index: read {collection.id}",
                             total=len(collection.docs), unit=" docs", disable=len(collection.docs) < 100_000):
        doc_ids.append(doc_id)
        texts.append(text)
    tokenizer = _tokenizer()
    large = len(texts) > 100_000
    token_ids = tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=large)
    del texts
    retriever = bm25s.BM25(k1=BM25_PARAMS["k1"], b=BM25_PARAMS["b"], method=BM25_PARAMS["method"])
    retriever.index((token_ids, tokenizer.get_vocab_dict()), show_progress=large)
    # build beside the target and rename: a reader never sees half an index
    with atomic_dir(folder, "doc_ids.json") as tmp:
        retriever.save(tmp, show_progress=False)
        tokenizer.save_vocab(tmp)
        tokenizer.save_stopwords(tmp)
        (tmp / "doc_ids.json").write_text(json.dumps(doc_ids), encoding="utf-8")


def bm25_run(collection: Collection, depth: int, queries: dict[str, str] | None = None) -> pd.DataFrame:
    """BM25 top-``depth`` of each query over the collection's passages; zero scores are dropped."""
    retriever, tokenizer, doc_ids = bm25_index(collection)
    queries = collection.queries if queries is None else queries
    qids = list(queries)
    token_ids = tokenizer.tokenize([queries[q] for q in qids], update_vocab=False,
                                   return_as="ids", show_progress=False)
    k = min(depth, len(doc_ids))
    docs, scores = retriever.retrieve(token_ids, k=k, show_progress=len(qids) > 1000)
    frame = pd.DataFrame({
        "query_id": np.repeat(qids, k),
        "doc_id": np.asarray(doc_ids, dtype=object)[docs.ravel()],
        "score": scores.ravel().astype("float64").round(4),
    })
    frame = rank_by_score(frame[frame["score"] > 0])  # independent of bm25s' internal order
    order = {q: i for i, q in enumerate(qids)}
    frame = frame.sort_values("query_id", key=lambda s: s.map(order), kind="stable")
    return frame[RUN_COLUMNS].reset_index(drop=True)
