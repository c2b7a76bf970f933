"""Our numbers against the authors' table, cell by cell, with a verdict.

A cell is one (backbone, objective, column) of ``params/expected/paper-ndcg10.csv``; its columns
are ``paper_table_columns`` of ``params/datasets.yaml`` (a dataset's short name or an aggregate).
Ours is the mean over seeds of each run's dataset mean, aggregated as the paper does
(``cerepro.report.aggregates.aggregate_table``). This module compares numbers; it neither evaluates runs
nor tests significance (``cerepro.evaluation.stats`` does).

Tolerance, on the absolute difference in nDCG@10 (``ours - paper``), inclusive:
``|diff| <= 0.01`` is **OK**, ``<= 0.02`` **OKish**, more is **FAIL**; a cell we have no number for
is **not run** (an aggregate counts as run only when all its datasets are), and a cell of ours
the authors did not report is **no paper value**.

Why these: a cell is the 3-seed mean of retrained models, not a deterministic re-run, so the
1e-4 that pyserini's two-click reproductions use for fixed runs would fail on seed noise
alone. 0.01 is the precision the paper's claims are stated at (objectives and backbones are
compared on gaps of a few hundredths); 0.02 marks a cell worth a second look without calling
it failed. A cell within 0.01 reproduces the number, not necessarily the order of two systems
whose gap is smaller (bert-base InfoNCE and MarginMSE differ by 0.0003 on dev): orders are the
business of ``cerepro.evaluation.stats``. Both bounds are parameters; the seed spread actually observed
(``cerepro.evaluation.stats.seed_variance``) is the evidence for revisiting them.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from cerepro.evaluation.evaluate import query_means
from cerepro.paths import params_dir
from cerepro.report.aggregates import aggregate_table
from cerepro.vocab import (
    FIRST_STAGE,
    RELEASED,
    TRAINED,
    CandidateSource,
    RunId,
    RunIdError,
    dataset_id,
    dataset_registry,
    system_name,
)

OK = 0.01
OKISH = 0.02
VERDICTS = ("OK", "OKish", "FAIL", "not run", "no paper value")
KEYS = ["backbone", "objective", "column"]
_EPS = 1e-9  # float representation slack at the bounds: 0.7408 - 0.7308 is 0.010000000000000009


def expected_table(path=None) -> pd.DataFrame:
    """The authors' table, long: backbone, objective, column, paper."""
    path = path or params_dir() / "expected" / "paper-ndcg10.csv"
    wide = pd.read_csv(path)
    columns = dataset_registry()["paper_table_columns"]
    absent = [c for c in ["backbone", "objective", *columns] if c not in wide.columns]
    if absent:
        raise ValueError(f"{os.fspath(path)} lacks columns {absent} (paper_table_columns: {columns})")
    long = wide.melt(id_vars=["backbone", "objective"], value_vars=columns, var_name="column", value_name="paper")
    return _in_paper_order(long, wide[["backbone", "objective"]], columns)


def our_table(per_query: pd.DataFrame, *, measure: str = "nDCG@10", extra_columns: bool = False) -> pd.DataFrame:
    """Our cells, long: backbone, objective, column, ours, n_seeds, from a tidy per-query table
    whose run ids are ``{backbone}.{objective}.s{seed}`` (or ``.released``, one repetition).
    ``extra_columns`` keeps datasets the authors' table has no column for (a demo split, a
    local folder) as cells of their own, which the scoreboard marks *no paper value*."""
    ids = {run: _scored_id(run) for run in per_query["run"].unique()}
    bad = [run for run, parsed in ids.items() if parsed is None][:5]
    if bad:
        raise ValueError(f"run ids must read {{backbone}}.{{objective}}.s{{seed}} to be scored; got {bad}")
    parsed = pd.DataFrame(
        {"backbone": [i.backbone for i in ids.values()], "objective": [i.objective for i in ids.values()]},
        index=pd.Index(list(ids), name="run"),
    )
    means = query_means(per_query[per_query["measure"] == measure])
    means = means.join(parsed, on="run")
    system = means.groupby(["backbone", "objective", "dataset", "measure"], sort=False)
    seed_means = system["value"].mean().reset_index()
    names = {system_name(b, o): (b, o) for b, o in zip(seed_means["backbone"], seed_means["objective"])}
    seed_means["run"] = [system_name(b, o) for b, o in zip(seed_means["backbone"], seed_means["objective"])]
    wide = aggregate_table(seed_means, measure=measure)
    columns = dataset_registry()["paper_table_columns"]
    extra = [c for c in wide.columns if c not in columns] if extra_columns else []
    wide = wide.reindex(columns=columns + extra)
    long = wide.rename_axis("run").reset_index().melt(id_vars="run", var_name="column", value_name="ours")
    long["backbone"], long["objective"] = [names[r][0] for r in long["run"]], [names[r][1] for r in long["run"]]
    n_seeds = parsed.groupby(["backbone", "objective"]).size().rename("n_seeds").reset_index()
    return long.merge(n_seeds, on=["backbone", "objective"])[[*KEYS, "ours", "n_seeds"]]


