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
``local:<folder>`` reads a user's folder laid out like it (``LOCAL_FILES``).
Query and passage texts come from the train collection (ir_datasets ``msmarco-passage/train``:
its queries and the passage docs store, looked up per chunk of groups, never loaded whole).

Order: a file is indexed once (byte offsets of its lines, or of its query blocks for runs, cached
on disk). With ``order="file"`` (the table's code: xpmir's samplers of Feb 2026 read the teacher
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
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cerepro.data import downloads
from cerepro.data.datasets import Collection, InputError, MissingTextError, load_collection, load_local, local_folder
from cerepro.data.trec import LARGE_FILE, DataFormatError, parse_float, parse_int, split_columns
from cerepro.paths import atomic_path, cache_dir, file_sha256
from cerepro.vocab import DATA_ORDERS, HARD_NEGATIVE_GROUPS, LLM_LISTS, LOCAL_PREFIX, TRAIN_DATA, TRAINING_SOURCES

FORMAT_VERSION = 3  # bump when the groups a file gives change for the same seed (3: order, groups)
# The authors shuffle the triples once with seed 123 for every run (xpmir's
# msmarco_v1_docpairs_efficient_sampler -> ShuffledTrainingTripletsLines(seed=123)).
TRIPLES_SEED = 123
DEFAULT_GROUP_SIZE = {"triples": 2, "teacher-pairs": 2, "hard-negatives": 8, "llm-lists": 50}
# The non-relevant rows of one block of a query's run (xpmir's top_k of the ColBERTv2 dataset)
HARD_NEGATIVE_TOP_K = 500
MSMARCO_TRIPLES = "msmarco-passage/train/triples-v2"
# The training files of a local train folder (the demo world's train/ is one), by source
LOCAL_FILES = {
    "triples": "triples.tsv",
    "teacher-pairs": "teacher-pairs.tsv",
    "hard-negatives": "hard-negatives.run",
    "llm-lists/sampled-50": "llm-lists-sampled-50.run",
    "llm-lists/sampled-100": "llm-lists-sampled-100.run",
}
PAIR_COLUMNS = ["query id", "positive doc id", "negative doc id"]
TEACHER_COLUMNS = ["positive score", "negative score", "query id", "positive doc id", "negative doc id"]
RUN_COLUMNS = ["query id", "Q0", "doc id", "rank", "score", "run tag"]
BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark


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
        path = data.path(self.kind, self.llm_list)
        stat = path.stat()
        return (
            f"{self.kind}|{self.train_data}|{self.llm_list}|seed={order_seed(self.kind, self.seed)}|"
            f"D={self.group_size}|order={self.order}|groups={self.hard_negative_groups}|"
            f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{FORMAT_VERSION}|{texts_key(data)}"
        )


# The files of a local train folder that a group's texts and positives come from.
TEXT_FILES = ("queries.tsv", "queries.jsonl", "docs.tsv", "corpus.jsonl", "qrels.txt")


def texts_key(data: TrainData) -> str:
    """sha256 over a local train folder's queries, passages and qrels files (the groups' texts
    and positives come from them); an ir_datasets collection is named by its id, which fixes them."""
    if data.folder is None:
        return data.collection.id
    digest = hashlib.sha256()
    for name in TEXT_FILES:
        if (data.folder / name).is_file():
            digest.update(f"{name}:{file_sha256(data.folder / name)}\n".encode())
    return digest.hexdigest()


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


def source_requirements(kind: str, train_data_name: str, *, llm_list: str = "sampled-50") -> list[dict[str, str]]:
    """What a source reads, without reading it: ir_datasets ids, external files, the demo world."""
    if train_data_name == "demo":
        from cerepro.data import demo_world

        return [{"demo_world": demo_world.world_id(), "path": str(demo_world.world_folder())}]
    if train_data_name.startswith(LOCAL_PREFIX):
        key = f"llm-lists/{llm_list}" if kind == "llm-lists" else kind
        return [{"local": str(local_folder(train_data_name) / LOCAL_FILES[key])}]
    needs = [
        {"ir_datasets": "msmarco-passage", "what": "passage texts (docs store)"},
        {"ir_datasets": "msmarco-passage/train", "what": "train queries and qrels"},
    ]
    if kind == "triples":
        return needs + [{"ir_datasets": MSMARCO_TRIPLES, "what": "qidpidtriples.train.full.2 (BM25 negatives)"}]
    name = {
        "teacher-pairs": "hofstaetter-t2-teacher",
        "hard-negatives": "rank-distillm-colbert-train",
        "llm-lists": f"rank-distillm-rankzephyr-{llm_list}",
    }[kind]
    f = downloads.REGISTRY[name]
    return needs + [{"file": f.name, "url": f.url, "md5": f.md5, "path": str(f.path), "size": f.size_hint}]


# ---------------------------------------------------------------------------------------------
# Constant-memory shuffling: a seeded bijection of range(n), computed index by index


class Permutation:
    """A pseudo-random permutation of ``range(n)``: a 4-round Feistel network on the next even
    power of two, with cycle walking back into range. ``perm[i]`` costs O(1) time and memory."""

    def __init__(self, n: int, key: Sequence[int]):
        if n < 1:
            raise ValueError("cannot permute an empty range")
        self.n = n
        bits = max(2, (n - 1).bit_length())
        self.half = (bits + 1) // 2
        self.mask = (1 << self.half) - 1
        self.keys = [int(k) for k in np.random.default_rng(list(key)).integers(0, 2**63, size=4)]

    def _round(self, value: int, key: int) -> int:
        # splitmix64 finaliser: a cheap, well-mixed hash of (value, key)
        z = (value + key + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return (z ^ (z >> 31)) & self.mask

    def __getitem__(self, index: int) -> int:
        if not 0 <= index < self.n:
            raise IndexError(index)
        x = index
        while True:
            left, right = x >> self.half, x & self.mask
            for key in self.keys:
                left, right = right, left ^ self._round(right, key)
            x = (left << self.half) | right
            if x < self.n:
                return x

    def __len__(self) -> int:
        return self.n


# ---------------------------------------------------------------------------------------------
# Random access to the records of a large text file


class RecordFile:
    """Byte offsets of a text file's records, for random access in constant memory.

    ``unit="line"``: one record per non-blank line. ``unit="query"``: one record per block of
    consecutive lines with the same first column (a TREC run grouped by query); a query that
    comes back after another one is an error. The index is built in one pass (progress bar) and
    cached under ``cache_dir()/record-index/``, keyed by the file's path, size and mtime.
    """

    def __init__(self, path: str | os.PathLike, unit: str = "line"):
        if unit not in ("line", "query"):
            raise ValueError(f"unit must be 'line' or 'query', got {unit!r}")
        self.path = Path(path)
        self.unit = unit
        if not self.path.is_file():
            raise FileNotFoundError(self.path)

    @cached_property
    def _index(self) -> tuple[np.ndarray, np.ndarray]:
        stat = self.path.stat()
        key = f"{self.path.resolve()} {stat.st_size} {stat.st_mtime_ns} {self.unit}"
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", self.path.name)[:60]
        name = f"{stem}-{hashlib.md5(key.encode()).hexdigest()[:12]}"
        folder = cache_dir() / "record-index"
        offsets, numbers = folder / f"{name}.offsets.u64", folder / f"{name}.lines.u64"
        if not numbers.is_file() or not self._whole(offsets, numbers, stat.st_size):
            self._build(offsets, numbers)
        return (np.memmap(offsets, dtype=np.uint64, mode="r"), np.memmap(numbers, dtype=np.uint64, mode="r"))

    @staticmethod
    def _whole(offsets: Path, numbers: Path, size: int) -> bool:
        """Whether a cached index is the one ``_build`` wrote: one offset per record plus the end
        of the file, which is the file's size (a cut or emptied cache file is rebuilt, not read)."""
        try:
            n_numbers, n_offsets = numbers.stat().st_size, offsets.stat().st_size
        except OSError:
            return False
        if n_numbers == 0 or n_numbers % 8 or n_offsets != n_numbers + 8:
            return False
        with offsets.open("rb") as f:
            f.seek(n_offsets - 8)
            return int(np.frombuffer(f.read(8), dtype=np.uint64)[0]) == size

    def _build(self, offsets_path: Path, numbers_path: Path) -> None:
        """Offsets of each record's first byte (plus the end of file) and its first line number."""
        chunk = 1 << 16
        offsets, numbers = [], []
        seen: dict[str, int] = {}
        current = None
        with (
            atomic_path(offsets_path) as tmp_offsets,
            atomic_path(numbers_path) as tmp_numbers,
            tmp_offsets.open("wb") as out_offsets,
            tmp_numbers.open("wb") as out_numbers,
            self.path.open("rb") as f,
            tqdm(
                total=self.path.stat().st_size,
                unit="B",
                unit_scale=True,
                leave=False,
                desc=f"index {self.path.name}",
                disable=self.path.stat().st_size < LARGE_FILE,
            ) as bar,
        ):
            position = 0
            for number, line in enumerate(f, start=1):
                if number == 1 and line.startswith(BOM):  # a byte-order mark is not the first id
                    position, line = len(BOM), line[len(BOM) :]
                if line.strip():
                    if self.unit == "line":
                        offsets.append(position)
                        numbers.append(number)
                    else:
                        qid = line.split(None, 1)[0].decode("utf-8", "replace")
                        if qid != current:
                            if qid in seen:
                                raise DataFormatError(
                                    f"{self.path}:{number}: query {qid!r} appears again after other "
                                    f"queries (its block starts on line {seen[qid]}); the run must be "
                                    f"grouped by query"
                                )
                            seen[qid] = number
                            current = qid
                            offsets.append(position)
                            numbers.append(number)
                position += len(line)
                bar.update(len(line))
                if len(offsets) >= chunk:
                    out_offsets.write(np.asarray(offsets, dtype=np.uint64).tobytes())
                    out_numbers.write(np.asarray(numbers, dtype=np.uint64).tobytes())
                    offsets, numbers = [], []
            offsets.append(position)  # the end of the last record
            out_offsets.write(np.asarray(offsets, dtype=np.uint64).tobytes())
            out_numbers.write(np.asarray(numbers, dtype=np.uint64).tobytes())
            if out_numbers.tell() == 0:
                raise DataFormatError(f"{self.path}: the file holds no records")

    def __len__(self) -> int:
        return len(self._index[1])

    @cached_property
    def _handle(self):
        return self.path.open("rb")

    def read(self, index: int) -> list[tuple[int, str]]:
        """``(line number, line)`` for each non-blank line of record ``index``."""
        offsets, numbers = self._index
        start = int(offsets[index])
        f = self._handle
        f.seek(start)
        if self.unit == "line":
            return [(int(numbers[index]), f.readline().decode("utf-8").rstrip("\r\n"))]
        data = f.read(int(offsets[index + 1]) - start).decode("utf-8")
        first = int(numbers[index])
        return [(first + i, line.rstrip("\r")) for i, line in enumerate(data.split("\n")) if line.strip()]

    def first_column(self, index: int) -> str:
        offsets, _ = self._index
        f = self._handle
        f.seek(int(offsets[index]))
        return f.readline().split(None, 1)[0].decode("utf-8")


# ---------------------------------------------------------------------------------------------
# Where the training files and texts come from


@dataclass
class TrainData:
    name: str
    collection: Collection  # train query texts, passage texts, train qrels
    folder: Path | None = None  # a local train folder (the demo world's train/ is one)

    def path(self, kind: str, llm_list: str) -> Path:
        key = f"llm-lists/{llm_list}" if kind == "llm-lists" else kind
        if self.folder is not None:
            return self.folder / LOCAL_FILES[key]
        if kind == "triples":
            return msmarco_triples_path()
        name = {
            "teacher-pairs": "hofstaetter-t2-teacher",
            "hard-negatives": "rank-distillm-colbert-train",
            "llm-lists/sampled-50": "rank-distillm-rankzephyr-sampled-50",
            "llm-lists/sampled-100": "rank-distillm-rankzephyr-sampled-100",
        }[key]
        return downloads.fetch(name)

    @cached_property
    def judged(self) -> dict[str, dict[str, int]]:
        """Train qrels as {query: {doc: relevance}}, in file order."""
        out: dict[str, dict[str, int]] = {}
        qrels = self.collection.qrels
        for qid, did, rel in zip(qrels["query_id"], qrels["doc_id"], qrels["relevance"]):
            out.setdefault(qid, {})[did] = int(rel)
        return out


def train_data(name: str) -> TrainData:
    """``msmarco-passage`` (the paper's files), ``demo`` (the demo world) or ``local:<folder>``
    (a folder like the demo world's train/: queries, docs, qrels and the files of LOCAL_FILES)."""
    if name == "demo":
        from cerepro.data import demo_world

        return TrainData(name, load_collection("demo:train"), demo_world.split_folder("train"))
    if name.startswith(LOCAL_PREFIX):
        folder = local_folder(name)
        return TrainData(name, load_local(folder, name), folder)
    if name == "msmarco-passage":
        return TrainData(name, load_collection("msmarco-passage/train"))
    raise ValueError(f"unknown train_data {name!r}; known: {', '.join(TRAIN_DATA)} or local:<folder>")


def msmarco_triples_path() -> Path:
    """The official triples with BM25 negatives, fetched by ir_datasets and unpacked once into the
    cache (random access needs an uncompressed file)."""
    import gzip

    import ir_datasets

    target = cache_dir() / "msmarco-passage" / "qidpidtriples.train.full.2.tsv"
    if target.is_file():
        return target
    source = Path(ir_datasets.load(MSMARCO_TRIPLES).docpairs_handler().docpairs_path())
    try:
        with (
            gzip.open(source, "rb") as f,
            atomic_path(target) as tmp,
            tmp.open("wb") as out,
            tqdm(unit="B", unit_scale=True, desc=f"unpack {source.name}") as bar,
        ):
            while chunk := f.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
    except (EOFError, OSError, zlib.error) as exc:  # a broken download: nothing is kept
        raise DataFormatError(
            f"{source}: not a complete gzip ({exc}); delete it so that ir_datasets "
            f"downloads it again, or place a complete copy there"
        ) from None
    return target


# ---------------------------------------------------------------------------------------------
# Rows: ids and scores of one group, before texts are joined


@dataclass(frozen=True)
class Row:
    path: Path
    query_line: int
    query_id: str
    doc_ids: tuple[str, ...]
    doc_lines: tuple[int, ...]
    labels: tuple[float, ...]
    teacher: tuple[float, ...] | None


def _pair_row(path: Path, record: list[tuple[int, str]]) -> Row:
    ((number, line),) = record
    qid, pos, neg = split_columns(path, number, line, PAIR_COLUMNS)
    return Row(path, number, qid, (pos, neg), (number, number), (1.0, 0.0), None)


def _teacher_row(path: Path, record: list[tuple[int, str]]) -> Row:
    ((number, line),) = record
    pos_score, neg_score, qid, pos, neg = split_columns(path, number, line, TEACHER_COLUMNS)
    scores = (
        parse_float(path, number, pos_score, "positive score"),
        parse_float(path, number, neg_score, "negative score"),
    )
    return Row(path, number, qid, (pos, neg), (number, number), (1.0, 0.0), scores)


def _run_block(path: Path, record: list[tuple[int, str]]) -> list[tuple[int, str, int, float]]:
    """``(line, doc id, rank, score)`` of one query's block of a TREC run."""
    out = []
    for number, line in record:
        _, _, did, rank, score, _ = split_columns(path, number, line, RUN_COLUMNS, sep=None)
        out.append((number, did, parse_int(path, number, rank, "rank"), parse_float(path, number, score, "score")))
    return out


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


def _positives(judged: dict[str, dict[str, int]]) -> dict[str, set[str]]:
    """Judged-relevant passages (relevance > 0) per query: the authors' positives."""
    return {qid: {did for did, rel in docs.items() if rel > 0} for qid, docs in judged.items()}


def _block_cache(
    records: RecordFile, positives: dict[str, set[str]], kind: str, extra: str = ""
) -> tuple[Path, np.ndarray | None]:
    """The cache file of one value per query block of ``records`` (next to the record index,
    keyed by the file's path, size and mtime, the positives and ``extra``) and what it holds, or
    None when it holds no array of that length."""
    qrels_digest = hashlib.sha256(repr(sorted((q, sorted(d)) for q, d in positives.items() if d)).encode()).hexdigest()[
        :12
    ]
    stat = records.path.stat()
    key = f"{records.path.resolve()} {stat.st_size} {stat.st_mtime_ns} {qrels_digest}{extra}"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", records.path.name)[:60]
    path = cache_dir() / "record-index" / f"{stem}-{hashlib.md5(key.encode()).hexdigest()[:12]}.{kind}.npy"
    if path.is_file():
        found = np.load(path, allow_pickle=False)
        if found.shape == (len(records),):
            return path, found
    return path, None


def retrieved_positive(records: RecordFile, data: TrainData) -> np.ndarray:
    """(records,) bool: whether each query block of a run holds a judged-relevant passage.

    One streaming pass over the file (a progress bar on large files), cached next to the record
    index, keyed by the file and the qrels. The authors skip the queries marked False (xpmir's
    ``DistillationNegativesSampler``: no positive among the retrieved passages).
    """
    positives = _positives(data.judged)
    path, found = _block_cache(records, positives, "positive")
    if found is not None:
        return found
    stat = records.path.stat()
    out = np.zeros(len(records), dtype=bool)
    block, current = -1, None
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
            if not fields:
                continue
            qid = fields[0].decode("utf-8", "replace")
            if qid != current:
                block, current = block + 1, qid
                wanted = positives.get(qid, ())
            if not out[block] and len(fields) > 2 and fields[2].decode("utf-8", "replace") in wanted:
                out[block] = True
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, out)
    return out


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
        positives = _positives(data.judged)
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
                rows = [_pair_row(records.path, record)]
            elif kind == "teacher-pairs":
                rows = [_teacher_row(records.path, record)]
            elif per_positive:
                rows = _per_positive_rows(
                    records.path, record, positives, group_size, np.random.default_rng([seed, epoch, index])
                )
                if len(rows) != weight:
                    raise DataFormatError(
                        f"{records.path}:{record[0][0]}: the file changed since its "
                        "record index was built; delete the cache's record-index folder"
                    )
            elif kind == "hard-negatives":
                rows = [
                    _hard_negatives_row(
                        records.path, record, positives, group_size, np.random.default_rng([seed, epoch, index])
                    )
                ]
            else:
                rows = [_list_row(records.path, record, data, group_size, list_teacher)]
            for row in rows:
                position += 1
                if position > start:
                    yield position - 1, row


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


def _per_positive_rows(path: Path, record, positives: dict[str, set[str]], group_size: int, rng) -> list[Row]:
    block = _run_block(path, record)
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


def positive_group_counts(records: RecordFile, data: TrainData, top_k: int = HARD_NEGATIVE_TOP_K) -> np.ndarray:
    """(records,) int64: how many per-positive InfoNCE groups each query block of a run gives
    (:func:`infonce_groups`' count, without drawing), in one streaming pass cached next to the
    record index, keyed by the file, the qrels and ``top_k``."""
    positives = _positives(data.judged)
    path, found = _block_cache(records, positives, "groups", f" top{top_k}")
    if found is not None:
        return found
    stat = records.path.stat()
    out = np.zeros(len(records), dtype=np.int64)
    block, current, rel, neg = -1, None, 0, 0
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
            if not fields:
                continue
            qid = fields[0].decode("utf-8", "replace")
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
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, out)
    return out


