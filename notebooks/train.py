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
# # Train one cross-encoder
# One run of the grid: a backbone trained with one objective and one seed, following the
# layered params (`base -> backbone -> objective -> profile`). It answers: how does this
# objective train this backbone (loss, learning rate, validation), and what did it cost?
# With the defaults it trains a tiny BERT on the synthetic demo world (synthetic numbers).

# %% tags=["parameters"]
grid = "adhoc"
profile = "demo"
backbone = "tiny-bert"
objective = "infonce"
seed = 1
overrides = {}
run_dir = "."

# %%
from pathlib import Path

import pandas as pd

from cerepro import report
from cerepro.config import load_config
from cerepro.train import fit, launch, training_processes

config = load_config(backbone, objective, seed, profile, overrides)
pd.Series(config.to_dict(), name=config.run_id).to_frame()

# %% [markdown]
# ## Training
# Checkpoints, the JSONL log and the compute ledger go to `model/`, `log.jsonl` and
# `ledger.json` in this run's folder; an interrupted run resumes from its last checkpoint.
# With more than one process (GPUs, or `processes` CPU processes) the run goes through
# `accelerate launch` (DDP) in child processes.

# %%
summary = launch(config, Path(run_dir)) if training_processes(config) > 1 else fit(config, Path(run_dir))
summary

# %% [markdown]
# ## Training curves

# %%
report.training_curves(Path(run_dir))

# %% [markdown]
# ## Compute ledger

# %%
pd.read_json(Path(run_dir) / "ledger.json", typ="series").to_frame("value")