def scoreboard(
    ours: pd.DataFrame, expected: pd.DataFrame | None = None, *, ok: float = OK, okish: float = OKISH
) -> pd.DataFrame:
    """Every cell of the authors' table (and any extra cell of ours) with paper, ours,
    diff = ours - paper and a verdict against the tolerance (module docstring).

    ``ours``: long (backbone, objective, column, ours or value), as ``our_table`` returns; or wide,
    indexed by (backbone, objective) with one column per table column; or empty (nothing run)."""
    if not 0 <= ok <= okish:
        raise ValueError(f"tolerances must satisfy 0 <= ok <= okish, got ok={ok}, okish={okish}")
    expected = expected_table() if expected is None else expected
    ours = _long(ours)
    board = expected[[*KEYS, "paper"]].merge(ours, on=KEYS, how="outer", sort=False)
    board = board[board["paper"].notna() | board["ours"].notna()]  # an extra cell we did not run either
    board = pd.concat([board[board["paper"].notna()], board[board["paper"].isna()]], ignore_index=True)
    board["diff"] = board["ours"] - board["paper"]
    distance = board["diff"].abs()
    board["verdict"] = np.select(
        [board["paper"].isna(), board["ours"].isna(), distance <= ok + _EPS, distance <= okish + _EPS],
        ["no paper value", "not run", "OK", "OKish"],
        default="FAIL",
    )
    columns = [*KEYS, "paper", "ours", "diff", "verdict"] + (["n_seeds"] if "n_seeds" in board else [])
    return board[columns]


def _scored_id(run: str) -> RunId | None:
    """A run the table scores: trained (a seed of a cell) or released (one repetition)."""
    try:
        parsed = RunId.parse(run)
    except RunIdError:
        return None
    return parsed if parsed.kind in (TRAINED, RELEASED) else None


def _long(ours: pd.DataFrame) -> pd.DataFrame:
    if ours.empty:
        return pd.DataFrame({key: pd.Series(dtype=str) for key in KEYS} | {"ours": pd.Series(dtype=float)})
    if list(ours.index.names) == ["backbone", "objective"]:
        ours = ours.rename_axis(columns="column").stack().rename("ours").reset_index()
    elif "ours" not in ours.columns and "value" in ours.columns:
        ours = ours.rename(columns={"value": "ours"})
    absent = [c for c in [*KEYS, "ours"] if c not in ours.columns]
    if absent:
        raise ValueError(
            f"our cells lack {absent}: pass a long table (backbone, objective, column, ours) or a wide one "
            f"indexed by (backbone, objective)"
        )
    return ours


def verdict_counts(board: pd.DataFrame) -> pd.DataFrame:
    """How many cells of each verdict per column (and in total)."""
    counts = pd.crosstab(board["column"], board["verdict"], margins=True, margins_name="total")
    return counts.reindex(columns=[v for v in VERDICTS if v in counts.columns] + ["total"], fill_value=0)


def _in_paper_order(long: pd.DataFrame, rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    row_order = {tuple(r): i for i, r in enumerate(rows.itertuples(index=False))}
    cells = zip(long["backbone"], long["objective"], long["column"])
    order = [row_order[(b, o)] * len(columns) + columns.index(c) for b, o, c in cells]
    return long.iloc[np.argsort(order, kind="stable")][[*KEYS, "paper"]].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# The first stage alone: published figures of the retriever the candidates come from


def first_stage_expected(path=None) -> pd.DataFrame:
    """``params/expected/first-stage.csv``: first_stage, measure, column, expected, source."""
    path = path or params_dir() / "expected" / "first-stage.csv"
    table = pd.read_csv(path)
    absent = [c for c in ("first_stage", "measure", "column", "expected", "source") if c not in table.columns]
    if absent:
        raise ValueError(f"{os.fspath(path)} lacks columns {absent}")
    return table


def first_stage_board(
    results: pd.DataFrame,
    first_stage: str,
    *,
    ok: float = OK,
    okish: float = OKISH,
    expected: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The grid's first stage (run ``first-stage`` of a per-query table) against the published
    figures of ``first_stage``, the candidate source of params (``run:splade-v3-distilbert-top1000``,
    read as the run name ``params/expected/first-stage.csv`` holds, or ``bm25``), with diff and verdict on the scoreboard's tolerance. A first stage with no
    published figure gets no rows; a figure whose datasets were not all run is ``not run``."""
    source = CandidateSource.parse(first_stage)
    first_stage = source.run if source.kind == "run" else str(source)  # as params/expected/first-stage.csv names it
    expected = first_stage_expected() if expected is None else expected
    rows = expected[expected["first_stage"] == first_stage].reset_index(drop=True)
    ours = pd.Series(np.nan, index=rows.index)
    mine = results[results["run"] == FIRST_STAGE] if len(results) else results
    if len(rows) and len(mine):
        mine = mine.assign(dataset=mine["dataset"].map(lambda d: dataset_id(d, strict=False)))
        means = query_means(mine)
        for i, row in rows.iterrows():
            if row["measure"] in set(means["measure"]):
                table = aggregate_table(means, measure=row["measure"])
                if row["column"] in table.columns:
                    ours[i] = table.loc[FIRST_STAGE, row["column"]]
    board = rows.assign(ours=ours, diff=ours - rows["expected"])
    distance = board["diff"].abs()
    board["verdict"] = np.select(
        [board["ours"].isna(), distance <= ok + _EPS, distance <= okish + _EPS],
        ["not run", "OK", "OKish"],
        default="FAIL",
    )
    return board[["first_stage", "measure", "column", "expected", "ours", "diff", "verdict", "source"]]
