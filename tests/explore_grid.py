"""A finished demo grid with real rankings, for the explorer's tests: the demo world's BM25
candidates re-scored by simple functions of the judgements (one per objective), each ranking
written as the evaluate notebook writes it (run.trec) and measured with cerepro.evaluation.evaluate, in the
engine's layout (results with contract.json, DONE); margin-mse's teacher lists (the demo world's
teacher pairs, read as the run reads them) scored the same way. Seconds, no model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from test_report import _done

from cerepro.config import paper_seeds
from cerepro.data.datasets import load_candidates, load_collection
from cerepro.data.trec import rank_by_score, write_run
from cerepro.evaluation import teacher
from cerepro.evaluation.evaluate import evaluate, folder_name, save_result
from cerepro.grids import load_grid
from cerepro.paths import write_text_atomic

DATASETS = ("demo:in-domain", "demo:out-of-domain")
# How much each objective's scores follow the judgements, and their noise; margin-mse's are
# nearly constant (a collapsed scorer: its top-k tie to three decimals).
SCORERS = {"bce": (1.0, 1.0), "infonce": (1.6, 0.8), "margin-mse": (0.0004, 0.0003)}
TEACHER_LISTS = 20  # margin-mse's teacher pairs scored (the engine's job scores teacher.LISTS)


def write_ranked_grid(runs: Path, grid: str = "demo", *, backbone: str = "tiny-bert", depth: int = 30) -> Path:
    """``runs/<grid>/`` with the first stage and one seed of each objective of ``SCORERS``."""
    rng = np.random.default_rng(27)
    seed = paper_seeds(1)[0]
    for dataset in DATASETS:
        collection = load_collection(dataset)
        candidates = load_candidates(dataset, "bm25", depth)
        grades = {
            (q, d): g for q, d, g in collection.qrels[["query_id", "doc_id", "relevance"]].itertuples(index=False)
        }
        grade = np.array([grades.get((q, d), 0) for q, d in zip(candidates["query_id"], candidates["doc_id"])], float)
        scored = {"first-stage": candidates["score"].to_numpy()}
        for objective, (signal, noise) in SCORERS.items():
            base = 3.215 if objective == "margin-mse" else 0.0
            scored[f"{backbone}.{objective}.s{seed}"] = base + signal * grade + rng.normal(0, noise, len(grade))
        for run, scores in scored.items():
            ranked = rank_by_score(candidates[["query_id", "doc_id"]].assign(score=scores))
            folder = runs / grid / run / "evaluate" / "results" / folder_name(dataset)
            write_run(ranked, folder / "run.trec", run)
            save_result(evaluate(ranked, collection.qrels, dataset=dataset, run_name=run), folder)
    _write_teacher_lists(runs, grid, f"{backbone}.margin-mse.s{seed}", rng)
    for run in ["first-stage", *(f"{backbone}.{o}.s{seed}" for o in SCORERS)]:
        _done(runs / grid / run / "evaluate", "evaluate", {"run_name": run})  # notebook, meta.json, DONE
    return runs / grid


def _write_teacher_lists(runs: Path, grid: str, run: str, rng) -> None:
    """``evaluate/teacher/`` of ``run`` as the evaluate job writes it, the run's scores drawn as
    its rankings' are (the label as the grade); no train ledger, so ``seen`` is unknown."""
    config = load_grid(grid).evaluation(run).config
    table, _, _ = teacher.lists_table(teacher.teacher_lists(config, TEACHER_LISTS), None)
    signal, noise = SCORERS[config.objective]
    positive = table.groupby("list", sort=False).cumcount() == 0  # a teacher pair: positive, then negative
    table["score"] = 3.215 + signal * positive + rng.normal(0, noise, len(table))
    folder = runs / grid / run / "evaluate" / teacher.FOLDER
    write_text_atomic(folder / "lists.tsv", table[teacher.COLUMNS].to_csv(sep="\t", index=False))
    facts = {"run": run, "source": config.training_source, "lists": TEACHER_LISTS, "groups_read": None}
    write_text_atomic(folder / "teacher.json", json.dumps(facts))
