"""evaluate: hand-computed values, exactness against ir_measures and pytrec_eval called directly,
the metric contract, saving and loading, and one test per input error (the paper's aggregates:
tests/test_aggregates.py)."""

import json
import math

import ir_measures
import numpy as np
import pandas as pd
import pytest
import pytrec_eval

from cerepro.evaluation.evaluate import (
    ResultError,
    evaluate,
    folder_name,
    load_contracts,
    load_results,
    query_means,
    save_result,
)
from cerepro.vocab import dataset_id, dataset_registry, short_name

# Two queries, hand-checkable. Gains are the grades; discount log2(rank + 1).
QRELS = pd.DataFrame(
    [("q1", "d1", 2), ("q1", "d2", 1), ("q1", "d3", 0), ("q2", "d4", 1), ("q2", "d5", 0)],
    columns=["query_id", "doc_id", "relevance"],
)
RUN = pd.DataFrame(
    [("q1", "d3", 0.9), ("q1", "d2", 0.8), ("q1", "d1", 0.7), ("q2", "d5", 0.5), ("q2", "d6", 0.4), ("q2", "d4", 0.3)],
    columns=["query_id", "doc_id", "score"],
)
NDCG_Q1 = (1 / math.log2(3) + 2 / math.log2(4)) / (2 / math.log2(2) + 1 / math.log2(3))  # d3 d2 d1
NDCG_Q2 = (1 / math.log2(4)) / 1.0  # d5 d6 d4


def values(result, measure):
    rows = result.per_query[result.per_query["measure"] == measure]
    return dict(zip(rows["query_id"], rows["value"]))


def test_hand_computed_ndcg_rr_ap_on_two_queries():
    result = evaluate(RUN, QRELS, dataset="toy", run_name="hand")
    assert values(result, "nDCG@10") == pytest.approx({"q1": NDCG_Q1, "q2": NDCG_Q2}, abs=1e-12)
    assert values(result, "RR@10") == pytest.approx({"q1": 1 / 2, "q2": 1 / 3}, abs=1e-12)
    assert values(result, "AP") == pytest.approx({"q1": (1 / 2 + 2 / 3) / 2, "q2": 1 / 3}, abs=1e-12)
    assert result.mean("nDCG@10") == pytest.approx((NDCG_Q1 + NDCG_Q2) / 2, abs=1e-12)
    assert result.mean("RR@10") == pytest.approx(5 / 12, abs=1e-12)
    assert list(result.per_query.columns) == ["run", "dataset", "query_id", "measure", "value"]
    assert list(result.means["measure"]) == ["nDCG@10", "RR@10", "AP"]
    assert set(result.means["n_queries"]) == {2}


def test_rel_threshold_applies_to_binary_measures_never_to_ndcg():
    result = evaluate(RUN, QRELS, dataset="toy", run_name="hand", rel_threshold=2)
    assert values(result, "RR@10") == pytest.approx({"q1": 1 / 3, "q2": 0.0}, abs=1e-12)
    assert values(result, "AP") == pytest.approx({"q1": 1 / 3, "q2": 0.0}, abs=1e-12)
    assert values(result, "nDCG@10") == pytest.approx({"q1": NDCG_Q1, "q2": NDCG_Q2}, abs=1e-12)
    assert result.contract["measures"] == {"nDCG@10": "nDCG@10", "RR@10": "RR(rel=2)@10", "AP": "AP(rel=2)"}
    assert result.contract["rel_threshold_source"] == "argument"


def test_rel_threshold_set_in_the_measure_string_wins():
    result = evaluate(RUN, QRELS, ["RR(rel=1)@10"], dataset="toy", run_name="hand", rel_threshold=2)
    assert values(result, "RR(rel=1)@10") == pytest.approx({"q1": 1 / 2, "q2": 1 / 3})
    assert result.contract["measures"] == {"RR(rel=1)@10": "RR(rel=1)@10"}


