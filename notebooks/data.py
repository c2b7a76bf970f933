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
# # Inspect a training source
# What one training source feeds an objective: how many groups, how long the texts are, how the
# teacher scores are distributed, and a few examples. With the defaults: the demo world's
# LLM-teacher lists (synthetic).

# %% tags=["parameters"]
source = "llm-lists"
train_data = "demo"
llm_list = "sampled-50"
groups = 200

# %% [markdown]
# ## Every line checked
# One pass over the training file parses every line as training will (columns, finite scores,
# integer ranks) and stops at the first bad one, naming its line; the result is cached, so the
# grid's training jobs start without repeating it.

# %%
import pandas as pd

from cerepro.data.training_data import source_counts, source_sample, verify_training_file
from cerepro.report import figures

pd.Series(verify_training_file(source, train_data, llm_list)).to_frame("verified")

# %%
sample = source_sample(source, train_data, groups=groups, llm_list=llm_list)
sample.describe(include="all").T

# %% [markdown]
# ## Records kept and skipped
# InfoNCE (`hard-negatives`) skips a query whose run holds no passage judged relevant, as the
# authors' sampler does; every other source uses every record.

# %%
counts = source_counts(source, train_data)
{
    "source": counts.kind,
    "records in the file": counts.records,
    "records used": counts.used,
    "skipped (no judged positive in the run)": counts.skipped,
}

# %% [markdown]
# ## Lengths and teacher scores

# %%
figures.source_distributions(sample)

# %% [markdown]
# ## Examples

# %%
sample.head(10)
