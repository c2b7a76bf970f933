"""Two runs of a grid compared query by query: what the explorer notebook and the book's
per-query page show.

Reads what the grid engine wrote: the per-query measures (:func:`cerepro.report.tables.grid_results`),
each evaluation's ranking (``runs/<grid>/<run>/evaluate/results/<dataset>/run.trec``, the order
every measure was computed on) and the collection's queries, judgements and passages
(:func:`cerepro.data.datasets.load_collection`). Any two rankings of a grid compare: two objectives,
two backbones, two seeds, a released checkpoint, the first stage.

    results = tables.grid_results("demo")
    pair = paired(results, "tiny-bert.bce.s1", "tiny-bert.infonce.s1", "demo-in")  # a per-query table
    test = paired_test(pair)                  # wins, losses, mean difference, paired t-test
    side_by_side("demo", ["tiny-bert.bce.s1", "tiny-bert.infonce.s1"], "demo-in", "i0001")

Diagnostics of one ranking: score ties among the top-k (:func:`ties`), the queries where a run
falls below the first stage (:func:`below_first_stage`), and of one run its agreement with its
teacher (:func:`cerepro.report.agreement.teacher_view`). What the explorer notebook and the
book's per-query page draw from these is in :mod:`cerepro.report.explorer`.

This module reads results and passages; it never trains, re-ranks or computes a retrieval measure.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cerepro.data.trec import read_run
from cerepro.evaluation import stats
from cerepro.objectives import BASELINE_OBJECTIVE
from cerepro.paths import runs_dir
from cerepro.report import tables
from cerepro.vocab import FIRST_STAGE, RunId, RunIdError, objective_order, short_name, system_name

MEASURE = tables.MEASURE
TOP_K = 10
TIE_DECIMALS = 3  # two scores tie when they are equal to this many decimals (what a table shows)
PASSAGE_CHARS = 240  # a passage as the side-by-side view shows it; the full text is one call away


class ExploreError(ValueError):
    """A run, dataset or query the grid does not have; the message lists the ones it has."""


# ---------------------------------------------------------------------------------------------
# What a grid holds


def rankings(grid: str) -> pd.DataFrame:
    """Every finished evaluation's ranking of ``grid``: one row per (run, dataset) with the
    dataset's short name and id and the run file. Only evaluate folders with ``DONE`` count."""
    rows = []
    for done in sorted((runs_dir() / grid).glob("*/evaluate/DONE")):
        for contract in sorted(done.parent.glob("results/*/contract.json")):
            run_file = contract.parent / "run.trec"
            if not run_file.is_file():
                continue
            facts = json.loads(contract.read_text(encoding="utf-8"))
            rows.append(
                {
                    "run": facts["run"],
                    "dataset": short_name(facts["dataset"], strict=False),
                    "dataset_id": facts["dataset"],
                    "path": run_file,
                }
            )
    return pd.DataFrame(rows, columns=["run", "dataset", "dataset_id", "path"])


def run_order(runs) -> list[str]:
    """Runs as a reader looks for them: the first stage, then by backbone, objective (the paper's
    order) and seed; names that are not run ids (released checkpoints, baselines) after."""
    runs = list(dict.fromkeys(runs))
    parsed = {}
    for run in runs:
        try:
            parsed[run] = RunId.parse(run)
        except RunIdError:
            parsed[run] = None
    objectives = objective_order(p.objective for p in parsed.values() if p)

    def key(run):
        if run == FIRST_STAGE:
            return (0, "", 0, 0, run)
        p = parsed[run]
        if p is None:
            return (2, "", 0, 0, run)
        rank = objectives.index(p.objective) if p.objective in objectives else len(objectives)
        return (1, p.backbone, rank, p.seed if p.seed is not None else -1, run)

    return sorted(runs, key=key)


def default_pair(
    results: pd.DataFrame, dataset: str, measure: str = MEASURE, baseline: str = BASELINE_OBJECTIVE
) -> tuple[str, str]:
    """The two runs the explorer opens on: a baseline-objective run and the run of the same
    backbone and seed whose mean differs most from it; without a baseline, the first stage and
    the best run."""
    rows = results[(results["dataset"] == dataset) & (results["measure"] == measure)]
    means = rows.groupby("run")["value"].mean()
    if means.empty:
        raise ExploreError(f"no {measure} values on {dataset!r}")
    runs = run_order(means.index)
    base = next((r for r in runs if r != FIRST_STAGE and _objective(r) == baseline), None)
    if base is None:
        base = FIRST_STAGE if FIRST_STAGE in means else runs[0]
        others = [r for r in runs if r != base]
    else:
        parsed = RunId.parse(base)
        backbone, seed = parsed.backbone, parsed.seed
        others = [r for r in runs if r != base and r != FIRST_STAGE and _same(r, backbone, seed)]
        others = others or [r for r in runs if r != base]
    if not others:
        raise ExploreError(f"only one run on {dataset!r}: {base}")
    other = max(others, key=lambda r: (abs(means[r] - means[base]), r))
    return base, other


