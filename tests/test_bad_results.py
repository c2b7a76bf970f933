"""Results and caches that would be quietly wrong are refused, naming the file or key.

Cases registered for the book's bad-input page (tests/bad_inputs.py); caches that outlive their
inputs are rebuilt rather than refused, and their tests live beside their modules
(test_first_stage, test_training_data, test_datasets, test_demo_world, test_rerank)."""

from __future__ import annotations

from pathlib import Path

import bad_inputs
import pandas as pd
from bad_inputs import case

from cerepro.evaluation.evaluate import ResultError, evaluate, load_results, save_result
from cerepro.fragments import ParamsError
from cerepro.grids import evaluation_settings, load_grid

RUN = pd.DataFrame([("q1", "d1", 2.0), ("q1", "d2", 1.0), ("q2", "d3", 1.0)], columns=["query_id", "doc_id", "score"])
QRELS = pd.DataFrame([("q1", "d1", 1), ("q2", "d3", 1)], columns=["query_id", "doc_id", "relevance"])


@case(
    "a finished result's per_query.csv cut at a line's end (it still parses, with fewer queries)",
    ResultError,
    r"per_query\.csv: \d+ bytes, but .*contract\.json records \d+ bytes \(6 rows\) and their "
    r"sha256: the file was cut or changed after it was saved; delete .* and evaluate again",
)
def per_query_cut_at_a_line(tmp_path: Path):
    folder = save_result(evaluate(RUN, QRELS, dataset="toy", run_name="a"), tmp_path / "results" / "toy")
    table = folder / "per_query.csv"
    table.write_text("".join(table.read_text().splitlines(keepends=True)[:-2]))
    load_results(tmp_path / "results" / "*")


@case(
    "an ad hoc model evaluated under the run id of a grid's trained run (`-p model=... -p run_name=<run id>`)",
    ParamsError,
    r"run_name: 'tiny-bert\.bce\.s\d+' names a run of grid 'demo', but model='org/name' is scored "
    r"ad hoc; give the evaluation a name of its own",
)
def ad_hoc_model_under_a_grid_run_id(tmp_path: Path):
    demo = load_grid("demo")
    evaluation_settings(demo, demo.runs[0].run_id, model="org/name")


test_bad_input_is_refused_with_a_message_naming_it = bad_inputs.cases_test(__name__)
