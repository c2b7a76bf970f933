"""Learning check: every objective trains a demo backbone that beats BM25 on the demo world.

For each objective, ``fit()`` trains the backbone with the ``demo`` profile (300 steps, validation on
``demo:validation``, best checkpoint kept), then the selected model re-ranks BM25's top candidates
of ``demo:in-domain`` (the profile's ``candidate_depth``) and nDCG@10 is compared with BM25's on the
same candidates. Synthetic numbers: they show that training works, not how MS MARCO behaves.

    python benchmarks/learning_check.py                       # tiny-bert, all objectives
    python benchmarks/learning_check.py --backbone tiny-modernbert --objectives bce infonce
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from cerepro.config import load_config  # noqa: E402
from cerepro.data import datasets  # noqa: E402
from cerepro.data.tokenize import encoding_options  # noqa: E402
from cerepro.evaluation import evaluate, rerank
from cerepro.model import models
from cerepro.objectives import registry  # noqa: E402
from cerepro.training.launch import add_set_option, set_overrides  # noqa: E402
from cerepro.training.train import fit  # noqa: E402

DATASET = "demo:in-domain"


def ndcg(run, collection, name: str) -> float:
    return evaluate.evaluate(run, collection.qrels, ["nDCG@10"], dataset=DATASET, run_name=name).mean("nDCG@10")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="tiny-bert")
    parser.add_argument("--objectives", nargs="+", default=list(registry()))
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    add_set_option(parser, "override a params key for every run (YAML value), e.g. --set cpus=1")
    parser.add_argument("--output", help="folder for the runs (default: a temporary folder)")
    parser.add_argument("--json", help="write the table here")
    args = parser.parse_args()

    overrides = set_overrides(args.set)
    output = Path(args.output or tempfile.mkdtemp(prefix="cerepro-learning-"))
    rows = []
    for objective in args.objectives:
        config = load_config(args.backbone, objective, args.seed, args.profile, overrides)
        collection = datasets.load_collection(DATASET)
        candidates = datasets.load_candidates(DATASET, config.first_stage, config.candidate_depth)
        if not rows:
            rows.append(
                {
                    "run": f"{config.first_stage} top-{config.candidate_depth}",
                    "nDCG@10": ndcg(candidates, collection, "bm25"),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        started = time.perf_counter()
        summary = fit(config, output / config.run_id)
        model, tokenizer = models.load_cross_encoder(summary["model_dir"])
        docs = dict(zip(candidates["doc_id"].unique(), collection.doc_text(candidates["doc_id"].unique())))
        run = rerank.rerank(
            model,
            tokenizer,
            candidates,
            collection.queries,
            docs,
            **encoding_options(config),
            precision="fp32",
            progress=False,
        )  # fp32: bf16 logits tie close candidates
        rows.append(
            {
                "run": config.run_id,
                "nDCG@10": ndcg(run, collection, config.run_id),
                "best_step": summary["best_step"],
                "validation": summary["best_value"],
                "train_s": summary["compute"]["train_s"],
                "wall_s": time.perf_counter() - started,
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    bm25 = rows[0]["nDCG@10"]
    print(
        f"\n{DATASET} nDCG@10 (synthetic demo world), {args.backbone}, profile {args.profile}, seed {args.seed}"
        f"{', ' + ', '.join(args.set) if args.set else ''}\n"
    )
    print(f"| run | nDCG@10 | vs BM25 | best step | validation {config.validation_measure} | train s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        delta = "" if row is rows[0] else f"{row['nDCG@10'] - bm25:+.4f}"
        extra = (
            "| | |" if row is rows[0] else f"| {row['best_step']} | {row['validation']:.4f} | {row['train_s']:.0f} |"
        )
        print(f"| {row['run']} | {row['nDCG@10']:.4f} | {delta} {extra}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    beaten = [r["run"] for r in rows[1:] if r["nDCG@10"] <= bm25]
    if beaten:
        sys.exit(f"not better than BM25: {', '.join(beaten)}")


if __name__ == "__main__":
    main()