def _objective(run: str) -> str | None:
    try:
        return RunId.parse(run).objective
    except RunIdError:
        return None


def _same(run: str, backbone: str, seed) -> bool:
    try:
        parsed = RunId.parse(run)
    except RunIdError:
        return False
    return parsed.backbone == backbone and parsed.seed == seed


# ---------------------------------------------------------------------------------------------
# Two runs, query by query


def paired(results: pd.DataFrame, a: str, b: str, dataset: str, measure: str = MEASURE) -> pd.DataFrame:
    """One row per query of ``dataset``: ``a``'s and ``b``'s value of ``measure`` and ``diff``
    (b - a), largest gain first. Both runs must cover the same queries."""
    rows = results[(results["dataset"] == dataset) & (results["measure"] == measure)]
    known = run_order(rows["run"].unique())
    for run in (a, b):
        if run not in known:
            raise ExploreError(f"no {measure} of run {run!r} on {dataset!r}; runs there: {', '.join(known) or 'none'}")
    wide = rows[rows["run"].isin([a, b])].pivot_table(index="query_id", columns="run", values="value", sort=False)
    if a == b:
        wide[b] = wide[a]
    if wide[[a, b]].isna().any().any():
        missing = wide.index[wide[[a, b]].isna().any(axis=1)]
        raise ExploreError(f"{a} and {b} do not cover the same queries of {dataset!r}, e.g. {list(missing[:5])}")
    table = pd.DataFrame({"query_id": wide.index, a: wide[a].to_numpy(), b: wide[b].to_numpy()})
    table["diff"] = table[b] - table[a]
    table = table.sort_values(["diff", "query_id"], ascending=[False, True], kind="stable", ignore_index=True)
    table.attrs.update(a=a, b=b, dataset=dataset, measure=measure)
    return table


def paired_test(pair: pd.DataFrame) -> pd.Series:
    """Wins, losses and ties of ``b`` over ``a`` (per query), both means, their difference and
    the paired t-test across queries (scipy's ``ttest_rel``, p = 1 where the runs agree)."""
    a, b = pair.attrs["a"], pair.attrs["b"]
    statistic, p_value = stats.paired_test(pair[b].to_numpy(), pair[a].to_numpy())
    diff = pair["diff"].to_numpy()
    return pd.Series(
        {
            "queries": len(pair),
            f"mean {a}": pair[a].mean(),
            f"mean {b}": pair[b].mean(),
            "diff (b - a)": diff.mean(),
            "wins of b": int((diff > 0).sum()),
            "losses of b": int((diff < 0).sum()),
            "ties": int((diff == 0).sum()),
            "t": round(statistic, 3),
            "p (paired t)": f"{p_value:.2g}",
        },
        dtype=object,
        name=f"{b} vs {a} ({pair.attrs['measure']})",
    )


