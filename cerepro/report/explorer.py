"""The explorer: two runs of a grid compared query by query, drawn for the explorer notebook and
the book's per-query page: the passages of a query side by side (:func:`query_view`), the
widgets to pick a grid's dataset, two runs and a query (:func:`explorer`), the most-changed
queries with their passages and the wins and losses against a baseline, without a widget.

The comparisons themselves are :mod:`cerepro.report.explore`'s; this module only lays them out.
"""

from __future__ import annotations

import html

import pandas as pd

from cerepro.objectives import BASELINE_OBJECTIVE
from cerepro.report import tables
from cerepro.report.explore import (
    MEASURE,
    TOP_K,
    ExploreError,
    default_pair,
    most_changed,
    paired,
    paired_test,
    rankings,
    relevant_ranks,
    run_order,
    side_by_side,
    wins_losses,
)
from cerepro.vocab import FIRST_STAGE


def passages_html(table: pd.DataFrame) -> str:
    """:func:`side_by_side` as an HTML table: the query on top, relevant passages shaded by grade."""
    runs = list(dict.fromkeys(table.columns.get_level_values(0)))
    shade = {1: "#e8f4e8", 2: "#cbe8cb", 3: "#a6d8a6"}
    head = "".join(f'<th colspan="3" style="text-align:left">{html.escape(r)}</th>' for r in runs)
    sub = "<th>rank</th>" + "<th>passage</th><th>grade</th><th>score</th>" * len(runs)
    rows = []
    for rank, row in table.iterrows():
        cells = [f"<td>{rank}</td>"]
        for run in runs:
            grade = row[(run, "grade")]
            colour = shade.get(grade if grade != "" else 0, "transparent") if grade != "" else "transparent"
            cells.append(
                f'<td style="background:{colour};vertical-align:top;text-align:left;min-width:14em">'
                f"<code>{html.escape(str(row[(run, 'doc')]))}</code> {html.escape(str(row[(run, 'passage')]))}</td>"
                f"<td>{grade if grade != '' else '–'}</td><td>{row[(run, 'score')]:.3f}</td>"
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    query = html.escape(str(table.attrs.get("query", "")))
    caption = (
        f"<caption style='text-align:left'>query <code>{html.escape(str(table.attrs.get('query_id', '')))}</code>: "
        f"<b>{query}</b> (grade: judged relevance, – not judged)</caption>"
    )
    return (
        f'<table class="cerepro-passages" style="font-size:85%">{caption}<thead><tr><th></th>{head}</tr>'
        f"<tr>{sub}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def query_view(grid: str, runs, dataset: str, query_id: str, *, k: int = TOP_K, index=None):
    """One query as the explorer shows it: the passages side by side, and where every relevant
    passage went. Returns IPython display objects."""
    from IPython.display import HTML

    index = rankings(grid) if index is None else index
    table = side_by_side(grid, runs, dataset, query_id, k=k, index=index)
    first = ((index["run"] == FIRST_STAGE) & (index["dataset"] == dataset)).any() and FIRST_STAGE not in runs
    relevant = relevant_ranks(grid, [*runs, *([FIRST_STAGE] if first else [])], dataset, query_id, index=index)
    relevant.columns.name = "rank of each relevant passage"
    return HTML(passages_html(table)), relevant


def explorer(
    grid: str = "demo",
    *,
    dataset: str | None = None,
    a: str | None = None,
    b: str | None = None,
    measure: str = MEASURE,
    k: int = TOP_K,
):
    """The interactive explorer (ipywidgets): pick a dataset, two runs and a query; see the
    per-query differences and the two rankings of that query side by side."""
    import ipywidgets as widgets

    from cerepro.report import agreement, figures

    results = tables.grid_results(grid)
    index = rankings(grid)
    taught = agreement.teacher_lists(grid)
    if index.empty:
        return widgets.HTML(f"<b>Not yet run</b>: no finished evaluation with a ranking in <code>runs/{grid}/</code>.")
    datasets = list(dict.fromkeys(index["dataset"]))
    dataset = dataset or datasets[0]
    a0, b0 = default_pair(results, dataset, measure)
    runs_of = lambda d: run_order(index.loc[index["dataset"] == d, "run"])  # noqa: E731
    pick_dataset = widgets.Dropdown(options=datasets, value=dataset, description="dataset")
    pick_a = widgets.Dropdown(options=runs_of(dataset), value=a or a0, description="run a")
    pick_b = widgets.Dropdown(options=runs_of(dataset), value=b or b0, description="run b")
    pick_query = widgets.Dropdown(description="query", layout=widgets.Layout(width="28em"))
    summary, passages = widgets.Output(), widgets.Output(layout=widgets.Layout(overflow="auto"))

    def show_pair(*_):
        pair = paired(results, pick_a.value, pick_b.value, pick_dataset.value, measure)
        queries = list(most_changed(pair, len(pair))["query_id"])
        pick_query.options = [
            (f"{q}  ({d:+.3f})", q) for q, d in zip(queries, pair.set_index("query_id").loc[queries, "diff"])
        ]
        pick_query.value = queries[0]
        # outputs set from the kernel side (not captured with ``with output:``): the same in
        # JupyterLab, and nothing for a headless run (papermill) to route
        summary.outputs = ()
        summary.append_display_data(paired_test(pair).to_frame())
        summary.append_display_data(figures.paired_queries(pair))
        for shown in agreement.teacher_view(taught, [pick_a.value, pick_b.value]):
            summary.append_display_data(shown)

    def show_query(*_):
        if pick_query.value is None:
            return
        passages.outputs = ()
        for shown in query_view(
            grid, [pick_a.value, pick_b.value], pick_dataset.value, pick_query.value, k=k, index=index
        ):
            passages.append_display_data(shown)

    def change_dataset(*_):
        options = runs_of(pick_dataset.value)
        first, second = default_pair(results, pick_dataset.value, measure)
        pick_a.options, pick_b.options = options, options
        pick_a.value, pick_b.value = first, second

    pick_dataset.observe(change_dataset, "value")
    for control in (pick_a, pick_b):
        control.observe(show_pair, "value")
    pick_query.observe(show_query, "value")
    show_pair()
    show_query()
    return widgets.VBox([widgets.HBox([pick_dataset, pick_a, pick_b]), summary, pick_query, passages])


def most_changed_views(
    grid: str,
    results: pd.DataFrame,
    *,
    baseline: str = BASELINE_OBJECTIVE,
    queries: int = 2,
    k: int = 5,
    measure: str = MEASURE,
    index: pd.DataFrame | None = None,
) -> list:
    """For the book: per dataset, the objective whose first-seed run differs most from the
    baseline's on the first backbone, and its ``queries`` most-changed queries with both
    rankings' top ``k`` (IPython display objects, headed in Markdown)."""
    from IPython.display import Markdown

    index = rankings(grid) if index is None else index
    if index.empty:
        return [Markdown(f"**Not yet run**: no finished evaluation with a ranking (`run.trec`) in `runs/{grid}/`.")]
    shown = []
    for dataset in dict.fromkeys(index["dataset"]):
        try:
            a, b = default_pair(results, dataset, measure, baseline)
        except ExploreError as exc:
            shown.append(Markdown(f"*{dataset}: {exc}*"))
            continue
        pair = paired(results, a, b, dataset, measure)
        test = paired_test(pair)
        shown.append(
            Markdown(
                f"### {dataset}: `{b}` against `{a}`\n\n{test['wins of b']} queries won, "
                f"{test['losses of b']} lost, {test['ties']} tied; mean {measure} difference "
                f"{test['diff (b - a)']:+.3f} (paired t-test p = {test['p (paired t)']})."
            )
        )
        for query_id in most_changed(pair, queries)["query_id"]:
            shown.extend(query_view(grid, [a, b], dataset, query_id, k=k, index=index))
    return shown


def wins_losses_table(
    results: pd.DataFrame, *, baseline: str = BASELINE_OBJECTIVE, objectives=None, datasets=None, measure: str = MEASURE
) -> pd.DataFrame:
    """:func:`wins_losses` as a compact table: one row per (backbone, objective), one column per
    dataset, each cell ``wins–losses (mean diff)`` over the queries."""
    table = wins_losses(results, baseline=baseline, measure=measure)
    if objectives is not None:
        table = table[table["objective"].isin(objectives)]
    if datasets is not None:
        table = table[table["dataset"].isin(datasets)]
    if table.empty:
        return tables.placeholder(f"no objective with per-query results against {baseline}")
    cells = table.assign(
        cell=[f"{won}–{lost} ({d:+.3f})" for won, lost, d in zip(table["wins"], table["losses"], table["mean diff"])]
    )
    wide = cells.pivot(index=["backbone", "objective"], columns="dataset", values="cell")
    wide = tables.ordered_rows(wide)[list(dict.fromkeys(table["dataset"]))]
    wide.columns.name = f"queries won–lost against {baseline} ({measure}, mean diff)"
    return wide
