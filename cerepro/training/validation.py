"""The validation sets a training run selects its model on: each set's first-stage candidates
tokenized once, re-ranked at the scoring precision and measured (``validation_measure``).

Used by :func:`cerepro.training.train.fit`; it never touches a test collection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cerepro.config import RunConfig
from cerepro.data.tokenize import PairEncoding, encode_pairs, encoding_options
from cerepro.evaluation import rerank


@dataclass
class ValidationSet:
    dataset: str
    measure: str
    encoding: PairEncoding
    run: Any  # DataFrame[query_id, doc_id] in encoding order
    qrels: Any
    pad_id: int

    @classmethod
    def load(cls, dataset: str, config: RunConfig, tokenizer) -> ValidationSet:
        from cerepro.data import datasets

        run = datasets.load_candidates(dataset, config.validation_first_stage, config.validation_depth)
        run = validation_topics(run, config.validation_queries)
        collection = datasets.load_collection(dataset, config.document_text)
        queries = collection.queries
        texts = dict(zip(run["doc_id"].unique(), collection.doc_text(run["doc_id"].unique())))
        encoding = encode_pairs(
            tokenizer,
            run["query_id"].map(queries).tolist(),
            run["doc_id"].map(texts).tolist(),
            **encoding_options(config),
        )
        return cls(
            dataset,
            config.validation_measure,
            encoding,
            run[["query_id", "doc_id"]].reset_index(drop=True),
            collection.qrels,
            tokenizer.pad_token_id,
        )

    def score(self, model, precision: str) -> float:
        from cerepro.evaluation import evaluate

        scores = rerank.score_pairs(model, self.encoding, pad_token_id=self.pad_id, precision=precision)
        result = evaluate.evaluate(
            self.run.assign(score=scores), self.qrels, [self.measure], dataset=self.dataset, run_name="validation"
        )
        return result.mean(self.measure)


def validation_topics(run, limit: int, seed: int = 123):
    """The candidates of at most ``limit`` topics: all of them when there are that few (NanoBEIR's
    sets hold 50), else a seeded sample (the authors draw 500 with xpmir's RandomFold, seed 123;
    its draw is not reproduced, only the size)."""
    topics = np.asarray(sorted(run["query_id"].unique()), dtype=object)
    if len(topics) <= limit:
        return run
    kept = set(np.random.RandomState(seed).choice(topics, size=limit, replace=False))
    return run[run["query_id"].isin(kept)]
