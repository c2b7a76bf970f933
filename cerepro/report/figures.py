"""Figures of a grid's results, drawn with seaborn: one colour per objective everywhere
(:func:`cerepro.vocab.objective_colours`), backbones ordered by parameter count.

    heatmaps(results); gain_vs_scaling(results); id_ood_scatter(results); seed_spread(results)
    training_curves("demo"); loss_figure(losses.loss_curves())

Every figure accepts an empty table and then says what is not yet run. This module draws what
:mod:`cerepro.report.tables` and :mod:`cerepro.report.verdicts` compute; it never imports torch.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cerepro.fragments import ParamsError, available
from cerepro.model.backbones import backbone_facts, millions
from cerepro.report.cells import CellTable
from cerepro.report.tables import (
    MEASURE,
    backbone_order,
    cell_means,
    column_scores,
    evaluation_groups,
    group_column,
    models_only,
    training_logs,
)
from cerepro.report.verdicts import cell_table
from cerepro.vocab import FIRST_STAGE, IN_DOMAIN, objective_colours, objective_order


def _seaborn():
    """seaborn, imported when a figure first draws with it: the run notebooks' figures (training
    curves, per-query boxes) are plain matplotlib, and their kernels skip its second of imports."""
    import seaborn

    return seaborn


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
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, sharey=sharey, layout="constrained"
    )
    # Closed at once: a notebook shows the figure once, as the value the caller returns; an open
    # pyplot figure is drawn again by the inline backend at the end of the cell.
    plt.close(fig)
    axes = list(axes.flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _colour_ticklabels(labels, names=None) -> None:
    """Each objective's tick label in its colour (``names``: the objectives, when the labels are
    written otherwise, e.g. on two lines)."""
    for label, name in zip(labels, names or [label.get_text() for label in labels]):
        colour = objective_colours().get(name)
        if colour is not None:
            label.set_color(colour)


def _two_lines(name: str) -> str:
    """``distill-ranknet`` as ``distill-`` over ``ranknet``: a label that reads across in a
    narrow column, instead of one turned on its side."""
    first, dash, rest = name.partition("-")
    return f"{first}{dash}\n{rest}" if dash else name


def _cell_source(source, measure: str) -> CellTable:
    """A figure's numbers: a cell table as it is (the authors' table), or a grid's results'."""
    return source if isinstance(source, CellTable) else cell_table(source, measure)


def _ncols(n: int) -> int:
    return min(n, 2)


def heatmaps(source, measure: str = MEASURE):
    """Backbone x objective heatmap of the mean over seeds, one panel per table column.

    ``source``: a grid's results, or a :class:`cerepro.report.cells.CellTable` such as the authors'
    table (its label becomes the figure's title, so published numbers say so). Backbone names
    are written once per row of panels, horizontally."""
    table = _cell_source(source, measure)
    if table.empty:
        return _empty_figure("not yet run: no finished evaluation in this grid")
    columns, backbones, objectives = table.shown, list(table.backbones), list(table.objectives)
    label_width = 0.065 * max(len(b) for b in backbones) + 0.45  # inches of backbone names and axis label
    ncols = _ncols(len(columns))
    fig, axes = _panels(
        len(columns),
        width=0.5 * len(objectives) + label_width / ncols + 0.25,
        height=0.95 + 0.27 * len(backbones),
        ncols=ncols,
    )
    for i, (ax, column) in enumerate(zip(axes, columns)):
        wide = table.values[column].unstack("objective").reindex(index=backbones, columns=objectives)
        _seaborn().heatmap(
            wide,
            annot=True,
            fmt=".3f",
            cmap="viridis",
            cbar=False,
            ax=ax,
            annot_kws={"fontsize": 7},
            xticklabels=objectives,
            yticklabels=backbones,
        )
        ax.set_title(f"{column} ({measure})", fontsize=8)
        ax.set_xlabel("")
        first = i % ncols == 0
        ax.set_ylabel("backbone (by size)" if first else "", fontsize=8)
        ax.set_yticks(np.arange(len(backbones)) + 0.5, backbones if first else [], rotation=0, fontsize=7.5)
        # objective names across, broken at their hyphen: never turned on their side
        ax.set_xticks(np.arange(len(objectives)) + 0.5, [_two_lines(o) for o in objectives], rotation=0, fontsize=7)
        ax.tick_params(length=0)
        _colour_ticklabels(ax.get_xticklabels(), objectives)
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
    labels = [_size_label(b).replace(" ", "\n", 1) for b in backbones]  # the name over its size
    stagger = len(backbones) > 4  # every other label a row lower, so that neighbours never touch
    fig, axes = _panels(
        len(columns),
        width=max(3.3, 0.42 * len(backbones) + 0.9),
        height=3.2 if stagger else 2.8,
        ncols=_ncols(len(columns)),
    )
    for ax, column in zip(axes, columns):
        for objective in table.objectives:
            values = [table.value(b, objective, column) for b in backbones]
            ax.plot(
                range(len(backbones)),
                values,
                marker="o",
                markersize=3.5,
                linewidth=1.2,
                color=objective_colours().get(objective, "0.3"),
                label=objective,
            )
        if column in table.first_stage:
            ax.axhline(table.first_stage[column], color="0.3", linestyle="--", linewidth=1, label=FIRST_STAGE)
        ax.set_xticks(range(len(backbones)), labels, fontsize=6.5, rotation=0)
        ax.tick_params(axis="x", pad=3)
        if stagger:
            for tick in ax.xaxis.get_major_ticks()[1::2]:
                tick.set_pad(3 + 2.8 * 6.5)  # two lines of 6.5 pt text lower, with some air
        ax.set_title(column, fontsize=8)
        ax.set_xlabel("backbone, by parameter count", fontsize=7)
        ax.set_ylabel(measure, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", color="0.9", linewidth=0.6)
    handles, names = axes[0].get_legend_handles_labels()
    # below the panels, in rows: inside the figure at any width, never under the title
    fig.legend(
        handles,
        names,
        loc="outside lower center",
        ncols=min(len(names), 4),
        fontsize=7,
        title="objective",
        title_fontsize=7,
        frameon=False,
    )
    fig.suptitle(
        f"{table.label}\nobjective gain vs backbone scaling" if table.label else "Objective gain vs backbone scaling",
        fontsize=9,
    )
    return fig


def _size_label(backbone: str) -> str:
    """``bert-base 109M``: the backbone and its parameter count (the slug alone if it has no params file)."""
    try:
        return f"{backbone} {millions(backbone_facts(backbone)['parameters'])}"
    except ParamsError:
        return backbone


def id_ood_scatter(results: pd.DataFrame, measure: str = MEASURE):
    """In-domain against each out-of-domain group: one point per backbone and objective (mean
    over seeds), colour = objective, marker = backbone."""
    cells = cell_means(models_only(results), measure=measure)
    groups = [g for g in evaluation_groups(models_only(results)) if g != IN_DOMAIN]
    if cells.empty or IN_DOMAIN not in set(results["group"]) or not groups:
        return _empty_figure("not yet run: needs in-domain and out-of-domain results")
    x_column = group_column(results, IN_DOMAIN)
    fig, axes = _panels(len(groups), width=3.4, height=3.0)
    backbones = backbone_order(cells["backbone"].unique())
    for i, (ax, group) in enumerate(zip(axes, groups)):
        y_column = group_column(results, group)
        wide = (
            cells[cells["column"].isin([x_column, y_column])]
            .pivot(index=["backbone", "objective"], columns="column", values="value")
            .dropna()
            .reset_index()
        )
        _seaborn().scatterplot(
            data=wide,
            x=x_column,
            y=y_column,
            hue="objective",
            style="backbone",
            hue_order=objective_order(wide["objective"]),
            style_order=backbones,
            palette=objective_colours(),
            s=70,
            ax=ax,
            legend=i == len(groups) - 1,
        )
        ax.set_xlabel(f"{x_column} ({measure})")
        ax.set_ylabel(f"{y_column} ({measure})")
        ax.set_title(f"in-domain vs {y_column}")
    legend = axes[-1].get_legend()
    if legend is not None:
        _seaborn().move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7)
    return fig


def seed_spread(results: pd.DataFrame, measure: str = MEASURE):
    """Each seed's score (points) and the mean over seeds (bar), per backbone and objective, one
    panel per evaluation group: how much a retrained model moves."""
    table = column_scores(models_only(results), measure=measure)
    if table.empty:
        return _empty_figure("not yet run: no finished evaluation in this grid")
    groups = evaluation_groups(models_only(results))
    backbones = backbone_order(table["backbone"].unique())
    objectives = objective_order(table["objective"].unique())
    fig, axes = _panels(len(groups), width=max(3.4, 0.5 * len(backbones) * max(1, len(objectives) / 4)))
    dodge = 0.8 * (len(objectives) - 1) / len(objectives)  # pointplot's offsets match stripplot's
    for ax, group in zip(axes, groups):
        part = table[table["column"] == group_column(results, group)]
        # the seeds' mean as a dash and each seed as a point, at the same offsets
        drawn = dict(data=part, x="backbone", y="value", hue="objective", order=backbones, hue_order=objectives)
        drawn.update(palette=objective_colours(), ax=ax)
        _seaborn().pointplot(
            **drawn, dodge=dodge, linestyle="none", markers="_", markersize=10, errorbar=None, legend=False
        )
        _seaborn().stripplot(**drawn, dodge=True, size=4, alpha=0.8, legend=ax is axes[-1])
        ax.set_title(group_column(results, group))
        ax.set_xlabel("backbone, by parameter count")
        ax.set_ylabel(f"{measure}, one point per seed")
        # two lines per label (family, size) instead of rotated labels running into each other
        ax.set_xticks(range(len(backbones)), [b.replace("-", "-\n", 1) for b in backbones], fontsize=7)
    if axes[-1].get_legend() is not None:
        _seaborn().move_legend(
            axes[-1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7, title="objective", title_fontsize=7
        )
    return fig


def per_query_distribution(per_query: pd.DataFrame):
    """Per-query values of one run: a box per dataset, one panel per measure."""
    if per_query.empty:
        return _empty_figure("no per-query values")
    measures = list(dict.fromkeys(per_query["measure"]))
    datasets = list(dict.fromkeys(per_query["dataset"]))
    # horizontal boxes: dataset names read across, never rotated into each other
    fig, axes = _panels(len(measures), width=3.6, height=max(1.6, 0.8 + 0.28 * len(datasets)))
    for ax, measure in zip(axes, measures):
        part = per_query[per_query["measure"] == measure]
        shown = [d for d in datasets if d in set(part["dataset"])][::-1]  # the first dataset on top
        ax.boxplot(
            [part.loc[part["dataset"] == d, "value"] for d in shown],
            tick_labels=shown,
            orientation="horizontal",
            patch_artist=True,
            boxprops={"facecolor": "0.8"},
            medianprops={"color": "0.2"},
            flierprops={"markersize": 2},
        )
        ax.set_xlabel("value per query")
        ax.set_title(measure)
        ax.tick_params(axis="y", labelsize=7)
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
        _seaborn().histplot(values, ax=ax, bins=30, color="0.45")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("")
    return fig


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
            ax.plot(
                line["step"],
                line[y],
                color=objective_colours().get(objective, "0.3"),
                linestyle=styles[backbone],
                linewidth=1,
                alpha=0.85,
                label=label,
            )
        runs = part["run"].unique()
        ax.set_title(runs[0] if len(runs) == 1 else objective)  # one run: its id says it all
        ax.set_xlabel("step")
        ax.set_ylabel(y)
        if len(backbones) > 1:
            ax.legend(fontsize=6, title="backbone", title_fontsize=6)
    return fig


def loss_figure(curves: pd.DataFrame):
    """Value and gradient of every objective over the student's score margin (``curves``:
    :func:`cerepro.training.losses.loss_curves`)."""
    fig, axes = _panels(2, width=3.5, height=2.9)
    order = objective_order(curves["objective"].unique())
    # MarginMSE's parabola would flatten every other curve: the frame follows the others.
    for ax, y, limits in zip(axes, ("value", "gradient"), ((-0.3, 7.5), (-2.2, 2.2))):
        # on two passages InfoNCE and DistillRankNet are the same function: dash one of them
        _seaborn().lineplot(
            data=curves,
            x="margin",
            y=y,
            hue="objective",
            hue_order=order,
            palette=objective_colours(),
            ax=ax,
            style="objective",
            style_order=order,
            dashes={o: (3, 3) if o == "distill-ranknet" else "" for o in order},
            legend=y == "gradient",
        )
        ax.set_ylim(*limits)
        ax.axvline(0, color="0.7", linewidth=0.8)
        ax.axhline(0, color="0.7", linewidth=0.8)
        ax.set_xlabel("student margin s₁ − s₂")
        ax.set_ylabel("loss" if y == "value" else "d loss / d margin")
    _seaborn().move_legend(axes[1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7)
    return fig


def paired_queries(pair: pd.DataFrame):
    """Two runs query by query (:func:`cerepro.report.explore.paired`): each query's value under both
    (a point per query, on or off the diagonal), and the per-query differences sorted, wins of
    ``b`` above zero and losses below."""
    a, b, measure = pair.attrs["a"], pair.attrs["b"], pair.attrs["measure"]
    if pair.empty:
        return _empty_figure("no query in common")
    fig, (scatter, bars) = _panels(2, width=3.8, height=3.2)
    scatter.scatter(pair[a], pair[b], s=12, color="0.25", alpha=0.7)
    low, high = min(pair[a].min(), pair[b].min()), max(pair[a].max(), pair[b].max())
    scatter.plot([low, high], [low, high], color="0.6", linewidth=0.8, linestyle="--")
    scatter.set_xlabel(a, fontsize=8)
    scatter.set_ylabel(b, fontsize=8)
    scatter.set_title(f"{measure} per query", fontsize=9)
    diff = pair["diff"].sort_values(ascending=False).to_numpy()
    colours = np.where(diff > 0, "#1b7837", np.where(diff < 0, "#b2182b", "0.6"))
    bars.bar(np.arange(len(diff)), diff, color=colours, width=1.0)
    bars.axhline(0, color="0.3", linewidth=0.8)
    bars.set_xlabel(f"queries, sorted ({int((diff > 0).sum())} wins, {int((diff < 0).sum())} losses of b)", fontsize=8)
    bars.set_ylabel(f"{measure}: b - a", fontsize=8)
    bars.set_xticks([])
    bars.set_title(f"b = {b}\na = {a}", fontsize=8)
    return fig
