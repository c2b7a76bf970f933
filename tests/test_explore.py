"""The explorer: two runs of a grid compared query by query (cerepro.report.explore), its notebook run
top to bottom by papermill on a demo grid with real rankings, and the notebook in JupyterLab
with its widgets, in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from explore_grid import SCORERS, write_ranked_grid

from cerepro.evaluation import stats
from cerepro.grid.runner import run_notebook
from cerepro.report import explore, tables

SHOTS = os.environ.get("CEREPRO_SHOTS")  # a folder to keep the browser checks' screenshots in


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A finished demo grid with real rankings (first stage, tiny-bert x three objectives)."""
    tmp = tmp_path_factory.mktemp("explore")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CEREPRO_CACHE", str(tmp / "cache"))
        mp.setenv("CEREPRO_RUNS", str(tmp / "runs"))
        write_ranked_grid(tmp / "runs")
        yield {"tmp": tmp, "results": tables.grid_results("demo"), "index": explore.rankings("demo")}


def test_two_runs_query_by_query(grid):
    results, index = grid["results"], grid["index"]
    assert len(index) == 2 * (1 + len(SCORERS))
    a, b = explore.default_pair(results, "demo:in-domain")
    assert (a, b) == ("tiny-bert.bce.s662124363", "tiny-bert.infonce.s662124363")  # the largest mean gap
    pair = explore.paired(results, a, b, "demo:in-domain")
    rows = results[(results["dataset"] == "demo:in-domain") & (results["measure"] == "nDCG@10")]
    by_run = rows.pivot(index="query_id", columns="run", values="value")
    assert np.allclose(pair.set_index("query_id")["diff"], (by_run[b] - by_run[a]).loc[pair["query_id"]])
    assert pair["diff"].is_monotonic_decreasing
    test = explore.paired_test(pair)
    assert test["wins of b"] + test["losses of b"] + test["ties"] == len(pair) == 80
    assert test["diff (b - a)"] == pytest.approx(by_run[b].mean() - by_run[a].mean(), rel=1e-9)
    changed = explore.most_changed(pair, 3)
    assert list(changed["diff"].abs()) == sorted(pair["diff"].abs(), reverse=True)[:3]


def test_a_query_side_by_side_with_grades_and_where_relevant_passages_went(grid):
    from cerepro.data.datasets import load_collection
    from cerepro.data.trec import read_run

    runs = ["tiny-bert.bce.s662124363", "tiny-bert.infonce.s662124363"]
    table = explore.side_by_side("demo", runs, "demo:in-domain", "i0001", k=5, index=grid["index"])
    collection = load_collection("demo:in-domain")
    ranking = read_run(grid["tmp"] / "runs" / "demo" / runs[1] / "evaluate" / "results" / "demo-in-domain" / "run.trec")
    top = ranking[ranking["query_id"] == "i0001"].sort_values("rank").head(5)
    assert list(table[(runs[1], "doc")]) == list(top["doc_id"]) and list(table.index) == [1, 2, 3, 4, 5]
    qrels = collection.qrels[collection.qrels["query_id"] == "i0001"].set_index("doc_id")["relevance"]
    assert [g if g != "" else None for g in table[(runs[1], "grade")]] == [
        int(qrels[d]) if d in qrels else None for d in top["doc_id"]
    ]
    assert table[(runs[1], "passage")].iloc[0] == collection.doc_text(top["doc_id"].iloc[0])[: explore.PASSAGE_CHARS]
    assert table.attrs["query"] == collection.queries["i0001"]
    where = explore.relevant_ranks("demo", runs, "demo:in-domain", "i0001", index=grid["index"])
    assert set(where["doc"]) == set(qrels[qrels > 0].index)
    ranks = dict(zip(top["doc_id"], top["rank"]))
    for doc, rank in zip(where["doc"], where[runs[1]]):
        if doc in ranks:
            assert rank == ranks[doc]


