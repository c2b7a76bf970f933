"""Inputs of the paper path, small and synthetic, in the real files' formats and places.

``write_rehearsal_inputs(irds_home, cache)`` writes what the ``rehearsal`` profile reads, so that
ir_datasets and cerepro read it exactly as they read the real files (ir_datasets 0.6.3's cache
layout under ``IR_DATASETS_HOME``; cerepro's ``cache/downloads`` and ``cache/first-stage``):

- ``msmarco-passage``: ``collection.tsv``; ``train/queries.tsv``, ``train/qrels`` (tab-separated,
  as ``qrels.train.tsv``), ``train/qidpidtriples.train.full.2.tsv.gz``; ``dev/small/queries.tsv``
  and ``dev/small/qrels``; ``trec-dl-2019/queries.tsv`` and ``trec-dl-2019/qrels`` (NIST's
  space-separated ``Q0`` lines, one unjudged query so that ``/judged`` filters something);
- ``beir/scifact/source.zip`` holding ``scifact/corpus.jsonl``, ``queries.jsonl`` and
  ``qrels/test.tsv`` (with its header), as the BEIR zip does;
- ``lotte/lotte_extracted/lotte/writing/test/``: ``collection.tsv``, ``questions.search.tsv``,
  ``qas.search.jsonl`` (the extracted ``lotte.tar.gz``);
- ``nano-beir/scifact/``: ``corpus.parquet``, ``queries.parquet``, ``qrels.parquet`` (the
  Hugging Face parquet columns ``_id``/``text`` and ``query-id``/``corpus-id``);
- ``cache/downloads/``: Hofstaetter's 5-column teacher TSV and Rank-DistiLLM's ColBERTv2 and
  RankZephyr TREC runs, under their registered file names, and ``CHECKSUMS`` (``md5sum`` format),
  the md5 override ``cerepro.data.downloads`` reads from ``CEREPRO_CHECKSUMS``.

No first-stage run is written: the rehearsal grid produces its own, as the paper grid does
(``cerepro.retrieval.first_stage`` over these collections, with the tiny SPLADE of ``params/first_stage.yaml``).

Texts come from a seeded synthetic world: each passage is about one topic, each query asks about
one topic, and the passages of its topic are relevant, so a tiny model can learn something. This
module writes rehearsal inputs; the library never imports it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from cerepro.data import downloads

TOPICS = (
    "river",
    "mountain",
    "harbour",
    "orchard",
    "glacier",
    "desert",
    "library",
    "market",
    "volcano",
    "meadow",
    "canyon",
    "island",
)
FILLER = (
    "the of and a to in is was for on with as by at from that this an are be or it its "
    "which has have were they one two new old near far during after before"
).split()
# the sets the rehearsal profile evaluates and validates on
EVAL_SETS = (
    "msmarco-passage/dev/small",
    "msmarco-passage/trec-dl-2019/judged",
    "beir/scifact/test",
    "lotte/writing/test/search",
)
VALIDATION_SETS = ("nano-beir/scifact",)


class World:
    """A seeded vocabulary of topics; ``passage(topic)`` and ``query(topic)`` draw texts."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.words = {t: [f"{t}{suffix}" for suffix in ("", "s", "side", "land", "light", "path")] for t in TOPICS}

    def passage(self, topic: str) -> str:
        words = list(self.rng.choice(self.words[topic], 5)) + list(self.rng.choice(FILLER, 7))
        self.rng.shuffle(words)
        return " ".join(words)

    def query(self, topic: str) -> str:
        return f"what is the {' '.join(self.rng.choice(self.words[topic], 2))} {self.rng.choice(FILLER)}"


def _corpus(world: World, n: int, prefix: str = "") -> tuple[dict[str, str], dict[str, str]]:
    """``n`` passages: id -> text and id -> topic."""
    texts, topics = {}, {}
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        key = f"{prefix}{i}"
        texts[key], topics[key] = world.passage(topic), topic
    return texts, topics


def _queries(world: World, n: int, start: int, prefix: str = "") -> tuple[dict[str, str], dict[str, str]]:
    texts, topics = {}, {}
    for i in range(n):
        topic = TOPICS[(start + i) % len(TOPICS)]
        key = f"{prefix}{start + i}"
        texts[key], topics[key] = world.query(topic), topic
    return texts, topics


