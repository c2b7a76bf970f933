"""Training sources: the groups each objective learns from, read from the paper's files.

``training_source(kind, train_data, seed=..., group_size=..., start=...)`` yields :class:`Group`
objects (one query, its passages, labels, teacher scores and a mask), forever, epoch after epoch:

==================  =====================================================  ==================
kind                file (``train_data="msmarco-passage"``)                group
==================  =====================================================  ==================
``triples``         MS MARCO ``qidpidtriples.train.full.2`` (ir_datasets   1 pos + 1 BM25 neg
                    ``msmarco-passage/train/triples-v2``)
``teacher-pairs``   Hofstaetter et al.'s T2 ensemble scores (Zenodo        1 pos + 1 neg,
                    4068216): ``pos_score neg_score qid pos_pid neg_pid``  teacher scores
``hard-negatives``  Rank-DistiLLM's ColBERTv2 run joined with the train      1 judged pos + 7
                    qrels. ``per-positive`` (the table's code, xpmir of    negatives
                    7 Feb 2026): one group per judged-positive row, its
                    7 negatives drawn without replacement from the
                    non-relevant rows of its block (top-500 non-relevant
                    rows); ``first-positive`` (the authors' later code):
                    the first positive of the query, negatives drawn with
                    replacement. A query whose run holds no positive is
                    skipped (counted: ``source_counts``)
``llm-lists``       Rank-DistiLLM's RankZephyr lists (``sampled-50``, the   one list of up to
                    paper's; ``sampled-100``, the original's), TREC runs;  ``group_size``
                    teacher = score column (or ``-rank``); labels from the  passages
                    train qrels; passages without text are masked, counted
==================  =====================================================  ==================

``train_data="demo"`` reads the demo world's files of the same formats (``cerepro.data.demo_world``);
``local:<folder>`` reads a user's folder laid out like it (``LOCAL_FILES``); where each file
and text comes from is :mod:`cerepro.data.train_files`.
Query and passage texts come from the train collection (ir_datasets ``msmarco-passage/train``:
its queries and the passage docs store, looked up per chunk of groups, never loaded whole).

Order: a file is indexed once (byte offsets of its lines, or of its query blocks for runs, cached
on disk: :mod:`cerepro.data.records`); a record becomes a group's ids by :mod:`cerepro.data.rows`. With ``order="file"`` (the table's code: xpmir's samplers of Feb 2026 read the teacher
pairs, the ColBERTv2 run and the RankZephyr lists from the top, again and again) every epoch visits
the records in file order, the same for every seed; with ``order="shuffled"`` each epoch visits
them in a seeded pseudo-random permutation (a Feistel network), so shuffling costs constant memory
whatever the file size and the stream is the same for the same seed. Either way ``start=n``
resumes after ``n`` consumed groups without reading them again.
The MS MARCO triples are shuffled once with the fixed seed ``TRIPLES_SEED`` (123) whatever the
run's seed, as the authors' ``ShuffledTrainingTripletsLines(seed=123)`` does: repetitions of a
``triples`` run see the same data in the same order and differ only in initialisation and dropout.
A row whose query or passage has no text raises MissingTextError naming file, line and id.

This module turns files into groups of texts; it never tokenizes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from cerepro.data.datasets import Collection, MissingTextError
from cerepro.data.records import Permutation, RecordFile, cache_key
from cerepro.data.rows import (
    Row,
    hard_negatives_row,
    judged_positives,
    list_row,
    pair_row,
    per_positive_rows,
    positive_group_counts,
    retrieved_positive,
    run_block,
    teacher_row,
)
from cerepro.data.train_files import TrainData, texts_key, train_data, training_file
from cerepro.data.trec import DataFormatError
from cerepro.paths import atomic_path, cache_dir
from cerepro.vocab import DATA_ORDERS, HARD_NEGATIVE_GROUPS, LLM_LISTS, TRAINING_SOURCES

FORMAT_VERSION = 3  # bump when the groups a file gives change for the same seed (3: order, groups)
# The authors shuffle the triples once with seed 123 for every run (xpmir's
# msmarco_v1_docpairs_efficient_sampler -> ShuffledTrainingTripletsLines(seed=123)).
TRIPLES_SEED = 123
DEFAULT_GROUP_SIZE = {"triples": 2, "teacher-pairs": 2, "hard-negatives": 8, "llm-lists": 50}


@dataclass(frozen=True)
class Group:
    """One query and its ``D`` passages; padding slots have mask False and empty text."""

    position: int  # groups consumed before this one: resume with start=position + 1
    query_id: str
    query: str
    doc_ids: tuple[str, ...]  # (D,)
    passages: tuple[str, ...]  # (D,)
    labels: tuple[float, ...]  # (D,) binary or graded relevance
    teacher: tuple[float, ...] | None  # (D,) teacher scores; None when the source has none
    mask: tuple[bool, ...]  # (D,)
    dropped: int = 0  # passages removed for lack of text (llm-lists only)


@dataclass(frozen=True)
class TrainingSource:
    """A run's training stream: ``groups(start)`` resumes after ``start`` consumed groups."""

    kind: str
    train_data: str
    seed: int
    group_size: int
    llm_list: str = "sampled-50"
    order: str = "shuffled"
    hard_negative_groups: str = "first-positive"

    def groups(self, start: int = 0) -> Iterator[Group]:
        return training_source(
            self.kind,
            self.train_data,
            seed=self.seed,
            group_size=self.group_size,
            start=start,
            llm_list=self.llm_list,
            order=self.order,
            hard_negative_groups=self.hard_negative_groups,
        )

    @cached_property
    def cache_key(self) -> str:
        """Identifies the stream for caches of tokenized groups: the training file (path, size,
        mtime) and, for a local train folder, the content of the texts and judgements it joins."""
        data = train_data(self.train_data)
        return cache_key(
            self.kind,
            self.train_data,
            self.llm_list,
            f"seed={order_seed(self.kind, self.seed)}",
            f"D={self.group_size}",
            f"order={self.order}",
            f"groups={self.hard_negative_groups}",
            data.path(self.kind, self.llm_list),
            FORMAT_VERSION,
            texts_key(data),
            sep="|",
        )


