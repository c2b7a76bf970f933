"""First stage: exact top-k search engines and SPLADE encoding, measured in one run with ratios.

    python benchmarks/first_stage_search.py [--docs 300000] [--queries 200] [--k 1000] [--json out.json]
    python benchmarks/first_stage_search.py --encode-only

Search: one synthetic index shaped like SPLADE-v3 passages (vocabulary 30,522; ~180 non-zero
terms per passage, log-normal; term popularity Zipf-like with a flat head of expansion terms
nearly every passage carries; skewed weights), queries of ~35 expanded terms, quantised to
integer impacts round(100 w) exactly as ``cerepro.retrieval.impacts`` does. Engines, one thread, same
impacts, same k: cerepro's scipy sparse product (exact), impact-index MaxScore and WAND (exact),
PISA block-max WAND through pyterrier-pisa's compiled engine (exact) when its wheel is
available (``PISA_PKGS``: a folder where ``pip install --no-deps --target`` put pyterrier-pisa,
and ``PISA_LIB``: the folder of ``libtbb.so.2`` from the ``tbb==2020.3.254`` wheel; its Python
layer needs ``python-terrier[all]``, which is not installed, so the engine is driven directly).
Every engine's top-k scores are checked equal to scipy's. Memory: bytes per million passages of
each engine's index.

Encode: ``cerepro.retrieval.splade.encode_texts`` (length-sorted token-budget batches, max pooled
before the activation) against a plain per-batch transformers loop (fixed batches in input
order, padded to the batch's longest text, log(1 + relu) on every token then a masked max), on
a DistilBERT-base-shaped masked LM with random weights and passages of MS MARCO-like lengths.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cerepro.retrieval.impacts import _write_shard, build_index, quantise  # noqa: E402
from cerepro.retrieval.search import _doc_major, search  # noqa: E402
from cerepro.retrieval.splade import encode_texts  # noqa: E402
from cerepro.vocab import Precision  # noqa: E402

VOCAB = 30_522


def synthetic(n_docs: int, n_queries: int, seed: int = 0):
    """(docs (D, V), queries (Q, V)) CSR integer impacts shaped like SPLADE-v3's."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, VOCAB + 1) ** 1.05
    popularity[:40] = popularity[40]  # a flat head of expansion terms nearly every passage has
    popularity /= popularity.sum()
    perm = rng.permutation(VOCAB)  # popular terms spread over the vocabulary ids

    def vectors(n, mean_terms, sigma, weight_mu, head_boost):
        lengths = np.clip(rng.lognormal(np.log(mean_terms), sigma, n).astype(int), 5, 600)
        rows = np.repeat(np.arange(n), lengths)
        cols = perm[rng.choice(VOCAB, size=int(lengths.sum()), p=popularity)]
        keys = np.unique(rows.astype(np.int64) * VOCAB + cols)  # a term drawn twice counts once
        rows, cols = keys // VOCAB, keys % VOCAB
        w = rng.lognormal(weight_mu, 0.6, len(keys))
        w[np.isin(cols, perm[:40])] *= head_boost  # expansion terms weigh little
        m = sp.csr_matrix((w.astype(np.float32), (rows, cols)), shape=(n, VOCAB))
        return quantise(m)

    return vectors(n_docs, 180, 0.45, -0.6, 0.3), vectors(n_queries, 35, 0.35, -0.2, 0.5)


def scipy_engine(docs_q, folder):
    """Build the first stage's own index from the impacts (one shard) and search with it."""
    shard = folder / "shards" / "passages-00000.npz"
    shard.parent.mkdir(parents=True)
    _write_shard(shard, [f"d{i}" for i in range(docs_q.shape[0])], docs_q)
    return build_index([shard], folder / "index", {"model": "synthetic", "revision": "-"}, vocab_size=VOCAB)


def impact_index_engine(index, folder):
    import impact_index

    builder = impact_index.IndexBuilder(str(folder))
    for d, (terms, impacts) in enumerate(_doc_major(index)):
        builder.add(d, terms.astype(np.uintp), impacts.astype(np.float32))
    builder.build(in_memory=False)
    return impact_index.Index.load(str(folder), True)


def load_pisa():
    pkgs, lib = os.environ.get("PISA_PKGS"), os.environ.get("PISA_LIB")
    if not pkgs:
        return None, "PISA_PKGS not set"
    so = next(Path(pkgs, "pyterrier_pisa").glob("_pisathon*.so"), None)
    if so is None:
        return None, f"no _pisathon extension under {pkgs}"
    if lib:
        import ctypes

        ctypes.CDLL(str(Path(lib) / "libtbb.so.2"), mode=ctypes.RTLD_GLOBAL)
    loader = importlib.machinery.ExtensionFileLoader("_pisathon", str(so))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("_pisathon", loader))
    loader.exec_module(module)
    return module, next(so.parent.parent.glob("pyterrier_pisa-*.dist-info")).name.removesuffix(".dist-info")


