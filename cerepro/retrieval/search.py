"""Exact top-k search over an impact index: each query's documents, ranked by integer score.

- **Engines** (``search``): the exhaustive sparse product of each query with the postings, in
  scipy (term-at-a-time, exact; chosen on ``benchmarks/first_stage_search.py``: at k = 1000 it
  beat PISA's block-max WAND and impact-index's MaxScore about 4x), or impact-index's exact
  MaxScore on the same impacts. With ``threads``, queries are searched side by side over one
  shared copy of the postings, each exactly as on one thread.
- **Tie rule**: documents are ranked by score, then by doc id descending (trec_eval's order); at
  the depth cut-off, of the documents tied with the last kept score, those first in that order
  are kept (impact-index picks its own among those tied at the cut-off). Documents with score 0
  are never returned.

This module searches; it never encodes (:mod:`cerepro.retrieval.splade`) nor writes a run
(:mod:`cerepro.retrieval.first_stage`).
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from cerepro.paths import atomic_dir
from cerepro.retrieval.impacts import ImpactIndex
from cerepro.vocab import FirstStageError

ENGINES = ("scipy", "impact-index")
DEFAULT_ENGINE = "scipy"
BLOCK_POSTINGS = 2**31 - 1  # scipy keeps int32 indices only below this many postings a matrix


def search(
    index: ImpactIndex,
    queries,
    depth: int,
    *,
    engine: str = DEFAULT_ENGINE,
    progress: bool = False,
    block_postings: int = BLOCK_POSTINGS,
    threads: int = 1,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Exact top-``depth`` of each row of ``queries`` (a CSR matrix (Q, V) of integer impacts):
    per query, doc numbers and integer scores, ranked by the module's tie rule.

    ``threads`` > 1 searches queries side by side in a thread pool (scipy's sparse product and
    numpy's sorts release the GIL; the postings are shared, not copied). Each query's result is
    computed exactly as on one thread and returned in the queries' order, so the run is
    identical. impact-index's engine is searched on one thread (its thread safety is not
    documented)."""
    if engine not in ENGINES:
        raise FirstStageError(f"unknown search engine {engine!r}; known: {', '.join(ENGINES)}")
    if queries.shape[1] != index.vocab_size:
        raise FirstStageError(f"queries have {queries.shape[1]} terms, the index {index.vocab_size}")
    if threads < 1:
        raise FirstStageError(f"threads must be at least 1, got {threads}")
    search_one = _scipy(index, block_postings) if engine == "scipy" else _impact_index(index)

    def one(q):
        lo, hi = queries.indptr[q], queries.indptr[q + 1]
        return search_one(queries.indices[lo:hi], queries.data[lo:hi].astype(np.int64), depth)

    bar = tqdm(total=queries.shape[0], desc=f"search ({engine})", unit="query", disable=not progress)
    found = []
    if threads == 1 or engine != "scipy" or queries.shape[0] < 2:
        for q in range(queries.shape[0]):
            found.append(one(q))
            bar.update()
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=threads) as pool:
            for result in pool.map(one, range(queries.shape[0])):  # results in the queries' order
                found.append(result)
                bar.update()
    bar.close()
    return [d for d, _ in found], [s for _, s in found]


def _rank(index: ImpactIndex, docs: np.ndarray, scores: np.ndarray, depth: int):
    """Sort by score descending, then doc id descending, and cut at ``depth``."""
    order = np.lexsort((index.id_order[docs], -scores))[:depth]
    return docs[order], scores[order]


def _scipy(index: ImpactIndex, block_postings: int = BLOCK_POSTINGS):
    """The exhaustive sparse product ``q (1, V) @ postings (V, D)`` per query: scipy's
    term-at-a-time accumulation in C over every posting of the query's terms (exact).

    The postings are cut into blocks of consecutive documents with fewer than
    ``block_postings`` postings each, so every block keeps int32 doc numbers (8 bytes a posting
    with the int32 impacts; one matrix over MS MARCO's ~1.5 billion postings would need int64,
    12 bytes); each block's hits are merged before the top-k cut."""
    import threading

    import scipy.sparse as sp

    max_impact = index.max_impact
    blocks = _doc_blocks(index, block_postings)
    matrices = {}
    building = threading.Lock()  # threads share one copy of the postings, built once

    def postings(dtype):  # int32 impacts unless a query's score bound says otherwise
        with building:
            if dtype not in matrices:
                matrices[dtype] = [(first, _block_matrix(index, first, last, dtype)) for first, last in blocks]
            return matrices[dtype]

    def one(terms, weights, depth):
        bound = int((weights * max_impact[terms]).sum()) if len(terms) else 0
        dtype = np.int32 if bound < np.iinfo(np.int32).max else np.int64
        query = sp.csr_matrix((weights.astype(dtype), terms, [0, len(terms)]), shape=(1, index.vocab_size))
        hits, scores = [], []
        for first, matrix in postings(dtype):
            row = query @ matrix  # (1, block docs) sparse: only documents sharing a term
            hits.append(row.indices.astype(np.int64) + first)
            scores.append(row.data.astype(np.int64))
        hits, scores = np.concatenate(hits), np.concatenate(scores)
        if len(hits) > depth:  # keep every document tied with the depth-th score, then rank
            kth = np.partition(scores, len(scores) - depth)[len(scores) - depth]
            keep = scores >= kth
            hits, scores = hits[keep], scores[keep]
        return _rank(index, hits, scores, depth)

    return one


