"""TREC and TSV files, read and written in one place: runs, qrels, id-text files and the
line-level readers every data file goes through.

- a run: ``qid Q0 docid rank score tag`` lines, written with 9 significant digits (enough to
  round-trip float32, so writing creates no new ties) and ranked in trec_eval's order
  (:func:`rank_by_score`); read into DataFrame[query_id, doc_id, score, rank];
- qrels: ``qid iteration docid relevance`` lines, the grade checked;
- id-text files: ``id<TAB>text`` (queries.tsv, docs.tsv) or BEIR-style ``corpus.jsonl``.

Malformed input fails with :class:`DataFormatError` naming the file, the line and what was
expected. Every file is written atomically (temp file + rename). This module reads and writes
files; it knows nothing of datasets, models or measures.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cerepro.paths import atomic_path

QRELS_COLUMNS = ["query_id", "doc_id", "relevance"]
RUN_COLUMNS = ["query_id", "doc_id", "score", "rank"]
# Scores as a run file holds them: 9 significant digits round-trip float32 and keep BM25's
# 4 decimals as they are.
SCORE_FORMAT = "%.9g"


class DataFormatError(ValueError):
    """A data file that cannot be read as what it claims to be: names file, line and expectation."""


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
        try:
            for number, line in enumerate(lines, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield number, line
        except UnicodeDecodeError as exc:
            raise DataFormatError(undecodable(path, exc)) from None


def undecodable(path: Path, exc: UnicodeDecodeError) -> str:
    """Where a file stops being UTF-8: 'file:line: ...', found by decoding it line by line (the
    text reader fails on a buffer, not a line)."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                return (
                    f"{path}:{number}: not UTF-8 text (byte 0x{raw[bad.start]:02x} at column "
                    f"{bad.start + 1}: {raw[max(0, bad.start - 20) : bad.start + 10]!r}); "
                    "convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8"
                )
    return f"{path}: not UTF-8 text ({exc.reason}); convert the file to UTF-8"


def split_columns(
    path, number: int, line: str, names: list[str], sep: str | None = "\t", *, maxsplit: int = -1
) -> list[str]:
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
            raise DataFormatError(f"{path}:{number}: duplicate {what} id {key!r} (first on line {first_line[key]})")
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
                f"columns 'query iteration doc relevance'?"
            )
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
        frame = pd.read_csv(
            path,
            sep=r"\s+",
            header=None,
            dtype=str,
            engine="c",
            encoding="utf-8-sig",
            names=["query_id", "q0", "doc_id", "rank", "score", "tag"],
            compression="infer",
            keep_default_na=False,
            on_bad_lines="error",
        )
        score = pd.to_numeric(frame["score"], errors="coerce")
        rank = pd.to_numeric(frame["rank"], errors="coerce")
        complete = (frame["tag"] != "").all() and not frame.isna().any().any()
        if (
            complete
            and score.notna().all()
            and rank.notna().all()
            and np.isfinite(score).all()
            and (rank == rank.round()).all()
            and not frame.duplicated(["query_id", "doc_id"]).any()
        ):
            return pd.DataFrame(
                {
                    "query_id": frame["query_id"],
                    "doc_id": frame["doc_id"],
                    "score": score.astype("float64"),
                    "rank": rank.astype("int64"),
                }
            )
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
                f"{path}:{number}: doc {did!r} appears twice for query {qid!r} (first on line {seen[qid, did]})"
            )
        seen[qid, did] = number
        rows.append((qid, did, score, rank))
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def write_run(run: pd.DataFrame, path: str | os.PathLike, tag: str) -> Path:
    """Write DataFrame[query_id, doc_id, score, rank] as ``qid Q0 docid rank score tag`` lines,
    atomically, in ``run``'s order; scores with 9 significant digits (``SCORE_FORMAT``), so no
    new ties appear in the file; exact ties are already in trec_eval's order (:func:`rank_by_score`)."""
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"a run's tag must be one non-empty word, got {tag!r}")
    lines = pd.DataFrame(
        {
            "query_id": run["query_id"].astype(str),
            "q0": "Q0",
            "doc_id": run["doc_id"].astype(str),
            "rank": run["rank"].astype(int),
            "score": run["score"].astype(np.float64),
            "tag": tag,
        }
    )
    with atomic_path(path) as tmp:
        lines.to_csv(tmp, sep=" ", header=False, index=False, float_format=SCORE_FORMAT)
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
# Ranking and passage files


def rank_by_score(run: pd.DataFrame) -> pd.DataFrame:
    """``run`` (query_id, doc_id, score) sorted by query id, score descending and, for exact ties,
    doc id descending, with ``rank`` from 1 per query.

    That tie-break is trec_eval's (``cerepro.evaluation.evaluate`` ranks the same way), so the ranks written
    in a run file are the ones every evaluator reads.
    """
    run = run.sort_values(
        ["query_id", "score", "doc_id"], ascending=[True, False, False], kind="mergesort", ignore_index=True
    )
    run["rank"] = run.groupby("query_id", sort=False).cumcount() + 1
    return run


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