def pisa_engine(pisa, index, folder):
    """Write PISA's uncompressed collection (inv.docs / inv.freqs / inv.sizes, the lexicons)
    straight from the first stage's term-major postings, then let PISA compress it."""
    folder.mkdir(parents=True)
    n_docs = len(index.doc_ids)
    nonempty = np.flatnonzero(np.diff(index.indptr))
    names = sorted(f"t{t}" for t in nonempty)  # PISA wants the lexicon sorted
    with open(folder / "inv.docs", "wb") as f_docs, open(folder / "inv.freqs", "wb") as f_freqs:
        f_docs.write(np.array([1, n_docs], dtype=np.uint32).tobytes())
        for name in names:
            t = int(name[1:])
            lo, hi = index.indptr[t], index.indptr[t + 1]
            f_docs.write(np.r_[hi - lo, np.asarray(index.docs[lo:hi])].astype(np.uint32).tobytes())
            f_freqs.write(np.r_[hi - lo, np.asarray(index.impacts[lo:hi])].astype(np.uint32).tobytes())
    csc = sp.csc_matrix(
        (np.asarray(index.impacts, np.int64), np.asarray(index.docs), index.indptr), shape=(n_docs, index.vocab_size)
    )
    lengths = np.asarray(csc.sum(axis=1)).ravel()
    (folder / "inv.sizes").write_bytes(np.r_[n_docs, lengths].astype(np.uint32).tobytes())
    (folder / "fwd.documents").write_text("".join(f"{d}\n" for d in range(n_docs)))
    (folder / "fwd.terms").write_text("".join(f"{n}\n" for n in names))
    pisa.build_binlex(str(folder / "fwd.documents"), str(folder / "fwd.doclex"))
    pisa.build_binlex(str(folder / "fwd.terms"), str(folder / "fwd.termlex"))
    context = pisa.RetrievalContext()
    pisa.prepare_index(context, str(folder), "block_simdbp", "quantized", "", quantize=0, stop_fname="")
    return context


