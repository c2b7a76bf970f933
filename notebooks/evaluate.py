# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version,-jupytext.text_representation.format_version
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Evaluate one model
# Re-rank each dataset's first-stage candidates with one cross-encoder (or, for the run
# `first-stage`, score the first stage itself) and measure the run with ir_measures. The run's
# identity (`grid`, `run_name`) decides everything else, read from its config: the model (a
# trained run's `train/model`, a released checkpoint's hub id at its revision), the datasets,
# first stage, depth, max lengths and the scoring precision (fp32, or fp32 weights with TF32
# matmuls for runs trained so; never bf16). Ad hoc, `model` (a folder or a hub id at `revision`)
# is scored with the grid's settings, and `overrides` replaces run-config keys, e.g.
# `{"candidate_depth": 10}`. Every result is saved with its metric contract, which records the
# precision and the weights actually loaded. With the defaults: the demo world's BM25
# candidates (synthetic numbers).

# %% tags=["parameters"]
grid = "demo"
profile = "demo"
run_name = "first-stage"
model = ""
revision = None
overrides = {}
run_dir = ""

# %%

import pandas as pd

from cerepro.data.datasets import collection_facts, load_candidates, load_collection
from cerepro.data.trec import write_run
from cerepro.evaluation.evaluate import evaluate, folder_name, save_result
from cerepro.evaluation.rerank import rerank
from cerepro.grids import evaluation_settings, load_grid
from cerepro.model.models import load_scorer
from cerepro.paths import notebook_run_dir
from cerepro.report import figures

settings = evaluation_settings(load_grid(grid), run_name, model=model, revision=revision, overrides=overrides)
scorer, tokenizer, source = load_scorer(settings.model, settings.revision) if settings.model else (None, None, None)
contract = {
    "first_stage": f"{settings.first_stage} top-{settings.depth}",
    "scoring_precision": settings.precision if scorer else None,
    "document_text": settings.document_text,
    **(source.describe() if source else {}),
}
pd.Series(settings.to_dict(), name=run_name, dtype=object).to_frame()

# %% [markdown]
# ## Re-rank and measure

# %%
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
            max_length=settings.max_length,
            query_max_length=settings.query_max_length,
            passage_max_length=settings.passage_max_length,
            truncation=settings.truncation,
            precision=settings.precision,
        )
    folder = notebook_run_dir(run_dir, "evaluate", run_name) / "results" / folder_name(dataset)
    write_run(run, folder / "run.trec", settings.run_id)
    result = evaluate(
        run,
        collection.qrels,
        dataset=dataset,
        run_name=settings.run_id,
        candidate_depth=settings.depth,
        contract_extra={**contract, **collection_facts(collection, run, texts)},
    )
    results.append(save_result(result, folder) and result)
    for warning in result.contract["warnings"]:  # said here, where the numbers are read
        print(f"WARNING: {warning}")

means = pd.concat([r.means for r in results])
means.pivot(index="dataset", columns="measure", values="value")

# %% [markdown]
# ## Per-query distribution

# %%
figures.per_query_distribution(pd.concat([r.per_query for r in results]))

# %% [markdown]
# ## Agreement with the teacher
# Where the run's training source has a teacher (MarginMSE's ensemble scores, the LLM's lists):
# the teacher's last lists of the run's first pass over that source (the teacher scores no
# validation set), scored by this model, and Kendall's tau-b per list between its scores and the
# teacher's, summed up over the lists (1: the teacher's order; `cerepro.report.agreement`).

# %%
from cerepro.evaluation.teacher import score_teacher_lists
from cerepro.report import agreement

lists = score_teacher_lists(
    load_grid(grid), run_name, scorer, tokenizer, settings, notebook_run_dir(run_dir, "evaluate", run_name) / "teacher"
)
agreement.teacher_agreement(
    lists
) if lists is not None else f"{run_name}: no teacher lists (no model trained here from a source with teacher scores)"
