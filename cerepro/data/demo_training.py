"""The demo world's training sources: the four files of the paper, in the formats of the real ones.

Teachers: a simulated cross-encoder ensemble scores a pair ``2.2 * grade - 3`` plus Gaussian noise
(sd 1); a stronger simulated first stage (the ColBERTv2 run's stand-in) ranks by grade plus noise
(sd 0.8); a simulated LLM re-orders its top 50 / 100 by grade plus noise (sd 0.6). The grades are
those of ``cerepro.data.demo_texts``; the real readers in ``cerepro.data.training_data`` read the
files. This module writes files; it never trains.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cerepro.data.demo_texts import Query, Sizes, World, grades_of
from cerepro.data.trec import RUN_COLUMNS, write_qrels, write_run


def write_training_files(
    folder: Path, world: World, queries: list[Query], bm25: pd.DataFrame, sizes: Sizes, rng
) -> None:
    """The four training sources of the paper, in the formats of the real files.

    - ``qrels.txt``: one judged positive per query (relevance 1), like MS MARCO's train qrels;
    - ``triples.tsv``: ``qid pos_pid neg_pid``, negatives from the BM25 top-``depth`` (they may
      be unjudged relevant passages, as in MS MARCO), shuffled;
    - ``teacher-pairs.tsv``: the same triples scored by the simulated cross-encoder ensemble,
      ``pos_score neg_score qid pos_pid neg_pid`` like Hofstaetter et al.'s file;
    - ``hard-negatives.run``: a stronger simulated first stage (the ColBERTv2 run's stand-in),
      top-``hard_negatives_depth``, TREC format;
    - ``llm-lists-sampled-50.run`` / ``-100.run``: the simulated LLM's orderings of that run's top
      50 / 100 for ``llm_queries`` sampled queries, TREC format, score = list length + 1 - rank.
    """
    grades = grades_of(world, queries)
    judged = pd.DataFrame(
        {"query_id": [q.id for q in queries], "doc_id": [world.doc_ids[q.source] for q in queries], "relevance": 1}
    )
    write_qrels(judged, folder / "qrels.txt")

    teacher = 2.2 * grades - 3.0 + rng.normal(0.0, 1.0, size=grades.shape)
    doc_index = {d: i for i, d in enumerate(world.doc_ids)}
    triples = []
    for qi, q in enumerate(queries):
        pool = [doc_index[d] for d in bm25.loc[bm25["query_id"] == q.id, "doc_id"] if doc_index[d] != q.source]
        for neg in rng.choice(pool, size=sizes.triples_per_query, replace=len(pool) < sizes.triples_per_query):
            triples.append((qi, q.source, int(neg)))
    order = rng.permutation(len(triples))
    with (
        (folder / "triples.tsv").open("w", encoding="utf-8") as ids,
        (folder / "teacher-pairs.tsv").open("w", encoding="utf-8") as scored,
    ):
        for i in order:
            qi, pos, neg = triples[i]
            qid, pid, nid = queries[qi].id, world.doc_ids[pos], world.doc_ids[neg]
            ids.write(f"{qid}\t{pid}\t{nid}\n")
            scored.write(f"{teacher[qi, pos]:.4f}\t{teacher[qi, neg]:.4f}\t{qid}\t{pid}\t{nid}\n")

    # a stronger first stage than BM25: it sees relevance through noise and never favours spam
    utility = grades + rng.normal(0.0, 0.8, size=grades.shape)
    first_stage = _top(utility, queries, world, sizes.hard_negatives_depth)
    write_run(first_stage, folder / "hard-negatives.run", tag="simulated-colbert")

    sampled = np.sort(rng.choice(len(queries), size=min(sizes.llm_queries, len(queries)), replace=False))
    llm = grades + rng.normal(0.0, 0.6, size=grades.shape)
    for k in (50, 100):
        lists = []
        for qi in sampled:
            top = first_stage[first_stage["query_id"] == queries[qi].id].head(k)
            docs = np.array([doc_index[d] for d in top["doc_id"]])
            ranked = docs[np.argsort(-llm[qi, docs], kind="stable")]
            lists.append(
                pd.DataFrame(
                    {
                        "query_id": queries[qi].id,
                        "doc_id": [world.doc_ids[d] for d in ranked],
                        "score": np.arange(len(ranked), 0, -1, dtype=float),
                        "rank": np.arange(1, len(ranked) + 1),
                    }
                )
            )
        write_run(pd.concat(lists, ignore_index=True), folder / f"llm-lists-sampled-{k}.run", tag="simulated-llm")


def _top(scores: np.ndarray, queries: list[Query], world: World, depth: int) -> pd.DataFrame:
    frames = []
    for qi, q in enumerate(queries):
        best = np.argsort(-scores[qi], kind="stable")[:depth]
        frames.append(
            pd.DataFrame(
                {
                    "query_id": q.id,
                    "doc_id": [world.doc_ids[d] for d in best],
                    "score": scores[qi, best].round(4),
                    "rank": np.arange(1, len(best) + 1),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[RUN_COLUMNS]