def test_rel_threshold_comes_from_params_for_a_known_dataset():
    result = evaluate(RUN, QRELS, dataset="trec-dl-2019", run_name="hand")
    assert result.contract["dataset"] == "msmarco-passage/trec-dl-2019/judged"
    assert result.contract["rel_threshold"] == 2
    assert result.contract["rel_threshold_source"] == "params/datasets.yaml"
    assert result.mean("RR@10") == pytest.approx(1 / 6)
    toy = evaluate(RUN, QRELS, dataset="toy", run_name="hand")
    assert toy.contract["rel_threshold"] == 1
    assert toy.contract["rel_threshold_source"].startswith("ir_measures default")


def test_judged_only_drops_unjudged_documents_like_trec_eval_J():
    result = evaluate(RUN, QRELS, dataset="toy", run_name="hand", judged_only=True)
    assert values(result, "nDCG@10")["q2"] == pytest.approx(1 / math.log2(3))  # d5 d4
    assert values(result, "RR@10")["q2"] == pytest.approx(1 / 2)
    evaluator = pytrec_eval.RelevanceEvaluator(
        _dict(QRELS, "relevance"), {"ndcg_cut_10", "map"}, judged_docs_only_flag=1
    )
    direct = evaluator.evaluate(_dict(RUN, "score"))
    assert values(result, "nDCG@10") == pytest.approx({q: v["ndcg_cut_10"] for q, v in direct.items()}, abs=1e-12)
    assert values(result, "AP") == pytest.approx({q: v["map"] for q, v in direct.items()}, abs=1e-12)


# --- exactness on generated fixtures ----------------------------------------------------------

MEASURES = ["nDCG@10", "RR@10", "AP", "nDCG", "RR", "P@5", "R@20", "AP@10", "Success@3"]
PYTREC = {
    "nDCG@10": "ndcg_cut_10",
    "AP": "map",
    "nDCG": "ndcg",
    "RR": "recip_rank",
    "P@5": "P_5",
    "R@20": "recall_20",
    "AP@10": "map_cut_10",
}


def generated(seed, n_queries=40, n_docs=60, ties=False):
    """Random graded qrels and a run without (or with many) tied scores; one judged query is
    absent from the run and one run query has no judgments."""
    rng = np.random.default_rng(seed)
    run, qrels = [], []
    for q in range(n_queries):
        docs = rng.choice(500, size=n_docs, replace=False)
        scores = rng.normal(size=n_docs)
        if ties:
            scores = np.round(scores, 0)
        if q != 0:  # q0 is judged but not retrieved
            run += [(f"q{q}", f"d{d}", s) for d, s in zip(docs, scores)]
        judged = rng.choice(docs, size=15, replace=False)
        if q != n_queries - 1:  # the last query is retrieved but not judged
            qrels += [(f"q{q}", f"d{d}", int(rng.choice(4, p=[0.5, 0.2, 0.2, 0.1]))) for d in judged]
    return (
        pd.DataFrame(run, columns=["query_id", "doc_id", "score"]),
        pd.DataFrame(qrels, columns=["query_id", "doc_id", "relevance"]),
    )


