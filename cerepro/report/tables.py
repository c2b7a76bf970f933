"""A grid's results as tidy tables: what the compare notebook and the book show as numbers.

Reads what the grid engine wrote under ``runs/<grid>/`` (only folders holding ``DONE``): the
evaluations' per-query values (:func:`grid_results`) and the training logs
(:func:`training_logs`). Tables of means over seeds, per table column (a dataset, a paper
aggregate or an evaluation group), with the tests of :mod:`cerepro.evaluation.stats` as markers. Every
function accepts an empty result table and then says what is not yet run instead of failing.

    results = grid_results("demo")                 # one row per (run, dataset, query, measure)
    significance_table(results, baseline="bce")    # mean over seeds, † paired + Holm, ‡ Welch

This module reads results; it must not train, evaluate, build a model or compute a retrieval
measure, and it never imports torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cerepro.evaluation import stats
from cerepro.evaluation.evaluate import load_results, result_warnings
from cerepro.grids import checkpoint_run_id, load_grid
from cerepro.model.backbones import backbone_facts
from cerepro.objectives import BASELINE_OBJECTIVE
from cerepro.paths import project_root, runs_dir
from cerepro.report import aggregates
from cerepro.vocab import (
    BASELINE,
    FIRST_STAGE,
    IN_DOMAIN,
    OOD,
    RunId,
    RunIdError,
    dataset_group,
    dataset_registry,
    objective_order,
    short_name,
    system_name,
    system_of,
)

BOOK_GRID_ENV = "CEREPRO_BOOK_GRID"
MEASURE = "nDCG@10"
WELCH_MARKER = "‡"
RESULT_COLUMNS = ["run", "backbone", "objective", "seed", "dataset", "group", "query_id", "measure", "value"]


def backbone_order(backbones) -> list[str]:
    """Backbones by parameter count, smallest first (ties by slug)."""
    backbones = sorted(set(backbones))
    return sorted(backbones, key=lambda b: (backbone_facts(b)["parameters"], b))


@dataclass(frozen=True)
class GridInfo:
    """What the book says about a grid: its axes, its file and whether its numbers are synthetic.

    Read through :func:`cerepro.grids.load_grid` (every run validated, without torch)."""

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
    first_stage: str  # the candidates its runs re-rank (bm25, run:<name>)
    run_ids: frozenset[str] = frozenset()  # the runs the grid names now (and the first stage)

    @property
    def provenance(self) -> str:
        """One sentence for every page that shows this grid's numbers."""
        if self.synthetic:
            return (
                f"Numbers from grid `{self.name}` (profile `{self.profile}`) are **synthetic**: "
                "models trained and evaluated on the generated demo world, not comparable with the paper."
            )
        return f"Numbers from grid `{self.name}` (profile `{self.profile}`)."


def book_grid() -> str:
    """The grid the book shows: ``$CEREPRO_BOOK_GRID``, else ``demo``."""
    return os.environ.get(BOOK_GRID_ENV) or "demo"


def grid_info(grid: str) -> GridInfo:
    """What the book says about ``grid`` (a name of params/grids/), from its validated expansion."""
    spec = load_grid(grid)
    if spec.checkpoints:  # released checkpoints: one repetition per (backbone, objective)
        papers = [e for e in spec.checkpoints if e.get("objective")]
        backbones = tuple(dict.fromkeys(e["backbone"] for e in papers))
        objectives = tuple(dict.fromkeys(e["objective"] for e in papers))
        seeds, run_ids = 1, {checkpoint_run_id(e) for e in spec.checkpoints}
    else:
        backbones, objectives = spec.backbones, spec.objectives
        seeds, run_ids = len(spec.seeds), set(spec.run_ids)
    try:
        shown = spec.path.relative_to(project_root()).as_posix()
    except ValueError:
        shown = f"params/grids/{spec.path.name}"
    return GridInfo(
        name=spec.name,
        profile=spec.profile,
        backbones=backbones,
        objectives=objectives,
        seeds=seeds,
        path=shown,
        file=spec.path,
        description=spec.description,
        synthetic=spec.first_config.train_data == "demo",
        reproduces=spec.reproduces,
        first_stage=spec.first_config.first_stage,
        run_ids=frozenset(run_ids | {FIRST_STAGE}),
    )


