"""A run and its qrels as :func:`cerepro.evaluation.evaluate.evaluate` reads them: checked
arrays, nested ``{query_id: {doc_id: value}}`` dicts, and the run in trec_eval's order.

A run or qrels comes as a DataFrame or a TREC file; :func:`read_columns` gives its three columns
as arrays (ids as strings, values finite numbers, grades integers) and refuses anything else
naming the row. :func:`in_trec_order` sorts a run by query, then score descending, then doc_id
descending (trec_eval's tie rule), and where scores tie replaces them by the rank, so that no
engine breaks the ties another way. A (query, doc) pair listed twice is refused, never silently kept once.

This module reads and orders; it computes no measure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd


def read_columns(source, columns: tuple[str, ...], what: str) -> tuple[tuple[np.ndarray, ...], str]:
    """The three ``columns`` as arrays (ids as str objects, the value as a number), and where
    they came from. Arrays, not a DataFrame: pandas' str columns are slow to iterate."""
    if isinstance(source, (str, os.PathLike)):
        # TREC run: qid Q0 docid rank score tag; TREC qrels: qid iteration docid relevance.
        usecols = [0, 2, 4] if what == "run" else [0, 2, 3]
        frame = pd.read_csv(source, sep=r"\s+", header=None, usecols=usecols, dtype={0: str, 2: str})
        frame.columns = list(columns)
        origin = os.fspath(source)
    elif isinstance(source, pd.DataFrame):
        absent = [c for c in columns if c not in source.columns]
        if absent:
            raise ValueError(f"{what} DataFrame lacks columns {absent} (has {list(source.columns)})")
        frame = source[list(columns)]
        origin = "DataFrame"
    else:
        raise TypeError(f"{what} must be a pandas DataFrame or a TREC file path, got {type(source).__name__}")
    if frame.empty:
        raise ValueError(f"{what} is empty")
    value = columns[2]
    values = pd.to_numeric(frame[value], errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        bad = frame[value].to_numpy(dtype=object)[row]
        bad = bad.item() if isinstance(bad, np.generic) else bad
        where = f"query {frame[columns[0]].iloc[row]!r}, doc {frame[columns[1]].iloc[row]!r}"
        raise ValueError(f"{what} has a non-numeric or non-finite {value}: {bad!r} ({where})")
    if what == "qrels":
        if (values != np.round(values)).any():
            raise ValueError("qrels relevance must be integer grades")
        values = values.astype(np.int64)
    out = []
    for column in columns[:2]:  # ids are strings for every engine: 1 and "1" are the same query
        ids = frame[column].to_numpy(dtype=object)
        out.append(ids if pd.api.types.infer_dtype(ids, skipna=False) == "string" else ids.astype(str).astype(object))
    return (*out, values), origin


def check_overlap(run_queries: set, qrels_queries: set) -> None:
    if run_queries & qrels_queries:
        return
    raise ValueError(
        f"run and qrels share no query id: the run has {len(run_queries)} queries "
        f"({examples(sorted(run_queries))}), the qrels {len(qrels_queries)} "
        f"({examples(sorted(qrels_queries))}); wrong dataset or id format?"
    )


def examples(ids, n: int = 5) -> str:
    shown = ", ".join(repr(i) for i in list(ids)[:n])
    return f"e.g. {shown}" + (", ..." if len(ids) > n else "")


def judged(query_ids, docs, qrels: dict) -> np.ndarray:
    """Which rows of the run have a judgment."""
    return np.fromiter((d in qrels.get(q, ()) for q, d in zip(query_ids, docs)), dtype=bool, count=len(docs))


def grouped(query_ids, docs, values):
    """Distinct query ids, then codes, doc ids and values grouped by query (first-seen order)."""
    codes, queries = pd.factorize(query_ids)
    order = np.argsort(codes, kind="stable")
    return np.asarray(queries, dtype=object), codes[order], docs[order], values[order]


def _starts(codes: np.ndarray) -> np.ndarray:
    """Where each run of equal codes starts, plus the end."""
    return np.flatnonzero(np.r_[True, codes[1:] != codes[:-1], True])


def as_nested(queries, codes, docs, values, *, what: str) -> dict:
    """``{query_id: {doc_id: value}}`` from arrays grouped by query; refuses a (query, doc) pair
    listed twice (a dict would silently keep the last one)."""
    bounds = _starts(codes)
    docs, values = docs.tolist(), values.tolist()
    out, duplicated = {}, []
    for a, b in zip(bounds[:-1], bounds[1:]):
        query = queries[codes[a]]
        out[query] = dict(zip(docs[a:b], values[a:b]))
        if len(out[query]) != b - a:
            duplicated.append(query)
    if duplicated:
        raise ValueError(_duplicates_message(queries, codes, docs, duplicated, what))
    return out


def _duplicates_message(queries, codes, docs, bad_queries, what: str) -> str:
    frame = pd.DataFrame({"query_id": queries[codes], "doc_id": docs}, dtype=object)
    frame = frame[frame["query_id"].isin(bad_queries)]
    pairs = frame[frame.duplicated()].drop_duplicates()
    shown = ", ".join(f"({q!r}, {d!r})" for q, d in pairs.head(5).itertuples(index=False))
    return (
        f"{what} lists {len(pairs)} (query_id, doc_id) pairs more than once, e.g. {shown}; "
        f"each document must appear once per query"
    )


@dataclass(frozen=True)
class Ranked:
    """A run sorted in trec_eval's order and grouped by query, ready to hand to ir_measures."""

    queries: np.ndarray  # distinct query ids; codes index into it
    codes: np.ndarray
    docs: np.ndarray
    scores: np.ndarray
    rank: np.ndarray  # 0-based position within the query
    full: dict  # the whole run as {query_id: {doc_id: score}}
    tied_queries: int

    @property
    def query_ids(self) -> list[str]:
        return list(self.full)

    @property
    def depth_max(self) -> int:
        return int(self.rank.max()) + 1

    @property
    def depth_min(self) -> int:
        return min(len(docs) for docs in self.full.values())

    def nested(self, depth: int | None) -> dict:
        """The run, or its top ``depth`` documents per query."""
        if depth is None or depth >= self.depth_max:
            return self.full
        top = self.rank < depth
        return as_nested(self.queries, self.codes[top], self.docs[top], self.scores[top], what="run")


def in_trec_order(codes, queries, docs, scores) -> Ranked:
    """Sort by query, then score descending (two argsorts: faster than np.lexsort here)."""
    order = np.argsort(-scores)
    order = order[np.argsort(codes[order], kind="stable")]
    codes, docs, scores = codes[order], docs[order], scores[order]
    bounds = _starts(codes)
    sizes = np.diff(bounds)
    rank = np.arange(len(codes)) - np.repeat(bounds[:-1], sizes)

    tied = np.r_[False, (codes[1:] == codes[:-1]) & (scores[1:] == scores[:-1])]
    tied_queries = int(np.unique(codes[tied]).size)
    if tied_queries:
        # Within each block of equal (query, score), order by doc_id descending, then replace the
        # scores by a strictly decreasing function of the rank so no engine re-breaks the ties.
        block = np.cumsum(~tied)
        rows = np.flatnonzero(tied | np.r_[tied[1:], False])
        doc_codes = pd.factorize(docs[rows], sort=True)[0]  # codes in string order
        docs = docs.copy()
        docs[rows] = docs[rows[np.lexsort((-doc_codes, block[rows]))]]
        scores = -rank.astype(float)
    full = as_nested(queries, codes, docs, scores, what="run")
    return Ranked(queries, codes, docs, scores, rank, full, tied_queries)