def pisa_search(pisa, context, queries_q, k):
    queries = []
    for q in range(queries_q.shape[0]):
        lo, hi = queries_q.indptr[q], queries_q.indptr[q + 1]
        queries.append((q, {f"t{t}": float(w) for t, w in zip(queries_q.indices[lo:hi], queries_q.data[lo:hi])}))
    shape = (len(queries) * k,)
    out = dict(
        result_qidxs=np.empty(shape, np.int32),
        result_docnos=np.empty(shape, object),
        result_ranks=np.empty(shape, np.int32),
        result_scores=np.empty(shape, np.float32),
    )
    size = pisa.retrieve(context, "block_max_wand", queries, k=k, threads=1, query_weighted=1, pretokenised=True, **out)
    per_query = [[] for _ in queries]
    for q, s in zip(out["result_qidxs"][:size], out["result_scores"][:size]):
        per_query[q].append(int(round(float(s))))
    return per_query


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def bench_search(args) -> dict:
    docs_q, queries_q = synthetic(args.docs, args.queries)
    work = Path(tempfile.mkdtemp(prefix="first-stage-bench-"))
    out = {
        "docs": args.docs,
        "queries": args.queries,
        "k": args.k,
        "postings": int(docs_q.nnz),
        "terms_per_doc": round(docs_q.nnz / args.docs, 1),
        "terms_per_query": round(queries_q.nnz / args.queries, 1),
        "engines": {},
    }
    try:
        index = scipy_engine(docs_q, work / "cerepro")
        per_million = 1e6 / args.docs
        started = time.perf_counter()
        _, want = search(index, queries_q, args.k)
        seconds = time.perf_counter() - started
        want = [s.tolist() for s in want]
        # in memory: doc numbers + int32 impacts + indptr (the uint16 file copy is not kept)
        ram = index.docs.nbytes + 4 * len(index.docs) + index.indptr.nbytes
        print(f"scipy: {args.queries / seconds:.1f} q/s", file=sys.stderr, flush=True)
        out["engines"]["scipy"] = {
            "qps": args.queries / seconds,
            "index_bytes_per_million": folder_bytes(work / "cerepro" / "index") * per_million,
            "ram_bytes_per_million": ram * per_million,
        }
        try:
            engine = impact_index_engine(index, work / "impact-index")
            for name, call in (
                ("impact-index maxscore", engine.search_maxscore),
                ("impact-index wand", engine.search_wand),
            ):
                got, started = [], time.perf_counter()
                for q in range(queries_q.shape[0]):
                    lo, hi = queries_q.indptr[q], queries_q.indptr[q + 1]
                    found = call(
                        {int(t): float(w) for t, w in zip(queries_q.indices[lo:hi], queries_q.data[lo:hi])},
                        top_k=args.k,
                    )
                    got.append(sorted((round(r.score) for r in found), reverse=True))
                seconds = time.perf_counter() - started
                print(f"{name}: {args.queries / seconds:.1f} q/s", file=sys.stderr, flush=True)
                out["engines"][name] = {
                    "qps": args.queries / seconds,
                    "index_bytes_per_million": folder_bytes(work / "impact-index") * per_million,
                    "same_top_k_scores": got == want,
                }
        except ImportError as exc:
            out["engines"]["impact-index"] = {"error": f"not installed: {exc}"}
        pisa, origin = load_pisa()
        if pisa is None:
            out["engines"]["pisa"] = {"error": origin}
        else:
            context = pisa_engine(pisa, index, work / "pisa")
            started = time.perf_counter()
            got = pisa_search(pisa, context, queries_q, args.k)
            seconds = time.perf_counter() - started
            print(f"pisa: {args.queries / seconds:.1f} q/s", file=sys.stderr, flush=True)
            out["engines"]["pisa block-max wand"] = {
                "qps": args.queries / seconds,
                "origin": origin,
                "same_top_k_scores": got == want,
                "index_bytes_per_million": sum(
                    p.stat().st_size
                    for p in (work / "pisa").glob("*")
                    if p.suffix in (".block_simdbp", ".bmw", ".termlex", ".doclex")
                )
                * per_million,
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = out["engines"]["scipy"]["qps"]
    for row in out["engines"].values():
        if "qps" in row:
            row["vs_scipy"] = row["qps"] / base
    return out


def bench_encode(args) -> dict:
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = "bf16" if device.type == "cuda" else "fp32"
    model = DistilBertForMaskedLM(DistilBertConfig(vocab_size=VOCAB)).eval().to(device)  # distilbert-base shape
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(70), 0.5, args.passages).astype(int), 8, 254)
    texts = [" ".join(f"w{rng.integers(1000)}" for _ in range(n)) for n in lengths]

    class Tok:  # a word-level tokenizer stand-in with the fast tokenizer's call signature
        pad_token_id = 0

        def __call__(self, batch, **kwargs):
            ids = [[101] + [1000 + int(w[1:]) for w in t.split()][: kwargs["max_length"] - 2] + [102] for t in batch]
            return {"input_ids": ids}

    tok = Tok()
    started = time.perf_counter()
    ours = encode_texts(model, tok, texts, max_length=256, precision=precision)
    if device.type == "cuda":
        torch.cuda.synchronize()
    ours_s = time.perf_counter() - started

    started = time.perf_counter()
    plain = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), autocast:
        for i in range(0, len(texts), args.batch_size):
            ids = tok(texts[i : i + args.batch_size], max_length=256)["input_ids"]
            width = max(map(len, ids))
            input_ids = torch.tensor([row + [0] * (width - len(row)) for row in ids])
            mask = (torch.arange(width)[None] < torch.tensor([len(r) for r in ids])[:, None]).long()
            input_ids, mask = input_ids.to(device), mask.to(device)
            logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
            plain.append((torch.log1p(torch.relu(logits)) * mask[..., None]).amax(1).cpu())
    if device.type == "cuda":
        torch.cuda.synchronize()
    plain_s = time.perf_counter() - started
    plain = torch.cat(plain).numpy()
    # matmul FLOPs: 2 x parameters (the MLM head tied to the embeddings counts once per token)
    flops = 2 * sum(p.numel() for p in model.parameters()) * float((lengths + 2).sum())
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else ""
    peak = Precision.parse(precision, scoring=True).peak_tflops(gpu) if gpu else None
    return {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "precision": precision,
        "mfu": flops / ours_s / (peak * 1e12) if peak else None,
        "passages": args.passages,
        "mean_tokens": float(lengths.mean() + 2),
        "ours_passages_per_s": args.passages / ours_s,
        "plain_passages_per_s": args.passages / plain_s,
        "speedup": plain_s / ours_s,
        "max_abs_diff": float(np.abs(ours.toarray() - plain).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=300_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--passages", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--encode-only", action="store_true")
    parser.add_argument("--search-only", action="store_true")
    parser.add_argument("--json", help="also write the report here (PISA logs to stdout)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 thread used",
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    if not args.encode_only:
        report["search"] = bench_search(args)
    if not args.search_only:
        report["encode"] = bench_encode(args)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