def grid_results(grid: str, measure: str | None = None) -> pd.DataFrame:
    """Every finished evaluation of ``grid`` as one tidy table (columns ``RESULT_COLUMNS``).

    ``dataset`` holds short names, ``group`` the evaluation group; the first stage's rows have
    run, backbone and objective ``first-stage`` and no seed. Only evaluate folders with ``DONE``
    count, and only those of runs the grid names now: a run of an objective since removed from the
    grid file stays on disk but not in its tables. No results: an empty table with the same columns."""
    folder = runs_dir() / grid
    named = grid_info(grid).run_ids
    tables = []
    for done in sorted(folder.glob("*/evaluate/DONE")):
        if done.parent.parent.name not in named:
            continue
        results = done.parent / "results"
        if any(results.glob("*/contract.json")):
            tables.append(load_results(results / "*"))
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype="Int64" if c == "seed" else object) for c in RESULT_COLUMNS}).astype(
            {"value": float}
        )
    table = pd.concat(tables, ignore_index=True)
    if measure is not None:
        table = table[table["measure"] == measure]
    parsed = {run: RunId.parse(run) for run in table["run"].unique()}
    table["backbone"] = table["run"].map(lambda r: parsed[r].backbone)
    table["objective"] = table["run"].map(lambda r: parsed[r].objective)
    table["seed"] = pd.array([parsed[r].seed for r in table["run"]], dtype="Int64")
    shorts = {d: short_name(d, strict=False) for d in table["dataset"].unique()}
    table["dataset"] = table["dataset"].map(shorts)
    table["group"] = table["dataset"].map(dataset_group)
    return table[RESULT_COLUMNS].reset_index(drop=True)


def grid_warnings(grid: str) -> list[str]:
    """The warnings of the finished evaluations of ``grid`` (``result_warnings`` of each metric
    contract, as its notebook printed them), for the book's pages: one line per dataset and
    warning, naming the runs it concerns (runs re-ranking the same candidates share theirs)."""
    named = grid_info(grid).run_ids
    runs: dict[tuple[str, str], list[str]] = {}
    for done in sorted((runs_dir() / grid).glob("*/evaluate/DONE")):
        if done.parent.parent.name not in named:
            continue
        for path in sorted((done.parent / "results").glob("*/contract.json")):
            contract = json.loads(path.read_text(encoding="utf-8"))
            prefix = f"{contract.get('run')} on {contract.get('dataset')}: "
            for warning in result_warnings(contract):
                key = (str(contract.get("dataset")), warning.removeprefix(prefix))
                runs.setdefault(key, []).append(str(contract.get("run")))
    out = []
    for (dataset, text), names in runs.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        out.append(f"{dataset}: {text} ({len(names)} evaluation{'s' if len(names) > 1 else ''}: {shown})")
    return out


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


def available_columns(results: pd.DataFrame) -> list[str]:
    """The table columns a grid supports: its datasets in params order (demo splits after),
    then every group (a paper aggregate only when all its datasets are present)."""
    datasets = list(dict.fromkeys(results["dataset"]))
    registry = dataset_registry()
    order = [info["short"] for info in registry["datasets"].values()]
    datasets = [d for d in order if d in datasets] + sorted(d for d in datasets if d not in order)
    groups = []
    for name in registry["aggregates"]:
        members = aggregates.members(name)
        if len(members) > 1 and set(members) <= set(datasets):
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
    available_ = available_columns(results)
    paper = [*dataset_registry()["paper_table_columns"], IN_DOMAIN, OOD]
    shown = [c for c in paper if c in available_]
    if not shown:
        return available_
    # sets of a paper column the grid evaluates only in part (scifact without the rest of
    # BEIR-13): shown each in its own column, after the paper's
    datasets = list(dict.fromkeys(results["dataset"]))
    covered = {d for c in shown for d in aggregates.members(c, datasets)}
    return shown + [c for c in available_ if c in datasets and c not in covered]


def evaluation_groups(results: pd.DataFrame) -> list[str]:
    """The groups one figure panel each is drawn for: in-domain first, then the others."""
    groups = list(dict.fromkeys(results["group"]))
    return sorted(
        groups,
        key=lambda g: (
            g != IN_DOMAIN,
            list(dataset_registry()["aggregates"]).index(g) if g in dataset_registry()["aggregates"] else 99,
            g,
        ),
    )