def _judgements(
    queries: dict[str, str], query_topics: dict[str, str], doc_topics: dict[str, str], rng, per_query: int = 2
) -> dict[str, list[str]]:
    by_topic: dict[str, list[str]] = {}
    for doc, topic in doc_topics.items():
        by_topic.setdefault(topic, []).append(doc)
    return {q: list(rng.choice(by_topic[query_topics[q]], per_query, replace=False)) for q in queries}


def overlap_run(queries: dict[str, str], docs: dict[str, str], depth: int) -> list[tuple[str, str, int, float]]:
    """(qid, docid, rank, score): passages ranked by shared words with the query, then by id."""
    doc_words = {d: set(t.split()) for d, t in docs.items()}
    rows = []
    for qid, text in queries.items():
        words = set(text.split())
        scored = sorted(
            ((len(words & w) + 1.0 / (1 + len(w)), d) for d, w in doc_words.items()), key=lambda x: (-x[0], x[1])
        )[:depth]
        rows += [(qid, d, rank, round(score, 4)) for rank, (score, d) in enumerate(scored, start=1)]
    return rows


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def _tsv(rows) -> str:
    return "".join("\t".join(str(c) for c in row) + "\n" for row in rows)


def _trec_run(rows, tag: str) -> str:
    return "".join(f"{q} Q0 {d} {rank} {score} {tag}\n" for q, d, rank, score in rows)


