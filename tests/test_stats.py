"""stats: p-values equal scipy and statsmodels called directly on the same vectors; alignment
errors name the missing queries; bootstrap intervals are seeded; seed variance by hand."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from cerepro.evaluation.stats import (
    bootstrap_ci,
    bootstrap_diff_ci,
    compare,
    mean_ci_table,
    paper_welch,
    per_query_matrix,
    seed_variance,
)
from cerepro.vocab import system_of

DATASET = "msmarco-passage/trec-dl-2019/judged"


def table(values: dict[str, np.ndarray], dataset=DATASET, measure="nDCG@10") -> pd.DataFrame:
    """A tidy per-query table from {run id: per-query values} (queries q0, q1, ...)."""
    return pd.DataFrame(
        [(run, dataset, f"q{i}", measure, float(v)) for run, vector in values.items() for i, v in enumerate(vector)],
        columns=["run", "dataset", "query_id", "measure", "value"],
    )


def systems(n_queries=30, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.8, n_queries)
    return {
        "bert-base.bce.s1": base,
        "bert-base.infonce.s1": np.clip(base + rng.normal(0.08, 0.05, n_queries), 0, 1),
        "bert-base.hinge.s1": np.clip(base + rng.normal(0.01, 0.05, n_queries), 0, 1),
        "bert-base.margin-mse.s1": np.clip(base + rng.normal(0.05, 0.10, n_queries), 0, 1),
    }


def test_system_of_strips_the_seed_only():
    assert system_of("bert-base.margin-mse.s2431159283") == "bert-base.margin-mse"
    assert system_of("first-stage") == "first-stage"
    assert system_of("ettin-17m.bce.seedless") == "ettin-17m.bce.seedless"


@pytest.mark.parametrize(
    "test, scipy_call",
    [
        ("paired-t", lambda x, y: scipy_stats.ttest_rel(x, y)),
        ("wilcoxon", lambda x, y: scipy_stats.wilcoxon(x, y)),
        ("welch", lambda x, y: scipy_stats.ttest_ind(x, y, equal_var=False)),
    ],
)
@pytest.mark.parametrize("correction", ["holm", "fdr_bh"])
def test_p_values_against_a_baseline_equal_scipy_and_statsmodels(test, scipy_call, correction):
    vectors = systems()
    result = compare(table(vectors), measure="nDCG@10", baseline="bert-base.bce.s1", test=test, correction=correction)
    base = vectors["bert-base.bce.s1"]
    others = [r for r in vectors if r != "bert-base.bce.s1"]
    direct = [scipy_call(vectors[r], base) for r in others]
    assert list(result["system"]) == [system_of(r) for r in others]
    assert set(result["versus"]) == {"bert-base.bce"}
    assert list(result["p_value"]) == pytest.approx([d.pvalue for d in direct], rel=1e-12)
    assert list(result["statistic"]) == pytest.approx([d.statistic for d in direct], rel=1e-12)
    reject, adjusted, _, _ = multipletests([d.pvalue for d in direct], alpha=0.05, method=correction)
    assert list(result["p_adjusted"]) == pytest.approx(list(adjusted), rel=1e-12)
    assert list(result["significant"]) == list(reject)
    assert list(result["marker"]) == ["†" if r else "" for r in reject]
    assert list(result["diff"]) == pytest.approx([vectors[r].mean() - base.mean() for r in others])
    assert set(result["n_queries"]) == {30}


def test_all_pairs_with_holm_equal_statsmodels_over_the_whole_family():
    vectors = systems()
    result = compare(table(vectors), measure="nDCG@10", test="paired-t", correction="holm")
    pairs = list(itertools.combinations(vectors, 2))
    assert list(zip(result["system"], result["versus"])) == [(system_of(a), system_of(b)) for a, b in pairs]
    p = [scipy_stats.ttest_rel(vectors[a], vectors[b]).pvalue for a, b in pairs]
    assert list(result["p_value"]) == pytest.approx(p, rel=1e-12)
    assert list(result["p_adjusted"]) == pytest.approx(list(multipletests(p, method="holm")[1]), rel=1e-12)


def test_the_papers_welch_test_is_uncorrected_and_unpaired():
    vectors = systems()
    result = paper_welch(table(vectors), measure="nDCG@10", baseline="bert-base.bce")
    p = [
        scipy_stats.ttest_ind(vectors[r], vectors["bert-base.bce.s1"], equal_var=False).pvalue
        for r in list(vectors)[1:]
    ]
    assert list(result["p_value"]) == pytest.approx(p, rel=1e-12)
    assert list(result["p_adjusted"]) == list(result["p_value"])
    assert list(result["significant"]) == [x < 0.05 for x in p]
    assert set(result["correction"]) == {"none"} and set(result["test"]) == {"welch"}


def test_seeds_are_averaged_per_query_before_testing():
    rng = np.random.default_rng(1)
    a1, a2, b1, b2 = (rng.uniform(size=20) for _ in range(4))
    per_query = table({"x.bce.s1": a1, "x.bce.s2": a2, "x.infonce.s1": b1, "x.infonce.s2": b2})
    matrix = per_query_matrix(per_query, measure="nDCG@10")
    assert list(matrix.columns) == ["x.bce", "x.infonce"]
    assert matrix.loc[[f"q{i}" for i in range(20)], "x.bce"].to_numpy() == pytest.approx((a1 + a2) / 2)
    result = compare(per_query, measure="nDCG@10", baseline="x.bce")
    assert result["p_value"].iloc[0] == pytest.approx(
        scipy_stats.ttest_rel((b1 + b2) / 2, (a1 + a2) / 2).pvalue, rel=1e-12
    )


def test_each_dataset_is_its_own_family():
    first, second = systems(seed=0), systems(seed=1)
    per_query = pd.concat([table(first), table(second, dataset="beir/nq")])
    result = compare(per_query, measure="nDCG@10", baseline="bert-base.bce")
    assert list(result["dataset"].unique()) == [DATASET, "beir/nq"]
    nq = result[result["dataset"] == "beir/nq"]
    p = [scipy_stats.ttest_rel(second[r], second["bert-base.bce.s1"]).pvalue for r in list(second)[1:]]
    assert list(nq["p_adjusted"]) == pytest.approx(list(multipletests(p, method="holm")[1]), rel=1e-12)


def test_identical_vectors_give_p_one_and_labels_read_in_a_table():
    base = np.linspace(0.1, 0.9, 10)
    result = compare(table({"a.bce.s1": base, "a.hinge.s1": base.copy()}), measure="nDCG@10", baseline="a.bce")
    assert result["p_value"].iloc[0] == 1.0 and not result["significant"].iloc[0]
    assert result["label"].iloc[0] == f"{base.mean():.4f}"
    better = base + 0.1 + 0.01 * np.sin(np.arange(10))
    big = compare(table({"a.bce.s1": base, "a.hinge.s1": better}), measure="nDCG@10", baseline="a.bce")
    assert big["label"].iloc[0].endswith("†")


def test_misaligned_vectors_name_the_missing_queries():
    vectors = systems(n_queries=8)
    per_query = table(vectors)
    per_query = per_query[~((per_query["run"] == "bert-base.hinge.s1") & per_query["query_id"].isin(["q3", "q5"]))]
    message = (
        r"per-query vectors do not align on msmarco-passage/trec-dl-2019/judged \(nDCG@10\): "
        r"systems: bert-base\.hinge lacks 2 queries \('q3', 'q5'\)"
    )
    with pytest.raises(ValueError, match=message):
        compare(per_query, measure="nDCG@10", baseline="bert-base.bce")
    seeds = table({"a.bce.s1": np.ones(4), "a.bce.s2": np.ones(4)})
    seeds = seeds[~((seeds["run"] == "a.bce.s2") & (seeds["query_id"] == "q0"))]
    with pytest.raises(ValueError, match=r"seeds of a\.bce: a\.bce\.s2 lacks 1 queries \('q0'\)"):
        per_query_matrix(seeds, measure="nDCG@10")


def test_other_bad_inputs():
    per_query = table(systems())
    with pytest.raises(ValueError, match="baseline 'bert-base.rankt5' has no nDCG@10 values"):
        compare(per_query, measure="nDCG@10", baseline="bert-base.rankt5")
    with pytest.raises(ValueError, match=r"no 'RR@10' values \(measures: \['nDCG@10'\]\)"):
        compare(per_query, measure="RR@10")
    with pytest.raises(ValueError, match="test must be one of"):
        compare(per_query, measure="nDCG@10", test="t")
    with pytest.raises(ValueError, match="correction must be one of"):
        compare(per_query, measure="nDCG@10", correction="bonferroni")
    doubled = pd.concat([per_query, per_query.iloc[[0]]])
    with pytest.raises(ValueError, match="run 'bert-base.bce.s1' has query 'q0' twice"):
        per_query_matrix(doubled, measure="nDCG@10")


# --- bootstrap ----------------------------------------------------------------------------------


def test_bootstrap_ci_is_deterministic_for_a_seed_and_covers_the_mean():
    values = np.random.default_rng(5).uniform(size=200)
    first = bootstrap_ci(values, seed=7)
    assert first == bootstrap_ci(values, seed=7)
    assert first != bootstrap_ci(values, seed=8)
    assert first.low < values.mean() < first.high and first.estimate == values.mean()
    # Close to the normal interval mean +- 1.96 sd / sqrt(n).
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert (first.high - first.low) / 2 == pytest.approx(half, rel=0.1)


def test_bootstrap_matches_a_plain_resampling_loop():
    values = np.array([0.1, 0.5, 0.2, 0.9, 0.4])
    rng = np.random.default_rng(3)
    means = values[rng.integers(0, 5, size=(1000, 5))].mean(axis=1)
    assert bootstrap_ci(values, n_resamples=1000, seed=3)[1:] == tuple(np.quantile(means, [0.025, 0.975]))


def test_bootstrap_diff_resamples_queries_jointly():
    rng = np.random.default_rng(2)
    a = rng.uniform(size=50)
    b = a - 0.05 + rng.normal(0, 0.01, 50)  # always better by about 0.05: a tight interval
    interval = bootstrap_diff_ci(a, b, seed=0)
    assert interval.estimate == pytest.approx(a.mean() - b.mean())
    assert 0.04 < interval.low < interval.estimate < interval.high < 0.06
    assert interval == bootstrap_ci(a - b, seed=0)
    with pytest.raises(ValueError, match="paired vectors differ in length: 50 and 49"):
        bootstrap_diff_ci(a, b[:-1])


def test_mean_ci_table_has_one_row_per_dataset_and_system():
    vectors = systems()
    result = mean_ci_table(table(vectors), measure="nDCG@10", n_resamples=500)
    assert list(result["system"]) == [system_of(r) for r in vectors]
    assert result["mean"].to_numpy() == pytest.approx([v.mean() for v in vectors.values()])
    assert (result["ci_low"] < result["mean"]).all() and (result["mean"] < result["ci_high"]).all()


# --- seed variance ------------------------------------------------------------------------------


def test_seed_variance_by_hand():
    # Two seeds, three queries: seed means 0.4 and 0.6.
    per_query = table({"a.bce.s1": np.array([0.2, 0.4, 0.6]), "a.bce.s2": np.array([0.4, 0.6, 0.8])})
    row = seed_variance(per_query, measure="nDCG@10").iloc[0]
    assert (row["n_seeds"], row["n_queries"]) == (2, 3)
    assert row["mean"] == pytest.approx(0.5)
    assert row["seed_sd"] == pytest.approx(np.std([0.4, 0.6], ddof=1))
    assert row["query_sd"] == pytest.approx(0.2)  # each seed's variance across queries is 0.04
    assert row["query_se"] == pytest.approx(0.2 / np.sqrt(3))
    assert row["seed_share"] == pytest.approx(0.02 / (0.02 + 0.04 / 3))
    single = seed_variance(table({"a.bce.s1": np.array([0.2, 0.4])}), measure="nDCG@10").iloc[0]
    assert np.isnan(single["seed_sd"]) and np.isnan(single["seed_share"])
