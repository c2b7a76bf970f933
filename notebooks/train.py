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
# # Train one cross-encoder
# One run of the grid: a backbone trained with one objective and one seed, following the
# layered params (`base -> backbone -> objective -> profile`). It answers: how does this
# objective train this backbone (loss, learning rate, validation), and what did it cost?
# With the defaults it trains a tiny BERT on the synthetic demo world (synthetic numbers).

# %% tags=["parameters"]
profile = "demo"
backbone = "tiny-bert"
objective = "infonce"
seed = 1
overrides = {}
run_dir = ""

# %%
import pandas as pd

from cerepro.config import load_config
from cerepro.grid.checks import check_train
from cerepro.paths import notebook_run_dir
from cerepro.report import figures
from cerepro.training.launch import launch, training_processes
from cerepro.training.train import fit

config = load_config(backbone, objective, seed, profile, overrides)
folder = notebook_run_dir(run_dir, "train", config.run_id)  # empty run_dir: runs/interactive/...
pd.Series(config.to_dict(), name=config.run_id).to_frame()

# %% [markdown]
# ## Training
# Checkpoints, the JSONL log and the compute ledger go to `model/`, `log.jsonl` and
# `ledger.json` in this run's folder; an interrupted run resumes from its last checkpoint.
# With more than one process (GPUs, or `processes` CPU processes) the run goes through
# `accelerate launch` (DDP) in child processes. Every input is checked first: the validation
# sets and their first-stage runs, and every line of the training file (a pass the data job has
# cached), so a bad line stops the run here, naming it, before any step.

# %%
check_train(config, alone=True, verify=True)
summary = launch(config, folder) if training_processes(config) > 1 else fit(config, folder)
summary

# %% [markdown]
# ## Training curves

# %%
figures.training_curves(folder)

# %% [markdown]
# ## Compute ledger

# %%
pd.read_json(folder / "ledger.json", typ="series").to_frame("value")
