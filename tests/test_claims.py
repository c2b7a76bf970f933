"""cerepro.report.claims (and the cell tables and derived numbers it tests on) on a hand-made authors'-style table (three backbones x three objectives) whose
every verdict and derived quantity is computed by hand below, then on the real authors' table."""

from __future__ import annotations

import subprocess
import sys

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from figure_checks import overlapping_texts, rotated_texts

from cerepro import vocab
from cerepro.report import aggregates, cells, claims, derived, figures, tables
from cerepro.vocab import dataset_registry

COLUMNS = ["msmarco-dev-small", "trec-dl-2019", "trec-dl-2020", "beir-13", "lotte-search-5", "robust04"]
# line 1 is the header; the rows below are lines 2 to 10
ROWS = [
    ("ettin-17m", "bce", (0.30, 0.50, 0.40, 0.30, 0.30, 0.20)),
    ("ettin-17m", "infonce", (0.40, 0.60, 0.50, 0.40, 0.40, 0.26)),
    ("ettin-17m", "distill-ranknet", (0.35, 0.55, 0.45, 0.33, 0.36, 0.20)),
    ("bert-base", "bce", (0.40, 0.60, 0.50, 0.40, 0.40, 0.30)),
    ("bert-base", "infonce", (0.45, 0.70, 0.60, 0.45, 0.45, 0.36)),
    ("bert-base", "distill-ranknet", (0.42, 0.69, 0.62, 0.44, 0.47, 0.33)),
    ("deberta-v3-base", "bce", (0.44, 0.66, 0.56, 0.46, 0.50, 0.42)),
    ("deberta-v3-base", "infonce", (0.46, 0.72, 0.64, 0.50, 0.54, 0.40)),  # robust04: below bce
    ("deberta-v3-base", "distill-ranknet", (0.45, 0.75, 0.65, 0.49, 0.52, 0.44)),
]


def write_table(path, rows=ROWS, header=None) -> str:
    header = header or ["backbone", "hf_id", "objective", *COLUMNS]
    lines = [",".join(header)]
    for backbone, objective, values in rows:
        lines.append(",".join([backbone, f"org/{backbone}", objective, *(str(v) for v in values)]))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def table(tmp_path):
    return cells.paper_table(write_table(tmp_path / "table.csv"))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --- reading ---------------------------------------------------------------------------------


def test_the_table_is_read_with_its_lines_and_settings(table):
    assert table.backbones == ("ettin-17m", "bert-base", "deberta-v3-base")
    assert table.objectives == ("bce", "infonce", "distill-ranknet")
    assert table.in_domain == ("msmarco-dev-small", "trec-dl-2019", "trec-dl-2020")
    assert table.out_of_domain == ("beir-13", "lotte-search-5", "robust04")
    assert table.trec_dl == ("trec-dl-2019", "trec-dl-2020")
    assert table.lines[("ettin-17m", "bce")] == 2 and table.lines[("deberta-v3-base", "distill-ranknet")] == 10
    assert table.where(("bert-base", "infonce"), ("ettin-17m", "bce")) == "lines 2, 6"
    assert table.where(*[("ettin-17m", o) for o in table.objectives], ("bert-base", "bce")) == "lines 2–5"
    assert "Published numbers" in table.label and table.published