def open_source(config) -> TrainingSource:
    """The training source a RunConfig names (keys training_source, train_data, seed,
    group_size, llm_list, data_order, hard_negative_groups)."""
    return TrainingSource(
        config.training_source,
        config.train_data,
        config.seed,
        config.group_size,
        config.llm_list,
        config.data_order,
        config.hard_negative_groups,
    )


# ---------------------------------------------------------------------------------------------
# The entry point


def training_source(
    kind: str,
    train_data_name: str = "msmarco-passage",
    *,
    seed: int,
    group_size: int | None = None,
    start: int = 0,
    llm_list: str = "sampled-50",
    list_teacher: str = "score",
    chunk: int = 256,
    order: str = "shuffled",
    hard_negative_groups: str = "first-positive",
) -> Iterator[Group]:
    """Groups for ``kind`` from ``train_data_name``, forever; the same stream for the same seed.

    ``start``: groups already consumed (a checkpoint's data position); the stream resumes there.
    ``group_size``: passages per group (2 for pairs; 1 + negatives for hard-negatives; the list
    length for llm-lists, shorter lists padded with mask False). ``list_teacher``: ``"score"``
    takes the run's score column as the teacher score, ``"rank"`` takes minus the rank.
    ``order``: ``"file"`` or ``"shuffled"`` (see the module docstring; the triples are always
    shuffled once with TRIPLES_SEED). ``hard_negative_groups``: ``"per-positive"`` or
    ``"first-positive"`` (hard-negatives only).
    """
    if order not in DATA_ORDERS:
        raise ValueError(f"order must be one of {DATA_ORDERS}, got {order!r}")
    if hard_negative_groups not in HARD_NEGATIVE_GROUPS:
        raise ValueError(f"hard_negative_groups must be one of {HARD_NEGATIVE_GROUPS}, got {hard_negative_groups!r}")
    if kind not in TRAINING_SOURCES:
        raise ValueError(f"unknown training source {kind!r}; known: {', '.join(TRAINING_SOURCES)}")
    if llm_list not in LLM_LISTS:
        raise ValueError(f"unknown llm_list {llm_list!r}; known: {', '.join(LLM_LISTS)}")
    if list_teacher not in ("score", "rank"):
        raise ValueError(f"list_teacher must be 'score' or 'rank', got {list_teacher!r}")
    group_size = DEFAULT_GROUP_SIZE[kind] if group_size is None else group_size
    if kind in ("triples", "teacher-pairs") and group_size != 2:
        raise ValueError(f"{kind} gives one positive and one negative: group_size must be 2, got {group_size}")
    if group_size < 2:
        raise ValueError(f"group_size must be at least 2, got {group_size}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    data = train_data(train_data_name)
    path = data.path(kind, llm_list)
    records = RecordFile(path, "query" if kind in ("hard-negatives", "llm-lists") else "line")
    rows = _rows(
        kind,
        records,
        data,
        seed=seed,
        start=start,
        group_size=group_size,
        list_teacher=list_teacher,
        order=order,
        hard_negative_groups=hard_negative_groups,
    )
    while pending := list(itertools.islice(rows, chunk)):
        yield from _join_texts(pending, data.collection, masked=kind == "llm-lists", group_size=group_size)


def order_seed(kind: str, seed: int) -> int:
    """The seed that orders a source's records: the run's, except for the triples (``TRIPLES_SEED``)."""
    return TRIPLES_SEED if kind == "triples" else seed


def _order(kind: str, n: int, seed: int, epoch: int, order: str = "shuffled") -> Permutation | range:
    # The triples are shuffled once: the same order every epoch and every run (the authors
    # iterate one shuffled file); the other sources in file order (the table's code) or
    # reshuffled per epoch with the run's seed.
    if kind == "triples":
        return Permutation(n, (TRIPLES_SEED, 0))
    if order == "file":
        return range(n)
    return Permutation(n, (seed, epoch))


def _rows(
    kind: str,
    records: RecordFile,
    data: TrainData,
    *,
    seed: int,
    start: int,
    group_size: int,
    list_teacher: str,
    order: str = "shuffled",
    hard_negative_groups: str = "first-positive",
) -> Iterator[tuple[int, Row]]:
    """``(position, row)`` pairs in each epoch's order of records, from group ``start`` on."""
    n = len(records)
    per_positive = kind == "hard-negatives" and hard_negative_groups == "per-positive"
    counts = None  # groups per record where a record gives other than one (hard-negatives)
    if kind == "hard-negatives":  # queries whose run holds no judged positive give no group
        counts = (
            positive_group_counts(records, data) if per_positive else retrieved_positive(records, data).astype(np.int64)
        )
        positives = judged_positives(data.judged)
        per_epoch = int(counts.sum())
        if per_epoch == 0:
            raise DataFormatError(
                f"{records.path}: no query's run holds a passage judged relevant in {data.collection.id}"
            )
    else:
        per_epoch = n
    first_epoch, position = divmod(start, per_epoch)[0], start - start % per_epoch
    for epoch in itertools.count(first_epoch):
        visit = _order(kind, n, seed, epoch, order)
        # a source of one group per record jumps straight to the resume point
        first = start - position if counts is None and position < start else 0
        position += first
        for i in range(first, n):
            index = visit[i]
            weight = 1 if counts is None else int(counts[index])
            if weight == 0:
                continue
            if position + weight <= start:  # every group of this record was consumed: not read
                position += weight
                continue
            record = records.read(index)
            if kind == "triples":
                rows = [pair_row(records.path, record)]
            elif kind == "teacher-pairs":
                rows = [teacher_row(records.path, record)]
            elif per_positive:
                rows = per_positive_rows(
                    records.path, record, positives, group_size, np.random.default_rng([seed, epoch, index])
                )
                if len(rows) != weight:
                    raise DataFormatError(
                        f"{records.path}:{record[0][0]}: the file changed since its "
                        "record index was built; delete the cache's record-index folder"
                    )
            elif kind == "hard-negatives":
                rows = [
                    hard_negatives_row(
                        records.path, record, positives, group_size, np.random.default_rng([seed, epoch, index])
                    )
                ]
            else:
                rows = [list_row(records.path, record, data, group_size, list_teacher)]
            for row in rows:
                position += 1
                if position > start:
                    yield position - 1, row


def _join_texts(
    rows: list[tuple[int, Row]], collection: Collection, *, masked: bool, group_size: int
) -> Iterator[Group]:
    """Look the texts of a chunk of rows up at once; pad to ``group_size`` with a mask."""
    queries = collection.queries
    found = collection.docs.get_many({d for _, row in rows for d in row.doc_ids})
    for position, row in rows:
        if row.query_id not in queries:
            raise MissingTextError(
                f"{row.path}:{row.query_line}: query {row.query_id!r} has no text in {collection.id}"
            )
        keep = []
        for did, number in zip(row.doc_ids, row.doc_lines):
            if did in found:
                keep.append(True)
            elif masked:
                keep.append(False)
            else:
                raise MissingTextError(f"{row.path}:{number}: passage {did!r} has no text in {collection.id}")
        ids = [d for d, k in zip(row.doc_ids, keep) if k]
        labels = [x for x, k in zip(row.labels, keep) if k]
        pad = group_size - len(ids)
        # padding slots hold 0, never nan: a masked nan would still poison a sum
        yield Group(
            position=position,
            query_id=row.query_id,
            query=queries[row.query_id],
            doc_ids=tuple(ids) + ("",) * pad,
            passages=tuple(found[d] for d in ids) + ("",) * pad,
            labels=tuple(labels) + (0.0,) * pad,
            teacher=None if row.teacher is None else tuple(x for x, k in zip(row.teacher, keep) if k) + (0.0,) * pad,
            mask=(True,) * len(ids) + (False,) * pad,
            dropped=len(row.doc_ids) - len(ids),
        )


@dataclass(frozen=True)
class SourceCounts:
    """What a source keeps of its file: records in the file and records that give a group."""

    kind: str
    records: int
    used: int

    @property
    def skipped(self) -> int:
        return self.records - self.used


def source_counts(kind: str, train_data_name: str = "msmarco-passage", *, llm_list: str = "sampled-50") -> SourceCounts:
    """Records of a source's file and how many give groups; for ``hard-negatives``, the queries
    whose run holds no judged-relevant passage are skipped (the data notebook shows the count)."""
    data = train_data(train_data_name)
    records = RecordFile(data.path(kind, llm_list), "query" if kind in ("hard-negatives", "llm-lists") else "line")
    used = int(retrieved_positive(records, data).sum()) if kind == "hard-negatives" else len(records)
    return SourceCounts(kind, len(records), used)


def source_sample(
    kind: str,
    train_data_name: str = "demo",
    *,
    groups: int = 200,
    seed: int = 0,
    group_size: int | None = None,
    llm_list: str = "sampled-50",
):
    """The first ``groups`` groups of a source as a tidy table, one row per real passage slot
    (position, query_id, query, slot, doc_id, passage, label, teacher): what the data notebook
    shows. Padding slots are left out; ``dropped`` counts passages removed for lack of text."""
    import pandas as pd

    rows = []
    stream = training_source(kind, train_data_name, seed=seed, group_size=group_size, llm_list=llm_list)
    for group in itertools.islice(stream, groups):
        for slot, (doc_id, passage, label, real) in enumerate(
            zip(group.doc_ids, group.passages, group.labels, group.mask)
        ):
            if real:
                teacher = group.teacher[slot] if group.teacher is not None else float("nan")
                rows.append(
                    (group.position, group.query_id, group.query, slot, doc_id, passage, label, teacher, group.dropped)
                )
    return pd.DataFrame(
        rows, columns=["position", "query_id", "query", "slot", "doc_id", "passage", "label", "teacher", "dropped"]
    )


# ---------------------------------------------------------------------------------------------
# Checks before training: every line of a training file parses (one pass, its result cached)


def verify_training_file(kind: str, train_data_name: str, llm_list: str = "sampled-50") -> dict:
    """Parse every line of the source's file as training would (columns, finite scores, integer
    ranks); raise DataFormatError naming the first bad line. The result is cached per file (path,
    size, mtime), so the data job pays for the pass and training jobs find it done."""
    path = training_file(kind, train_data_name, llm_list)
    stat = path.stat()
    key = cache_key(path, kind, FORMAT_VERSION, sep="|")
    marker = cache_dir() / "verified" / f"{hashlib.md5(key.encode()).hexdigest()}.json"
    if marker.is_file():
        return json.loads(marker.read_text(encoding="utf-8"))
    lines = 0
    from cerepro.data.trec import iter_lines

    for number, line in iter_lines(path, desc=f"verify {path.name}"):
        if kind == "triples":
            pair_row(path, [(number, line)])
        elif kind == "teacher-pairs":
            teacher_row(path, [(number, line)])
        else:
            run_block(path, [(number, line)])
        lines += 1
    if lines == 0:
        raise DataFormatError(f"{path}: the file holds no records")
    result = {"path": str(path), "kind": kind, "lines": lines, "size": stat.st_size}
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps(result), encoding="utf-8")
    return result
