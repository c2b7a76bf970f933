# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Inspect a training source
# What one training source feeds an objective: how many groups, how long the texts are, how the
# teacher scores are distributed, and a few examples. With the defaults: the demo world's
# LLM-teacher lists (synthetic).

# %% tags=["parameters"]
grid = "adhoc"
profile = "demo"
source = "llm-lists"
train_data = "demo"
groups = 200
run_dir = "."

# %%
from cerepro import report
from cerepro.training_data import source_counts, source_sample

sample = source_sample(source, train_data, groups=groups)
sample.describe(include="all").T

# %% [markdown]
# ## Records kept and skipped
# InfoNCE (`hard-negatives`) skips a query whose run holds no passage judged relevant, as the
# authors' sampler does; every other source uses every record.

# %%
counts = source_counts(source, train_data)
{"source": counts.kind, "records in the file": counts.records, "records used": counts.used,
 "skipped (no judged positive in the run)": counts.skipped}

# %% [markdown]
# ## Lengths and teacher scores

# %%
report.source_distributions(sample)

# %% [markdown]
# ## Examples

# %%
sample.head(10)
