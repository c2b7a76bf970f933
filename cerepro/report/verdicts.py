"""The paper's claims and the authors' table, with verdicts on a grid's results.

:func:`claims_table` puts each claim's verdict on the authors' table next to its verdict on this
grid's runs (the tests are :mod:`cerepro.report.claims`', on the grid's cell means);
:func:`scoreboard_table` puts the authors' numbers next to ours with a verdict per cell
(:mod:`cerepro.report.scoreboard`); :func:`styled` shows any table with its verdicts in colour.

This module reads results; it never imports torch.
"""

from __future__ import annotations

import pandas as pd

from cerepro.grids import checkpoint_run_id, load_grid
from cerepro.objectives import BASELINE_OBJECTIVE
from cerepro.report import claims as claims_audit
from cerepro.report import derived, scoreboard
from cerepro.report.cells import CellTable, paper_table
from cerepro.report.claims import NOT_RUN, NOT_SUPPORTED, SUPPORTED, UNTESTABLE, Claim
from cerepro.report.tables import (
    MEASURE,
    backbone_order,
    baselines_only,
    cell_means,
    grid_info,
    models_only,
    ordered_rows,
    placeholder,
    significance,
    table_columns,
)
from cerepro.vocab import (
    FIRST_STAGE,
    IN_DOMAIN,
    OOD,
    RELEASED,
    TRAINED,
    RunId,
    dataset_group,
    dataset_id,
    dataset_registry,
    objective_order,
    short_name,
)


def cell_table(results: pd.DataFrame, measure: str = MEASURE, label: str = "") -> CellTable:
    """This grid's means over seeds as a :class:`cerepro.report.cells.CellTable`: the columns of
    :func:`table_columns` (the paper's where the grid has them, else its own datasets), backbones
    by parameter count, the first stage's values aside."""
    models = models_only(results[results["measure"] == measure]) if not results.empty else results
    if models.empty:
        return CellTable(pd.DataFrame(), (), (), (), (), label=label)
    columns = table_columns(models)
    cells = cell_means(results, columns, measure)
    first = cells[cells["backbone"] == FIRST_STAGE]
    cells = cells[cells["backbone"] != FIRST_STAGE]
    values = cells.pivot_table(index=["backbone", "objective"], columns="column", values="value", sort=False)
    tested = [c for c in columns if c in values.columns and c not in (IN_DOMAIN, OOD)]
    in_domain = tuple(c for c in tested if dataset_group(c) == IN_DOMAIN)
    mean = IN_DOMAIN if IN_DOMAIN in values.columns else in_domain[0] if len(in_domain) == 1 else None
    return CellTable(
        values=values,
        backbones=tuple(backbone_order(cells["backbone"])),
        objectives=tuple(objective_order(cells["objective"])),
        in_domain=in_domain,
        out_of_domain=tuple(c for c in tested if c not in in_domain),
        trec_dl=tuple(c for c in tested if c.startswith("trec-dl")),
        in_domain_mean=mean,
        label=label,
        first_stage=dict(zip(first["column"], first["value"])),
    )


def objective_vs_scaling(results: pd.DataFrame, measure: str = MEASURE) -> pd.DataFrame:
    """Per table column: what the objective buys (mean over backbones of the best objective
    minus bce) against what scaling buys (mean over objectives of the largest backbone minus
    the smallest); :func:`cerepro.report.claims.scaling_gains` has each term's arithmetic."""
    table = cell_table(results, measure)
    rows = []
    for column in table.shown:
        gains = claims_audit.scaling_gains(table, column)
        objective, scaling = gains[gains["gain"] == "objective"], gains[gains["gain"] == "scaling"]
        if objective.empty and scaling.empty:
            continue
        smallest, largest = claims_audit.smallest_and_largest(table, column)
        rows.append(
            {
                "column": column,
                "objective_gain": objective["value"].mean(),
                "scaling_gain": scaling["value"].mean(),
                "smallest": smallest,
                "largest": largest,
            }
        )
    if not rows:
        return placeholder("no finished evaluation in this grid")
    return pd.DataFrame(rows).set_index("column")


def best_objective_table(results: pd.DataFrame, measure: str = MEASURE) -> pd.DataFrame:
    """Per backbone and table column: the best objective and its margin over the runner-up
    (:func:`cerepro.report.derived.best_objectives` on this grid's cell table), ``best (+margin)``."""
    table = cell_table(results, measure)
    if table.values.empty:
        return placeholder("no finished evaluation in this grid")
    return derived.best_objective_cells(
        table, [c for c in table_columns(results) if c in table.values.columns], measure=measure
    )


def claims(results: pd.DataFrame, measure: str = MEASURE, tests: pd.DataFrame | None = None) -> dict[str, Claim]:
    """The paper's claims, each with the research question that tests it and a verdict computed
    from ``results`` (supported / not supported / not yet run) by :func:`cerepro.report.claims.audit`.
    ``tests``: :func:`significance` of the same results against ``bce``, if already computed."""
    tests = significance(results, baseline=BASELINE_OBJECTIVE, measure=measure) if tests is None else tests
    return claims_audit.audit(cell_table(results, measure), tests=tests)


def published_claims() -> dict[str, Claim]:
    """The same claims on the authors' table (``params/expected/paper-ndcg10.csv``)."""
    return claims_audit.audit(paper_table())


