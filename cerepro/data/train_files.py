"""Where a training source's file, texts and judgements come from, and what it needs fetched.

``train_data(name)``: ``msmarco-passage`` (the paper's files: ir_datasets' train collection and
the registered teacher files), ``demo`` (the demo world) or ``local:<folder>`` (a folder laid out
like the demo world's train/: queries, docs, qrels and the files of ``LOCAL_FILES``). The MS MARCO
triples are unpacked once into the cache (random access needs an uncompressed file).

This module finds files; it never reads their records (:mod:`cerepro.data.records`).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from tqdm.auto import tqdm

from cerepro.data import downloads
from cerepro.data.datasets import Collection, InputError, load_collection, load_local, local_folder
from cerepro.data.trec import DataFormatError
from cerepro.paths import atomic_path, cache_dir, file_sha256
from cerepro.vocab import LOCAL_PREFIX, TRAIN_DATA

MSMARCO_TRIPLES = "msmarco-passage/train/triples-v2"
# The training files of a local train folder (the demo world's train/ is one), by source
LOCAL_FILES = {
    "triples": "triples.tsv",
    "teacher-pairs": "teacher-pairs.tsv",
    "hard-negatives": "hard-negatives.run",
    "llm-lists/sampled-50": "llm-lists-sampled-50.run",
    "llm-lists/sampled-100": "llm-lists-sampled-100.run",
}
# The files of a local train folder that a group's texts and positives come from.
TEXT_FILES = ("queries.tsv", "queries.jsonl", "docs.tsv", "corpus.jsonl", "qrels.txt")


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
