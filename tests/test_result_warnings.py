"""Results that are quietly wrong or hard to compare are said where the user looks: in the
evaluate notebook's output (what `cerepro run evaluate` executes) and on the book's pages, not
only in a contract.json. One local folder holds every case: qrels judging a document absent from
the collection, a first stage whose scores are all tied, a query with fewer candidates than the
depth, a query whose judgements are all zero, an empty query and an empty passage."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from processes import cerepro_command, run_ok

from cerepro.data.datasets import collection_facts, load_collection

ROOT = Path(__file__).resolve().parents[1]

QUERIES = "q1\tcheap flights to paris\nq2\tboiling point of water\nq3\tstairs\nq4\t \n"
DOCS = (
    "d1\tcheap flights to paris from london\nd2\tparis hotels and flights\n"
    "d3\twater boils at one hundred degrees\nd4\tthe boiling point of water at altitude\n"
    "d5\tflights of stairs\nd6\t \n"
)
QRELS = "q1 0 d1 2\nq1 0 d99 1\nq2 0 d4 1\nq3 0 d5 0\nq4 0 d2 1\n"
# every score 1.0: ranked by doc id, the rank column ignored; q3 has 1 candidate of 3
RUN = (
    "q1 Q0 d1 1 1.0 flat\nq1 Q0 d2 2 1.0 flat\nq1 Q0 d6 3 1.0 flat\n"
    "q2 Q0 d4 1 1.0 flat\nq2 Q0 d3 2 1.0 flat\nq2 Q0 d1 3 1.0 flat\n"
    "q3 Q0 d5 1 1.0 flat\n"
    "q4 Q0 d2 1 1.0 flat\nq4 Q0 d1 2 1.0 flat\nq4 Q0 d3 3 1.0 flat\n"
)

EXPECTED = [
    "3 of 4 queries have every candidate at one score",
    "1 of 4 queries have fewer than the 3 candidates asked for (shortest: 1)",
    "1 of 4 judged queries have only grade-0 judgements",
    "the qrels judge 1 documents that are not in the collection (e.g. ['d99'])",
    "1 queries have empty text (e.g. ['q4'])",
]


def folder(root: Path) -> Path:
    root.mkdir(parents=True)
    for name, text in (("queries.tsv", QUERIES), ("docs.tsv", DOCS), ("qrels.txt", QRELS)):
        (root / name).write_text(text, encoding="utf-8")
    (root / "runs").mkdir()
    (root / "runs" / "flat.trec").write_text(RUN, encoding="utf-8")
    return root


def test_collection_facts_count_absent_judged_docs_and_empty_texts(tmp_path, monkeypatch):
    monkeypatch.setenv("CEREPRO_CACHE", str(tmp_path / "cache"))
    data = folder(tmp_path / "data")
    collection = load_collection(f"local:{data}")
    run = collection.qrels.rename(columns={"relevance": "score"})
    facts = collection_facts(collection, run, {"d5": "flights of stairs", "d6": " "})
    assert facts == {
        "judged_docs_absent": 1,
        "judged_docs_absent_examples": ["d99"],
        "empty_queries": 1,
        "empty_queries_examples": ["q4"],
        "empty_passages": 1,
        "empty_passages_examples": ["d6"],
    }


@pytest.mark.slow
def test_cerepro_run_evaluate_prints_each_warning_and_the_book_shows_them(tmp_path, monkeypatch):
    data = folder(tmp_path / "data")
    runs = tmp_path / "runs"
    out = runs / "demo" / "first-stage" / "evaluate"  # where the book's pages of grid demo look
    env = {**os.environ, "CEREPRO_RUNS": str(runs), "CEREPRO_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    overrides = json.dumps({"eval_datasets": [f"local:{data}"], "first_stage": "run:flat", "candidate_depth": 3})
    run_ok(cerepro_command("run", "evaluate", "-p", f"overrides={overrides}", "--out", str(out)), env=env)
    [executed] = out.glob("*.ipynb")
    printed = "".join(
        "".join(o.get("text", ""))
        for cell in json.loads(executed.read_text())["cells"]
        for o in cell.get("outputs", [])
        if o.get("name") == "stdout"
    )
    for expected in EXPECTED:
        assert f"WARNING: first-stage on local:{data}: {expected}" in printed, expected

    # the book: every page's provenance note lists them
    from cerepro.report import book, tables

    monkeypatch.setenv("CEREPRO_RUNS", str(runs))
    page = book.Page(tables.grid_info("demo"), tables.grid_results("demo"))
    shown = page.provenance().data
    assert ":::{warning}\n**5 evaluation warnings** in `runs/demo/`" in shown
    for expected in EXPECTED:
        assert f"- local:{data}: {expected}" in shown, expected
    assert "(1 evaluation: first-stage)" in shown
