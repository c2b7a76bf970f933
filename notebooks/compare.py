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
# # Compare a grid
# All runs of one grid side by side: the mean of `measure` (nDCG@10) per backbone and objective
# over seeds, on every dataset and group of the grid, then the same with paired
# significance tests (Holm-corrected) against a baseline objective, heatmaps per evaluation
# group, and the scoreboard against the authors' table. With the defaults: the demo grid
# (synthetic numbers, not comparable with the paper).

# %% tags=["parameters"]
grid = "demo"
measure = "nDCG@10"
baseline = "bce"

# %%

from cerepro.report import figures, tables, verdicts

results = tables.grid_results(grid)
tables.seed_mean_table(results, measure, columns=tables.available_columns(results)).rename_axis(
    columns=f"{measure}, mean over seeds"
)

# %% [markdown]
# ## Significance against the baseline objective

# %%
tables.significance_table(results, measure=measure, baseline=baseline)

# %% [markdown]
# ## Backbone x objective

# %%
figures.heatmaps(results, measure=measure)

# %% [markdown]
# ## Scoreboard against the paper

# %%
verdicts.scoreboard_table(results, grid=grid)
