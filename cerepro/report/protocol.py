"""The setup as the params describe it, for the book's Setup part: backbones (with their size
from :func:`cerepro.model.backbones.backbone_facts`), objectives, evaluation datasets, and the merged
settings of a profile's runs.

This module reads params; it never imports torch (validating a config may, inside
:func:`cerepro.config.load_config`).
"""

from __future__ import annotations

import pandas as pd

from cerepro.config import load_config, paper_seeds
from cerepro.fragments import available, fragment_path, read_fragment
from cerepro.model.backbones import backbone_facts, millions
from cerepro.objectives import registry
from cerepro.report.tables import backbone_order, book_grid, grid_info
from cerepro.vocab import dataset_group, dataset_registry, objective_order


def backbones_table(slugs=None) -> pd.DataFrame:
    """The backbones (default: the paper grid's and the demo grid's), by size."""
    if slugs is None:
        slugs = [
            *grid_info("paper").backbones,
            *grid_info(book_grid()).backbones,
        ]
    rows = []
    for slug in backbone_order(slugs):
        params = read_fragment(fragment_path("backbones", slug))
        facts = backbone_facts(slug)
        rows.append(
            {
                "backbone": slug,
                "HF id": facts["hf_id"],
                "architecture": facts["architecture"],
                "parameters": millions(facts["parameters"]),
                "layers": facts["layers"],
                "hidden": facts["hidden"],
                "lr": params["lr"],
                "batch": params["batch_size"],
                "max length": params["max_length"],
                "precision": params["precision"],
            }
        )
    return pd.DataFrame(rows).set_index("backbone")


def objectives_table() -> pd.DataFrame:
    """Each objective's params fragment: training source, group size, batch, the hyperparameters
    the fragments set (in the order the objectives declare them) and the LLM list."""
    fragments = {
        slug: read_fragment(fragment_path("objectives", slug)) for slug in objective_order(available("objectives"))
    }
    declared = [h.name for record in registry().values() for h in record.hyperparameters]
    loss = [name for name in dict.fromkeys(declared) if any(name in f for f in fragments.values())]
    keys = ("training_source", "group_size", "batch_unit", "batch_size", *loss, "llm_list")
    rows = [{"objective": slug, **{k: params.get(k, "") for k in keys}} for slug, params in fragments.items()]
    return pd.DataFrame(rows).set_index("objective")


PROTOCOL_KEYS = (
    "backbone",
    "objective",
    "lr",
    "batch_size",
    "pairs_per_step",
    "max_length",
    "query_max_length",
    "passage_max_length",
    "truncation",
    "lower_case",
    "precision",
    "optimizer",
    "warmup_steps",
    "max_steps",
    "grad_clip",
    "train_data",
    "data_order",
    "hard_negative_groups",
    "validate_every",
    "validation_datasets",
    "validation_depth",
    "validation_measure",
    "validation_aggregate",
    "early_stopping_steps",
    "first_stage",
    "candidate_depth",
    "eval_datasets",
    "document_text",
)


def protocol_table(grid: str) -> pd.DataFrame:
    """The merged settings of one run of the paper profile next to the same kind of run in
    ``grid``'s profile (its first backbone and objective)."""
    info = grid_info(grid)
    runs = {"paper": load_config("bert-base", "infonce", paper_seeds(1)[0], "paper")}
    if info.profile != "paper":
        runs[info.profile] = load_config(info.backbones[0], info.objectives[0], paper_seeds(1)[0], info.profile)
    rows = {}
    for profile, config in runs.items():
        values = {**config.to_dict(), "pairs_per_step": config.pairs_per_step}
        rows[f"profile {profile}"] = {k: _short_value(values[k]) for k in PROTOCOL_KEYS}
    return pd.DataFrame(rows)


def _short_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return f"{len(value)}: " + ", ".join(value) if len(value) <= 3 else f"{len(value)} datasets ({value[0]}, ...)"
    return str(value)


def datasets_table() -> pd.DataFrame:
    """Evaluation datasets: short name, group, test queries and relevance threshold (params),
    and the demo world's splits."""
    rows = [
        {
            "dataset": name,
            "short": info["short"],
            "group": info["group"],
            "queries": info["queries"],
            "rel_threshold": info["rel_threshold"],
        }
        for name, info in dataset_registry()["datasets"].items()
    ]
    for name in ("demo:in-domain", "demo:out-of-domain"):
        rows.append({"dataset": name, "short": name, "group": dataset_group(name), "queries": "", "rel_threshold": 1})
    return pd.DataFrame(rows).set_index("dataset")


def differences_blocks(root=None) -> str:
    """The differences from the authors' code as Markdown, one block per difference (its point
    and status, then what their code does and where, what cerepro does, the expected effect):
    a six-column table of paragraphs does not fit a book's column."""
    from cerepro.fragments import differences

    def text(value) -> str:
        value = " ".join(str(value).split())
        return value.replace("<", "&lt;").replace(">", "&gt;")  # <s> is RoBERTa's, not HTML

    blocks = []
    for d in differences(root):
        blocks.append(
            f"**{text(d['point'])}** · *{text(d['status'])}*\n\n"
            f"- **The authors' code**: {text(d['authors'])} *(read in {text(d['source'])})*\n"
            f"- **cerepro**: {text(d['cerepro'])}\n"
            f"- **Expected effect**: {text(d['effect'])}\n"
        )
    return "\n".join(blocks)
