"""Evaluate a run against qrels: per-query values, means, and the metric contract beside them.

ir_measures is the only metric engine. This module reads and checks the inputs, puts every
ranking in one explicit order (trec_eval's), calls ir_measures, and records how it was called
(the *metric contract*, ``book/metric-contract.md``). It must not compute a measure itself.

Also here: a result saved and read back (per-query values, means, the contract, with sizes and
checksums), and the folder name of a dataset's result. The run and qrels are read, checked and
ordered by :mod:`cerepro.evaluation.inputs`; the paper's aggregates of per-dataset means are
:mod:`cerepro.report.aggregates`'.

Choices, each recorded in the contract:

- ``rel_threshold`` (default: the dataset's, from ``params/datasets.yaml``) is passed as ir_measures'
  ``rel=`` to every measure that has that parameter (RR, AP, P, R, Success, ...) unless the measure
  string sets it; nDCG has no ``rel`` parameter and always uses the graded judgments.
- Ties: documents are ranked by score descending, then doc_id descending (trec_eval's order, which
  pytrec_eval follows). ir_measures' RR@k comes from the MS MARCO provider, which breaks ties by
  doc_id *ascending*; so where a query has tied scores, its scores are replaced by the trec_eval
  rank (strictly decreasing) before any engine sees them, and every measure uses one order.
- Queries judged in the qrels but absent from the run score 0 (``missing_queries="zero"``): what
  ir_measures' evaluators do, what the authors' code (xpmir, on ir_measures) reports, and trec_eval
  ``-c``. ``"skip"`` leaves them out (pytrec_eval's behaviour), ``"error"`` refuses them.
- Queries in the run without judgments are ignored by the engine and counted.
- A measure with a cutoff (``nDCG@10``, ``RR@10``, ``P@k``, ``R@k``, ``AP@k``, ``Success@k``) only
  depends on the top-k documents, so it is evaluated on the run truncated at k (in the order
  above): exact, and what makes a 1,000 x 1,000 run evaluate in about a second.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import ir_measures
import numpy as np
import pandas as pd

import cerepro
from cerepro.evaluation import inputs
from cerepro.paths import atomic_path, file_sha256, write_text_atomic
from cerepro.vocab import dataset_id, dataset_registry, explicit_measure, parse_measures, short_name

MEASURES = ("nDCG@10", "RR@10", "AP")
MISSING_QUERIES = ("zero", "skip", "error")
TIE_ORDER = "score descending, then doc_id descending (trec_eval's order)"
RUN_COLUMNS = ("query_id", "doc_id", "score")
QRELS_COLUMNS = ("query_id", "doc_id", "relevance")
PER_QUERY_COLUMNS = ["run", "dataset", "query_id", "measure", "value"]
MEANS_COLUMNS = ["run", "dataset", "measure", "value", "n_queries"]

# Measures whose value at cutoff k depends only on the top-k documents and the qrels.
_TOP_K_MEASURES = {"nDCG", "RR", "P", "R", "AP", "Success"}
# Contract keys a caller may set through contract_extra (the rest are measured, never typed).
_CALLER_KEYS = {"qrels_source", "first_stage"}


@dataclass(frozen=True)
class Result:
    """One run evaluated on one dataset: a tidy per-query table, its means and the contract."""

    per_query: pd.DataFrame  # run, dataset, query_id, measure, value
    means: pd.DataFrame  # run, dataset, measure, value, n_queries
    contract: dict

    def mean(self, measure: str) -> float:
        row = self.means[self.means["measure"] == measure]
        if row.empty:
            raise KeyError(f"measure {measure!r} not in this result: {list(self.means['measure'])}")
        return float(row["value"].iloc[0])


def evaluate(
    run,
    qrels,
    measures=MEASURES,
    *,
    dataset: str,
    run_name: str,
    rel_threshold: int | None = None,
    judged_only: bool = False,
    missing_queries: str = "zero",
    candidate_depth: int | None = None,
    contract_extra: dict | None = None,
) -> Result:
    """Evaluate ``run`` against ``qrels`` with ir_measures.

    ``run``: a DataFrame with columns query_id, doc_id, score, or a TREC run file path.
    ``qrels``: a DataFrame with columns query_id, doc_id, relevance, or a TREC qrels file path.
    ``measures``: ir_measures strings (``"nDCG@10"``, ``"RR@10"``, ``"AP"``, ``"R@1000"``...).
    ``dataset``: an ir_datasets id (or its short name); it selects the default ``rel_threshold``.
    ``judged_only``: drop unjudged documents from the run before evaluation (trec_eval ``-J``).
    ``missing_queries``: ``"zero"``, ``"skip"`` or ``"error"`` for judged queries absent from the run.
    ``candidate_depth``: the depth the run was asked for; queries with fewer candidates are counted.
    ``contract_extra``: more facts for the contract (``first_stage``, ``qrels_source``, ...).
    """
    if missing_queries not in MISSING_QUERIES:
        raise ValueError(f"missing_queries must be one of {MISSING_QUERIES}, got {missing_queries!r}")
    requested = parse_measures(measures)
    dataset = dataset_id(dataset, strict=False)
    threshold, threshold_source = _rel_threshold(dataset, rel_threshold)
    passed = {name: _with_rel(measure, threshold) for name, measure in requested.items()}

    (query_ids, doc_ids, scores), run_source = inputs.read_columns(run, RUN_COLUMNS, "run")
    qrels_cols, qrels_source = inputs.read_columns(qrels, QRELS_COLUMNS, "qrels")
    qrels_dict = inputs.as_nested(*inputs.grouped(*qrels_cols), what="qrels")
    codes, queries = pd.factorize(query_ids)
    run_queries = set(queries)
    inputs.check_overlap(run_queries, set(qrels_dict))
    if judged_only:
        keep = inputs.judged(queries[codes], doc_ids, qrels_dict)
        if not keep.any():
            raise ValueError(f"judged_only: run {run_name!r} has no judged document on {dataset}")
        codes, doc_ids, scores = codes[keep], doc_ids[keep], scores[keep]

    shape = _run_shape(codes, scores, len(queries), candidate_depth)
    ranked = inputs.in_trec_order(codes, np.asarray(queries, dtype=object), doc_ids, scores)
    missing = sorted(set(qrels_dict) - set(ranked.query_ids))
    if missing and missing_queries == "error":
        raise ValueError(
            f"{len(missing)} judged queries are missing from run {run_name!r} on {dataset}: "
            f"{inputs.examples(missing)} (missing_queries='error')"
        )

    by_depth: dict[int | None, list] = {}
    for measure in passed.values():
        by_depth.setdefault(_depth(measure), []).append(measure)
    names = {measure: name for name, measure in passed.items()}
    rows = []
    for depth, group in by_depth.items():
        evaluator = ir_measures.evaluator(group, qrels_dict)
        for metric in evaluator.iter_calc(ranked.nested(depth)):
            rows.append((names[metric.measure], metric.query_id, float(metric.value)))

    per_query = pd.DataFrame(rows, columns=["measure", "query_id", "value"])
    if missing_queries == "skip":
        per_query = per_query[~per_query["query_id"].isin(missing)]
    per_query = (
        per_query.assign(run=run_name, dataset=dataset, order=per_query["measure"].map(list(passed).index))
        .sort_values(["order", "query_id"])[PER_QUERY_COLUMNS]
        .reset_index(drop=True)
    )

    contract = {
        "run": run_name,
        "dataset": dataset,
        "measures": {name: explicit_measure(measure) for name, measure in passed.items()},
        "providers": {name: _provider(measure) for name, measure in passed.items()},
        "rel_threshold": threshold,
        "rel_threshold_source": threshold_source,
        "judged_only": judged_only,
        "missing_queries": missing_queries,
        "ties": TIE_ORDER,
        "queries_in_qrels": len(qrels_dict),
        "queries_in_run": len(run_queries),
        "queries_evaluated": int(per_query["query_id"].nunique()),
        "queries_missing_from_run": missing,
        "queries_without_judgments": len(run_queries - set(qrels_dict)),
        "queries_with_tied_scores": ranked.tied_queries,
        "queries_all_tied": shape["all_tied"],
        "queries_judged_all_zero": sum(1 for grades in qrels_dict.values() if max(grades.values()) <= 0),
        "requested_depth": candidate_depth,
        "queries_shorter_than_depth": shape["shorter"],
        "candidate_depth": ranked.depth_max,
        "candidate_depth_min": ranked.depth_min,
        "run_source": run_source,
        "qrels_source": qrels_source,
        "first_stage": None,
        "ir_measures": ir_measures.__version__,
        "pytrec_eval": _version("pytrec_eval"),
        "cerepro": cerepro.__version__,
    }
    for key, value in (contract_extra or {}).items():
        if key in contract and key not in _CALLER_KEYS:
            raise ValueError(f"contract_extra cannot set {key!r}: cerepro measures it ({contract[key]!r})")
        contract[key] = value
    contract["warnings"] = result_warnings(contract)
    return Result(per_query, query_means(per_query), contract)


def _run_shape(codes: np.ndarray, scores: np.ndarray, n_queries: int, depth: int | None) -> dict:
    """Queries whose candidates (two or more) all share one score, and queries with fewer than
    ``depth`` candidates."""
    counts = np.bincount(codes, minlength=n_queries)
    low = np.full(n_queries, np.inf)
    high = np.full(n_queries, -np.inf)
    np.minimum.at(low, codes, scores)
    np.maximum.at(high, codes, scores)
    return {
        "all_tied": int(((counts > 1) & (low == high)).sum()),
        "shorter": int((counts < depth).sum()) if depth else 0,
    }


# What makes a result quietly wrong or hard to compare: the contract key that raises each warning
# (when it is set and not 0) and what the warning says, filled from the contract.
_WARNINGS = (
    (
        "queries_all_tied",
        "{queries_all_tied} of {queries_in_run} queries have every candidate at one score; they are ranked by "
        "doc id (trec_eval's tie rule), not by the run's rank column, so their values say nothing about the run",
    ),
    (
        "queries_shorter_than_depth",
        "{queries_shorter_than_depth} of {queries_in_run} queries have fewer than the {requested_depth} "
        "candidates asked for (shortest: {candidate_depth_min}); relevant documents beyond their lists count "
        "as not retrieved",
    ),
    (
        "queries_missing_from_run",
        "{missing} judged queries have no candidates ({missing_examples}); {missing_rule}",
    ),
    (
        "queries_judged_all_zero",
        "{queries_judged_all_zero} of {queries_in_qrels} judged queries have only grade-0 judgements: every "
        "measure is 0 for them and they count in the means, as in the authors' evaluation (ir_measures)",
    ),
    (
        "judged_docs_absent",
        "the qrels judge {judged_docs_absent} documents that are not in the collection (e.g. "
        "{judged_docs_absent_examples}); relevant ones count as never retrieved, lowering every "
        "recall-sensitive measure",
    ),
    (
        "empty_queries",
        "{empty_queries} queries have empty text (e.g. {empty_queries_examples}); a model scores them on the "
        "passage alone",
    ),
    ("empty_passages", "{empty_passages} candidate passages have empty text (e.g. {empty_passages_examples})"),
)
_MISSING_RULE = {"zero": "they score 0 and count in the means", "skip": "they are left out of the means"}


class _Facts(dict):
    def __missing__(self, key):  # a fact an older contract does not record reads None
        return None


def result_warnings(contract: dict) -> list[str]:
    """What makes a result quietly wrong or hard to compare, in words, from its contract: said
    in the evaluate notebook's output and on the book's pages, not only in ``contract.json``."""
    missing = contract.get("queries_missing_from_run") or []
    facts = _Facts(
        contract,
        missing=len(missing),
        missing_examples=inputs.examples(missing),
        missing_rule=_MISSING_RULE.get(contract.get("missing_queries"), "refused"),
    )
    where = f"{contract.get('run')} on {contract.get('dataset')}"
    return [f"{where}: {text.format_map(facts)}" for key, text in _WARNINGS if contract.get(key)]


def query_means(per_query: pd.DataFrame) -> pd.DataFrame:
    """Means over queries of a tidy per-query table: run, dataset, measure, value, n_queries."""
    grouped = per_query.groupby(["run", "dataset", "measure"], sort=False)["value"]
    return grouped.agg(value="mean", n_queries="count").reset_index()[MEANS_COLUMNS]


# --- saving and loading ---------------------------------------------------------------------


def save_result(result: Result, folder) -> Path:
    """Write ``per_query.csv``, ``means.csv`` and ``contract.json`` into ``folder``, each file
    atomically and the contract last: a folder with a contract holds a complete result."""
    folder = Path(folder)
    files = {}
    for name, table in (("per_query.csv", result.per_query), ("means.csv", result.means)):
        with atomic_path(folder / name) as tmp:
            table.to_csv(tmp, index=False)  # floats as repr: they read back bit for bit
            files[name] = {"rows": len(table), "bytes": tmp.stat().st_size, "sha256": file_sha256(tmp)}
    # the contract lists the tables' sizes and checksums: a table cut at a line's end (fewer
    # queries, still a valid CSV) is refused when read, never averaged over what is left
    write_text_atomic(folder / "contract.json", json.dumps({**result.contract, "files": files}, indent=2) + "\n")
    return folder


class ResultError(ValueError):
    """A saved result whose files differ from what its contract records."""


def check_result(folder) -> None:
    """Refuse a saved result whose ``per_query.csv`` or ``means.csv`` differs from the size and
    sha256 its ``contract.json`` records (results saved before contracts listed them pass)."""
    folder = Path(folder)
    files = json.loads((folder / "contract.json").read_text(encoding="utf-8")).get("files") or {}
    for name, facts in files.items():
        path = folder / name
        size = path.stat().st_size if path.is_file() else None
        if size != facts["bytes"] or file_sha256(path) != facts["sha256"]:
            raise ResultError(
                f"{path}: {'missing' if size is None else f'{size} bytes'}, but {folder / 'contract.json'} "
                f"records {facts['bytes']} bytes ({facts['rows']} rows) and their sha256: the file was "
                f"cut or changed after it was saved; delete {folder} and evaluate again"
            )


def load_results(folder_glob) -> pd.DataFrame:
    """Read every saved result matching ``folder_glob`` into one tidy per-query table."""
    tables = []
    for folder in _result_folders(folder_glob):
        check_result(folder)
        tables.append(pd.read_csv(folder / "per_query.csv", dtype={c: str for c in PER_QUERY_COLUMNS if c != "value"}))
    return pd.concat(tables, ignore_index=True)[PER_QUERY_COLUMNS]


def load_contracts(folder_glob) -> pd.DataFrame:
    """The contracts of the saved results matching ``folder_glob``, one row per result."""
    return pd.DataFrame(
        [json.loads((folder / "contract.json").read_text(encoding="utf-8")) for folder in _result_folders(folder_glob)]
    )


def _result_folders(folder_glob) -> list[Path]:
    folders = sorted(Path(p) for p in glob.glob(os.fspath(folder_glob)) if (Path(p) / "contract.json").is_file())
    if not folders:
        raise FileNotFoundError(f"no saved result (a folder with contract.json) matches {os.fspath(folder_glob)!r}")
    return folders


# --- datasets -------------------------------------------------------------------------------


def folder_name(dataset: str) -> str:
    """A file-system name for a dataset's result folder: its short name when params/datasets.yaml
    knows it, else the id with ``:`` and ``/`` replaced (``demo:in-domain`` -> ``demo-in-domain``)
    and, but for the demo splits, 8 hex digits of the id's sha256 so two ids never share one."""
    canonical = dataset_id(dataset, strict=False)
    if canonical in dataset_registry()["datasets"]:
        return short_name(canonical)
    name = dataset.replace(":", "-").replace("/", "-")
    if dataset.startswith("demo:"):  # the demo splits: fixed names without '/', none collides
        return name
    # ``local:a/x-y`` and ``local:a/x/y`` would share a name: a digest of the id tells them apart
    return f"{name}-{hashlib.sha256(dataset.encode()).hexdigest()[:8]}"


