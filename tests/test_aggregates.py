"""cerepro.report.aggregates: the paper's aggregates computed one way, checked by hand, and the
grid's tables, the scoreboard and the authors' table agreeing on the same numbers."""

import numpy as np
import pandas as pd
import pytest

from cerepro.report import aggregates, cells, scoreboard, tables
from cerepro.vocab import dataset_registry

PAPER_COLUMNS = ["msmarco-dev-small", "trec-dl-2019", "trec-dl-2020", "beir-13", "lotte-search-5", "robust04"]
LOTTE = ["lotte-writing", "lotte-recreation", "lotte-science", "lotte-technology", "lotte-lifestyle"]


def test_what_a_column_averages():
    assert aggregates.members("ood") == [*LOTTE, "robust04"]
    assert aggregates.members("in-domain") == ["msmarco-dev-small", "trec-dl-2019", "trec-dl-2020"]
    assert aggregates.members("trec-dl-2019") == ["trec-dl-2019"]
    assert aggregates.members("demo:in-domain") == []  # not a dataset of params/datasets.yaml
    demo = ["demo:in-domain", "demo:out-of-domain"]  # a grid's datasets: its splits and their groups
    assert aggregates.members("demo:in-domain", demo) == ["demo:in-domain"]
    assert aggregates.members("out-of-domain", demo) == ["demo:out-of-domain"]
    assert aggregates.members("beir-13", demo) == aggregates.members("beir-13")  # an aggregate is the paper's


def test_an_aggregate_of_table_columns_weighs_each_column_by_its_datasets():
    assert aggregates.weights("ood", PAPER_COLUMNS) == {"lotte-search-5": 5, "robust04": 1}
    assert aggregates.weights("ood", [*LOTTE, "robust04"]) == dict.fromkeys([*LOTTE, "robust04"], 1)
    assert aggregates.weights("in-domain", PAPER_COLUMNS) == dict.fromkeys(PAPER_COLUMNS[:3], 1)
    assert aggregates.formula("ood") == "(5 × lotte-search-5 + robust04) / 6"
    assert aggregates.formula("in-domain") == "(msmarco-dev-small + trec-dl-2019 + trec-dl-2020) / 3"
    with pytest.raises(KeyError, match="'nothing' is not an aggregate"):
        aggregates.weights("nothing", PAPER_COLUMNS)
    with pytest.raises(ValueError, match="ood is not a mean of the columns"):
        aggregates.weights("ood", ["robust04", "beir-13"])


def test_the_same_aggregate_from_datasets_or_from_the_authors_columns():
    # five LoTTE sets averaging 0.40 and Robust04 at 0.10: (0.30 + 0.35 + 0.40 + 0.45 + 0.50 + 0.10) / 6 = 0.35
    datasets = pd.DataFrame([[0.30, 0.35, 0.40, 0.45, 0.50, 0.10]], columns=[*LOTTE, "robust04"], index=["a"])
    assert aggregates.mean_of(datasets, "ood")["a"] == pytest.approx(0.35)
    assert aggregates.mean_of(datasets, "lotte-search-5")["a"] == pytest.approx(0.40)
    columns = pd.DataFrame({"lotte-search-5": [0.40], "robust04": [0.10]}, index=["a"])  # (5 x 0.40 + 0.10) / 6
    assert aggregates.mean_of(columns, "ood")["a"] == pytest.approx(0.35)
    assert aggregates.arithmetic(columns.loc["a"], "ood", columns.columns) == "(5 × 0.4000 + 0.1000) / 6 = 0.3500"
    # a dataset without a value, or without a column, leaves the aggregate without one: never a partial mean
    assert np.isnan(aggregates.mean_of(datasets.assign(robust04=np.nan), "ood")["a"])
    assert np.isnan(aggregates.mean_of(datasets.drop(columns="robust04"), "ood")["a"])


def test_aggregate_table_unweighted_means_of_dataset_means_and_need_every_member():
    params = dataset_registry()
    datasets = list(params["datasets"])
    value = {d: (i + 1) / 100 for i, d in enumerate(datasets)}  # 0.01 ... 0.22 in file order
    means = pd.DataFrame(
        {"run": "r", "dataset": datasets, "measure": "nDCG@10", "value": [value[d] for d in datasets], "n_queries": 10}
    )
    partial = means[means["dataset"] != "beir/nq"].assign(run="p")
    table = aggregates.aggregate_table(pd.concat([means, partial]))
    assert table.loc["r", "in-domain"] == pytest.approx((0.01 + 0.02 + 0.03) / 3)
    assert table.loc["r", "beir-13"] == pytest.approx(np.mean([value[d] for d in params["aggregates"]["beir-13"]]))
    assert table.loc["r", "lotte-search-5"] == pytest.approx((0.17 + 0.18 + 0.19 + 0.20 + 0.21) / 5)
    assert table.loc["r", "ood"] == pytest.approx((0.17 + 0.18 + 0.19 + 0.20 + 0.21 + 0.22) / 6)
    assert table.loc["r", "trec-dl-2019"] == 0.02
    assert np.isnan(table.loc["p", "beir-13"])  # nq missing: no partial BEIR-13
    assert table.loc["p", "ood"] == table.loc["r", "ood"]
    assert set(params["paper_table_columns"]) <= set(table.columns)
    with pytest.raises(ValueError, match="run 'r' has two nDCG@10 means on 'beir/nq'"):
        aggregates.aggregate_table(pd.concat([means, means[means["dataset"] == "beir/nq"]]))


def test_the_grid_tables_the_scoreboard_and_the_authors_table_agree(tmp_path):
    """One run on all 22 datasets, two queries each (dataset i: 0.01 i and 0.03 i, mean 0.02 i):
    its in-domain and ood are the same numbers in the grid's tables, on the scoreboard, and in a
    table of the authors' columns read as theirs (ood from 5 x lotte-search-5 + robust04)."""
    registry = dataset_registry()
    rows = []
    for i, (dataset, info) in enumerate(registry["datasets"].items(), start=1):
        for query, value in (("q1", 0.01 * i), ("q2", 0.03 * i)):
            rows.append((dataset, info["short"], info["group"], query, value))
    frame = pd.DataFrame(rows, columns=["id", "dataset", "group", "query_id", "value"])
    run = "bert-base.infonce.s1"
    results = frame.drop(columns="id").assign(
        run=run, backbone="bert-base", objective="infonce", seed=pd.array([1] * len(frame), dtype="Int64")
    )
    results = results.assign(measure="nDCG@10")[tables.RESULT_COLUMNS]
    by_hand = {"in-domain": (0.02 + 0.04 + 0.06) / 3, "ood": 0.02 * (17 + 18 + 19 + 20 + 21 + 22) / 6}

    grid = tables.column_scores(results).set_index("column")["value"]
    board = scoreboard.our_table(results.assign(dataset=frame["id"])).set_index("column")["ours"]
    authors = tmp_path / "authors.csv"
    authors.write_text(
        "backbone,objective," + ",".join(PAPER_COLUMNS) + "\n"
        "bert-base,infonce," + ",".join(repr(float(board[c])) for c in PAPER_COLUMNS) + "\n"
    )
    table = cells.paper_table(authors)
    for name, value in by_hand.items():
        assert grid[name] == pytest.approx(value, rel=1e-12)
        assert table.value("bert-base", "infonce", name) == pytest.approx(value, rel=1e-12)
    assert board["lotte-search-5"] == pytest.approx(0.02 * (17 + 18 + 19 + 20 + 21) / 5, rel=1e-12)
    assert grid["lotte-search-5"] == pytest.approx(board["lotte-search-5"], rel=1e-12)
