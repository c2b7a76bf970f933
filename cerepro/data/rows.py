"""A record of a training file as one group's ids, labels and teacher scores, before texts.

One builder per source (``pair_row``, ``teacher_row``, ``hard_negatives_row``,
``per_positive_rows``, ``list_row``), each naming the file and line of a record it refuses; the
InfoNCE groups of the paper's table (``infonce_groups``); and, per query block of a run, whether
it holds a judged positive and how many per-positive groups it gives (one streaming pass each,
cached next to the record index).

This module turns records into rows of ids; it never looks up texts
(:mod:`cerepro.data.training_data` joins them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from cerepro.data.records import RecordFile, cache_file, cache_key
from cerepro.data.trec import LARGE_FILE, DataFormatError, parse_float, parse_int, split_columns
from cerepro.paths import atomic_path, cache_dir

if TYPE_CHECKING:
    from cerepro.data.train_files import TrainData

# The non-relevant rows of one block of a query's run (xpmir's top_k of the ColBERTv2 dataset)
HARD_NEGATIVE_TOP_K = 500
PAIR_COLUMNS = ["query id", "positive doc id", "negative doc id"]
TEACHER_COLUMNS = ["positive score", "negative score", "query id", "positive doc id", "negative doc id"]
RUN_COLUMNS = ["query id", "Q0", "doc id", "rank", "score", "run tag"]


@dataclass(frozen=True)
class Row:
    path: Path
    query_line: int
    query_id: str
    doc_ids: tuple[str, ...]
    doc_lines: tuple[int, ...]
    labels: tuple[float, ...]
    teacher: tuple[float, ...] | None


def pair_row(path: Path, record: list[tuple[int, str]]) -> Row:
    ((number, line),) = record
    qid, pos, neg = split_columns(path, number, line, PAIR_COLUMNS)
    return Row(path, number, qid, (pos, neg), (number, number), (1.0, 0.0), None)


def teacher_row(path: Path, record: list[tuple[int, str]]) -> Row:
    ((number, line),) = record
    pos_score, neg_score, qid, pos, neg = split_columns(path, number, line, TEACHER_COLUMNS)
    scores = (
        parse_float(path, number, pos_score, "positive score"),
        parse_float(path, number, neg_score, "negative score"),
    )
    return Row(path, number, qid, (pos, neg), (number, number), (1.0, 0.0), scores)


def run_block(path: Path, record: list[tuple[int, str]]) -> list[tuple[int, str, int, float]]:
    """``(line, doc id, rank, score)`` of one query's block of a TREC run."""
    out = []
    for number, line in record:
        _, _, did, rank, score, _ = split_columns(path, number, line, RUN_COLUMNS, sep=None)
        out.append((number, did, parse_int(path, number, rank, "rank"), parse_float(path, number, score, "score")))
    return out


def hard_negatives_row(path: Path, record, positives: dict[str, set[str]], group_size: int, rng) -> Row:
    """The first judged-relevant passage in the run's order, then ``group_size - 1`` passages
    drawn with replacement from the run's other passages (xpmir's DistillationNegativesSampler)."""
    block = run_block(path, record)
    qid = record[0][1].split(None, 1)[0]
    relevant = positives.get(qid, set())
    positive = next((number, did) for number, did, _, _ in block if did in relevant)
    pool = [(number, did) for number, did, _, _ in block if did not in relevant]
    if not pool:
        raise DataFormatError(
            f"{path}:{record[0][0]}: query {qid!r} has no passage that is not judged relevant to sample negatives from"
        )
    picks = rng.integers(len(pool), size=group_size - 1)
    negatives = [pool[i] for i in picks]
    return Row(
        path,
        record[0][0],
        qid,
        (positive[1], *(d for _, d in negatives)),
        (positive[0], *(n for n, _ in negatives)),
        (1.0,) + (0.0,) * (group_size - 1),
        None,
    )


def list_row(path: Path, record, data: TrainData, group_size: int, list_teacher: str) -> Row:
    block = sorted(run_block(path, record), key=lambda r: r[2])[:group_size]  # the teacher's order
    qid = record[0][1].split(None, 1)[0]
    judged = data.judged.get(qid, {})
    teacher = tuple(float(score) if list_teacher == "score" else -float(rank) for _, _, rank, score in block)
    return Row(
        path,
        record[0][0],
        qid,
        tuple(d for _, d, _, _ in block),
        tuple(n for n, *_ in block),
        tuple(float(judged.get(d, 0)) for _, d, _, _ in block),
        teacher,
    )


# ---------------------------------------------------------------------------------------------
# InfoNCE groups per retrieved positive, and what each query block of a run gives


def infonce_groups(
    doc_ids: Sequence[str], relevant, *, negatives: int = 7, top_k: int = HARD_NEGATIVE_TOP_K, rng: np.random.Generator
) -> list[tuple[str, tuple[str, ...]]]:
    """``(positive, negatives)`` groups of one query's run rows (``doc_ids`` in file order), as
    the code that produced the paper's table builds InfoNCE groups (xpmir
    ``ListwiseDistillationSamplesTSVWithAnnotations``, 7 Feb 2026, on Rank-DistiLLM's ColBERTv2 run).

    The rows are read in blocks: a block ends when it holds ``top_k`` rows not in ``relevant``
    and another row follows. In each block that holds a non-relevant row, every relevant row gives
    one group: itself and ``negatives`` ids drawn without replacement from the block's
    non-relevant rows. Fewer non-relevant rows than ``negatives`` raises ValueError (the authors'
    ``random.sample`` raises too). ``rng``: the draws (the authors' were Python's unseeded ``random``).
    """
    return [
        (doc_ids[p], tuple(doc_ids[i] for i in negs))
        for p, negs in _infonce_group_indices(doc_ids, relevant, negatives, top_k, rng)
    ]