def _parquet(path: Path, columns: dict[str, list[str]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def write_rehearsal_inputs(
    irds_home: str | Path,
    cache: str | Path,
    *,
    seed: int = 0,
    passages: int = 240,
    train_queries: int = 96,
    test_queries: int = 8,
) -> dict[str, Path]:
    """Write every input of the rehearsal profile; returns {what: path} of the main files."""
    home, cache = Path(irds_home), Path(cache)
    world, rng = World(seed), np.random.default_rng(seed + 1)
    out: dict[str, Path] = {}

    # ---- msmarco-passage: collection, train, dev/small, trec-dl-2019 ---------------------
    base = home / "msmarco-passage"
    docs, doc_topics = _corpus(world, passages)
    _write(base / "irds_version.txt", "v2")  # the collection encoding ir_datasets expects: no migration
    out["collection"] = _write(base / "collection.tsv", _tsv(docs.items()))
    train, train_topics = _queries(world, train_queries, start=1000)
    judged = _judgements(train, train_topics, doc_topics, rng, per_query=1)
    _write(base / "train" / "queries.tsv", _tsv(train.items()))
    _write(base / "train" / "qrels", _tsv((q, 0, d, 1) for q, ds in judged.items() for d in ds))
    negatives = {q: [d for d, t in doc_topics.items() if t != train_topics[q]] for q in train}
    triples = [(q, judged[q][0], rng.choice(negatives[q])) for q in train for _ in range(3)]
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:
        gz.write(_tsv(triples).encode())
    out["triples"] = _write(base / "train" / "qidpidtriples.train.full.2.tsv.gz", buffer.getvalue())

    dev, dev_topics = _queries(world, test_queries, start=5000)
    dev_qrels = _judgements(dev, dev_topics, doc_topics, rng)
    _write(base / "dev" / "small" / "queries.tsv", _tsv(dev.items()))
    _write(base / "dev" / "small" / "qrels", _tsv((q, 0, d, 1) for q, ds in dev_qrels.items() for d in ds))
    dl19, dl19_topics = _queries(world, test_queries + 1, start=7000)
    unjudged = list(dl19)[-1]
    dl19_qrels = _judgements({q: t for q, t in dl19.items() if q != unjudged}, dl19_topics, doc_topics, rng, 3)
    _write(base / "trec-dl-2019" / "queries.tsv", _tsv(dl19.items()))
    _write(
        base / "trec-dl-2019" / "qrels",
        "".join(f"{q} Q0 {d} {grade}\n" for q, ds in dl19_qrels.items() for d, grade in zip(ds, (3, 2, 1))),
    )

    # ---- beir/scifact: the BEIR zip ---------------------------------------------------------
    sci_docs, sci_topics = _corpus(world, passages // 2, prefix="sd")
    sci_q, sci_q_topics = _queries(world, test_queries, start=0, prefix="sq")
    sci_qrels = _judgements(sci_q, sci_q_topics, sci_topics, rng)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(
            "scifact/corpus.jsonl",
            "".join(
                json.dumps({"_id": d, "title": f"On the {sci_topics[d]}", "text": t, "metadata": {}}) + "\n"
                for d, t in sci_docs.items()
            ),
        )
        z.writestr(
            "scifact/queries.jsonl",
            "".join(json.dumps({"_id": q, "text": t, "metadata": {}}) + "\n" for q, t in sci_q.items()),
        )
        z.writestr(
            "scifact/qrels/test.tsv",
            "query-id\tcorpus-id\tscore\n" + _tsv((q, d, 1) for q, ds in sci_qrels.items() for d in ds),
        )
    out["beir"] = _write(home / "beir" / "scifact" / "source.zip", buffer.getvalue())

    # ---- lotte/writing/test/search: the extracted tarball ----------------------------------
    lotte = home / "lotte" / "lotte_extracted" / "lotte" / "writing" / "test"
    lot_docs, lot_topics = _corpus(world, passages // 2)
    lot_q, lot_q_topics = _queries(world, test_queries, start=0)
    lot_qrels = _judgements(lot_q, lot_q_topics, lot_topics, rng)
    _write(lotte / "collection.tsv", _tsv(lot_docs.items()))
    _write(lotte / "questions.search.tsv", _tsv(lot_q.items()))
    _write(
        lotte / "qas.search.jsonl",
        "".join(
            json.dumps({"qid": int(q), "query": lot_q[q], "answer_pids": [int(d) for d in ds], "url": ""}) + "\n"
            for q, ds in lot_qrels.items()
        ),
    )
    out["lotte"] = lotte

    # ---- nano-beir/scifact: parquet -------------------------------------------------------
    nano = home / "nano-beir" / "scifact"
    nano_docs, nano_topics = _corpus(world, passages // 4, prefix="nd")
    nano_q, nano_q_topics = _queries(world, test_queries, start=0, prefix="nq")
    nano_qrels = _judgements(nano_q, nano_q_topics, nano_topics, rng)
    _parquet(nano / "corpus.parquet", {"_id": list(nano_docs), "text": list(nano_docs.values())})
    _parquet(nano / "queries.parquet", {"_id": list(nano_q), "text": list(nano_q.values())})
    pairs = [(q, d) for q, ds in nano_qrels.items() for d in ds]
    _parquet(nano / "qrels.parquet", {"query-id": [q for q, _ in pairs], "corpus-id": [d for _, d in pairs]})
    out["nano-beir"] = nano

    # ---- cerepro's downloads: teacher files, and their md5 override -----------------------
    folder = cache / "downloads"
    teacher = [
        (round(float(rng.normal(8, 1)), 4), round(float(rng.normal(-2, 1)), 4), q, pos, neg) for q, pos, neg in triples
    ]
    files = {"hofstaetter-t2-teacher": _tsv(teacher)}
    colbert = overlap_run(train, docs, 12)
    files["rank-distillm-colbert-train"] = _trec_run(colbert, "colbertv2")
    for name in ("rank-distillm-rankzephyr-sampled-50", "rank-distillm-rankzephyr-sampled-100"):
        listed = [row for row in colbert if row[2] <= 10]
        files[name] = _trec_run([(q, d, rank, float(-rank)) for q, d, rank, _ in listed], "rankzephyr")
    checksums = []
    for name, text in files.items():
        path = _write(folder / downloads.REGISTRY[name].filename, text)
        checksums.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {path.name}\n")
        out[name] = path
    out["checksums"] = _write(folder / "CHECKSUMS", "".join(checksums))
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m cerepro.data.rehearsal",
        description=(
            "Write the rehearsal profile's inputs; then run with IR_DATASETS_HOME=<irds-home>, "
            "CEREPRO_CACHE=<cache> and CEREPRO_CHECKSUMS=<cache>/downloads/CHECKSUMS"
        ),
    )
    parser.add_argument("--irds-home", required=True)
    parser.add_argument("--cache", required=True)
    args = parser.parse_args(argv)
    for what, path in write_rehearsal_inputs(args.irds_home, args.cache).items():
        print(f"{what}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
