"""scoreboard: the authors' table read as cells, verdicts at the tolerance bounds, cells not run,
and our cells built from per-query results through the paper's aggregates."""

import numpy as np
import pandas as pd
import pytest

from cerepro.report.scoreboard import OK, OKISH, expected_table, our_table, scoreboard, verdict_counts
from cerepro.vocab import dataset_registry


def cell(board, backbone, objective, column):
    rows = board[(board["backbone"] == backbone) & (board["objective"] == objective) & (board["column"] == column)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_expected_table_has_every_cell_of_the_authors_table_in_order():
    expected = expected_table()
    assert len(expected) == 9 * 6 * 6
    assert list(expected.columns) == ["backbone", "objective", "column", "paper"]
    first = expected.iloc[0]
    assert tuple(first) == ("ettin-17m", "bce", "msmarco-dev-small", 0.2648)
    assert list(expected["column"].iloc[:6]) == dataset_registry()["paper_table_columns"]
    assert cell(expected, "bert-base", "infonce", "trec-dl-2019")["paper"] == 0.759233


def test_verdicts_at_the_tolerance_bounds_and_not_run():
    assert (OK, OKISH) == (0.01, 0.02)
    paper = 0.759233  # bert-base infonce on TREC DL 2019
    deltas = {
        "msmarco-dev-small": 0.01,
        "trec-dl-2019": -0.01,
        "trec-dl-2020": 0.0100001,
        "beir-13": 0.02,
        "lotte-search-5": -0.0200001,
        "robust04": np.nan,
    }
    expected = expected_table()
    rows = expected[(expected["backbone"] == "bert-base") & (expected["objective"] == "infonce")]
    ours = rows[["backbone", "objective", "column"]].assign(
        ours=[p + deltas[c] for p, c in zip(rows["paper"], rows["column"])]
    )
    ours.loc[ours["column"] == "trec-dl-2019", "ours"] = paper - 0.01
    board = scoreboard(ours)
    verdict = {c: cell(board, "bert-base", "infonce", c)["verdict"] for c in deltas}
    assert verdict == {
        "msmarco-dev-small": "OK",
        "trec-dl-2019": "OK",
        "trec-dl-2020": "OKish",
        "beir-13": "OKish",
        "lotte-search-5": "FAIL",
        "robust04": "not run",
    }
    dl19 = cell(board, "bert-base", "infonce", "trec-dl-2019")
    assert (dl19["paper"], dl19["diff"]) == (paper, pytest.approx(-0.01))
    assert cell(board, "ettin-17m", "bce", "robust04")["verdict"] == "not run"  # never ran
    assert len(board) == 324 and np.isnan(cell(board, "ettin-17m", "bce", "robust04")["ours"])
    counts = verdict_counts(board)
    assert counts.loc["total", "OK"] == 2 and counts.loc["total", "not run"] == 319
    assert counts.loc["total", "total"] == 324


def test_tolerances_are_parameters():
    expected = expected_table().head(1)  # ettin-17m bce msmarco-dev-small 0.2648
    ours = expected[["backbone", "objective", "column"]].assign(ours=0.2648 + 0.006)
    assert scoreboard(ours, expected)["verdict"].iloc[0] == "OK"
    assert scoreboard(ours, expected, ok=0.005, okish=0.01)["verdict"].iloc[0] == "OKish"
    assert scoreboard(ours, expected, ok=0.001, okish=0.002)["verdict"].iloc[0] == "FAIL"
    with pytest.raises(ValueError, match="tolerances must satisfy 0 <= ok <= okish"):
        scoreboard(ours, expected, ok=0.02, okish=0.01)


def test_a_cell_the_paper_lacks_says_so():
    ours = pd.DataFrame(
        {
            "backbone": ["tiny-bert"] * 2,
            "objective": ["bce"] * 2,
            "column": ["trec-dl-2019", "beir-13"],
            "ours": [0.5, np.nan],
        }
    )
    board = scoreboard(ours)
    assert len(board) == 324 + 1  # the extra cell we did not run either is left out
    row = cell(board, "tiny-bert", "bce", "trec-dl-2019")
    assert row["verdict"] == "no paper value" and np.isnan(row["paper"])
    assert board.iloc[-1]["backbone"] == "tiny-bert"  # after the paper's cells


def per_query_rows(run, dataset, values, measure="nDCG@10"):
    return [(run, dataset, f"q{i}", measure, v) for i, v in enumerate(values)]


def test_our_cells_average_seeds_then_aggregate_like_the_paper():
    registry = dataset_registry()
    rows = []
    for seed, shift in (("s1", 0.0), ("s2", 0.02)):
        run = f"bert-base.infonce.{seed}"
        rows += per_query_rows(run, "msmarco-passage/trec-dl-2019/judged", [0.7 + shift, 0.8 + shift])
        for i, dataset in enumerate(registry["aggregates"]["beir-13"]):
            rows += per_query_rows(run, dataset, [0.3 + i / 100 + shift] * 3)
        rows += per_query_rows(run, "msmarco-passage/trec-dl-2019/judged", [0.1, 0.2], measure="RR@10")
    per_query = pd.DataFrame(rows, columns=["run", "dataset", "query_id", "measure", "value"])
    ours = our_table(per_query)
    assert set(ours["n_seeds"]) == {2}
    assert cell(ours, "bert-base", "infonce", "trec-dl-2019")["ours"] == pytest.approx(0.76)
    assert cell(ours, "bert-base", "infonce", "beir-13")["ours"] == pytest.approx(0.3 + 0.06 + 0.01)
    assert np.isnan(cell(ours, "bert-base", "infonce", "lotte-search-5")["ours"])
    board = scoreboard(ours)
    assert cell(board, "bert-base", "infonce", "trec-dl-2019")["verdict"] == "OK"  # 0.76 vs 0.759233
    assert cell(board, "bert-base", "infonce", "beir-13")["verdict"] == "FAIL"  # 0.37 vs 0.5028
    assert cell(board, "bert-base", "infonce", "lotte-search-5")["verdict"] == "not run"
    assert cell(board, "bert-base", "infonce", "trec-dl-2019")["n_seeds"] == 2


def test_run_ids_must_name_backbone_objective_and_seed():
    per_query = pd.DataFrame(
        per_query_rows("first-stage", "beir/nq", [0.5]), columns=["run", "dataset", "query_id", "measure", "value"]
    )
    message = r"run ids must read \{backbone\}\.\{objective\}\.s\{seed\} to be scored; got \['first-stage'\]"
    with pytest.raises(ValueError, match=message):
        our_table(per_query)


def test_wide_long_and_empty_tables_of_ours_are_read_alike():
    expected = expected_table()
    rows = expected[expected["backbone"] == "minilm-l12"]
    long = rows[["backbone", "objective", "column"]].assign(ours=rows["paper"] + 0.015)
    wide = long.pivot(index=["backbone", "objective"], columns="column", values="ours")
    from_long, from_wide = scoreboard(long), scoreboard(wide)
    pd.testing.assert_frame_equal(from_long, from_wide)
    assert (from_long.loc[from_long["backbone"] == "minilm-l12", "verdict"] == "OKish").all()
    assert set(scoreboard(long.rename(columns={"ours": "value"}))["verdict"]) == {"OKish", "not run"}
    assert set(scoreboard(pd.DataFrame())["verdict"]) == {"not run"}
    with pytest.raises(ValueError, match=r"our cells lack \['column', 'ours'\]"):
        scoreboard(pd.DataFrame({"backbone": ["x"], "objective": ["bce"]}))
