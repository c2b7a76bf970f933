"""The report modules (cerepro.report.tables, figures, verdicts, provenance, protocol) on synthetic grids written in the engine's exact layout (hand-checkable numbers)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import matplotlib.figure
import nbformat
import numpy as np
import pandas as pd
import pytest

from cerepro import vocab
from cerepro.config import paper_seeds
from cerepro.evaluation.evaluate import Result, query_means, save_result
from cerepro.model import backbones
from cerepro.report import claims, figures, protocol, provenance, tables, verdicts
from cerepro.training import losses

DEMO_DATASETS = ("demo:in-domain", "demo:out-of-domain")
DEMO_BACKBONES = ("tiny-bert", "tiny-electra", "tiny-modernbert")
PAPER_OBJECTIVES = ("bce", "hinge", "infonce", "margin-mse", "distill-ranknet", "adr-mse")
# A 1x1 PNG, the image output of the fixture notebooks.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
# Synthetic effect of each objective and backbone on the fixture's per-query values.
OBJECTIVE_EFFECT = {
    "bce": 0.0,
    "hinge": 0.04,
    "infonce": 0.10,
    "margin-mse": 0.08,
    "distill-ranknet": 0.095,
    "adr-mse": 0.07,
    "listnet-kl": 0.05,
}


def _done(folder: Path, notebook: str | None, parameters: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if notebook:
        nb = nbformat.v4.new_notebook()
        nb.cells = [
            nbformat.v4.new_markdown_cell(f"# {notebook} (fixture)"),
            nbformat.v4.new_code_cell(
                "figure()",
                execution_count=1,
                outputs=[
                    nbformat.v4.new_output(
                        "display_data", data={"image/png": base64.b64encode(PNG).decode(), "text/plain": "<Figure>"}
                    )
                ],
            ),
        ]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / f"{notebook}.ipynb")
    meta = {
        "notebook": notebook,
        "parameters": parameters,
        "seconds": 1.5,
        "python": "3.11.0",
        "versions": {"cerepro": "0.1.0", "pandas": "3.1.1"},
        "git_commit": "abc123",
        "hardware": {"machine": "x86_64", "cpus": 2},
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "DONE").write_text("")


def _result(folder: Path, run: str, dataset: str, values: np.ndarray) -> None:
    queries = [f"q{i}" for i in range(len(values))]
    per_query = pd.DataFrame(
        {"run": run, "dataset": dataset, "query_id": queries, "measure": "nDCG@10", "value": values}
    )
    rr = per_query.assign(measure="RR@10", value=np.clip(values + 0.05, 0, 1))
    per_query = pd.concat([per_query, rr], ignore_index=True)
    save_result(Result(per_query, query_means(per_query), {"run": run, "dataset": dataset}), folder)


def write_grid(
    runs: Path,
    grid: str = "demo",
    *,
    backbones=DEMO_BACKBONES,
    objectives=PAPER_OBJECTIVES,
    seeds=2,
    datasets=DEMO_DATASETS,
    queries: int = 24,
    effects=None,
    notebooks: bool = True,
) -> Path:
    """A finished grid under ``runs/<grid>/`` in the engine's layout: per-query results of every
    run and of the first stage, training logs and ledgers, executed notebooks, meta.json, DONE."""
    effects = {**OBJECTIVE_EFFECT, **(effects or {})}
    rng = np.random.default_rng(0)
    root = runs / grid
    difficulty = {d: rng.uniform(0.2, 0.5, queries) for d in datasets}
    for dataset in datasets:
        folder = root / "first-stage" / "evaluate" / "results" / dataset.replace(":", "-").replace("/", "-")
        _result(folder, "first-stage", dataset, difficulty[dataset])
    _done(root / "first-stage" / "evaluate", "evaluate" if notebooks else None, {"run_name": "first-stage"})
    for b, backbone in enumerate(tables.backbone_order(backbones)):  # larger backbones score higher
        for objective in objectives:
            for seed in paper_seeds(seeds):
                run = f"{backbone}.{objective}.s{seed}"
                for d, dataset in enumerate(datasets):
                    shift = 0.6 if d else 1.0  # effects shrink out of domain
                    noise = rng.normal(0, 0.02, queries)
                    values = np.clip(difficulty[dataset] + 0.04 * (b + 1) + shift * effects[objective] + noise, 0, 1)
                    folder = root / run / "evaluate" / "results" / dataset.replace(":", "-").replace("/", "-")
                    _result(folder, run, dataset, values)
                _done(root / run / "evaluate", "evaluate" if notebooks else None, {"run_name": run})
                train = root / run / "train"
                steps = np.arange(0, 110, 10)
                log = [
                    {
                        "step": int(s),
                        "loss": float(1.0 / (1 + s / 30) + effects[objective]),
                        "lr": 1e-3,
                        "grad_norm": 1.0,
                        "pairs_per_s": 500.0,
                    }
                    for s in steps
                ]
                log += [
                    {"step": s, "validation": {"demo:validation": 0.3 + s / 1000}, "nDCG@10": 0.3 + s / 1000}
                    for s in (50, 100)
                ]
                train.mkdir(parents=True, exist_ok=True)
                (train / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in log))
                (train / "ledger.json").write_text(
                    json.dumps(
                        {
                            "run_id": run,
                            "wall_s": 60.0,
                            "device": "cpu",
                            "steps": 100,
                            "pairs_per_s": 500.0,
                            "flops": 1e12,
                            "mfu": None,
                            "flops_method": "fixture",
                        }
                    )
                )
                _done(train, "train" if notebooks else None, {"backbone": backbone, "objective": objective})
    if notebooks:
        _done(root / "data" / "llm-lists", "data", {"source": "llm-lists"})
        _done(root / "compare", "compare", {"grid": grid})
    return root


@pytest.fixture(scope="module")
def fixture_params(tmp_path_factory):
    """params/ with the demo grid naming the fixture's three backbones (tables read only the runs
    a grid names; the fixture adds tiny-electra to show a third size)."""
    import shutil

    params = tmp_path_factory.mktemp("params") / "params"
    shutil.copytree(Path(__file__).resolve().parents[1] / "params", params)
    grid = params / "grids" / "demo.yaml"
    grid.write_text(
        grid.read_text().replace("backbones: [tiny-bert, tiny-modernbert]", f"backbones: [{', '.join(DEMO_BACKBONES)}]")
    )
    return params


@pytest.fixture(autouse=True)
def _fixture_params(fixture_params, monkeypatch):
    monkeypatch.setenv("CEREPRO_PARAMS", str(fixture_params))


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    write_grid(runs)
    return runs


@pytest.fixture
def demo(demo_runs, monkeypatch):
    monkeypatch.setenv("CEREPRO_RUNS", str(demo_runs))
    return tables.grid_results("demo")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


# --- loading ---------------------------------------------------------------------------------


def test_grid_results_parses_run_ids_and_keeps_the_first_stage(demo):
    assert list(demo.columns) == tables.RESULT_COLUMNS
    seeds = paper_seeds(2)
    assert set(demo["seed"].dropna()) == set(seeds)
    first = demo[demo["run"] == "first-stage"]
    assert set(first["backbone"]) == {"first-stage"} and first["seed"].isna().all()
    run = demo[demo["run"] == f"tiny-bert.infonce.s{seeds[0]}"]
    assert set(run["backbone"]) == {"tiny-bert"} and set(run["objective"]) == {"infonce"}
    assert set(demo["group"]) == {"in-domain", "out-of-domain"}
    # 1 first stage + 3 x 6 x 2 runs, 2 datasets x 24 queries x 2 measures each
    assert len(demo) == (1 + 36) * 2 * 24 * 2


def test_only_done_folders_count(tmp_path, monkeypatch):
    write_grid(tmp_path, backbones=("tiny-bert",), objectives=("bce", "infonce"), seeds=1, notebooks=False)
    (tmp_path / "demo" / f"tiny-bert.infonce.s{paper_seeds(1)[0]}" / "evaluate" / "DONE").unlink()
    monkeypatch.setenv("CEREPRO_RUNS", str(tmp_path))
    assert set(tables.grid_results("demo")["objective"]) == {"first-stage", "bce"}


def test_only_the_runs_the_grid_names_count(tmp_path, monkeypatch, fixture_params):
    """An objective removed from the grid file leaves its finished runs on disk but in no table:
    the book once said "evaluated runs 2 of 1"."""
    from cerepro.report import book

    write_grid(tmp_path, backbones=("tiny-bert",), objectives=("bce", "infonce"), seeds=1, notebooks=False)
    monkeypatch.setenv("CEREPRO_RUNS", str(tmp_path))
    grid = fixture_params / "grids" / "one.yaml"
    grid.write_text("name: one\nprofile: demo\nbackbones: [tiny-bert]\nobjectives: [bce]\nseeds: 1\n")
    (tmp_path / "one").symlink_to(tmp_path / "demo")  # the same finished runs, read as grid `one`
    try:
        results = tables.grid_results("one")
        assert set(results["objective"]) == {"first-stage", "bce"}
        page = book.Page(tables.grid_info("one"), results)
        assert page.runs().loc["evaluated runs", "one"] == "1 of 1"
    finally:
        grid.unlink()


def test_no_results_give_empty_tables_and_placeholders(tmp_path, monkeypatch):
    monkeypatch.setenv("CEREPRO_RUNS", str(tmp_path))
    empty = tables.grid_results("demo")
    assert empty.empty and list(empty.columns) == tables.RESULT_COLUMNS
    assert "not yet run" in tables.significance_table(empty).iloc[0, 0]
    assert "not yet run" in provenance.ledger_table("demo").iloc[0, 0]
    assert {c.verdict for c in verdicts.claims(empty).values()} == {claims.NOT_RUN}
    for draw in (figures.heatmaps, figures.gain_vs_scaling, figures.id_ood_scatter, figures.seed_spread):
        assert isinstance(draw(empty), matplotlib.figure.Figure)
    assert provenance.run_index("demo").empty


# --- numbers ---------------------------------------------------------------------------------


def test_scores_are_means_of_per_dataset_means(demo):
    seed = paper_seeds(2)[0]
    run = f"tiny-bert.bce.s{seed}"
    rows = demo[(demo["run"] == run) & (demo["measure"] == "nDCG@10")]
    expected = rows[rows["dataset"] == "demo:in-domain"]["value"].mean()
    table = tables.column_scores(demo)
    got = table[(table["run"] == run) & (table["column"] == "demo:in-domain")]["value"].item()
    assert got == pytest.approx(expected)
    cells = tables.cell_means(demo)
    cell = cells[
        (cells["backbone"] == "tiny-bert") & (cells["objective"] == "bce") & (cells["column"] == "demo:in-domain")
    ]
    both = table[
        (table["backbone"] == "tiny-bert") & (table["objective"] == "bce") & (table["column"] == "demo:in-domain")
    ]
    assert cell["value"].item() == pytest.approx(both["value"].mean()) and cell["n_seeds"].item() == 2


@pytest.fixture(scope="module")
def paper_runs(tmp_path_factory):
    """Two paper backbones x two objectives, one seed, on all 22 datasets (4 queries each)."""
    from cerepro.vocab import dataset_registry

    runs = tmp_path_factory.mktemp("paper-runs")
    write_grid(
        runs,
        "paper",
        backbones=("ettin-17m", "bert-base"),
        objectives=("bce", "infonce"),
        seeds=1,
        datasets=tuple(dataset_registry()["datasets"]),
        queries=4,
        notebooks=False,
    )
    return runs


def test_aggregates_are_the_papers_unweighted_means(paper_runs, monkeypatch):
    monkeypatch.setenv("CEREPRO_RUNS", str(paper_runs))
    results = tables.grid_results("paper")
    columns = tables.available_columns(results)
    assert columns[:3] == ["msmarco-dev-small", "trec-dl-2019", "trec-dl-2020"]
    assert columns[-4:] == ["in-domain", "beir-13", "lotte-search-5", "ood"]
    means = tables.run_means(results)
    run = means[means["run"] == f"bert-base.infonce.s{paper_seeds(1)[0]}"].set_index("dataset")["value"]
    table = tables.column_scores(results).set_index(["run", "column"])["value"]
    ood = run[["lotte-writing", "lotte-recreation", "lotte-science", "lotte-technology", "lotte-lifestyle", "robust04"]]
    assert table[(f"bert-base.infonce.s{paper_seeds(1)[0]}", "ood")] == pytest.approx(ood.mean())
    assert tables.evaluation_groups(results) == ["in-domain", "beir-13", "lotte-search-5", "robust04"]


def test_a_grid_with_part_of_an_aggregate_shows_its_sets_never_a_partial_mean(tmp_path, monkeypatch):
    """The rehearsal evaluates MS MARCO dev and TREC DL 2019 but not 2020: no "in-domain" column
    (the paper's is the mean of all three), each set in its own column, and every figure draws."""
    sets = (
        "msmarco-passage/dev/small",
        "msmarco-passage/trec-dl-2019/judged",
        "beir/scifact/test",
        "lotte/writing/test/search",
    )
    write_grid(
        tmp_path,
        "paper",
        backbones=("ettin-17m",),
        objectives=("bce", "margin-mse"),
        seeds=1,
        datasets=sets,
        queries=4,
        notebooks=False,
    )
    monkeypatch.setenv("CEREPRO_RUNS", str(tmp_path))
    results = tables.grid_results("paper")
    assert tables.available_columns(results) == ["msmarco-dev-small", "trec-dl-2019", "scifact", "lotte-writing"]
    cells = tables.cell_means(results)
    assert set(cells["column"]) == {"msmarco-dev-small", "trec-dl-2019", "scifact", "lotte-writing"}
    heat = figures.heatmaps(results)
    assert [ax.get_title() for ax in heat.axes if ax.has_data()] == [
        f"{c} ({tables.MEASURE})" for c in ("msmarco-dev-small", "trec-dl-2019", "scifact", "lotte-writing")
    ]
    scatter = figures.id_ood_scatter(results)
    assert [ax.get_xlabel() for ax in scatter.axes if ax.has_data()] == [f"msmarco-dev-small ({tables.MEASURE})"] * 2
    for draw in (figures.gain_vs_scaling, figures.seed_spread):
        assert any(ax.has_data() for ax in draw(results).axes), draw.__name__


def test_significance_markers_follow_the_tests(demo):
    tests = tables.significance(demo, baseline="bce")
    # infonce is +0.10 over bce with sd 0.02 noise on 24 queries: significant under both tests
    strong = tests[(tests["objective"] == "infonce") & (tests["column"] == "demo:in-domain")]
    assert strong["paired"].all() and strong["welch"].all()
    assert (strong["diff"] > 0.08).all()
    table = tables.significance_table(demo, baseline="bce")
    cell = table.loc[("tiny-bert", "infonce"), "demo:in-domain"]
    assert cell.endswith("†‡")
    assert float(cell[:6]) == pytest.approx(strong[strong["backbone"] == "tiny-bert"]["mean"].item(), abs=1e-4)
    assert not table.loc[("tiny-bert", "bce"), "demo:in-domain"].endswith(("†", "‡"))
    assert table.index[0] == ("first-stage", "first-stage")


def test_backbones_are_ordered_by_parameter_count():
    order = tables.backbone_order(["deberta-v3-base", "ettin-17m", "bert-base", "ettin-150m"])
    assert order == ["ettin-17m", "bert-base", "ettin-150m", "deberta-v3-base"]
    facts = backbones.backbone_facts("bert-base")
    assert facts["layers"] == 12 and 109e6 < facts["parameters"] < 110e6


def test_each_objective_keeps_its_colour():
    colours = vocab.objective_colours()
    assert list(colours)[:6] == list(PAPER_OBJECTIVES)
    assert len(set(colours.values())) == len(colours)
    # the paper's six objectives far apart in hue or lightness: no two within 0.25 in RGB
    # (hinge, margin-mse and adr-mse were three oranges; the closest pair was 0.2 apart)
    paper = [np.array(colours[o]) for o in PAPER_OBJECTIVES]
    assert min(np.linalg.norm(x - y) for i, x in enumerate(paper) for y in paper[i + 1 :]) > 0.25


def test_claims_get_verdicts_from_results(demo):
    found = verdicts.claims(demo)
    assert found["relative-beats-bce"].verdict == claims.SUPPORTED
    assert found["relative-beats-bce"].numbers["wins"] == found["relative-beats-bce"].numbers["cells"] == 6
    assert found["relative-beats-bce-ood"].verdict == claims.SUPPORTED
    # in-domain, the objective buys infonce - bce = 0.10; scaling, 3 backbones 0.04 apart: 0.08
    gains = found["objective-vs-scaling"].numbers
    assert gains["objective_gain"] == pytest.approx(0.10, abs=0.01)
    assert gains["scaling_gain"] == pytest.approx(0.08, abs=0.01)
    assert found["objective-vs-scaling"].verdict == claims.SUPPORTED
    assert found["llm-distillation"].verdict == claims.SUPPORTED  # distill-ranknet 0.095 vs infonce 0.10
    assert found["consistent-choice"].verdict == claims.SUPPORTED
    assert found["relative-significant"].verdict == claims.SUPPORTED  # per-query tests exist for a grid
    assert found["relative-significant"].numbers["tested"] == 6
    table = verdicts.claims_table(demo, "demo")
    assert list(table["RQ"]) == ["RQ1", "RQ1", "RQ2", "RQ3", "RQ4", "RQ5"]
    assert table["profile (this grid)"].str.contains("synthetic").all()
    # the same claims on the authors' table, in their own column
    published = verdicts.published_claims()
    assert list(table[verdicts.PUBLISHED_VERDICT]) == [c.verdict for c in published.values()]
    assert table.loc[1, verdicts.PUBLISHED_VERDICT] == claims.UNTESTABLE
    assert table.loc[0, "cells as claimed (authors')"] == "54 of 54 (100%)"


def test_a_claim_fails_when_the_results_contradict_it(tmp_path, monkeypatch):
    write_grid(
        tmp_path,
        backbones=("tiny-bert",),
        objectives=("bce", "infonce", "adr-mse"),
        seeds=1,
        effects={"adr-mse": 0.2},
        notebooks=False,
    )
    monkeypatch.setenv("CEREPRO_RUNS", str(tmp_path))
    found = verdicts.claims(tables.grid_results("demo"))
    assert found["llm-distillation"].verdict == claims.NOT_SUPPORTED
    assert found["consistent-choice"].verdict == claims.NOT_SUPPORTED
    assert found["relative-beats-bce"].verdict == claims.SUPPORTED
    assert found["objective-vs-scaling"].verdict == claims.NOT_RUN  # one backbone: no scaling


def test_scoreboard_sets_our_cells_next_to_the_papers(paper_runs, monkeypatch):
    monkeypatch.setenv("CEREPRO_RUNS", str(paper_runs))
    results = tables.grid_results("paper")
    board = verdicts.scoreboard_long(results).set_index(["backbone", "objective", "column"])
    assert len(board) == 9 * 6 * 6  # every cell of the authors' table, run or not
    ours = tables.cell_means(results).set_index(["backbone", "objective", "column"])["value"]
    cell = board.loc[("bert-base", "infonce", "beir-13")]
    assert cell["ours"] == pytest.approx(ours[("bert-base", "infonce", "beir-13")])
    assert cell["diff"] == pytest.approx(cell["ours"] - cell["paper"])
    assert cell["verdict"] in ("OK", "OKish", "FAIL")
    assert board.loc[("deberta-v3-base", "bce", "robust04"), "verdict"] == "not run"
    table = verdicts.scoreboard_table(results, grid="paper")
    assert table.index[0] == ("ettin-17m", "bce") and list(table.columns)[:3] == [
        "msmarco-dev-small",
        "trec-dl-2019",
        "trec-dl-2020",
    ]
    assert table.loc[("deberta-v3-base", "bce"), "robust04"].endswith("/ not run")
    assert table.loc[("bert-base", "infonce"), "beir-13"].endswith(cell["verdict"])
    html = verdicts.styled(table).to_html()
    assert "#6e7781" in html  # not run, in grey


def test_the_demo_grid_is_not_scored_against_the_paper(demo):
    board = verdicts.scoreboard_long(demo)
    assert set(board["verdict"]) == {"not run"}


# --- figures and artifacts -------------------------------------------------------------------


def test_figures_have_one_panel_per_group(demo):
    for draw in (figures.heatmaps, figures.gain_vs_scaling, figures.seed_spread):
        fig = draw(demo)
        assert len([ax for ax in fig.axes if ax.has_data()]) == 2, draw.__name__
    assert len(figures.id_ood_scatter(demo).axes) == 1


@pytest.mark.parametrize("backbones", [("tiny-bert", "tiny-modernbert"), DEMO_BACKBONES])
def test_figures_read_at_a_glance(tmp_path, monkeypatch, backbones):
    """No two texts overlap (two backbones once stood the heatmap's names on end, on top of each
    other), no tick label is turned on its side, each objective keeps its colour."""
    from figure_checks import overlapping_texts, rotated_texts

    write_grid(tmp_path, backbones=backbones, seeds=1, queries=6, notebooks=False)
    monkeypatch.setenv("CEREPRO_RUNS", str(tmp_path))
    results = tables.grid_results("demo")
    per_query = results[results["run"] == results["run"].iloc[0]]
    drawn = {
        draw.__name__: draw(results)
        for draw in (figures.heatmaps, figures.gain_vs_scaling, figures.id_ood_scatter, figures.seed_spread)
    }
    drawn["per_query_distribution"] = figures.per_query_distribution(per_query)
    drawn["loss_figure"] = figures.loss_figure(losses.loss_curves())
    for name, fig in drawn.items():
        assert overlapping_texts(fig) == [], name
        assert rotated_texts(fig) == [], name
    heat = drawn["heatmaps"]
    objectives = list(verdicts.cell_table(results).objectives)  # written on two lines, coloured as one name
    assert [t.get_color() for t in heat.axes[0].get_xticklabels()] == [vocab.objective_colours()[o] for o in objectives]
    colours = vocab.objective_colours()
    assert all(
        line.get_color() == colours[line.get_label()]
        for line in figures.gain_vs_scaling(results).axes[0].lines
        if line.get_label() != vocab.FIRST_STAGE
    )


def test_training_artifacts(demo_runs, monkeypatch):
    monkeypatch.setenv("CEREPRO_RUNS", str(demo_runs))
    logs = tables.training_logs("demo")
    assert len(logs) == 36 * (11 + 2) and set(logs["backbone"]) == set(DEMO_BACKBONES)
    assert len(figures.training_curves(logs).axes) == 6
    validation = figures.training_curves(logs, y="nDCG@10")
    assert sum(len(ax.lines) for ax in validation.axes) == 36
    ledger = provenance.ledger_table("demo")
    assert ledger.loc["total", "wall_s"] == 36 * 60.0
    assert list(ledger.columns) == ["device", "steps", "wall_s", "pairs_per_s", "flops", "mfu"]
    index = provenance.run_index("demo")
    assert index["kind"].value_counts().to_dict() == {"train": 36, "evaluate": 37, "data": 1, "compare": 1}
    one = Path(demo_runs / "demo" / index["notebook"].iloc[0])
    assert one.is_file()
    assert "abc123" in set(provenance.reproduction_log("demo")["git_commit"])
    env = provenance.environment_table("demo")
    assert env.loc["pandas", "runs"] == "3.1.1"


def test_loss_curves_match_hand_values():
    curves = losses.loss_curves([0.0, 1.0])
    at = curves.set_index(["objective", "margin"])
    assert at.loc[("infonce", 0.0), "value"] == pytest.approx(np.log(2))
    assert at.loc[("hinge", 1.0), "value"] == pytest.approx(0.0)
    assert at.loc[("infonce", 0.0), "gradient"] == pytest.approx(-0.5)  # d/dm -log σ(m) at 0
    assert at.loc[("margin-mse", 0.0), "gradient"] == pytest.approx(-4.0)  # d/dm (m - 2)² at 0


def test_the_differences_read_as_blocks_not_a_wide_table():
    from cerepro.fragments import differences

    text = protocol.differences_blocks()
    assert "|" not in text.replace("\\|", "")  # no table row
    for d in differences():
        assert f"**{' '.join(d['point'].split())}** · *{d['status']}*" in text


def test_no_figure_rotates_its_tick_labels(tmp_path, monkeypatch):
    """Seed spread with many backbones (two-line labels) and the per-query boxes (horizontal)."""
    write_grid(
        tmp_path / "runs",
        backbones=("tiny-bert", "tiny-electra", "tiny-modernbert", "tiny-roberta", "tiny-deberta"),
        seeds=2,
        queries=6,
    )
    monkeypatch.setenv("CEREPRO_RUNS", str(tmp_path / "runs"))
    results = tables.grid_results("demo")
    for fig in (figures.seed_spread(results), figures.per_query_distribution(results[results["run"] == "first-stage"])):
        for ax in fig.axes:
            if ax.get_visible():
                assert all(t.get_rotation() == 0 for t in ax.get_xticklabels() + ax.get_yticklabels())
