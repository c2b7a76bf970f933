"""The paper's aggregates, computed one way for every table that shows one.

An aggregate of ``params/datasets.yaml`` (``in-domain``, ``beir-13``, ``lotte-search-5``, ``ood``)
is the unweighted mean of its datasets' means: the paper's mean of means. A table column is a
dataset (its short name), an aggregate, or an evaluation group of a grid; :func:`members` says
which datasets it averages. A column that is itself an aggregate stands for its datasets and
weighs their number (:func:`weights`), so the authors' ``ood`` from the columns of their table,
``(5 × lotte-search-5 + robust04) / 6``, is the same mean of six dataset means as ours from
per-dataset means:

    members("ood")                                  # the six datasets' short names
    weights("ood", ["lotte-search-5", "robust04"])  # {"lotte-search-5": 5, "robust04": 1}
    mean_of(wide, "ood")                            # per row; NaN unless every dataset has a value
    formula("ood")                                  # "(5 × lotte-search-5 + robust04) / 6"
    aggregate_table(means)                          # one row per run: its datasets and aggregates

The grid's tables (:mod:`cerepro.report.tables`), the scoreboard and the authors' table
(:mod:`cerepro.report.cells`) take their aggregates from here. This module computes on pandas
tables; it never imports torch.
"""

from __future__ import annotations

import pandas as pd

from cerepro.vocab import dataset_group, dataset_registry, short_name


def members(column: str, datasets=None) -> list[str]:
    """The datasets (short names) a table column averages: an aggregate's, or the dataset itself;
    given the ``datasets`` a grid evaluated, also the ones of an evaluation group (a demo split's
    group). ``[]`` for a column that is none of these."""
    registry = dataset_registry()
    if column in registry["aggregates"]:
        return [short_name(m, strict=False) for m in registry["aggregates"][column]]
    if datasets is None:
        return [column] if any(info["short"] == column for info in registry["datasets"].values()) else []
    if column in datasets:
        return [column]
    return [d for d in datasets if dataset_group(d) == column]


def _weights(column: str, columns, datasets=None) -> dict[str, int] | None:
    """The columns whose datasets make up ``column``'s, each weighing its number of datasets
    (a column is taken when its datasets are all wanted and none is taken yet); None when they
    do not make up all of them."""
    wanted = set(members(column, datasets))
    picked, covered = {}, set()
    for candidate in columns:
        inside = set(members(candidate, datasets))
        if inside and inside <= wanted and not inside & covered:
            picked[candidate] = len(inside)
            covered |= inside
    return picked if wanted and covered == wanted else None


def weights(aggregate: str, columns) -> dict[str, int]:
    """How a paper aggregate is a weighted mean of table columns: each column weighs the number
    of its datasets. ``ood`` (LoTTE's five + Robust04) = (5 x lotte-search-5 + 1 x robust04) / 6."""
    if not members(aggregate):
        raise KeyError(f"{aggregate!r} is not an aggregate of params/datasets.yaml")
    found = _weights(aggregate, columns)
    if found is None:
        raise ValueError(f"{aggregate} is not a mean of the columns {list(columns)}")
    return found


def weighted_mean(values: pd.DataFrame, weights_: dict[str, int]) -> pd.Series:
    """``sum(w x values[c]) / sum(w)`` per row, NaN where any of the columns has no value."""
    return sum(w * values[c] for c, w in weights_.items()) / sum(weights_.values())


def mean_of(values: pd.DataFrame, column: str, datasets=None) -> pd.Series:
    """Table column ``column`` per row of ``values`` (one column per dataset or aggregate, short
    names): the mean of its datasets' means, NaN where one has no value or no column.
    ``datasets``: the datasets a grid evaluated, for a group column (:func:`members`)."""
    found = _weights(column, values.columns, datasets)
    if found is None:
        return pd.Series(float("nan"), index=values.index, dtype=float)
    return weighted_mean(values, found)


def formula(aggregate: str, columns=None) -> str:
    """The formula of an aggregate in table columns (default: the authors' table's):
    ``(5 × lotte-search-5 + robust04) / 6``."""
    found = weights(aggregate, columns or dataset_registry()["paper_table_columns"])
    terms = " + ".join(c if w == 1 else f"{w} × {c}" for c, w in found.items())
    return f"({terms}) / {sum(found.values())}"


def arithmetic(row: pd.Series, aggregate: str, columns) -> str:
    """An aggregate's value on one row of a table, with its arithmetic:
    ``(5 × 0.4000 + 0.3000) / 6 = 0.3833``."""
    found = weights(aggregate, columns)
    terms = " + ".join(f"{row[c]:.4f}" if w == 1 else f"{w} × {row[c]:.4f}" for c, w in found.items())
    return f"({terms}) / {sum(found.values())} = {weighted_mean(row, found):.4f}"


def aggregate_table(means: pd.DataFrame, *, measure: str = "nDCG@10") -> pd.DataFrame:
    """One row per run: its mean ``measure`` on each dataset (columns named by short names, in
    ``params/datasets.yaml`` order) and on each aggregate (``in-domain``, ``beir-13``,
    ``lotte-search-5``, ``ood``), NaN unless every one of its datasets is present (a partial
    aggregate is not the paper's number). ``means``: run, dataset (an id), measure, value."""
    params = dataset_registry()
    rows = means[means["measure"] == measure]
    if rows.empty:
        raise ValueError(f"no {measure!r} values in the means table (measures: {sorted(set(means['measure']))})")
    doubled = rows[rows.duplicated(["run", "dataset"])]
    if not doubled.empty:
        raise ValueError(f"run {doubled['run'].iloc[0]!r} has two {measure} means on {doubled['dataset'].iloc[0]!r}")
    wide = rows.pivot(index="run", columns="dataset", values="value")
    known = [d for d in params["datasets"] if d in wide.columns]
    table = wide[known + [d for d in wide.columns if d not in params["datasets"]]].copy()
    table.columns = [short_name(c, strict=False) for c in table.columns]
    datasets = table.copy()
    for name in params["aggregates"]:
        table[name] = mean_of(datasets, name)
    table.columns.name = None
    return table