def most_changed(pair: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The ``n`` queries whose value changes most between the two runs, either way."""
    order = pair["diff"].abs().sort_values(ascending=False, kind="stable").index
    return pair.loc[order[:n]].reset_index(drop=True)


def wins_losses(results: pd.DataFrame, *, baseline: str = BASELINE_OBJECTIVE, measure: str = MEASURE) -> pd.DataFrame:
    """Every objective against ``baseline`` on the same backbone, per dataset, on seed-averaged
    per-query values: queries won, lost and tied, the mean difference and the paired test."""
    models = tables.models_only(results[results["measure"] == measure])
    rows = []
    for dataset in dict.fromkeys(models["dataset"]):
        part = models[models["dataset"] == dataset]
        matrix = stats.per_query_matrix(part, measure=measure, dataset=dataset)
        for backbone in tables.backbone_order(part["backbone"].unique()):
            base = system_name(backbone, baseline)
            if base not in matrix:
                continue
            for objective in objective_order(part.loc[part["backbone"] == backbone, "objective"].unique()):
                system = system_name(backbone, objective)
                if objective == baseline or system not in matrix:
                    continue
                diff = matrix[system].to_numpy() - matrix[base].to_numpy()
                _, p_value = stats.paired_test(matrix[system].to_numpy(), matrix[base].to_numpy())
                rows.append(
                    {
                        "dataset": dataset,
                        "backbone": backbone,
                        "objective": objective,
                        "baseline": baseline,
                        "queries": len(diff),
                        "wins": int((diff > 0).sum()),
                        "losses": int((diff < 0).sum()),
                        "ties": int((diff == 0).sum()),
                        "mean diff": round(diff.mean(), 4),
                        "largest gain": round(diff.max(), 4),
                        "largest loss": round(diff.min(), 4),
                        "p (paired t)": float(f"{p_value:.3g}"),
                    }
                )
    return pd.DataFrame(
        rows,
        columns=[
            "dataset",
            "backbone",
            "objective",
            "baseline",
            "queries",
            "wins",
            "losses",
            "ties",
            "mean diff",
            "largest gain",
            "largest loss",
            "p (paired t)",
        ],
    )


# ---------------------------------------------------------------------------------------------
# One query: the passages each run put on top


@functools.lru_cache(maxsize=64)
def _ranking(path: Path, mtime_ns: int) -> pd.DataFrame:
    run = read_run(path)
    return run.sort_values(["query_id", "rank"], kind="stable", ignore_index=True)


def ranking(grid: str, run: str, dataset: str, index: pd.DataFrame | None = None) -> pd.DataFrame:
    """``run``'s ranking of ``dataset`` as it was evaluated: query_id, doc_id, score, rank."""
    index = rankings(grid) if index is None else index
    found = index[(index["run"] == run) & (index["dataset"] == dataset)]
    if found.empty:
        have = index.loc[index["dataset"] == dataset, "run"]
        raise ExploreError(
            f"grid {grid!r} has no ranking of {dataset!r} by {run!r}; "
            f"runs with one: {', '.join(run_order(have)) or 'none'}"
        )
    path = Path(found["path"].iloc[0])
    return _ranking(path, path.stat().st_mtime_ns)


def collection(grid: str, dataset: str, index: pd.DataFrame | None = None):
    """The collection a grid's ``dataset`` (short name) was evaluated on."""
    from cerepro.data.datasets import load_collection

    index = rankings(grid) if index is None else index
    found = index.loc[index["dataset"] == dataset, "dataset_id"]
    if found.empty:
        raise ExploreError(
            f"grid {grid!r} has no evaluation on {dataset!r}; "
            f"datasets: {', '.join(dict.fromkeys(index['dataset'])) or 'none'}"
        )
    return load_collection(found.iloc[0])


def side_by_side(
    grid: str, runs, dataset: str, query_id: str, *, k: int = TOP_K, index: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The top ``k`` of each run for one query, rank by rank: passage id, relevance grade
    (blank: not judged), score and the passage's text (its first ``PASSAGE_CHARS`` characters)."""
    index = rankings(grid) if index is None else index
    docs = collection(grid, dataset, index)
    if query_id not in docs.queries:
        raise ExploreError(f"{dataset!r} has no query {query_id!r}")
    grades = _grades(docs, query_id)
    blocks = {}
    for run in runs:
        top = ranking(grid, run, dataset, index)
        top = top[top["query_id"] == query_id].head(k)
        texts = docs.doc_text(top["doc_id"])
        blocks[run] = pd.DataFrame(
            {
                "doc": top["doc_id"].to_numpy(),
                "grade": [grades.get(d, "") for d in top["doc_id"]],
                "score": top["score"].to_numpy(),
                "passage": [_clip(t) for t in texts],
            },
            index=pd.RangeIndex(1, len(top) + 1, name="rank"),
        )
    table = pd.concat(blocks, axis=1)
    table.attrs.update(query=docs.queries[query_id], query_id=query_id, dataset=dataset)
    return table


def relevant_ranks(grid: str, runs, dataset: str, query_id: str, *, index: pd.DataFrame | None = None) -> pd.DataFrame:
    """Where each judged relevant passage of a query went: its grade and its rank in each run
    (blank when the run's candidates do not hold it), best grade first."""
    index = rankings(grid) if index is None else index
    docs = collection(grid, dataset, index)
    grades = {d: g for d, g in _grades(docs, query_id).items() if g > 0}
    table = pd.DataFrame({"doc": list(grades), "grade": list(grades.values())})
    for run in runs:
        top = ranking(grid, run, dataset, index)
        ranks = dict(zip(*top.loc[top["query_id"] == query_id, ["doc_id", "rank"]].to_numpy().T))
        table[run] = [ranks.get(d, pd.NA) for d in table["doc"]]
        table[run] = table[run].astype("Int64")
    return table.sort_values(["grade", "doc"], ascending=[False, True], ignore_index=True)


def _grades(docs, query_id: str) -> dict[str, int]:
    qrels = docs.qrels
    rows = qrels[qrels["query_id"] == query_id]
    return dict(zip(rows["doc_id"], rows["relevance"].astype(int)))


def _clip(text: str, chars: int = PASSAGE_CHARS) -> str:
    return text if len(text) <= chars else text[: chars - 1].rstrip() + "…"


# ---------------------------------------------------------------------------------------------
# Diagnostics of one run


def ties(run: pd.DataFrame, *, k: int = TOP_K, decimals: int = TIE_DECIMALS) -> pd.DataFrame:
    """Per query: how many of the top ``k`` candidates share their score, rounded to ``decimals``,
    with another of the top ``k``, and the spread of the top ``k`` scores (first - k-th)."""
    top = run.sort_values(["query_id", "rank"], kind="stable").groupby("query_id", sort=False).head(k)
    rounded = top.assign(rounded=top["score"].round(decimals))
    shared = rounded.groupby(["query_id", "rounded"], sort=False)["doc_id"].transform("size") > 1
    per_query = (
        rounded.assign(tied=shared)
        .groupby("query_id", sort=False)
        .agg(candidates=("doc_id", "size"), tied=("tied", "sum"), top=("score", "max"), kth=("score", "min"))
    )
    per_query["spread"] = per_query["top"] - per_query["kth"]
    return per_query.drop(columns=["top", "kth"]).reset_index()


def tie_summary(
    grid: str, dataset: str, *, k: int = TOP_K, decimals: int = TIE_DECIMALS, index: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Every run's ties among its top ``k`` on ``dataset``: the share of queries with a tie, the
    mean number of tied candidates, and the median spread of the top ``k`` scores."""
    index = rankings(grid) if index is None else index
    rows = []
    for run in run_order(index.loc[index["dataset"] == dataset, "run"]):
        per_query = ties(ranking(grid, run, dataset, index), k=k, decimals=decimals)
        rows.append(
            {
                "run": run,
                "queries": len(per_query),
                "queries with a tie": float((per_query["tied"] > 0).mean()),
                "tied candidates (mean)": per_query["tied"].mean(),
                "top-k spread (median)": per_query["spread"].median(),
            }
        )
    table = pd.DataFrame(
        rows, columns=["run", "queries", "queries with a tie", "tied candidates (mean)", "top-k spread (median)"]
    )
    table.attrs.update(k=k, decimals=decimals)
    return table.set_index("run")


def below_first_stage(results: pd.DataFrame, run: str, dataset: str, measure: str = MEASURE) -> pd.DataFrame:
    """The queries where ``run`` scores below the first stage it re-ranked, worst first."""
    if FIRST_STAGE not in set(results.loc[results["dataset"] == dataset, "run"]):
        raise ExploreError(f"no first-stage evaluation on {dataset!r}")
    pair = paired(results, FIRST_STAGE, run, dataset, measure)
    below = pair[pair["diff"] < 0].sort_values("diff", kind="stable", ignore_index=True)
    below.attrs.update(pair.attrs, share=len(below) / len(pair) if len(pair) else np.nan)
    return below


def below_first_stage_summary(results: pd.DataFrame, dataset: str, measure: str = MEASURE) -> pd.DataFrame:
    """Per run: how many queries of ``dataset`` it ranks worse than the first stage did."""
    rows = []
    runs = results.loc[(results["dataset"] == dataset) & (results["measure"] == measure), "run"].unique()
    for run in run_order(r for r in runs if r != FIRST_STAGE):
        below = below_first_stage(results, run, dataset, measure)
        rows.append(
            {
                "run": run,
                "queries below": len(below),
                "share": below.attrs["share"],
                "mean loss there": below["diff"].mean() if len(below) else 0.0,
            }
        )
    return pd.DataFrame(rows, columns=["run", "queries below", "share", "mean loss there"]).set_index("run")