def test_ties_among_the_top_k_hand_checked():
    run = pd.DataFrame(
        {
            "query_id": ["q1"] * 5 + ["q2"] * 3,
            "doc_id": ["a", "b", "c", "d", "e", "a", "b", "c"],
            "score": [3.2151, 3.2149, 3.2148, 3.2140, 1.0, 2.0, 1.0, 0.5],
            "rank": [1, 2, 3, 4, 5, 1, 2, 3],
        }
    )
    found = explore.ties(run, k=4).set_index("query_id")
    # q1's top 4 round to 3.215, 3.215, 3.215, 3.214: three share a score; q2 has none
    assert found.loc["q1", "tied"] == 3 and found.loc["q2", "tied"] == 0
    assert found.loc["q1", "spread"] == pytest.approx(3.2151 - 3.2140, rel=1e-9)
    assert found.loc["q2", "candidates"] == 3


def test_kendalls_tau_with_the_teacher_hand_checked():
    from cerepro.report.agreement import kendall_tau

    assert kendall_tau([3, 2, 1], [0.3, 0.2, 0.1]) == pytest.approx(1.0)
    assert kendall_tau([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    # pairs (1,2) and (1,3) in the teacher's order, (2,3) against it: (2 - 1) / 3
    assert kendall_tau([3, 2, 1], [3, 1, 2]) == pytest.approx(1 / 3)
    # tau-b: the teacher ties passages 2 and 3; 2 concordant pairs of 3, one tied on one side only
    assert kendall_tau([2, 1, 1], [3, 2, 1]) == pytest.approx(2 / np.sqrt(2 * 3))
    assert kendall_tau([5.0, 1.0], [0.2, 0.7]) == pytest.approx(-1.0)  # a teacher pair the run reverses
    assert kendall_tau([5.0, 1.0], [0.4, 0.4]) == 0.0  # a collapsed scorer: no order to agree with
    with pytest.raises(ValueError, match=r"one length, got \(3,\) and \(2,\)"):
        kendall_tau([3, 2, 1], [1, 2])


def test_agreement_with_the_teacher_per_run(grid):
    """margin-mse's teacher pairs (the demo world's teacher file, read as the run reads it): each
    pair's tau is the product of the two sides' signs, and the run's summary their mean."""
    from explore_grid import TEACHER_LISTS

    from cerepro.data.train_files import training_file
    from cerepro.data.training_data import source_counts
    from cerepro.report import agreement

    lists = agreement.teacher_lists("demo")
    run = "tiny-bert.margin-mse.s662124363"
    assert set(lists["run"]) == {run} and set(lists["source"]) == {"teacher-pairs"}  # bce, infonce: no teacher
    per_epoch = source_counts("teacher-pairs", "demo").used
    assert sorted(lists["position"].unique()) == list(range(per_epoch - TEACHER_LISTS, per_epoch))
    pairs = pd.read_csv(
        training_file("teacher-pairs", "demo"), sep="\t", header=None, names=["pos", "neg", "q", "p", "n"]
    )
    by_list = lists.groupby("list", sort=False)
    signs = by_list["teacher"].agg(lambda s: np.sign(s.iloc[0] - s.iloc[1])) * by_list["score"].agg(
        lambda s: np.sign(s.iloc[0] - s.iloc[1])
    )
    first = lists.iloc[0]
    assert (
        (pairs["q"] == first["query_id"]) & (pairs["p"] == first["doc_id"]) & (pairs["pos"] == first["teacher"])
    ).any()
    summary = agreement.teacher_agreement(lists)
    assert list(summary.index) == [run]
    assert summary.loc[run, "lists"] == TEACHER_LISTS and summary.loc[run, "passages per list"] == 2
    assert summary.loc[run, "tau (mean)"] == pytest.approx(signs.mean(), abs=1e-12)
    assert summary.loc[run, "lists with tau < 0"] == (signs < 0).sum()
    assert pd.isna(summary.loc[run, "lists read in training"])  # no train ledger: not known
    worst = agreement.teacher_ranking(lists, run)  # the list the run orders least like its teacher
    assert worst.attrs["tau"] == signs.min() and list(worst["teacher rank"]) == [1, 2]
    assert list(worst["run rank"]) == ([2, 1] if signs.min() < 0 else [1, 2])
    with pytest.raises(ValueError, match=f"runs with some: {run}"):
        agreement.teacher_ranking(lists, "tiny-bert.bce.s662124363")
    with pytest.raises(ValueError, match="no teacher list 'L99999'"):
        agreement.teacher_ranking(lists, run, "L99999")


@pytest.mark.slow
def test_the_evaluate_job_scores_its_runs_teacher_lists(grid, tmp_path):
    """A tiny model (built in code, untrained) scores the last five teacher lists of adr-mse's
    first pass: the lists are the source's, in the teacher's order, marked read up to the train
    ledger's steps; a run without a teacher writes nothing."""
    from cerepro.data.tokenize import encoding_options
    from cerepro.data.training_data import source_counts
    from cerepro.evaluation import teacher
    from cerepro.evaluation.rerank import rerank
    from cerepro.grids import evaluation_settings, load_grid
    from cerepro.model.models import build_cross_encoder
    from cerepro.report import agreement

    demo = load_grid("demo")
    run = next(e for e in demo.evaluations if e.trained and e.config.objective == "adr-mse")
    config = run.config
    model, tokenizer = build_cross_encoder(config.hf_id, max_length=config.max_length)
    settings = evaluation_settings(demo, run.run_id)
    per_epoch = source_counts("llm-lists", "demo", llm_list=config.llm_list).used
    steps = per_epoch - 2  # the run's training read all but the last two lists
    ledger = tmp_path / "runs" / "demo" / run.run_id / "train" / "ledger.json"
    ledger.parent.mkdir(parents=True)
    ledger.write_text(json.dumps({"steps": steps}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CEREPRO_RUNS", str(tmp_path / "runs"))
        folder = tmp_path / "teacher"
        lists = teacher.score_teacher_lists(demo, run.run_id, model.eval(), tokenizer, settings, folder, lists=5)
        bce = next(e for e in demo.evaluations if e.trained and e.config.objective == "bce")
        assert teacher.score_teacher_lists(demo, bce.run_id, model, tokenizer, settings, tmp_path / "none") is None
        assert teacher.score_teacher_lists(demo, "first-stage", None, None, settings, tmp_path / "none") is None
    assert not (tmp_path / "none").exists()
    assert sorted(lists["position"].unique()) == list(range(per_epoch - 5, per_epoch))
    seen = lists.groupby("position")["seen"].first()
    assert list(seen) == [True, True, True, False, False]  # positions below steps x 1 group per step
    for _, part in lists.groupby("list"):
        assert part["teacher"].is_monotonic_decreasing and len(part) <= config.group_size  # the teacher's order
    written = pd.read_csv(folder / "lists.tsv", sep="\t", dtype={"list": str, "query_id": str, "doc_id": str})
    assert np.allclose(written["score"], lists["score"]) and list(written.columns) == teacher.COLUMNS
    assert json.loads((folder / "teacher.json").read_text())["groups_read"] == steps
    # the scores are the model's on those pairs, as the evaluation scores them
    one = lists[lists["list"] == lists["list"].iloc[0]]
    group = teacher.teacher_lists(config, 5)[0]
    again = rerank(
        model,
        tokenizer,
        one[["list", "doc_id"]].rename(columns={"list": "query_id"}),
        {one["list"].iloc[0]: group.query},
        dict(zip(group.doc_ids, group.passages)),
        **encoding_options(settings),
        precision=settings.precision,
        progress=False,
    )
    assert np.allclose(again.set_index("doc_id").loc[one["doc_id"], "score"], one["score"])
    summary = agreement.teacher_agreement(lists)
    taus = [agreement.kendall_tau(p["teacher"], p["score"]) for _, p in lists.groupby("list")]
    assert summary.loc[run.run_id, "tau (mean)"] == pytest.approx(np.mean(taus))
    assert summary.loc[run.run_id, "lists read in training"] == 3


def test_a_collapsed_scorer_shows_its_ties_and_falls_below_the_first_stage(grid):
    summary = explore.tie_summary("demo", "demo:in-domain", index=grid["index"])
    assert summary.loc["tiny-bert.margin-mse.s662124363", "queries with a tie"] == 1.0
    assert summary.loc["tiny-bert.infonce.s662124363", "queries with a tie"] == 0.0
    below = explore.below_first_stage(grid["results"], "tiny-bert.margin-mse.s662124363", "demo:in-domain")
    assert (below["diff"] < 0).all() and below["diff"].is_monotonic_increasing
    counts = explore.below_first_stage_summary(grid["results"], "demo:in-domain")
    assert counts.loc["tiny-bert.margin-mse.s662124363", "queries below"] == len(below)


def test_wins_and_losses_against_the_baseline(grid):
    table = explore.wins_losses(grid["results"])
    assert set(table["objective"]) == {"infonce", "margin-mse"} and set(table["baseline"]) == {"bce"}
    row = table[(table["dataset"] == "demo:in-domain") & (table["objective"] == "infonce")].iloc[0]
    pair = explore.paired(grid["results"], "tiny-bert.bce.s662124363", "tiny-bert.infonce.s662124363", "demo:in-domain")
    assert (row["wins"], row["losses"]) == ((pair["diff"] > 0).sum(), (pair["diff"] < 0).sum())
    assert row["mean diff"] == round(pair["diff"].mean(), 4)  # shown to four decimals


def test_what_the_grid_does_not_have_is_refused_with_what_it_has(grid):
    with pytest.raises(explore.ExploreError, match="tiny-bert.bce.s662124363"):
        explore.paired(grid["results"], "tiny-bert.bce.s1", "first-stage", "demo:in-domain")
    with pytest.raises(explore.ExploreError, match="datasets: demo:in-domain"):
        explore.side_by_side("demo", ["first-stage"], "msmarco-dev", "q1", index=grid["index"])
    with pytest.raises(explore.ExploreError, match="no query 'nope'"):
        explore.side_by_side("demo", ["first-stage"], "demo:in-domain", "nope", index=grid["index"])
    with pytest.raises(ValueError, match="differ in length"):
        stats.paired_test([0.1, 0.2], [0.1])


def test_the_explorer_runs_top_to_bottom_by_papermill(grid):
    """Defaults only: the executed copy shows the most-changed queries' passages, no widget needed."""
    folder = run_notebook("explore", grid["tmp"] / "explore-run", {}, force=True)
    nb = nbformat.read(folder / "explore.ipynb", as_version=4)
    shown = "\n".join(
        "".join(str(o.get("data", {}).get(kind, "")) for kind in ("text/html", "text/plain", "text/markdown"))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    pair = explore.paired(grid["results"], "tiny-bert.bce.s662124363", "tiny-bert.infonce.s662124363", "demo:in-domain")
    for query_id in explore.most_changed(pair, 3)["query_id"]:
        assert f"query <code>{query_id}</code>" in shown
    assert shown.count('class="cerepro-passages"') >= 3
    assert "queries with a tie" in shown and "queries below" in shown
    assert "tau (mean)" in shown and "neither run has teacher lists" in shown  # bce and infonce: no teacher
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_the_explorer_in_jupyterlab_changes_passages_with_the_query(grid, tmp_path):
    """JupyterLab over notebooks/, headless Chromium: run every cell, the widgets render, and
    picking another query in the explorer's query list shows that query's passages."""
    from browser_check import Page, chromium
    from test_jupyterlab import SETTINGS, TOKEN, Lab

    assert chromium(install=True), "headless Chromium is needed: apt-get install -y chromium"
    lab = Lab(tmp_path, SETTINGS, extra=["--LabApp.expose_app_in_browser=True"])
    try:
        with Page(width=1400, height=2000) as page:
            page.open(f"{lab.url}/lab/tree/notebooks/explore.py?token={TOKEN}")
            panel = "Array.from(jupyterapp.shell.widgets('main')).find(w => w.sessionContext)"
            page.wait_for(
                f"!!(window.jupyterapp && {panel} && {panel}.sessionContext.session && "
                f"{panel}.sessionContext.session.kernel)",
                120,
                "the notebook's kernel",
            )
            # the notebook made current (a headless window has no focus), then Run All as the menu does
            page.evaluate(
                f"(() => {{ jupyterapp.shell.activateById({panel}.id); "
                "return jupyterapp.commands.execute('notebook:run-all-cells').then(() => true); })()"
            )
            caption = (
                "(() => { const t = document.querySelectorAll('.widget-output table.cerepro-passages caption');"
                " return t.length ? t[t.length - 1].textContent : null; })()"
            )
            first = page.wait_for(caption, 180, "the explorer's passages")
            selects = page.evaluate("document.querySelectorAll('.widget-dropdown select').length")
            assert selects == 4  # dataset, run a, run b, query
            options = page.evaluate(
                "Array.from(document.querySelectorAll('.widget-dropdown select')[3].options).map(o => o.value)"
            )
            assert len(options) == 80
            page.evaluate(
                "(() => { const s = document.querySelectorAll('.widget-dropdown select')[3];"
                " s.selectedIndex = 1; s.dispatchEvent(new Event('change', {bubbles: true})); return true; })()"
            )
            second = page.wait_for(
                f"(() => {{ const c = {caption}; return c && c !== {json.dumps(first)} ? c : null; }})()",
                60,
                "other passages",
            )
            query = re.search(r"query (\S+):", second).group(1)
            assert query != re.search(r"query (\S+):", first).group(1)
            docs = page.evaluate(
                "Array.from(document.querySelectorAll('.widget-output table.cerepro-passages')"
                "[document.querySelectorAll('.widget-output table.cerepro-passages').length - 1]"
                ".querySelectorAll('td code')).map(c => c.textContent)"
            )
            from cerepro.data.trec import read_run

            run = read_run(
                grid["tmp"]
                / "runs"
                / "demo"
                / "tiny-bert.bce.s662124363"
                / "evaluate"
                / "results"
                / "demo-in-domain"
                / "run.trec"
            )
            top = list(run[run["query_id"] == query].sort_values("rank")["doc_id"].head(explore.TOP_K))
            assert docs[0::2] == top  # run a's passages of the newly chosen query, rank by rank
            if SHOTS:
                page.evaluate(
                    "document.querySelectorAll('.widget-output table.cerepro-passages')"
                    "[document.querySelectorAll('.widget-output table.cerepro-passages').length - 1]"
                    ".closest('.jp-Cell').scrollIntoView(); true"
                )
                page.screenshot(Path(SHOTS) / "explorer-jupyterlab.png")
            # run b: the margin-mse run, trained from its teacher's scores: its agreement shows
            page.evaluate(
                "(() => { const s = document.querySelectorAll('.widget-dropdown select')[2];"
                " s.value = 'tiny-bert.margin-mse.s662124363'; s.dispatchEvent(new Event('change', {bubbles: true}));"
                " return true; })()"
            )
            taught = page.wait_for(
                "(() => { const o = Array.from(document.querySelectorAll('.widget-output'))"
                ".find(e => e.textContent.includes('least like its teacher')); return o ? o.textContent : null; })()",
                60,
                "the teacher's agreement",
            )
            assert "tau (mean)" in taught and "teacher rank" in taught
            if SHOTS:
                page.evaluate(
                    "Array.from(document.querySelectorAll('.widget-output'))"
                    ".find(e => e.textContent.includes('least like its teacher')).scrollIntoView(); true"
                )
                page.screenshot(Path(SHOTS) / "explorer-teacher.png")
    finally:
        lab.stop()


def test_the_compare_notebooks_first_table_is_one_measure(grid):
    """It averaged nDCG@10, RR@10 and AP together under an nDCG@10 heading (the first stage read
    0.539 there and 0.443 in the next table); now each cell is the one measure's mean."""
    folder = run_notebook("compare", grid["tmp"] / "compare-run", {}, force=True)
    nb = nbformat.read(folder / "compare.ipynb", as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code" and c.outputs)
    shown = first.outputs[0]["data"]["text/plain"]
    assert "nDCG@10, mean over seeds" in shown
    results = grid["results"]
    for run in ("first-stage", "tiny-bert.infonce.s662124363"):
        rows = results[(results["run"] == run) & (results["dataset"] == "demo:in-domain")]
        ndcg = rows.loc[rows["measure"] == "nDCG@10", "value"].mean()
        assert f"{ndcg:.6f}" in shown
        assert f"{rows['value'].mean():.6f}" not in shown  # the mean over measures is gone


def test_cerepro_runs_lists_a_grids_run_ids_and_what_finished(grid, capsys):
    from cerepro import cli

    assert cli.main(["runs", "demo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "id", "train", "evaluate"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert len(rows) == 1 + 2 * 6 * 2  # the first stage, then two backbones x six objectives x two seeds
    assert rows["first-stage"] == ["—", "done"]
    assert rows["tiny-bert.infonce.s662124363"] == ["not", "run", "done"]
    assert rows["tiny-modernbert.bce.s3340206418"] == ["not", "run", "not", "run"]


def test_an_unknown_run_name_names_the_grids_run_ids(tmp_path, capsys):
    from cerepro import cli

    assert (
        cli.main(
            ["run", "evaluate", "-p", "grid=demo", "-p", "run_name=tiny-bert.bce.s1", "--out", str(tmp_path / "out")]
        )
        == 2
    )
    error = capsys.readouterr().err
    assert "tiny-bert.bce.s1" in error and "tiny-bert.bce.s662124363" in error and "cerepro runs demo" in error


def test_cerepro_book_takes_the_grid_as_an_option(capsys):
    from cerepro import cli

    assert cli.main(["book", "--grid", "no-such-grid"]) == 2
    assert "no-such-grid" in capsys.readouterr().err


@pytest.fixture(scope="module")
def small_book(grid):
    """The book's per-query and scoreboard pages (and the run index they link) built from the
    demo grid with real rankings: a real jupyter-book build, two pages instead of thirty."""
    from cerepro.paths import project_root
    from cerepro.report import build

    source, folder = project_root() / "book", grid["tmp"] / "book"
    folder.mkdir()
    shutil.copy(source / "_config.yml", folder)
    shutil.copytree(source / "_static", folder / "_static")
    for page in ("queries", "scoreboard"):
        shutil.copy(source / f"{page}.md", folder / f"{page}.md")
    (folder / "_toc.yml").write_text(
        "format: jb-book\nroot: queries\nchapters:\n- file: scoreboard\n"
        "- file: generated/run-index\n  sections:\n  - glob: generated/runs/*\n"
    )
    code = build.build_book(log=str(grid["tmp"] / "book.log"), book=folder)
    assert code == 0, (grid["tmp"] / "book.log").read_text()[-3000:]
    return folder / "_build" / "html"


def _container(table: int) -> str:
    """The JavaScript for the page's ``table``-th interactive table (header and body may be two
    tables of one DataTables container when it scrolls sideways)."""
    return f"document.querySelectorAll('.dt-container')[{table}]"


def _cells(page, table: int, column: int) -> list[str]:
    return page.evaluate(
        f"Array.from({_container(table)}.querySelectorAll('.dt-scroll-body tbody tr'))"
        f".map(r => r.cells[{column}].textContent)"
    )


@pytest.mark.slow
def test_the_books_tables_sort_and_download_offline_from_file_urls(grid, small_book, tmp_path):
    """From file:// with no network (the DataTables bundle is inside the page): clicking a
    column's sort control orders the rows by it, and the CSV button downloads the table's rows."""
    import csv

    from browser_check import Page, chromium

    assert chromium(install=True), "headless Chromium is needed: apt-get install -y chromium"
    html = (small_book / "queries.html").read_text()
    assert "unpkg.com/dt_for_itables" not in html.split("set_or_remove_dark_class")[0]  # no CDN import
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    wins = explore.wins_losses(grid["results"])
    with Page(width=1300, height=1800) as page:
        page.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
        page.open((small_book / "queries.html").as_uri())
        assert page.wait_for("document.querySelectorAll('.dt-container').length", 60, "the interactive tables") >= 5
        headers = page.evaluate(
            f"Array.from({_container(0)}.querySelectorAll('.dt-scroll-head thead th .dt-column-title'))"
            ".map(h => h.textContent)"
        )
        assert headers == list(wins.columns)
        column = headers.index("losses")
        before = [int(v) for v in _cells(page, 0, column)]
        assert before == list(wins["losses"])  # as computed, not sorted
        page.evaluate(
            f"{_container(0)}.querySelectorAll('.dt-scroll-head thead th')[{column}]"
            ".querySelector('.dt-column-order').click(); true"
        )
        after = [int(v) for v in _cells(page, 0, column)]
        assert after == sorted(before) and after != before
        if SHOTS:
            page.screenshot(Path(SHOTS) / "queries-page.png", full_page=True)
        page.evaluate(f"{_container(0)}.querySelector('.dt-buttons button').click(); true")
        page.wait_for("true", 1)
        target = downloads / "wins-losses-demo.csv"
        import time

        deadline = time.time() + 30
        while not target.is_file() and time.time() < deadline:
            time.sleep(0.3)
        with target.open(encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r]  # a blank line ends the file
    assert rows[0] == list(wins.columns)
    assert [int(r[column]) for r in rows[1:]] == sorted(wins["losses"]), rows  # the rows, in the order shown
    assert {(r[0], r[2]) for r in rows[1:]} == set(zip(wins["dataset"], wins["objective"]))
    assert len(rows) - 1 == len(wins)


@pytest.mark.slow
def test_the_run_index_sorts_downloads_and_links_every_run_offline(grid, small_book, tmp_path):
    """The run index from file://: one row per run with its main results and its agreement with
    the teacher; sorting a results column orders the rows, the CSV holds every run, each run's
    notebook link leads to its page."""
    import csv
    import time

    from browser_check import Page, chromium

    assert chromium(install=True), "headless Chromium is needed: apt-get install -y chromium"
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    runs = ["first-stage", *(f"tiny-bert.{o}.s662124363" for o in SCORERS)]
    means = grid["results"][grid["results"]["measure"] == "nDCG@10"].groupby(["run", "dataset"])["value"].mean()
    index_page = small_book / "generated" / "run-index.html"
    with Page(width=1300, height=1400) as page:
        page.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
        page.open(index_page.as_uri())
        assert page.wait_for("document.querySelectorAll('.dt-container').length", 60, "the run index table") == 1
        headers = page.evaluate(
            f"Array.from({_container(0)}.querySelectorAll('.dt-scroll-head thead th .dt-column-title'))"
            ".map(h => h.textContent)"
        )
        assert headers[:4] == ["run", "backbone", "objective", "seed"] and "tau with teacher" in headers
        assert [r for r in _cells(page, 0, 0)] == runs  # the first stage, then the paper's objective order
        column = headers.index("demo:in-domain")
        assert [float(v) for v in _cells(page, 0, column)] == [round(means[(r, "demo:in-domain")], 4) for r in runs]
        page.evaluate(
            f"{_container(0)}.querySelectorAll('.dt-scroll-head thead th')[{column}]"
            ".querySelector('.dt-column-order').click(); true"
        )
        shown = [float(v) for v in _cells(page, 0, column)]
        assert shown == sorted(shown) and _cells(page, 0, 0) != runs
        links = page.evaluate(
            f"Array.from({_container(0)}.querySelectorAll('.dt-scroll-body tbody a')).map(a => a.href)"
        )
        assert len(links) == len(runs) and all(Path(link.removeprefix("file://")).is_file() for link in links)
        if SHOTS:
            page.screenshot(Path(SHOTS) / "run-index.png", full_page=True)
        page.evaluate(f"{_container(0)}.querySelector('.dt-buttons button').click(); true")
        target = downloads / "runs-demo.csv"
        deadline = time.time() + 30
        while not target.is_file() and time.time() < deadline:
            time.sleep(0.3)
        with target.open(encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r]
    assert rows[0] == headers and sorted(r[0] for r in rows[1:]) == sorted(runs)
    tau = rows[0].index("tau with teacher")
    assert {r[0]: r[tau] for r in rows[1:]}["tiny-bert.margin-mse.s662124363"] != ""
    assert all("<a" not in cell for r in rows for cell in r)  # the links' text, not their HTML


def test_the_readmes_exploring_snippet_runs_on_a_demo_grid(grid):
    from cerepro.paths import project_root

    readme = (project_root() / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Exploring the results", 1)[1].split("\n## ", 1)[0]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    assert scope["pair"].attrs["b"] == "tiny-bert.infonce.s662124363" and len(scope["pair"]) == 80
