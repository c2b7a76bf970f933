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
run_name = "first-stage"
model = ""
revision = None
overrides = {}
run_dir = ""

# %%
import pandas as pd

from cerepro.evaluation.evaluate_model import evaluate_model
from cerepro.grids import evaluation_settings, load_grid
from cerepro.model.models import load_scorer
from cerepro.paths import notebook_run_dir
from cerepro.report import figures

settings = evaluation_settings(load_grid(grid), run_name, model=model, revision=revision, overrides=overrides)
scorer, tokenizer, source = load_scorer(settings.model, settings.revision) if settings.model else (None, None, None)
folder = notebook_run_dir(run_dir, "evaluate", run_name)  # empty run_dir: runs/interactive/...
pd.Series(settings.to_dict(), name=run_name, dtype=object).to_frame()

# %% [markdown]
# ## Re-rank and measure
# Each dataset's run and result (with its metric contract) go to `results/<dataset>/` in this
# run's folder; a result's warnings are printed here, where the numbers are read.

# %%
results = evaluate_model(settings, folder, scorer=scorer, tokenizer=tokenizer, source=source)
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

lists = score_teacher_lists(load_grid(grid), run_name, scorer, tokenizer, settings, folder / "teacher")
agreement.teacher_agreement(
    lists
) if lists is not None else f"{run_name}: no teacher lists (no model trained here from a source with teacher scores)"
