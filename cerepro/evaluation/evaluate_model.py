"""One model evaluated on an evaluation's datasets: each dataset's first-stage candidates re-ranked
by the model (or, with no model, the first stage's own scores), written as a TREC run and
measured, each result saved with its metric contract. What the evaluate notebook runs.

``settings`` is an evaluation's settings (:class:`cerepro.grids.EvaluationSettings`: datasets,
first stage, depth, max lengths, truncation, scoring precision, document text, run id). This
module re-ranks and measures; it never trains and never chooses the settings.
"""

from __future__ import annotations

from pathlib import Path

from cerepro.data.datasets import collection_facts, load_candidates, load_collection
from cerepro.data.tokenize import encoding_options
from cerepro.data.trec import write_run
from cerepro.evaluation.evaluate import Result, evaluate, folder_name, save_result
from cerepro.evaluation.rerank import rerank


def contract_of(settings, scorer=None, source=None) -> dict:
    """What every result of this evaluation records beside its numbers: the first stage and its
    depth, the scoring precision (None for the first stage's own scores), the document text and
    the weights actually loaded (``source``: :class:`cerepro.model.models.ScorerSource`)."""
    return {
        "first_stage": f"{settings.first_stage} top-{settings.depth}",
        "scoring_precision": settings.precision if scorer else None,
        "document_text": settings.document_text,
        **(source.describe() if source else {}),
    }


def evaluate_model(settings, folder, *, scorer=None, tokenizer=None, source=None) -> list[Result]:
    """Re-rank and measure each of ``settings.datasets``; one result per dataset, in order.

    Each dataset's run and result go to ``folder/results/<dataset folder>/`` (``run.trec``,
    :func:`cerepro.evaluation.evaluate.save_result`'s files); a result's warnings are printed
    as it is measured. Without ``scorer`` the candidates keep the first stage's scores."""
    contract = contract_of(settings, scorer, source)
    results = []
    for dataset in settings.datasets:
        collection = load_collection(dataset, settings.document_text)
        run = load_candidates(dataset, settings.first_stage, settings.depth)
        texts = None
        if scorer is not None:
            texts = collection.docs.get_many(run["doc_id"].unique())  # missing texts: counted by rerank
            run = rerank(
                scorer,
                tokenizer,
                run,
                collection.queries,
                texts,
                **encoding_options(settings),
                precision=settings.precision,
            )
        out = Path(folder) / "results" / folder_name(dataset)
        write_run(run, out / "run.trec", settings.run_id)
        result = evaluate(
            run,
            collection.qrels,
            dataset=dataset,
            run_name=settings.run_id,
            candidate_depth=settings.depth,
            contract_extra={**contract, **collection_facts(collection, run, texts)},
        )
        results.append(save_result(result, out) and result)
        for warning in result.contract["warnings"]:  # said where the numbers are read
            print(f"WARNING: {warning}")
    return results