def _dict(frame, value):
    out = {}
    for q, d, v in frame[["query_id", "doc_id", value]].itertuples(index=False):
        out.setdefault(q, {})[d] = v.item() if hasattr(v, "item") else v
    return out


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("rel", [1, 2])
def test_every_measure_equals_ir_measures_called_directly(seed, rel):
    run, qrels = generated(seed)
    result = evaluate(run, qrels, MEASURES, dataset="toy", run_name="gen", rel_threshold=rel)
    for name, passed in result.contract["measures"].items():
        measure = ir_measures.parse_measure(passed)
        direct = {
            m.query_id: m.value
            for m in ir_measures.iter_calc([measure], _dict(qrels, "relevance"), _dict(run, "score"))
        }
        assert values(result, name) == pytest.approx(direct, abs=1e-12), name
        aggregate = ir_measures.calc_aggregate([measure], _dict(qrels, "relevance"), _dict(run, "score"))[measure]
        assert result.mean(name) == pytest.approx(aggregate, abs=1e-12), name
    assert "q0" in values(result, "AP") and values(result, "AP")["q0"] == 0.0  # judged, not retrieved
    assert result.contract["queries_missing_from_run"] == ["q0"]
    assert result.contract["queries_without_judgments"] == 1


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("rel", [1, 2])
def test_every_measure_equals_pytrec_eval_called_directly(ties, rel):
    run, qrels = generated(3, ties=ties)
    result = evaluate(run, qrels, MEASURES, dataset="toy", run_name="gen", rel_threshold=rel, missing_queries="skip")
    evaluator = pytrec_eval.RelevanceEvaluator(_dict(qrels, "relevance"), set(PYTREC.values()), relevance_level=rel)
    direct = evaluator.evaluate(_dict(run, "score"))  # pytrec_eval skips judged queries absent from the run
    for name, trec_name in PYTREC.items():
        expected = {q: v[trec_name] for q, v in direct.items()}
        assert values(result, name) == pytest.approx(expected, abs=1e-12), name
        assert result.mean(name) == pytest.approx(np.mean(list(expected.values())), abs=1e-12), name
    # RR@10 is recip_rank when the first relevant document is in the top 10, else 0.
    rr10 = {q: (v["recip_rank"] if v["recip_rank"] >= 0.1 else 0.0) for q, v in direct.items()}
    assert values(result, "RR@10") == pytest.approx(rr10, abs=1e-12)
    assert (result.contract["queries_with_tied_scores"] > 0) == ties


def test_ties_follow_trec_eval_doc_id_descending_for_every_measure():
    qrels = pd.DataFrame([("q1", "d1", 0), ("q1", "d2", 1)], columns=["query_id", "doc_id", "relevance"])
    run = pd.DataFrame([("q1", "d1", 1.0), ("q1", "d2", 1.0)], columns=["query_id", "doc_id", "score"])
    result = evaluate(run, qrels, ["RR@10", "RR", "nDCG@10"], dataset="toy", run_name="tied")
    # trec_eval ranks d2 first (doc_id descending): RR 1, whatever the provider.
    assert values(result, "RR@10") == {"q1": 1.0}
    assert values(result, "RR") == {"q1": 1.0}
    assert values(result, "nDCG@10") == {"q1": 1.0}
    # Called directly, ir_measures' RR@10 (MS MARCO provider, doc_id ascending) disagrees: 0.5.
    assert ir_measures.calc_aggregate([ir_measures.RR @ 10], qrels, run)[ir_measures.RR @ 10] == 0.5
    assert result.contract["queries_with_tied_scores"] == 1


# --- missing queries ---------------------------------------------------------------------------


def test_missing_queries_zero_skip_or_error():
    run = RUN[RUN["query_id"] == "q1"]
    zero = evaluate(run, QRELS, dataset="toy", run_name="one")
    assert values(zero, "nDCG@10") == pytest.approx({"q1": NDCG_Q1, "q2": 0.0})
    assert zero.contract["queries_missing_from_run"] == ["q2"]
    assert zero.contract["queries_evaluated"] == 2
    skip = evaluate(run, QRELS, dataset="toy", run_name="one", missing_queries="skip")
    assert values(skip, "nDCG@10") == pytest.approx({"q1": NDCG_Q1})
    assert skip.contract["queries_evaluated"] == 1
    with pytest.raises(ValueError, match=r"1 judged queries are missing from run 'one' on toy: e\.g\. 'q2'"):
        evaluate(run, QRELS, dataset="toy", run_name="one", missing_queries="error")
    with pytest.raises(ValueError, match="missing_queries must be one of"):
        evaluate(run, QRELS, dataset="toy", run_name="one", missing_queries="drop")


# --- the contract, files, ids -----------------------------------------------------------------


