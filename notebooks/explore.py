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
# # Explore two runs, query by query
# Why does one run beat another? Pick a dataset and any two rankings of a grid (two objectives,
# backbones or seeds, a released checkpoint, the first stage): the per-query differences with
# the paired test, then, for one query, the top passages of each run side by side with their
# relevance grades and where every relevant passage went. Run top to bottom (papermill, the
# book) it shows the most-changed queries with no widget; in JupyterLab the last cell is the
# interactive explorer. Left empty, `run_a` and `run_b` are a baseline-objective run and the run
# of the same backbone and seed that differs most from it. With the defaults: the demo grid
# (synthetic numbers).

# %% tags=["parameters"]
grid = "demo"
dataset = ""
run_a = ""
run_b = ""
measure = "nDCG@10"
k = 10
queries = 3

# %%
from IPython.display import display

from cerepro.report import agreement, explore, explorer, figures, tables

results = tables.grid_results(grid)
index = explore.rankings(grid)
dataset = dataset or index["dataset"].iloc[0]
default_a, default_b = explore.default_pair(results, dataset, measure)
run_a, run_b = run_a or default_a, run_b or default_b
pair = explore.paired(results, run_a, run_b, dataset, measure)
explore.paired_test(pair).to_frame()

# %%
figures.paired_queries(pair)

# %% [markdown]
# ## The most-changed queries
# Each query's top passages under both runs (shaded: judged relevant, darker is a higher grade),
# then the rank each relevant passage got in each run and in the first stage.

# %%
for query_id in explore.most_changed(pair, queries)["query_id"]:
    for shown in explorer.query_view(grid, [run_a, run_b], dataset, query_id, k=k, index=index):
        display(shown)

# %% [markdown]
# ## Diagnostics
# Ties among each run's top-k (scores equal to three decimals: a near-constant scorer ranks by
# its tie-break), and the queries where a run ranks worse than the first stage it re-ranked.

# %%
explore.tie_summary(grid, dataset, k=k, index=index)

# %%
explore.below_first_stage_summary(results, dataset, measure)

# %% [markdown]
# ## Agreement with the teacher
# Runs trained from teacher scores (MarginMSE, DistillRankNet, ADR-MSE): Kendall's tau-b between
# the run's scores and its teacher's on the teacher's last lists of the run's first pass over its
# source (the teacher scores no validation set; the evaluate job scores them), mean over the
# lists; then the list each of the two runs orders least like its teacher.

# %%
lists = agreement.teacher_lists(grid)
agreement.teacher_agreement(lists)

# %%
for shown in agreement.teacher_view(lists, [run_a, run_b]):
    display(shown)

# %% [markdown]
# ## Interactive
# In JupyterLab: choose the dataset, the two runs and a query (listed most-changed first).

# %%
explorer.explorer(grid, dataset=dataset, a=run_a, b=run_b, measure=measure, k=k)