# The authors' table was produced by their runs, under the protocol the profile `paper` encodes.
PUBLISHED_VERDICT = "authors' table (their runs; profile paper)"


def claims_table(
    results: pd.DataFrame,
    grid: str,
    measure: str = MEASURE,
    found: dict[str, Claim] | None = None,
    published: dict[str, Claim] | None = None,
) -> pd.DataFrame:
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
        there = (
            (
                "none"
                if not p.exceptions
                else f"{len(p.exceptions)}: " + "; ".join(e.split(":")[0] for e in p.exceptions)
            )
            if p.verdict in (SUPPORTED, NOT_SUPPORTED)
            else p.evidence
        )
        rows.append(
            {
                "RQ": c.rq,
                "claim": c.claim,
                "test": c.test,
                "cells as claimed (authors')": p.share or "—",
                "exceptions (authors' table)": there,
                PUBLISHED_VERDICT: p.verdict,
                "this grid": c.verdict,
                "evidence (this grid)": c.evidence,
                "profile (this grid)": profile if c.verdict not in (NOT_RUN, UNTESTABLE) else "—",
            }
        )
    return pd.DataFrame(rows)


def scoreboard_long(results: pd.DataFrame, measure: str = MEASURE, *, extra_columns: bool = False) -> pd.DataFrame:
    """:func:`cerepro.report.scoreboard.scoreboard` of this grid's runs: one row per cell of the
    authors' table (and any extra cell of ours) with paper, ours, diff and verdict."""
    models = models_only(results[results["measure"] == measure])
    if models.empty:
        return scoreboard.scoreboard(pd.DataFrame()).assign(source=TRAINED)
    models = models.assign(dataset=models["dataset"].map(lambda d: dataset_id(d, strict=False)))
    boards = [
        scoreboard.scoreboard(scoreboard.our_table(part, measure=measure, extra_columns=extra_columns)).assign(
            source=source
        )
        for source, part in models.groupby(models["run"].map(lambda run: RunId.parse(run).source), sort=True)
    ]
    return pd.concat(boards, ignore_index=True)


# What a released cell is: the authors release per (backbone, objective) the seed that scored best
# on the test sets, so the cell is one picked seed and must not be read as the table's seed mean.
RELEASED_NOTE = (
    f"{RELEASED} = the authors' checkpoint, the best of 3 seeds on the mean test nDCG@10: "
    "one seed picked on test, not a seed mean"
)


def scoreboard_table(
    results: pd.DataFrame, grid: str | None = None, measure: str = MEASURE, *, extra_columns: bool = False
) -> pd.DataFrame:
    """The scoreboard as the authors' table: one row per (backbone, objective), and per source
    (``trained``, ``released``) when both are present; one cell per column reading
    ``paper / ours (diff) verdict``; cells not run say so."""
    board = scoreboard_long(results, measure, extra_columns=extra_columns)
    text = [
        f"{p:.4f} / not run"
        if v == "not run"
        else f"— / {o:.4f} ({v})"
        if pd.isna(p)
        else f"{p:.4f} / {o:.4f} ({d:+.4f}) {v}"
        for p, o, d, v in zip(board["paper"], board["ours"], board["diff"], board["verdict"])
    ]
    rows = ["backbone", "objective"] + (["source"] if board["source"].nunique() > 1 else [])
    wide = board.assign(cell=text).pivot(index=rows, columns="column", values="cell")
    columns = dataset_registry()["paper_table_columns"]
    wide = ordered_rows(wide)[[c for c in columns if c in wide.columns] + sorted(set(wide.columns) - set(columns))]
    wide.columns.name = f"{measure}{f' ({grid})' if grid else ''}: paper / ours (diff) verdict"
    if (board["source"] == RELEASED).any():
        wide.columns.name += f"; {RELEASED_NOTE}"
    return wide


def baselines_table(results: pd.DataFrame, grid: str = RELEASED) -> pd.DataFrame:
    """Each public baseline of a checkpoints grid: ours next to the figure its card publishes
    (``published`` in params/checkpoints/), without a verdict: the card's first stage differs."""
    entries = [e for e in load_grid(grid).checkpoints if e.get("name")]
    means = baselines_only(results).groupby(["run", "measure", "dataset"])["value"].mean().reset_index()
    rows = []
    for entry in entries:
        run = checkpoint_run_id(entry)
        published = entry.get("published") or {"": None}
        for key, figure in published.items():
            measure, _, dataset = key.partition(" ")
            short = short_name(dataset, strict=False) if dataset else ""
            hit = means[(means["run"] == run) & (means["measure"] == measure) & (means["dataset"] == short)]
            rows.append(
                {
                    "baseline": entry["hub_id"],
                    "measure": measure or "—",
                    "dataset": short or "—",
                    "published": figure,
                    "ours": hit["value"].iloc[0] if len(hit) else None,
                    "source of the figure": entry.get("verified", ""),
                }
            )
    return pd.DataFrame(rows)


VERDICT_COLOURS = {
    "supported": "#1a7f37",
    "OK": "#1a7f37",
    "OKish": "#9a6700",
    "not supported": "#cf222e",
    "FAIL": "#cf222e",
    "not yet run": "#6e7781",
    "not run": "#6e7781",
    "not testable on this table": "#8250df",
}


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