def test_contract_records_how_the_numbers_were_made():
    result = evaluate(
        RUN,
        QRELS,
        dataset="toy",
        run_name="hand",
        contract_extra={"first_stage": "splade-v3", "qrels_source": "ir_datasets:toy", "note": "x"},
    )
    contract = result.contract
    assert contract["ir_measures"] == ir_measures.__version__
    assert contract["measures"] == {"nDCG@10": "nDCG@10", "RR@10": "RR(rel=1)@10", "AP": "AP(rel=1)"}
    assert contract["providers"] == {"nDCG@10": "pytrec_eval", "RR@10": "msmarco", "AP": "pytrec_eval"}
    assert contract["candidate_depth"] == 3 and contract["candidate_depth_min"] == 3
    assert contract["first_stage"] == "splade-v3" and contract["qrels_source"] == "ir_datasets:toy"
    assert contract["note"] == "x"
    assert contract["judged_only"] is False and contract["missing_queries"] == "zero"
    assert contract["ties"].startswith("score descending, then doc_id descending")
    json.dumps(contract)  # serialisable as is
    with pytest.raises(ValueError, match="contract_extra cannot set 'rel_threshold'"):
        evaluate(RUN, QRELS, dataset="toy", run_name="hand", contract_extra={"rel_threshold": 3})


def test_trec_files_and_integer_ids_give_the_same_values(tmp_path):
    run_file, qrels_file = tmp_path / "run.trec", tmp_path / "qrels.txt"
    run_file.write_text("".join(f"{q} Q0 {d} {i} {s} tag\n" for i, (q, d, s) in enumerate(RUN.itertuples(index=False))))
    qrels_file.write_text("".join(f"{q} 0 {d} {r}\n" for q, d, r in QRELS.itertuples(index=False)))
    from_files = evaluate(run_file, qrels_file, dataset="toy", run_name="hand")
    from_frames = evaluate(RUN, QRELS, dataset="toy", run_name="hand")
    pd.testing.assert_frame_equal(from_files.per_query, from_frames.per_query)
    assert from_files.contract["run_source"] == str(run_file)

    numeric = pd.DataFrame({"query_id": [1, 1, 2], "doc_id": [10, 11, 12], "score": [2.0, 1.0, 1.0]})
    numeric_qrels = pd.DataFrame({"query_id": ["1", "2"], "doc_id": ["11", "12"], "relevance": [1, 1]})
    result = evaluate(numeric, numeric_qrels, ["RR@10"], dataset="toy", run_name="ints")
    assert values(result, "RR@10") == {"1": 0.5, "2": 1.0}


def test_save_and_load_round_trip(tmp_path):
    first = evaluate(RUN, QRELS, dataset="toy", run_name="a")
    second = evaluate(RUN[RUN["doc_id"] != "d3"], QRELS, dataset="toy", run_name="b")
    save_result(first, tmp_path / "a")
    save_result(second, tmp_path / "b")
    table = load_results(tmp_path / "*")
    pd.testing.assert_frame_equal(table, pd.concat([first.per_query, second.per_query], ignore_index=True))
    assert (tmp_path / "a" / "means.csv").is_file()
    saved = json.loads((tmp_path / "a" / "contract.json").read_text())
    assert {k: v for k, v in saved.items() if k != "files"} == first.contract
    assert saved["files"]["per_query.csv"]["rows"] == len(first.per_query)
    assert list(load_contracts(tmp_path / "*")["run"]) == ["a", "b"]
    pd.testing.assert_frame_equal(query_means(table).iloc[:3], first.means)
    with pytest.raises(FileNotFoundError, match="no saved result"):
        load_results(tmp_path / "nothing-*")


