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
# Re-rank each dataset's first-stage candidates with one cross-encoder (or, with an empty
# `model`, score the first stage itself) and measure the run with ir_measures, at the scoring
# precision of the run (`precision`: fp32, or fp32 weights with TF32 matmuls for runs trained
# so; never bf16). `model` is a folder (a trained run's `train/model`, any transformers folder)
# or a hub id at `revision` (a released checkpoint). Every result is saved with its metric
# contract, which records the precision and the weights actually loaded. With the defaults: the
# demo world's BM25 candidates (synthetic numbers).

# %% tags=["parameters"]
grid = "adhoc"
profile = "demo"
run_name = "first-stage"
model = ""
revision = None
datasets = ["demo:in-domain", "demo:out-of-domain"]
first_stage = "bm25"
depth = 30
max_length = 96
query_max_length = None
passage_max_length = None
truncation = "passage"
precision = "fp32"
run_dir = ""

# %%
from pathlib import Path

import pandas as pd

from cerepro import figures
from cerepro.datasets import load_collection, load_candidates
from cerepro.evaluate import evaluate, folder_name, save_result
from cerepro.models import load_scorer
from cerepro.paths import notebook_run_dir
from cerepro.rerank import rerank
from cerepro.trec import write_run

scorer, tokenizer, source = load_scorer(model, revision) if model else (None, None, None)
contract = {"first_stage": f"{first_stage} top-{depth}", "scoring_precision": precision if scorer else None,
            **(source.describe() if source else {})}
contract

# %% [markdown]
# ## Re-rank and measure

# %%
results = []
for dataset in datasets:
    collection = load_collection(dataset)
    run = load_candidates(dataset, first_stage, depth)
    if scorer is not None:
        texts = collection.docs.get_many(run["doc_id"].unique())  # missing texts: counted by rerank
        run = rerank(scorer, tokenizer, run, collection.queries, texts, max_length=max_length,
                     query_max_length=query_max_length, passage_max_length=passage_max_length,
                     truncation=truncation, precision=precision)
    folder = notebook_run_dir(run_dir, "evaluate", run_name) / "results" / folder_name(dataset)
    write_run(run, folder / "run.trec", run_name)
    result = evaluate(run, collection.qrels, dataset=dataset, run_name=run_name,
                      contract_extra=contract)
    results.append(save_result(result, folder) and result)

means = pd.concat([r.means for r in results])
means.pivot(index="dataset", columns="measure", values="value")

# %% [markdown]
# ## Per-query distribution

# %%
figures.per_query_distribution(pd.concat([r.per_query for r in results]))