def column_scores(results: pd.DataFrame, columns=None, measure: str = MEASURE) -> pd.DataFrame:
    """One row per run and table column: the unweighted mean of the column's per-dataset means
    (so an aggregate is the paper's mean of means, :func:`cerepro.report.aggregates.mean_of`); a
    run lacking one of the column's datasets has no row for it."""
    means = run_means(results, measure)
    datasets = list(dict.fromkeys(means["dataset"]))
    runs = means.drop_duplicates("run").set_index("run")[["backbone", "objective", "seed"]]
    wide = means.pivot(index="run", columns="dataset", values="value").reindex(index=runs.index, columns=datasets)
    out = []
    for column in columns if columns is not None else available_columns(results):
        members = aggregates.members(column, datasets)
        order = means.loc[means["dataset"].isin(members), "run"].unique()  # each column's runs as they came
        value = aggregates.mean_of(wide, column, datasets).reindex(order).dropna()
        if value.empty:
            continue
        out.append(runs.loc[value.index].reset_index().assign(value=value.to_numpy(), column=column))
    if not out:
        return pd.DataFrame(columns=["run", "backbone", "objective", "seed", "column", "value"])
    return pd.concat(out, ignore_index=True)


def cell_means(results: pd.DataFrame, columns=None, measure: str = MEASURE) -> pd.DataFrame:
    """Mean over seeds: one row per (backbone, objective, column) with value, sd and n_seeds."""
    table = column_scores(results, columns, measure)
    grouped = table.groupby(["backbone", "objective", "column"], sort=False)["value"]
    return grouped.agg(value="mean", sd="std", n_seeds="count").reset_index()


def group_column(results: pd.DataFrame, group: str) -> str:
    """The table column that stands for a group in figures: the group's own column where the grid
    has one (:func:`available_columns`), else its first dataset's."""
    available = available_columns(results)
    if group in available:
        return group
    return next(d for d in available if d in set(results.loc[results["group"] == group, "dataset"]))


def placeholder(what: str) -> pd.DataFrame:
    return pd.DataFrame({"status": [f"not yet run: {what}"]})


def seed_mean_table(results: pd.DataFrame, measure: str = MEASURE, columns=None) -> pd.DataFrame:
    """Mean over seeds per backbone and objective, one column per table column (default:
    :func:`table_columns`)."""
    columns = table_columns(results) if columns is None else columns
    cells = cell_means(results, columns, measure)
    if cells.empty:
        return placeholder("no finished evaluation in this grid")
    wide = cells.pivot_table(index=["backbone", "objective"], columns="column", values="value", sort=False)
    return ordered_rows(wide)[[c for c in columns if c in wide.columns]]


def ordered_rows(wide: pd.DataFrame) -> pd.DataFrame:
    backbones = [b for b in backbone_order(b for b in wide.index.get_level_values(0) if b != FIRST_STAGE)]
    objectives = objective_order(o for o in wide.index.get_level_values(1) if o != FIRST_STAGE)
    rows = [(FIRST_STAGE, FIRST_STAGE)] if (FIRST_STAGE, FIRST_STAGE) in wide.index else []
    rows += [(b, o) for b in backbones for o in objectives if (b, o) in wide.index]
    if wide.index.nlevels > 2:  # e.g. (backbone, objective, source): each pair's rows together
        rank = {pair: i for i, pair in enumerate(rows)}
        return wide.iloc[sorted(range(len(wide)), key=lambda i: (rank[wide.index[i][:2]], wide.index[i][2:]))]
    return wide.loc[rows]


def pooled_queries(results: pd.DataFrame, column: str) -> pd.DataFrame:
    """The per-query rows of a table column as one dataset named after it: an aggregate's
    queries are pooled_queries (query ids prefixed with their dataset) for the paired tests."""
    datasets = list(dict.fromkeys(results["dataset"]))
    members = aggregates.members(column, datasets)
    rows = results[results["dataset"].isin(members)]
    if len(members) == 1:
        return rows
    return rows.assign(query_id=rows["dataset"] + "/" + rows["query_id"], dataset=column)