def _doc_blocks(index: ImpactIndex, block_postings: int) -> list[tuple[int, int]]:
    """Consecutive document ranges ``[first, last)`` with at most ``block_postings`` postings."""
    n_docs = len(index.doc_ids)
    ends = np.cumsum(np.bincount(np.asarray(index.docs), minlength=n_docs))  # postings up to doc d
    blocks, first = [], 0
    while first < n_docs:
        before = ends[first - 1] if first else 0
        last = max(first + 1, int(np.searchsorted(ends, before + block_postings, side="right")))
        blocks.append((first, min(last, n_docs)))
        first = last
    return blocks


def _block_matrix(index: ImpactIndex, first: int, last: int, dtype):
    """The (V, last - first) postings of documents ``[first, last)``: doc numbers increase
    within a term, so each term's slice is one contiguous run found by binary search."""
    import scipy.sparse as sp

    docs = np.asarray(index.docs)
    if first == 0 and last == len(index.doc_ids):
        return sp.csr_matrix(
            (np.asarray(index.impacts, dtype=dtype), docs, index.indptr), shape=(index.vocab_size, last - first)
        )
    starts, stops = index.indptr[:-1], index.indptr[1:]
    lo = np.array([s + np.searchsorted(docs[s:e], first) for s, e in zip(starts, stops)], dtype=np.int64)
    hi = np.array([s + np.searchsorted(docs[s:e], last) for s, e in zip(starts, stops)], dtype=np.int64)
    from cerepro.data.tokenize import _ranges

    take = _ranges(lo, hi - lo)
    indptr = np.zeros(index.vocab_size + 1, dtype=np.int64)
    np.cumsum(hi - lo, out=indptr[1:])
    return sp.csr_matrix(
        ((np.asarray(index.impacts)[take]).astype(dtype), (docs[take] - first).astype(np.int32), indptr),
        shape=(index.vocab_size, last - first),
    )


def _impact_index(index: ImpactIndex):
    """impact-index's MaxScore over the same integer impacts (built once next to the index)."""
    import impact_index

    if index.folder is None:
        raise FirstStageError("the impact-index engine searches an index saved on disk (build_index)")
    folder = index.folder / "impact-index"
    if not (folder / "manifest.json").is_file():
        with atomic_dir(folder, "manifest.json") as tmp:
            builder = impact_index.IndexBuilder(str(tmp))
            by_doc = _doc_major(index)
            for d, (terms, impacts) in enumerate(by_doc):
                builder.add(d, terms.astype(np.uintp), impacts.astype(np.float32))
            builder.build(in_memory=False)
    engine = impact_index.Index.load(str(folder), True)

    def one(terms, weights, depth):
        query = {int(t): float(w) for t, w in zip(terms, weights)}
        found = engine.search_maxscore(query, top_k=depth)
        docs = np.fromiter((r.docid for r in found), dtype=np.int64, count=len(found))
        # impact-index sums in float32: integer scores stay exact below 2^24 (SPLADE's are ~1e5)
        scores = np.fromiter((round(r.score) for r in found), dtype=np.int64, count=len(found))
        keep = scores > 0
        return _rank(index, docs[keep], scores[keep], depth)

    return one


def _doc_major(index: ImpactIndex):
    import scipy.sparse as sp

    csc = sp.csc_matrix(
        (np.asarray(index.impacts), np.asarray(index.docs), index.indptr), shape=(len(index.doc_ids), index.vocab_size)
    )
    csr = csc.tocsr()
    for d in range(csr.shape[0]):
        lo, hi = csr.indptr[d], csr.indptr[d + 1]
        yield csr.indices[lo:hi], csr.data[lo:hi]
