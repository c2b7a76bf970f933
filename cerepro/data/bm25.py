"""BM25 candidates with bm25s, the index cached on disk per passage set and reused.

    bm25_run(docs, queries, depth, name="msmarco-passage/trec-dl-2019/judged")

``docs`` is a passage store: iterable of ``(doc_id, text)``, with ``len`` and a ``key`` naming
its content (:class:`cerepro.data.trec.LocalDocs` hashes its file; an ir_datasets store is named by
its docs id). The index lives under ``cache_dir()/bm25/`` and is built beside its target and
renamed, so a reader never sees half an index. This module retrieves; it never reads a dataset id
(:func:`cerepro.data.datasets.load_candidates` does) and never scores with a neural model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cerepro.data.trec import RUN_COLUMNS, LocalDocs, rank_by_score
from cerepro.paths import atomic_dir, cache_dir, contents_damage, set_aside, write_contents

# Pyserini's BM25 parameters for MS MARCO passage (k1=0.9, b=0.4), Lucene's scoring variant, and
# an English Snowball stemmer with bm25s' English stop words: close to Anserini's default analyser.
BM25_PARAMS = {"k1": 0.9, "b": 0.4, "method": "lucene", "stemmer": "english", "stopwords": "en"}


def _tokenizer():
    import snowballstemmer
    from bm25s.tokenization import Tokenizer

    return Tokenizer(stopwords=BM25_PARAMS["stopwords"], stemmer=snowballstemmer.stemmer(BM25_PARAMS["stemmer"]))


def bm25_index_dir(docs, name: str) -> Path:
    """The index folder of a passage store: named after the docs id (an ir_datasets store) or the
    last part of the collection ``name`` (a local folder), keyed by content and settings."""
    import bm25s

    settings = json.dumps({**BM25_PARAMS, "docs": docs.key, "bm25s": bm25s.__version__}, sort_keys=True)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name.split("/")[-1] if isinstance(docs, LocalDocs) else docs.key)[:60]
    return cache_dir() / "bm25" / f"{slug}-{hashlib.md5(settings.encode()).hexdigest()[:12]}"


def bm25_index(docs, name: str):
    """``(retriever, tokenizer, doc_ids)``, built once per passage set and reused from disk."""
    import bm25s

    folder = bm25_index_dir(docs, name)
    if (folder / "doc_ids.json").is_file():
        damage = contents_damage(folder)  # sizes only: an index of MS MARCO is gigabytes
        if damage is not None:
            logging.getLogger(__name__).warning(
                "%s: BM25 index damaged or from an older cerepro (%s); building it again", folder, damage
            )
            set_aside(folder)
    if not (folder / "doc_ids.json").is_file():
        _build_index(docs, name, folder)
    retriever = bm25s.BM25.load(folder, show_progress=False)
    tokenizer = _tokenizer()
    tokenizer.load_vocab(folder)
    tokenizer.load_stopwords(folder)
    doc_ids = json.loads((folder / "doc_ids.json").read_text(encoding="utf-8"))
    return retriever, tokenizer, doc_ids


def _build_index(docs, name: str, folder: Path) -> None:
    import bm25s

    doc_ids, texts = [], []
    for doc_id, text in tqdm(
        docs, desc=f"bm25 index: read {name}", total=len(docs), unit=" docs", disable=len(docs) < 100_000
    ):
        doc_ids.append(doc_id)
        texts.append(text)
    tokenizer = _tokenizer()
    large = len(texts) > 100_000
    token_ids = tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=large)
    del texts
    retriever = bm25s.BM25(k1=BM25_PARAMS["k1"], b=BM25_PARAMS["b"], method=BM25_PARAMS["method"])
    retriever.index((token_ids, tokenizer.get_vocab_dict()), show_progress=large)
    with atomic_dir(folder, "doc_ids.json") as tmp:
        retriever.save(tmp, show_progress=False)
        tokenizer.save_vocab(tmp)
        tokenizer.save_stopwords(tmp)
        (tmp / "doc_ids.json").write_text(json.dumps(doc_ids), encoding="utf-8")
        write_contents(tmp, checksums=False)


def bm25_run(docs, queries: dict[str, str], depth: int, *, name: str) -> pd.DataFrame:
    """BM25 top-``depth`` of each query over the passages of ``docs``; zero scores are dropped;
    scores rounded to 4 decimals, ranked in trec_eval's order; queries in ``queries``' order."""
    retriever, tokenizer, doc_ids = bm25_index(docs, name)
    qids = list(queries)
    token_ids = tokenizer.tokenize([queries[q] for q in qids], update_vocab=False, return_as="ids", show_progress=False)
    k = min(depth, len(doc_ids))
    found, scores = retriever.retrieve(token_ids, k=k, show_progress=len(qids) > 1000)
    frame = pd.DataFrame(
        {
            "query_id": np.repeat(qids, k),
            "doc_id": np.asarray(doc_ids, dtype=object)[found.ravel()],
            "score": scores.ravel().astype("float64").round(4),
        }
    )
    frame = rank_by_score(frame[frame["score"] > 0])  # independent of bm25s' internal order
    order = {q: i for i, q in enumerate(qids)}
    frame = frame.sort_values("query_id", key=lambda s: s.map(order), kind="stable")
    return frame[RUN_COLUMNS].reset_index(drop=True)