def _infonce_group_indices(doc_ids, relevant, negatives, top_k, rng):
    if negatives < 1:
        raise ValueError(f"negatives must be >= 1, got {negatives}")
    groups, rel, neg = [], [], []

    def flush():
        # as the authors' reader, which draws only for a block's positives: a block without one
        # gives nothing, whatever its length; a positive with too few negatives cannot be drawn
        if not rel:
            return
        if len(neg) < negatives:
            raise ValueError(
                f"a block of {len(neg)} non-relevant passages (row {rel[0] + 1}, judged relevant) "
                f"cannot give {negatives} negatives without replacement"
            )
        for p in rel:
            groups.append((p, tuple(neg[j] for j in rng.choice(len(neg), size=negatives, replace=False))))

    for i, doc_id in enumerate(doc_ids):
        if len(neg) >= top_k:
            flush()
            rel, neg = [], []
        (rel if doc_id in relevant else neg).append(i)
    flush()
    return groups


def per_positive_rows(path: Path, record, positives: dict[str, set[str]], group_size: int, rng) -> list[Row]:
    block = run_block(path, record)
    qid = record[0][1].split(None, 1)[0]
    ids = [did for _, did, _, _ in block]
    try:
        found = _infonce_group_indices(ids, positives.get(qid, set()), group_size - 1, HARD_NEGATIVE_TOP_K, rng)
    except ValueError as exc:
        raise DataFormatError(f"{path}:{record[0][0]}: query {qid!r}: {exc}") from None
    return [
        Row(
            path,
            record[0][0],
            qid,
            (ids[p], *(ids[i] for i in negs)),
            (block[p][0], *(block[i][0] for i in negs)),
            (1.0,) + (0.0,) * (group_size - 1),
            None,
        )
        for p, negs in found
    ]


def judged_positives(judged: dict[str, dict[str, int]]) -> dict[str, set[str]]:
    """Judged-relevant passages (relevance > 0) per query: the authors' positives."""
    return {qid: {did for did, rel in docs.items() if rel > 0} for qid, docs in judged.items()}


def _block_cache(
    records: RecordFile, positives: dict[str, set[str]], kind: str, *extra: str
) -> tuple[Path, np.ndarray | None]:
    """The cache file of one value per query block of ``records`` (next to the record index,
    keyed by the file's path, size and mtime, the positives and ``extra``) and what it holds, or
    None when it holds no array of that length."""
    qrels_digest = hashlib.sha256(repr(sorted((q, sorted(d)) for q, d in positives.items() if d)).encode()).hexdigest()[
        :12
    ]
    key = cache_key(records.path, qrels_digest, *extra)
    path = cache_file(cache_dir() / "record-index", records.path, key, f".{kind}.npy")
    if path.is_file():
        found = np.load(path, allow_pickle=False)
        if found.shape == (len(records),):
            return path, found
    return path, None


def _save_block_cache(path: Path, out: np.ndarray) -> np.ndarray:
    """Write ``out`` to the block cache file ``path`` (atomically) and return it."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, out)
    return out


def _run_lines(records: RecordFile) -> Iterator[tuple[str, list[bytes]]]:
    """Each non-empty line of ``records``' run file as ``(query id, fields)``, in one streaming
    pass (a progress bar on large files)."""
    stat = records.path.stat()
    with (
        records.path.open("rb") as f,
        tqdm(
            total=stat.st_size,
            unit="B",
            unit_scale=True,
            leave=False,
            desc=f"positives in {records.path.name}",
            disable=stat.st_size < LARGE_FILE,
        ) as bar,
    ):
        for line in f:
            bar.update(len(line))
            fields = line.split()
            if fields:
                yield fields[0].decode("utf-8", "replace"), fields


def retrieved_positive(records: RecordFile, data: TrainData) -> np.ndarray:
    """(records,) bool: whether each query block of a run holds a judged-relevant passage.

    One streaming pass over the file (a progress bar on large files), cached next to the record
    index, keyed by the file and the qrels. The authors skip the queries marked False (xpmir's
    ``DistillationNegativesSampler``: no positive among the retrieved passages).
    """
    positives = judged_positives(data.judged)
    path, found = _block_cache(records, positives, "positive")
    if found is not None:
        return found
    out = np.zeros(len(records), dtype=bool)
    block, current = -1, None
    for qid, fields in _run_lines(records):
        if qid != current:
            block, current = block + 1, qid
            wanted = positives.get(qid, ())
        if not out[block] and len(fields) > 2 and fields[2].decode("utf-8", "replace") in wanted:
            out[block] = True
    return _save_block_cache(path, out)


def positive_group_counts(records: RecordFile, data: TrainData, top_k: int = HARD_NEGATIVE_TOP_K) -> np.ndarray:
    """(records,) int64: how many per-positive InfoNCE groups each query block of a run gives
    (:func:`infonce_groups`' count, without drawing), in one streaming pass cached next to the
    record index, keyed by the file, the qrels and ``top_k``."""
    positives = judged_positives(data.judged)
    path, found = _block_cache(records, positives, "groups", f"top{top_k}")
    if found is not None:
        return found
    out = np.zeros(len(records), dtype=np.int64)
    block, current, rel, neg = -1, None, 0, 0
    for qid, fields in _run_lines(records):
        if qid != current or neg >= top_k:  # a new query, or a new block of the same query
            if neg:
                out[block] += rel
            rel, neg = 0, 0
            if qid != current:
                block, current = block + 1, qid
                wanted = positives.get(qid, ())
        if len(fields) > 2 and fields[2].decode("utf-8", "replace") in wanted:
            rel += 1
        else:
            neg += 1
    if neg:
        out[block] += rel
    return _save_block_cache(path, out)
