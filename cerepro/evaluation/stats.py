"""Significance tests, confidence intervals and seed variance on per-query measures.

Input is the tidy per-query table of ``cerepro.evaluation.evaluate`` (run, dataset, query_id, measure,
value); outputs are tidy DataFrames a notebook can show as they are. Tests and corrections are
scipy's and statsmodels' own functions, called on vectors aligned by query id; this module only
aligns, loops and labels. It must not compute a retrieval measure.

A *system* is a run id without its seed (``bert-base.infonce.s123`` -> ``bert-base.infonce``).
When a system has several seeds, its per-query value is the mean over its seeds, as in the
authors' code; every seed must cover the same queries.

- ``compare``: paired t-test (``scipy.stats.ttest_rel``) or Wilcoxon signed-rank
  (``scipy.stats.wilcoxon``, scipy's defaults) across queries, for every system against a
  baseline or for all pairs, with Holm or Benjamini-Hochberg correction
  (``statsmodels.stats.multitest.multipletests``); the family is one (dataset, measure). The
  paper's test, for comparison: ``test="welch"`` (``scipy.stats.ttest_ind(equal_var=False)``, an
  unpaired test) with ``correction=None``.
- ``bootstrap_ci`` / ``bootstrap_diff_ci``: seeded percentile bootstrap over queries of a mean and
  of a paired difference of means.
- ``seed_variance``: how much of the uncertainty of a reported mean comes from the training seed
  and how much from the sample of test queries.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
import pandas as pd

from cerepro.vocab import system_of

TESTS = ("paired-t", "wilcoxon", "welch")
CORRECTIONS = ("holm", "fdr_bh", None)
MARKER = "†"


class Interval(NamedTuple):
    estimate: float
    low: float
    high: float


def per_query_matrix(per_query: pd.DataFrame, *, measure: str, dataset: str | None = None) -> pd.DataFrame:
    """One column per system, one row per query: the seed-averaged value of ``measure``.

    ``dataset`` may be left out when the table holds one. Raises ValueError, naming the missing
    query ids, when seeds of a system or systems differ in the queries they cover."""
    rows = _select(per_query, measure, dataset)
    dataset = rows["dataset"].iloc[0]
    rows = rows.assign(system=rows["run"].map(system_of))
    doubled = rows.duplicated(["run", "query_id"])
    if doubled.any():
        first = rows[doubled].iloc[0]
        raise ValueError(f"run {first['run']!r} has query {first['query_id']!r} twice for {measure} on {dataset}")

    problems = []
    for system, group in rows.groupby("system", sort=False):
        runs = group.groupby("run", sort=False)["query_id"].apply(set)
        problems += _coverage(runs, f"seeds of {system}")
    if problems:
        raise ValueError(f"per-query vectors do not align on {dataset} ({measure}): " + "; ".join(problems))
    matrix = rows.pivot_table(index="query_id", columns="system", values="value", aggfunc="mean", sort=False)
    matrix = matrix[list(dict.fromkeys(rows["system"]))]
    problems = _coverage(pd.Series({s: set(matrix.index[matrix[s].notna()]) for s in matrix.columns}), "systems")
    if problems:
        raise ValueError(f"per-query vectors do not align on {dataset} ({measure}): " + "; ".join(problems))
    matrix.columns.name = None
    return matrix.sort_index()


def compare(
    per_query: pd.DataFrame,
    *,
    measure: str,
    baseline: str | None = None,
    test: str = "paired-t",
    correction: str | None = "holm",
    alpha: float = 0.05,
    marker: str = MARKER,
) -> pd.DataFrame:
    """Test every system against ``baseline`` (a system or run id), or all pairs when
    ``baseline`` is None, on each dataset of the table.

    One row per (dataset, system, versus): n_queries, mean, versus_mean, diff (mean - versus_mean),
    statistic, p_value (scipy's), p_adjusted (statsmodels' ``multipletests`` over the dataset's
    family; equal to p_value without correction), significant (its ``reject``; without correction
    p < alpha), marker (``marker`` when significant) and label (``"0.7123†"``).
    Where the two vectors are identical the test is undefined (scipy's t-tests return nan): p = 1.
    """
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {test!r}")
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    tables = []
    for dataset in _select(per_query, measure, None)["dataset"].unique():
        matrix = per_query_matrix(per_query, measure=measure, dataset=dataset)
        if baseline is None:
            pairs = list(itertools.combinations(matrix.columns, 2))
        else:
            base = system_of(baseline)
            if base not in matrix.columns:
                raise ValueError(
                    f"baseline {baseline!r} has no {measure} values on {dataset} (systems: {list(matrix.columns)})"
                )
            pairs = [(system, base) for system in matrix.columns if system != base]
        rows = []
        for system, versus in pairs:
            x, y = matrix[system].to_numpy(), matrix[versus].to_numpy()
            statistic, p_value = _test(test, x, y)
            rows.append(
                {
                    "dataset": dataset,
                    "measure": measure,
                    "system": system,
                    "versus": versus,
                    "n_queries": len(x),
                    "mean": x.mean(),
                    "versus_mean": y.mean(),
                    "diff": x.mean() - y.mean(),
                    "statistic": statistic,
                    "p_value": p_value,
                }
            )
        table = pd.DataFrame(rows)
        if table.empty:
            continue
        if correction is None:
            table["p_adjusted"] = table["p_value"]
            table["significant"] = table["p_value"] < alpha
        else:
            from statsmodels.stats.multitest import multipletests

            reject, adjusted, _, _ = multipletests(table["p_value"], alpha=alpha, method=correction)
            table["p_adjusted"], table["significant"] = adjusted, reject
        tables.append(table)
    if not tables:
        raise ValueError(f"nothing to compare for {measure}: fewer than two systems")
    table = pd.concat(tables, ignore_index=True)
    table["test"], table["correction"] = test, correction or "none"
    table["marker"] = np.where(table["significant"], marker, "")
    table["label"] = [f"{m:.4f}{k}" for m, k in zip(table["mean"], table["marker"])]
    return table


def paper_welch(per_query: pd.DataFrame, *, measure: str, baseline: str, alpha: float = 0.05) -> pd.DataFrame:
    """The authors' test: unpaired Welch t-test of each system against the baseline on
    seed-averaged per-query values, p < alpha, no correction for multiple comparisons."""
    return compare(per_query, measure=measure, baseline=baseline, test="welch", correction=None, alpha=alpha)


def bootstrap_ci(values, *, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean of ``values`` (queries resampled with
    replacement, ``numpy.random.default_rng(seed)``)."""
    values = _vector(values, "values")
    means = _resampled_means(values, n_resamples, seed)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(values.mean()), float(low), float(high))


