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
# Re-rank each dataset's first-stage candidates with one trained cross-encoder (or, with an
# empty `model_dir`, score the first stage itself) and measure the run with ir_measures. Every
# result is saved with its metric contract. With the defaults: the demo world's BM25 candidates
# (synthetic numbers).

# %% tags=["parameters"]
grid = "adhoc"
profile = "demo"
run_name = "first-stage"
model_dir = ""
datasets = ["demo:in-domain", "demo:out-of-domain"]
first_stage = "bm25"
depth = 30
max_length = 96
query_max_length = None
passage_max_length = None
run_dir = ""

# %%
from pathlib import Path

import pandas as pd

from cerepro import report
from cerepro.datasets import load_collection, load_candidates
from cerepro.evaluate import evaluate, folder_name, save_result
from cerepro.models import load_cross_encoder
from cerepro.paths import notebook_run_dir
from cerepro.rerank import rerank, write_trec_run

model, tokenizer = load_cross_encoder(model_dir) if model_dir else (None, None)

# %% [markdown]
# ## Re-rank and measure

# %%
results = []
for dataset in datasets:
    collection = load_collection(dataset)
    run = load_candidates(dataset, first_stage, depth)
    if model is not None:
        texts = collection.docs.get_many(run["doc_id"].unique())  # missing texts: counted by rerank
        run = rerank(model, tokenizer, run, collection.queries, texts, max_length=max_length,
                     query_max_length=query_max_length, passage_max_length=passage_max_length)
    folder = notebook_run_dir(run_dir, "evaluate", run_name) / "results" / folder_name(dataset)
    write_trec_run(run, folder / "run.trec", run_name)
    result = evaluate(run, collection.qrels, dataset=dataset, run_name=run_name,
                      contract_extra={"first_stage": f"{first_stage} top-{depth}"})
    results.append(save_result(result, folder) and result)

means = pd.concat([r.means for r in results])
means.pivot(index="dataset", columns="measure", values="value")

# %% [markdown]
# ## Per-query distribution

# %%
report.per_query_distribution(pd.concat([r.per_query for r in results]))