def _rel_threshold(dataset: str, rel_threshold) -> tuple[int, str]:
    if rel_threshold is not None:
        if isinstance(rel_threshold, bool) or not isinstance(rel_threshold, (int, np.integer)):
            raise TypeError(f"rel_threshold must be an int, got {rel_threshold!r}")
        return int(rel_threshold), "argument"
    info = dataset_registry()["datasets"].get(dataset)
    if info is None:
        return 1, "ir_measures default (dataset not in params/datasets.yaml)"
    return int(info["rel_threshold"]), "params/datasets.yaml"


# --- measures -------------------------------------------------------------------------------


def _with_rel(measure, threshold: int):
    """The measure with ``rel=threshold`` if it takes a ``rel`` the string did not set."""
    if "rel" not in measure.SUPPORTED_PARAMS or "rel" in measure.params:
        return measure
    return measure(rel=threshold)


def _depth(measure) -> int | None:
    """The run depth a measure needs: its cutoff where it only reads the top k, else all."""
    if measure.NAME not in _TOP_K_MEASURES or "cutoff" not in measure.params:
        return None
    if "judged_only" in measure.params and measure.params["judged_only"]:
        return None  # unjudged documents are dropped before the cutoff applies
    return int(measure.params["cutoff"])


def _provider(measure) -> str:
    for provider in ir_measures.DefaultPipeline.providers:
        if provider.is_available() and provider.supports(measure):
            return provider.NAME
    return "none"


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except (ImportError, AttributeError):
        return None