def bootstrap_diff_ci(a, b, *, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of mean(a) - mean(b) for paired per-query vectors: the same
    resampled queries for both systems."""
    a, b = _vector(a, "a"), _vector(b, "b")
    if len(a) != len(b):
        raise ValueError(f"paired vectors differ in length: {len(a)} and {len(b)} queries")
    return bootstrap_ci(a - b, n_resamples=n_resamples, confidence=confidence, seed=seed)


def mean_ci_table(
    per_query: pd.DataFrame, *, measure: str, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Per dataset and system: the mean of the seed-averaged per-query values and its bootstrap
    interval (dataset, system, n_queries, mean, ci_low, ci_high)."""
    rows = []
    for dataset in _select(per_query, measure, None)["dataset"].unique():
        matrix = per_query_matrix(per_query, measure=measure, dataset=dataset)
        for system in matrix.columns:
            mean, low, high = bootstrap_ci(matrix[system], n_resamples=n_resamples, confidence=confidence, seed=seed)
            rows.append(
                {
                    "dataset": dataset,
                    "system": system,
                    "n_queries": len(matrix),
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return pd.DataFrame(rows)


def seed_variance(per_query: pd.DataFrame, *, measure: str) -> pd.DataFrame:
    """Seed variance against query variance, per dataset and system.

    With S seeds and Q queries, v[s, q] the value of seed s on query q and m[s] its mean over
    queries:

    - ``seed_sd``: the standard deviation (ddof=1) of the seed means m[s], how far a retrained
      model's reported number moves on this same query set;
    - ``query_sd``: the square root of the mean over seeds of the variance (ddof=1) of v[s, :]
      across queries, and ``query_se = query_sd / sqrt(Q)``, the standard error of one seed's mean
      due to the sample of queries;
    - ``seed_share = seed_sd**2 / (seed_sd**2 + query_se**2)``: the part of the uncertainty of one
      seed's mean that retraining explains (NaN with one seed).
    """
    rows = _select(per_query, measure, None)
    out = []
    for dataset in rows["dataset"].unique():
        per_query_matrix(per_query, measure=measure, dataset=dataset)  # alignment checks
        subset = rows[rows["dataset"] == dataset]
        for system, group in subset.groupby(subset["run"].map(system_of), sort=False):
            by_seed = group.groupby("run", sort=False)["value"]
            seed_means, query_var = by_seed.mean(), by_seed.var(ddof=1)
            n_queries = int(by_seed.size().iloc[0])
            seed_sd = float(seed_means.std(ddof=1)) if len(seed_means) > 1 else float("nan")
            query_sd = float(np.sqrt(query_var.mean()))
            query_se = query_sd / np.sqrt(n_queries)
            out.append(
                {
                    "dataset": dataset,
                    "system": system,
                    "n_seeds": len(seed_means),
                    "n_queries": n_queries,
                    "mean": float(seed_means.mean()),
                    "seed_sd": seed_sd,
                    "query_sd": query_sd,
                    "query_se": query_se,
                    "seed_share": seed_sd**2 / (seed_sd**2 + query_se**2),
                }
            )
    return pd.DataFrame(out)


def _select(per_query: pd.DataFrame, measure: str, dataset: str | None) -> pd.DataFrame:
    missing = [c for c in ("run", "dataset", "query_id", "measure", "value") if c not in per_query.columns]
    if missing:
        raise ValueError(f"per-query table lacks columns {missing}")
    rows = per_query[per_query["measure"] == measure]
    if rows.empty:
        raise ValueError(f"no {measure!r} values (measures: {sorted(per_query['measure'].unique())})")
    datasets = list(rows["dataset"].unique())
    if dataset is None:
        return rows
    if dataset not in datasets:
        raise ValueError(f"no {measure} values on {dataset!r} (datasets: {datasets})")
    return rows[rows["dataset"] == dataset]


def _coverage(query_sets: pd.Series, what: str) -> list[str]:
    """What each member lacks relative to the union of the members' query sets."""
    union = set().union(*query_sets)
    problems = []
    for name, queries in query_sets.items():
        lacking = sorted(union - queries)
        if lacking:
            shown = ", ".join(repr(q) for q in lacking[:5]) + (", ..." if len(lacking) > 5 else "")
            problems.append(f"{what}: {name} lacks {len(lacking)} queries ({shown})")
    return problems


def paired_test(x, y, *, test: str = "paired-t") -> tuple[float, float]:
    """(statistic, p) of two per-query vectors aligned by query: scipy's paired t-test or
    Wilcoxon signed-rank; identical vectors give (0, 1)."""
    if test not in ("paired-t", "wilcoxon"):
        raise ValueError(f"a paired test is 'paired-t' or 'wilcoxon', got {test!r}")
    x, y = _vector(x, "x"), _vector(y, "y")
    if len(x) != len(y):
        raise ValueError(f"paired vectors differ in length: {len(x)} and {len(y)}")
    return _test(test, x, y)


def _test(test: str, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy import stats as scipy_stats  # on first use: the run notebooks import this module, never test

    if np.array_equal(x, y):
        return 0.0, 1.0
    if test == "paired-t":
        result = scipy_stats.ttest_rel(x, y)
    elif test == "wilcoxon":
        result = scipy_stats.wilcoxon(x, y)
    else:
        result = scipy_stats.ttest_ind(x, y, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def _vector(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d vector of per-query values")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has non-finite values")
    return array


def _resampled_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Means of ``n_resamples`` resamples, drawn in chunks of about 4M indices to bound memory
    (the chunks continue one random stream, so the result does not depend on the chunk size)."""
    rng = np.random.default_rng(seed)
    n = len(values)
    chunk = max(1, 4_000_000 // n)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return means