def test_the_papers_aggregates_are_derived_with_their_arithmetic(table):
    assert aggregates.formula("in-domain") == "(msmarco-dev-small + trec-dl-2019 + trec-dl-2020) / 3"
    assert aggregates.formula("ood") == "(5 × lotte-search-5 + robust04) / 6"  # LoTTE's 5 + Robust04
    found = derived.aggregates(table)
    row = found.loc[("ettin-17m", "bce")]
    assert row["in-domain"] == pytest.approx((0.30 + 0.50 + 0.40) / 3)
    assert row["ood"] == pytest.approx((5 * 0.30 + 0.20) / 6)  # 0.2833
    assert row["in-domain: arithmetic"] == "(0.3000 + 0.5000 + 0.4000) / 3 = 0.4000"
    assert row["ood: arithmetic"] == "(5 × 0.3000 + 0.2000) / 6 = 0.2833"
    assert row["lines"] == "line 2"
    assert found.loc[("deberta-v3-base", "distill-ranknet"), "in-domain"] == pytest.approx(1.85 / 3)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda rows, header: (rows, header[:-1]), "line 1: the header lacks ['robust04']"),
        (lambda rows, header: (rows + [rows[0]], header), "line 11: (ettin-17m, bce) repeats line 2"),
        (
            lambda rows, header: ([(*rows[0][:2], (0.3, "n/a", 0.4, 0.3, 0.3, 0.2))] + rows[1:], header),
            "line 2, column trec-dl-2019: 'n/a' is not an nDCG@10",
        ),
        (
            lambda rows, header: (rows[:4] + [(*rows[4][:2], (0.45, 0.70, 0.60, 45, 0.45, 0.36))] + rows[5:], header),
            "line 6, column beir-13: '45' is not an nDCG@10 between 0 and 1",
        ),
        (
            lambda rows, header: (rows[:-1], header),
            "not a full grid, it lacks (backbone, objective) [('deberta-v3-base', 'distill-ranknet')]",
        ),
        (lambda rows, header: ([], header), "no rows under the header"),
    ],
)
def test_a_bad_table_is_refused_naming_file_line_and_column(tmp_path, edit, message):
    rows, header = edit(list(ROWS), ["backbone", "hf_id", "objective", *COLUMNS])
    path = write_table(tmp_path / "bad.csv", rows, header)
    with pytest.raises(cells.TableError) as error:
        cells.paper_table(path)
    assert "bad.csv" in str(error.value) and message in str(error.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(cells.TableError, match="nothing.csv: no such file"):
        cells.paper_table(tmp_path / "nothing.csv")


# --- claims, by hand -------------------------------------------------------------------------


def test_relative_beats_bce_in_domain_holds_everywhere(table):
    claim = claims.audit(table)["relative-beats-bce"]
    # infonce - bce: ettin .10 .10 .10, bert .05 .10 .10, deberta .02 .06 .08
    assert claim.verdict == claims.SUPPORTED and claim.support == "9 of 9" and claim.exceptions == ()
    assert claim.numbers["wins"] == 9 and claim.numbers["cells"] == 9
    assert claim.numbers["mean_gain"] == pytest.approx(0.71 / 9)
    assert claim.numbers["min_gain"] == pytest.approx(0.02)
    assert claim.numbers["significant"] is None  # a table of means has no significance


def test_relative_beats_bce_out_of_domain_names_its_exception(table):
    claim = claims.audit(table)["relative-beats-bce-ood"]
    # infonce - bce: ettin .10 .10 .06, bert .05 .05 .06, deberta .04 .04 -.02 (robust04)
    assert claim.verdict == claims.NOT_SUPPORTED and claim.support == "8 of 9"
    assert claim.exceptions == ("deberta-v3-base on robust04: infonce 0.4000 vs bce 0.4200 (-0.0200), lines 8, 9",)
    assert claim.numbers["mean_gain"] == pytest.approx(0.48 / 9)
    assert claim.numbers["min_gain"] == pytest.approx(-0.02)


def test_significance_cannot_be_tested_on_a_table_of_means(table):
    claim = claims.audit(table)["relative-significant"]
    assert claim.verdict == claims.UNTESTABLE == "not testable on this table"
    assert "per-query values" in claim.evidence and claim.support == ""


def test_objective_vs_scaling_by_hand(table):
    # in-domain means: ettin bce .4000 infonce .5000 distill .4500; bert .5000 .5833 .5767;
    # deberta .5533 .6067 .6167. Objective gains .1000, .0833, .0633 (mean .0822); scaling gains
    # (deberta - ettin) bce .1533, infonce .1067, distill .1667 (mean .1422).
    claim = claims.audit(table)["objective-vs-scaling"]
    assert claim.numbers["objective_gain"] == pytest.approx((0.10 + 0.25 / 3 + 0.19 / 3) / 3)
    assert claim.numbers["scaling_gain"] == pytest.approx((1.66 / 3 - 0.40 + 1.82 / 3 - 0.50 + 1.85 / 3 - 0.45) / 3)
    assert (claim.numbers["smallest"], claim.numbers["largest"]) == ("ettin-17m", "deberta-v3-base")
    assert claim.verdict == claims.NOT_SUPPORTED and claim.support == "0 of 3"
    assert claim.exceptions[0] == (
        "ettin-17m: infonce 0.5000 − bce 0.4000 = +0.1000, below the mean scaling gain +0.1422, lines 2, 3"
    )
    gains = claims.scaling_gains(table).set_index(["gain", "on"])
    assert gains.loc[("objective", "deberta-v3-base"), "arithmetic"] == "distill-ranknet 0.6167 − bce 0.5533 = +0.0633"
    assert gains.loc[("scaling", "bce"), "arithmetic"] == "deberta-v3-base 0.5533 − ettin-17m 0.4000 = +0.1533"
    assert gains.loc[("scaling", "bce"), "lines"] == "lines 2, 8"


def test_llm_distillation_by_hand_at_the_tolerance_edges(table):
    # best LLM (distill) minus best relative (infonce) on DL19, DL20; the larger half is bert, deberta
    # ettin -.05 -.05 (small backbone: only "not better" applies); bert -.01 (tie, competitive),
    # +.02 (better); deberta +.03 (better), +.01 (tie)
    claim = claims.audit(table)["llm-distillation"]
    assert claim.verdict == claims.NOT_SUPPORTED and claim.support == "4 of 6"
    assert claim.exceptions == (
        "deberta-v3-base on trec-dl-2019: distill-ranknet 0.7500 vs infonce 0.7200 (+0.0300, better), lines 9, 10",
        "bert-base on trec-dl-2020: distill-ranknet 0.6200 vs infonce 0.6000 (+0.0200, better), lines 6, 7",
    )
    assert claim.numbers["columns"] == "trec-dl-2019, trec-dl-2020"
    assert claim.numbers["larger"] == "bert-base, deberta-v3-base"
    assert claim.numbers["min_gap_larger"] == pytest.approx(-0.01)
    assert claim.numbers["max_gap"] == pytest.approx(0.03)


def test_consistent_choice_by_hand(table):
    # infonce is best or within 0.01 of it except: bert DL20 (distill +.02), bert LoTTE (distill +.02),
    # deberta DL19 (distill +.03), deberta Robust04 (distill .44 vs infonce .40); deberta DL20 ties (.01)
    claim = claims.audit(table)["consistent-choice"]
    assert claim.verdict == claims.NOT_SUPPORTED
    assert (claim.numbers["consistent"], claim.numbers["cells"]) == (14, 18)
    assert (claim.numbers["most_often_best"], claim.numbers["times_best"]) == ("infonce", 13)
    assert [e.split(":")[0] for e in claim.exceptions] == [
        "deberta-v3-base on trec-dl-2019",
        "bert-base on trec-dl-2020",
        "bert-base on lotte-search-5",
        "deberta-v3-base on robust04",
    ]
    assert claim.exceptions[-1] == (
        "deberta-v3-base on robust04: best distill-ranknet 0.4400, best relative infonce 0.4000 (-0.0400), lines 9, 10"
    )


def test_ranks_and_best_objectives_by_hand(table):
    ranks = derived.objective_ranks(table, "in-domain")
    assert ranks.loc["ettin-17m", ["bce", "infonce", "distill-ranknet"]].tolist() == [3, 1, 2]
    assert ranks.loc["deberta-v3-base", ["bce", "infonce", "distill-ranknet"]].tolist() == [3, 2, 1]
    assert ranks.loc["bert-base", "lines"] == "lines 5–7"
    best = derived.best_objectives(table, ["in-domain"]).set_index("backbone")
    assert best.loc["deberta-v3-base", "best"] == "distill-ranknet"
    assert best.loc["deberta-v3-base", "arithmetic"] == "distill-ranknet 0.6167 − infonce 0.6067 = +0.0100"
    assert best.loc["bert-base", "margin"] == pytest.approx(1.75 / 3 - 1.73 / 3)
    counts = derived.best_counts(table, COLUMNS)
    assert counts.loc["infonce"].sum() == 13 and counts.loc["distill-ranknet"].sum() == 5


def test_the_audit_table_lists_verdicts_and_exceptions(table):
    rows = claims.audit_table(claims.audit(table)).set_index("claim")
    assert list(rows["RQ"]) == ["RQ1", "RQ1", "RQ2", "RQ3", "RQ4", "RQ5"]
    ood = rows.loc[claims.CLAIMS["relative-beats-bce-ood"][1]]
    assert ood["verdict"] == claims.NOT_SUPPORTED and ood["exceptions"].startswith("deberta-v3-base on robust04")
    assert rows.loc[claims.CLAIMS["relative-beats-bce"][1], "exceptions"] == "none"


def test_an_empty_table_is_not_yet_run():
    empty = cells.CellTable(pd.DataFrame(), (), (), (), ())
    verdicts = {k: c.verdict for k, c in claims.audit(empty).items()}
    assert verdicts.pop("relative-significant") == claims.UNTESTABLE
    assert set(verdicts.values()) == {claims.NOT_RUN}


# --- the authors' table ----------------------------------------------------------------------


def test_the_authors_table_verdicts():
    """The real verdicts the book shows (params/expected/paper-ndcg10.csv, 9 x 6 x 6)."""
    table = cells.paper_table()
    assert len(table.values) == 54 and list(table.values.columns) == [*COLUMNS, "in-domain", "ood"]
    found = claims.audit(table)
    assert found["relative-beats-bce"].support == found["relative-beats-bce-ood"].support == "54 of 54"
    assert found["relative-beats-bce"].verdict == found["relative-beats-bce-ood"].verdict == claims.SUPPORTED
    assert found["relative-significant"].verdict == claims.UNTESTABLE
    assert found["objective-vs-scaling"].verdict == claims.NOT_SUPPORTED
    llm = found["llm-distillation"]
    assert llm.verdict == claims.NOT_SUPPORTED and llm.support == "14 of 18"
    assert llm.exceptions[1].startswith(
        "electra-base on trec-dl-2019: distill-ranknet 0.7699 vs infonce 0.7518 (+0.0181, better)"
    )
    assert found["consistent-choice"].support == "50 of 54"
    # the in-domain mean of the table is the authors' own aggregate
    ettin = table.values.loc[("ettin-17m", "bce")]
    assert ettin["in-domain"] == pytest.approx((0.264800 + 0.467467 + 0.463867) / 3)


def test_the_authors_table_lists_backbones_by_parameter_count():
    """The smallest and largest backbone of the scaling gain are the table's first and last rows."""
    table = cells.paper_table()
    assert list(table.backbones) == tables.backbone_order(table.backbones)


def test_claims_import_neither_torch_nor_the_report_modules():
    code = (
        "import sys, cerepro.report.claims as c, cerepro.report.cells as t; c.audit(t.paper_table()); "
        "print(sorted(m for m in ('torch', 'transformers', 'cerepro.report.tables', 'cerepro.report.figures', 'cerepro.report.verdicts', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- figures of a cell table -----------------------------------------------------------------


def test_one_plotting_function_draws_published_numbers_labelled_as_such(table):
    for draw in (figures.heatmaps, figures.gain_vs_scaling):
        fig = draw(table)
        panels = [ax for ax in fig.axes if ax.has_data()]
        assert len(panels) == 8, draw.__name__  # six columns, then the in-domain and OOD means
        assert fig._suptitle.get_text().startswith("Published numbers"), draw.__name__
        assert overlapping_texts(fig) == [], draw.__name__
    fig = figures.gain_vs_scaling(table)
    colours = vocab.objective_colours()
    for line in fig.axes[0].lines:
        assert line.get_color() == colours[line.get_label()]  # one colour per objective everywhere
    heat = figures.heatmaps(table)
    assert [t.get_text() for t in heat.axes[0].get_yticklabels()] == list(table.backbones)
    assert all(t.get_rotation() == 0 for t in heat.axes[0].get_yticklabels())  # backbone names read across
    assert heat.axes[1].get_yticklabels() == [] or all(not t.get_text() for t in heat.axes[1].get_yticklabels())


def test_the_real_published_figures_read_at_a_glance():
    table = cells.paper_table()
    for draw in (figures.heatmaps, figures.gain_vs_scaling):
        fig = draw(table)
        assert overlapping_texts(fig) == [], draw.__name__
        assert rotated_texts(fig) == [], draw.__name__  # nine backbones, six objectives: all read across
        legend = fig.legends[0] if fig.legends else None
        if legend is not None:  # inside the figure, not cut at its edge
            box, frame = legend.get_window_extent(), fig.bbox
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


def test_the_overlap_check_sees_overlaps_and_only_them():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.text(0.5, 0.5, "one label", transform=ax.transAxes)
    ax.text(0.52, 0.52, "another label", transform=ax.transAxes)
    assert ("one label", "another label") in overlapping_texts(fig)
    fig, ax = plt.subplots(figsize=(4, 2))
    ax.set_xticks(range(5), [f"backbone-{i} 100M" for i in range(5)], rotation=40, ha="right", rotation_mode="anchor")
    assert overlapping_texts(fig) == []  # rotated side by side: their boxes overlap, the text does not
    ax.set_xticks(range(5), [f"backbone-{i} 100M" for i in range(5)], rotation=0)
    assert overlapping_texts(fig)
    assert dataset_registry()["paper_table_columns"] == COLUMNS
