"""Numbers derived from a cell table, each with its arithmetic and CSV lines.

What the claims pages quote besides the verdicts, computed on a :class:`cerepro.report.cells.CellTable`
(the authors' table or a grid's means): the paper's aggregates recomputed from the table's columns,
each objective's rank on each backbone, and the best objective of each (backbone, column) cell
with its margin over the runner-up. :func:`ranked` is the one ordering of a cell's objectives
(best first; equal values in the table's objective order): the best objective of the claims, of
these tables and of the research questions' pages all come from it.

    aggregates(table)                 # in-domain and ood per row, with "(a + b + c) / 3 = m"
    objective_ranks(table, "ood")     # 1 = best, ties share the better rank
    best_objectives(table)            # per (backbone, column): best, runner-up, margin, arithmetic
    best_objective_cells(table)       # the same as a table "infonce (+0.012)", backbones x columns

This module computes on pandas tables; it must not import torch, read runs or draw.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cerepro.report import aggregates as paper_aggregates
from cerepro.report.cells import CellTable
from cerepro.vocab import IN_DOMAIN, OOD

BEST_COLUMNS = ["backbone", "column", "best", "value", "runner-up", "margin", "arithmetic", "lines"]


def ranked(table: CellTable, backbone: str, column: str, objectives=None) -> list[tuple[str, float]]:
    """``(objective, value)`` of a backbone on a column, best first (equal values in the table's
    objective order), for ``objectives`` (default all) that have a number there."""
    wanted = table.objectives if objectives is None else [o for o in objectives if o in table.objectives]
    cells = [(o, table.value(backbone, o, column)) for o in wanted]
    return sorted(((o, v) for o, v in cells if not np.isnan(v)), key=lambda cell: cell[1], reverse=True)


def best_of(table: CellTable, backbone: str, column: str, objectives=None) -> tuple[str | None, float]:
    """The best of ``objectives`` (default all) on a backbone and column, and its value;
    ``(None, nan)`` where none has a number."""
    cells = ranked(table, backbone, column, objectives)
    return cells[0] if cells else (None, float("nan"))


def aggregates(table: CellTable, names=(IN_DOMAIN, OOD)) -> pd.DataFrame:
    """The paper's aggregates recomputed from the table's columns: one row per (backbone,
    objective) with each aggregate's value, its arithmetic and the CSV line."""
    columns = [c for c in table.values.columns if c not in names]
    rows = []
    for (backbone, objective), row in table.values.iterrows():
        out = {"backbone": backbone, "objective": objective}
        for name in names:
            out[name] = row[name]
            out[f"{name}: arithmetic"] = paper_aggregates.arithmetic(row, name, columns)
        out["lines"] = table.where((backbone, objective))
        rows.append(out)
    return pd.DataFrame(rows).set_index(["backbone", "objective"])


def objective_ranks(table: CellTable, column: str) -> pd.DataFrame:
    """Rank of each objective on each backbone (1 = best; ties share the better rank), one row
    per backbone with the CSV lines the ranks come from."""
    wide = (
        table.values[column].unstack("objective").reindex(index=list(table.backbones), columns=list(table.objectives))
    )
    ranks = wide.rank(axis=1, ascending=False, method="min").astype("Int64")
    ranks["lines"] = [table.where(*[(b, o) for o in table.objectives]) for b in ranks.index]
    ranks.columns.name = f"rank on {column}"
    return ranks


def best_objectives(table: CellTable, columns=None) -> pd.DataFrame:
    """The best objective of each backbone on each column (default: the columns a figure
    draws), with the arithmetic of its margin over the runner-up and the two CSV lines. A cell
    with one objective has no runner-up and no margin."""
    rows = []
    for column in columns or table.shown:
        for backbone in table.backbones:
            cells = ranked(table, backbone, column)
            if not cells:
                continue
            (best, value), (second, second_value) = cells[0], cells[1] if len(cells) > 1 else (None, np.nan)
            arithmetic = (
                f"{best} {value:.4f} − {second} {second_value:.4f} = {value - second_value:+.4f}"
                if second
                else f"{best} {value:.4f}, the only objective"
            )
            rows.append(
                {
                    "backbone": backbone,
                    "column": column,
                    "best": best,
                    "value": value,
                    "runner-up": second,
                    "margin": value - second_value,
                    "arithmetic": arithmetic,
                    "lines": table.where((backbone, best), (backbone, second)),
                }
            )
    return pd.DataFrame(rows, columns=BEST_COLUMNS)


def best_counts(table: CellTable, columns=None) -> pd.DataFrame:
    """How often each objective is best, per column (backbones counted)."""
    best = best_objectives(table, columns)
    counts = pd.crosstab(best["best"], best["column"]).reindex(
        index=[o for o in table.objectives if o in set(best["best"])], columns=list(dict.fromkeys(best["column"]))
    )
    counts.index.name, counts.columns.name = "best objective", "backbones where best, per column"
    return counts


def best_objective_cells(table: CellTable, columns=None, measure: str = "nDCG@10") -> pd.DataFrame:
    """:func:`best_objectives` as a table, one row per backbone and one column per table column,
    each cell ``best (+margin)`` (the margin over the runner-up, three decimals)."""
    best = best_objectives(table, columns)
    cells = [b if pd.isna(m) else f"{b} (+{m:.3f})" for b, m in zip(best["best"], best["margin"])]
    wide = best.assign(cell=cells).pivot(index="backbone", columns="column", values="cell")
    wide = wide.loc[[b for b in table.backbones if b in wide.index], list(dict.fromkeys(best["column"]))]
    wide.columns.name = f"best objective ({measure}, margin over the runner-up)"
    return wide