@pytest.mark.parametrize("damage", ["cut at a line's end", "a value changed", "removed"])
def test_a_saved_result_that_differs_from_its_contract_is_refused(tmp_path, damage):
    """per_query.csv cut at a line boundary is still a valid CSV of fewer queries: the contract's
    size and sha256 refuse it, naming the file, instead of averaging what is left."""
    save_result(evaluate(RUN, QRELS, dataset="toy", run_name="a"), tmp_path / "a")
    path = tmp_path / "a" / "per_query.csv"
    lines = path.read_text().splitlines(keepends=True)
    if damage == "removed":
        path.unlink()
    else:
        path.write_text(
            "".join(lines[:-2])
            if damage.startswith("cut")
            else "".join(lines).replace(",q1,nDCG@10,", ",q1,nDCG@10,1", 1)
        )
    with pytest.raises(
        ResultError,
        match=rf"{path}: .*records \d+ bytes \({len(lines) - 1} rows\).*"
        r"delete .* and evaluate again",
    ):
        load_results(tmp_path / "*")


def test_two_dataset_ids_never_share_a_result_folder():
    """``local:<dir>/x-y`` and ``local:<dir>/x/y`` once both became ``local-<dir>-x-y``: the second
    evaluation overwrote the first's results."""
    names = {folder_name(d) for d in ("local:data/x-y", "local:data/x/y", "local:data:x/y", "local:data-x-y")}
    assert len(names) == 4 and all(n.startswith("local-data-x-y-") for n in names)
    assert folder_name("demo:in-domain") == "demo-in-domain"
    assert folder_name("msmarco-passage/trec-dl-2019/judged") == "trec-dl-2019"


# --- results quietly wrong or hard to compare: said in words ---------------------------------


def test_a_run_whose_scores_are_all_tied_is_said_to_be_ordered_by_doc_id():
    """A run with one score everywhere is ranked by doc id (trec_eval's rule), its rank column
    ignored: nDCG falls with no error. The contract counts such queries and the warning says it."""
    tied = RUN.assign(score=1.0)
    result = evaluate(tied, QRELS, dataset="toy", run_name="flat")
    assert result.contract["queries_all_tied"] == 2
    [warning] = result.contract["warnings"]
    assert warning.startswith("flat on toy: 2 of 2 queries have every candidate at one score")
    assert "ranked by doc id" in warning and "not by the run's rank column" in warning
    assert evaluate(RUN, QRELS, dataset="toy", run_name="a").contract["warnings"] == []


def test_queries_shorter_than_the_candidate_depth_are_counted_and_said():
    result = evaluate(RUN[RUN["doc_id"] != "d6"], QRELS, dataset="toy", run_name="a", candidate_depth=3)
    assert (result.contract["queries_shorter_than_depth"], result.contract["requested_depth"]) == (1, 3)
    assert any(
        "1 of 2 queries have fewer than the 3 candidates asked for (shortest: 2)" in w
        for w in result.contract["warnings"]
    )
    assert evaluate(RUN, QRELS, dataset="toy", run_name="a", candidate_depth=3).contract["warnings"] == []


def test_queries_judged_all_zero_count_as_zero_in_the_means_and_are_said():
    """As ir_measures (the authors' evaluation) counts them: every measure 0, in the mean."""
    qrels = pd.concat([QRELS, pd.DataFrame([("q3", "d7", 0)], columns=QRELS.columns)], ignore_index=True)
    run = pd.concat([RUN, pd.DataFrame([("q3", "d7", 1.0)], columns=RUN.columns)], ignore_index=True)
    result = evaluate(run, qrels, dataset="toy", run_name="a")
    assert result.contract["queries_judged_all_zero"] == 1
    assert values(result, "nDCG@10")["q3"] == 0.0
    assert result.mean("nDCG@10") == pytest.approx((NDCG_Q1 + NDCG_Q2) / 3, abs=1e-12)
    assert any(
        "1 of 3 judged queries have only grade-0 judgements: every measure is 0 for them "
        "and they count in the means" in w
        for w in result.contract["warnings"]
    )