def significance(results: pd.DataFrame, *, baseline: str = BASELINE_OBJECTIVE, measure: str = MEASURE) -> pd.DataFrame:
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
        base = system_name(backbone, baseline)
        objective_of = {system_of(run): objective for run, objective in zip(rows["run"], rows["objective"])}
        for column in table_columns(rows):
            table = pooled_queries(rows, column)
            if table.empty:
                continue
            paired = stats.compare(table, measure=measure, baseline=base, test="paired-t", correction="holm")
            welch = stats.paper_welch(table, measure=measure, baseline=base)
            both = paired.merge(welch[["system", "p_value", "significant"]], on="system", suffixes=("", "_welch"))
            out.append(
                pd.DataFrame(
                    {
                        "backbone": backbone,
                        "objective": both["system"].map(objective_of).astype(object),
                        "column": column,
                        "baseline": baseline,
                        "mean": both["mean"],
                        "diff": both["diff"],
                        "p_paired": both["p_value"],
                        "p_holm": both["p_adjusted"],
                        "paired": both["significant"],
                        "p_welch": both["p_value_welch"],
                        "welch": both["significant_welch"],
                    }
                )
            )
    if not out:
        return pd.DataFrame(
            columns=[
                "backbone",
                "objective",
                "column",
                "baseline",
                "mean",
                "diff",
                "p_paired",
                "p_holm",
                "paired",
                "p_welch",
                "welch",
            ]
        )
    return pd.concat(out, ignore_index=True)


def significance_table(
    results: pd.DataFrame,
    *,
    baseline: str = BASELINE_OBJECTIVE,
    measure: str = MEASURE,
    columns=None,
    tests: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Mean over seeds per backbone and objective, with markers against ``baseline`` on the same
    backbone: ``†`` paired t-test, Holm-corrected over the backbone's objectives, p < 0.05;
    ``‡`` the paper's Welch test, uncorrected, p < 0.05. The first stage is the first row.
    ``tests``: :func:`significance` of the same results and baseline, if already computed."""
    if results.empty or results[results["measure"] == measure].empty:
        return placeholder("no finished evaluation in this grid")
    means = seed_mean_table(results, measure, columns)
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


SIGNIFICANCE_LEGEND = (
    f"{stats.MARKER}: paired t-test against the baseline objective on the same backbone, "
    f"Holm-corrected over that backbone's objectives, p < 0.05. {WELCH_MARKER}: the authors' "
    "test, an unpaired Welch t-test against the same baseline, uncorrected, p < 0.05. "
    "Per-query values are averaged over seeds first; an aggregate column pools its "
    "datasets' queries."
)


def seed_variance_table(results: pd.DataFrame, measure: str = MEASURE) -> pd.DataFrame:
    """Per dataset: the median over systems of the seed sd and of the query standard error of a
    mean (``stats.seed_variance``), and the median share of seed variance."""
    models = models_only(results[results["measure"] == measure])
    if models.empty or models.groupby(["backbone", "objective"])["seed"].nunique().max() < 2:
        return placeholder("fewer than two seeds per backbone and objective")
    table = stats.seed_variance(models, measure=measure)
    summary = table.groupby("dataset", sort=False).agg(
        systems=("system", "count"),
        seeds=("n_seeds", "median"),
        queries=("n_queries", "median"),
        seed_sd=("seed_sd", "median"),
        query_se=("query_se", "median"),
        seed_share=("seed_share", "median"),
    )
    return summary.round(4)


def done_folders(grid: str, kind: str) -> list[Path]:
    """``runs/<grid>/*/<kind>/`` folders holding DONE (``data/*`` for kind ``data``)."""
    pattern = {"data": "data/*/DONE", "compare": "compare/DONE"}.get(kind, f"*/{kind}/DONE")
    return sorted(p.parent for p in (runs_dir() / grid).glob(pattern))


def training_logs(source) -> pd.DataFrame:
    """The ``log.jsonl`` lines of one train folder (a path) or of every finished training run of
    a grid (a grid name), with run, backbone, objective and seed columns."""
    folders = [Path(source)] if isinstance(source, Path) else done_folders(source, "train")
    tables = []
    for folder in folders:
        log = folder / "log.jsonl"
        if not log.is_file() or log.stat().st_size == 0:
            continue
        table = pd.read_json(log, lines=True)
        run = _train_run_id(folder)
        try:
            parsed = RunId.parse(run)
            backbone, objective, seed = parsed.backbone, parsed.objective, parsed.seed
        except RunIdError:
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
        return str(RunId.trained(config["backbone"], config["objective"], config["seed"]))
    except (OSError, ValueError, KeyError):
        return folder.parent.name if folder.name == "train" else folder.name