# ---------------------------------------------------------------------------------------------
# Checks before training: the files exist, and every line parses (one pass, its result cached)


def training_file(kind: str, train_data_name: str, llm_list: str = "sampled-50") -> Path:
    """The file a source reads, checked to exist (a local folder's; the paper's are fetched)."""
    if train_data_name.startswith(LOCAL_PREFIX):
        folder = local_folder(train_data_name)
        key = f"llm-lists/{llm_list}" if kind == "llm-lists" else kind
        path = folder / LOCAL_FILES[key]
        if not path.is_file():
            present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None
            raise InputError(
                f"train_data {train_data_name!r}: no {LOCAL_FILES[key]} in {folder} for training source "
                f"{kind!r}"
                + (
                    f" (the folder holds: {', '.join(present) or 'nothing'})"
                    if present is not None
                    else " (no such folder)"
                )
            )
        return path
    return train_data(train_data_name).path(kind, llm_list)


def verify_training_file(kind: str, train_data_name: str, llm_list: str = "sampled-50") -> dict:
    """Parse every line of the source's file as training would (columns, finite scores, integer
    ranks); raise DataFormatError naming the first bad line. The result is cached per file (path,
    size, mtime), so the data job pays for the pass and training jobs find it done."""
    path = training_file(kind, train_data_name, llm_list)
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{kind}|{FORMAT_VERSION}"
    marker = cache_dir() / "verified" / f"{hashlib.md5(key.encode()).hexdigest()}.json"
    if marker.is_file():
        return json.loads(marker.read_text(encoding="utf-8"))
    lines = 0
    from cerepro.data.trec import iter_lines

    for number, line in iter_lines(path, desc=f"verify {path.name}"):
        if kind == "triples":
            _pair_row(path, [(number, line)])
        elif kind == "teacher-pairs":
            _teacher_row(path, [(number, line)])
        else:
            _run_block(path, [(number, line)])
        lines += 1
    if lines == 0:
        raise DataFormatError(f"{path}: the file holds no records")
    result = {"path": str(path), "kind": kind, "lines": lines, "size": stat.st_size}
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps(result), encoding="utf-8")
    return result


def _hard_negatives_row(path: Path, record, positives: dict[str, set[str]], group_size: int, rng) -> Row:
    """The first judged-relevant passage in the run's order, then ``group_size - 1`` passages
    drawn with replacement from the run's other passages (xpmir's DistillationNegativesSampler)."""
    block = _run_block(path, record)
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


def _list_row(path: Path, record, data: TrainData, group_size: int, list_teacher: str) -> Row:
    block = sorted(_run_block(path, record), key=lambda r: r[2])[:group_size]  # the teacher's order
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