def test_facts_from_the_collection_become_warnings():
    extra = {
        "judged_docs_absent": 2,
        "judged_docs_absent_examples": ["d8", "d9"],
        "empty_queries": 1,
        "empty_queries_examples": ["q2"],
        "empty_passages": 0,
    }
    warnings = evaluate(RUN, QRELS, dataset="toy", run_name="a", contract_extra=extra).contract["warnings"]
    assert warnings == [
        "a on toy: the qrels judge 2 documents that are not in the collection (e.g. ['d8', 'd9']); "
        "relevant ones count as never retrieved, lowering every recall-sensitive measure",
        "a on toy: 1 queries have empty text (e.g. ['q2']); a model scores them on the passage alone",
    ]


# --- datasets and aggregates ------------------------------------------------------------------


def test_short_names_and_ids_map_both_ways():
    assert short_name("msmarco-passage/trec-dl-2019/judged") == "trec-dl-2019"
    assert short_name("trec-dl-2019") == "trec-dl-2019"
    assert dataset_id("robust04") == "disks45/nocr/trec-robust-2004"
    for dataset in dataset_registry()["datasets"]:
        assert dataset_id(short_name(dataset)) == dataset
    with pytest.raises(KeyError, match="unknown dataset 'msmarco'"):
        short_name("msmarco")


# --- bad inputs -------------------------------------------------------------------------------


def test_disjoint_query_ids_are_refused():
    run = RUN.assign(query_id=RUN["query_id"].str.replace("q", "Q"))
    message = r"run and qrels share no query id: the run has 2 queries \(e\.g\. 'Q1', 'Q2'\), the qrels 2 \(e\.g\. 'q1', 'q2'\)"
    with pytest.raises(ValueError, match=message):
        evaluate(run, QRELS, dataset="toy", run_name="x")


def test_duplicate_query_doc_pairs_are_refused():
    run = pd.concat([RUN, RUN.iloc[[1]].assign(score=0.1)], ignore_index=True)
    with pytest.raises(
        ValueError, match=r"run lists 1 \(query_id, doc_id\) pairs more than once, e\.g\. \('q1', 'd2'\)"
    ):
        evaluate(run, QRELS, dataset="toy", run_name="x")
    qrels = pd.concat([QRELS, QRELS.iloc[[3]]], ignore_index=True)
    with pytest.raises(
        ValueError, match=r"qrels lists 1 \(query_id, doc_id\) pairs more than once, e\.g\. \('q2', 'd4'\)"
    ):
        evaluate(RUN, qrels, dataset="toy", run_name="x")


@pytest.mark.parametrize("bad", ["NDGC@10", "nDCG@x", "nDCG(foo=1)@10", "ndcg_cut_10"])
def test_unknown_measure_strings_are_named(bad):
    with pytest.raises(ValueError, match=f"unknown measure string {bad!r}".replace("(", r"\(").replace(")", r"\)")):
        evaluate(RUN, QRELS, ["nDCG@10", bad], dataset="toy", run_name="x")


def test_other_malformed_inputs():
    with pytest.raises(ValueError, match=r"run DataFrame lacks columns \['score'\]"):
        evaluate(RUN.drop(columns="score"), QRELS, dataset="toy", run_name="x")
    with pytest.raises(ValueError, match=r"run has a non-numeric or non-finite score: nan \(query 'q1', doc 'd1'\)"):
        evaluate(RUN.assign(score=[1, 2, np.nan, 4, 5, 6]), QRELS, dataset="toy", run_name="x")
    with pytest.raises(ValueError, match="qrels relevance must be integer grades"):
        evaluate(RUN, QRELS.assign(relevance=0.5), dataset="toy", run_name="x")
    with pytest.raises(ValueError, match="measure 'MRR@10' is listed twice"):
        evaluate(RUN, QRELS, ["RR@10", "MRR@10"], dataset="toy", run_name="x")
    with pytest.raises(TypeError, match="rel_threshold must be an int"):
        evaluate(RUN, QRELS, dataset="toy", run_name="x", rel_threshold=1.5)
