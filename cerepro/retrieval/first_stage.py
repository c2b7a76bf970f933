"""The learned sparse first stage: SPLADE encoding, a quantised impact index, exact top-k runs.

The paper re-ranks the top-1000 of ``naver/splade-v3-distilbert`` on every test collection and
its top-100 on the NanoBEIR validation sets; like the authors (``precompute_first_stage``), the
grid computes each list once and every model re-ranks the same file. ``produce_run(dataset_id,
name)`` is that one call: ``name`` is ``<model slug>-top<depth>`` with the slug from
``params/first_stage.yaml``, and the run lands where ``load_candidates(dataset_id,
"run:<name>", depth)`` reads it.

- **Encoding** (``encode_texts``): a masked LM's logits (B, L, V); the weight of term v is
  ``max_t log(1 + relu(logits[t, v]))`` over the non-padding positions t (SPLADE's max pooling).
  Texts are length-sorted and batched by a token budget (``cerepro.data.tokenize``), bf16 on CUDA.
- **Quantisation**: impacts ``round(100 * w)`` as integers (weights under 0.005 vanish), for
  passages and queries alike, so a score is an exact integer and every engine agrees on it.
- **Index**: passages are encoded in shards (``passages-00000.npz``...) written atomically, so a
  killed job resumes at the first missing shard; the shards are then inverted into term-major
  postings (a CSC matrix: ``indptr`` per term, doc numbers, impacts) with a manifest (model,
  revision, quantisation, sizes, timings). Index and shards live under
  ``cache_dir()/splade/<model>-<passages>-<hash of model, revision, passages, length,
  quantisation>/``: collections that share passages
  (MS MARCO dev, TREC DL 2019 and 2020) share one index.
- **Search** (``search``): the exhaustive sparse product of each query with the postings, in
  scipy (term-at-a-time, exact; chosen on ``benchmarks/first_stage_search.py``: at k = 1000 it
  beat PISA's block-max WAND and impact-index's MaxScore about 4x), or impact-index's exact
  MaxScore on the same impacts. Tie rule: documents are ranked by score, then by doc id
  descending (trec_eval's order); at the depth cut-off, of the documents tied with the last kept
  score, those first in that order are kept (impact-index picks its own among those tied at the
  cut-off). Documents with score 0 are never returned. Query vectors are encoded at search time
  (seconds), not cached.
- **Run**: written atomically as ``<name>.trec`` with ``<name>.json`` beside it (what produced
  it, its rows and checksum); ``cerepro.data.datasets`` refuses a run that no longer matches it.
- **Stages**: the grid runs them as separate jobs so that no GPU waits on a CPU:
  ``prepare_index(..., "encode")`` (the shards, on the GPU), ``prepare_index(..., "index")`` (the
  index from the shards, one CPU; a missing shard is refused, never encoded there) and
  ``produce_run(..., encode=False, threads=N)`` (queries, search and run on N CPU threads).

Bad input fails before encoding with :class:`FirstStageError` naming the file: a checkpoint that
is not a masked LM, a collection without passages or queries, an index built by another model
revision, a truncated index, a run that does not match its manifest.

This module retrieves; it never trains or re-ranks.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import re
import sys
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cerepro.data.datasets import check_run_manifest, load_collection, run_manifest_path
from cerepro.data.tokenize import PairEncoding, padded_batch, token_budget_batches
from cerepro.data.trec import RUN_COLUMNS, write_run
from cerepro.paths import atomic_dir, atomic_path, cache_dir, file_sha256
from cerepro.vocab import CandidateSource, FirstStageError, Precision, first_stage_models

if TYPE_CHECKING:  # scipy is imported where it is used
    import scipy.sparse

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when shard or index arrays change meaning
SCALE = 100  # impacts are round(SCALE * weight)
DEFAULT_SHARD_SIZE = 100_000  # passages per shard: minutes of GPU work, so little is lost
ENGINES = ("scipy", "impact-index")
DEFAULT_ENGINE = "scipy"
BLOCK_POSTINGS = 2**31 - 1  # scipy keeps int32 indices only below this many postings a matrix
# Tiny masked LM for offline tests: DistilBERT's shape (no token types), 2 layers, hidden 64.
TINY_MLM = {"n_layers": 2, "dim": 64, "n_heads": 4, "hidden_dim": 256, "dropout": 0.0, "attention_dropout": 0.0}


# ---------------------------------------------------------------------------------------------
# The encoder


def load_encoder(hf_id: str, revision: str | None = None, *, device: str | torch.device | None = None):
    """``(model, tokenizer, identity)`` of a SPLADE checkpoint; identity = {model, revision}.

    The revision is the hub commit when the checkpoint came from the hub, else a fingerprint of
    the weights, so an index is never searched with queries of another model.
    """
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    if hf_id == "builtin:splade":
        model, tokenizer = tiny_mlm()
    else:
        source = Path(hf_id).expanduser()
        where = source / "config.json" if source.is_dir() else f"{hf_id} (config.json)"
        config = AutoConfig.from_pretrained(str(source) if source.is_dir() else hf_id, revision=revision)
        archs = list(getattr(config, "architectures", None) or [])
        if not any(a.endswith("ForMaskedLM") for a in archs):
            raise FirstStageError(
                f"{where}: not a masked language model (architectures {archs}); a "
                "SPLADE first stage needs an *ForMaskedLM checkpoint such as "
                "naver/splade-v3-distilbert"
            )
        model, info = AutoModelForMaskedLM.from_pretrained(
            str(source) if source.is_dir() else hf_id, revision=revision, output_loading_info=True
        )
        if info.get("missing_keys"):
            raise FirstStageError(
                f"{where}: the masked-LM head is missing from the weights "
                f"({info['missing_keys'][:4]}); not a SPLADE checkpoint"
            )
        tokenizer = AutoTokenizer.from_pretrained(str(source) if source.is_dir() else hf_id, revision=revision)
    if device is not None:
        model.to(device)
    model.eval()
    commit = getattr(model.config, "_commit_hash", None)
    identity = {"model": hf_id, "revision": commit or f"weights:{weights_fingerprint(model)[:16]}"}
    return model, tokenizer, identity


def tiny_mlm(seed: int = 0):
    """A random DistilBERT-shaped masked LM over the demo tokenizer (offline tests and grids)."""
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    from cerepro.model.models import demo_tokenizer

    tokenizer = demo_tokenizer("bert", max_length=512)
    config = DistilBertConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, max_position_embeddings=512, **TINY_MLM
    )
    torch.manual_seed(seed)
    model = DistilBertForMaskedLM(config)
    model.config.name_or_path = "builtin:splade"
    return model.eval(), tokenizer


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes: the identity of weights without a hub commit."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.state_dict().items():
            h.update(name.encode())
            h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def tokenize_texts(tokenizer, texts: Sequence[str], max_length: int) -> PairEncoding:
    """Each text with the tokenizer's single-sequence template, cut to ``max_length`` tokens."""
    ids = tokenizer(
        [str(t) for t in texts],
        truncation=True,
        max_length=max_length,
        add_special_tokens=True,
        return_attention_mask=False,
        return_token_type_ids=False,
    )["input_ids"]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((t for row in ids for t in row), dtype=np.int64, count=int(lengths.sum()))
    return PairEncoding(input_ids=flat, offsets=offsets)


def splade_pool(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L, V) logits, (B, L) mask -> (B, V) float32 weights ``max_t log(1 + relu(x))``.

    log1p and relu are monotone, so the max is taken over the raw logits first (padding set to
    -inf) and the activation applied to (B, V) only: the same values, L times less work.
    """
    masked = logits.masked_fill(~attention_mask.bool()[:, :, None], float("-inf"))
    return torch.log1p(torch.relu(masked.amax(dim=1).float()))


def encode_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    max_length: int,
    max_tokens: int | None = None,
    precision: str = "auto",
    progress: bool | tqdm = False,
) -> scipy.sparse.csr_matrix:
    """SPLADE weights of ``texts`` as a CSR matrix (N, V) float32, rows in ``texts``' order."""
    import scipy.sparse as sp

    from cerepro.evaluation.rerank import autocast_to, resolve_precision

    device = next(model.parameters()).device
    precision = resolve_precision(precision, device)
    encoding = tokenize_texts(tokenizer, texts, max_length)
    max_tokens = max_tokens or (65_536 if device.type == "cuda" else 8_192)
    vocab = model.get_output_embeddings().out_features
    bar = (
        progress
        if isinstance(progress, tqdm)
        else tqdm(total=len(texts), unit="text", desc="encode", disable=not progress)
    )
    rows, cols, vals = [], [], []
    fp32 = next(model.parameters()).dtype == torch.float32
    autocast = autocast_to(Precision.parse(precision, scoring=True), device, enabled=fp32)
    with torch.inference_mode(), autocast:
        for indices in token_budget_batches(encoding.lengths, max_tokens):
            batch = {
                k: v.to(device, non_blocking=True)
                for k, v in padded_batch(encoding, indices, tokenizer.pad_token_id).items()
            }
            weights = splade_pool(model(**batch).logits, batch["attention_mask"])  # (B, V)
            nz = weights.nonzero()  # (nnz, 2): row within batch, term
            rows.append(torch.as_tensor(indices, device=device)[nz[:, 0]].cpu().numpy())
            cols.append(nz[:, 1].cpu().numpy())
            vals.append(weights[nz[:, 0], nz[:, 1]].cpu().numpy())
            bar.update(len(indices))
    if not isinstance(progress, tqdm):
        bar.close()

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    matrix = sp.csr_matrix(
        (cat(vals, np.float32), (cat(rows, np.int64), cat(cols, np.int64))), shape=(len(texts), vocab)
    )
    matrix.sort_indices()
    return matrix


def quantise(weights) -> scipy.sparse.csr_matrix:
    """Integer impacts ``round(SCALE * w)`` as uint16, zeros dropped (the index's weights)."""
    q = weights.copy()
    q.data = np.rint(q.data.astype(np.float64) * SCALE)
    if q.data.size and q.data.max() > np.iinfo(np.uint16).max:
        raise FirstStageError(f"a weight of {q.data.max() / SCALE:.1f} overflows the uint16 impacts")
    q.data = q.data.astype(np.uint16)
    q.eliminate_zeros()
    return q


# ---------------------------------------------------------------------------------------------
# The index: shards of quantised passage vectors, inverted into term-major postings


@dataclass
class ImpactIndex:
    """Term-major postings of quantised passage impacts (a CSC matrix of shape (V, D))."""

    indptr: np.ndarray  # (V + 1,) int64: term t's postings are [indptr[t], indptr[t + 1])
    docs: np.ndarray  # (P,) int32: doc numbers, increasing within each term
    impacts: np.ndarray  # (P,) uint16
    doc_ids: np.ndarray  # (D,) str
    id_order: np.ndarray  # (D,) int64: rank of each doc id in descending string order (ties)
    manifest: dict
    folder: Path | None = None

    @property
    def vocab_size(self) -> int:
        return len(self.indptr) - 1

    @property
    def max_impact(self) -> np.ndarray:
        """(V,) the largest impact of each term's postings (0 for an empty list)."""
        out = np.zeros(self.vocab_size, dtype=np.int64)
        nonempty = np.flatnonzero(np.diff(self.indptr))
        if len(nonempty):
            out[nonempty] = np.maximum.reduceat(self.impacts, self.indptr[nonempty])
        return out


INDEX_ARRAYS = ("indptr", "docs", "impacts", "doc_ids", "id_order")


def index_key(identity: dict, docs_key: str, max_length: int) -> str:
    """The cache folder name of an index: model, revision, passages, length, quantisation."""
    facts = json.dumps(
        {**identity, "docs": docs_key, "max_length": max_length, "scale": SCALE, "format": FORMAT_VERSION},
        sort_keys=True,
    )
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{identity['model'].split('/')[-1]}-{docs_key}")[:60]
    return f"{slug}-{hashlib.sha256(facts.encode()).hexdigest()[:12]}"


def build_index(shards: Sequence[Path], folder: Path, meta: dict, *, vocab_size: int) -> ImpactIndex:
    """Invert passage shards into term-major postings in ``folder``, atomically.

    Two passes over the shards (count per term, then fill), so memory holds the postings once,
    never a second sorted copy: MS MARCO's ~1.5 billion postings fit in 6 bytes each.
    """
    started = time.perf_counter()
    counts = np.zeros(vocab_size, dtype=np.int64)
    n_docs = 0
    for path in shards:
        shard = _read_shard(path)
        counts += np.bincount(shard["terms"], minlength=vocab_size)[:vocab_size]
        n_docs += len(shard["doc_ids"])
    indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    docs = np.empty(int(indptr[-1]), dtype=np.int32)
    impacts = np.empty(int(indptr[-1]), dtype=np.uint16)
    cursor = indptr[:-1].copy()
    doc_ids, first = [], 0
    for path in tqdm(shards, desc="invert shards", unit="shard", disable=len(shards) < 4):
        shard = _read_shard(path)
        lengths = np.diff(shard["offsets"])
        doc_of = np.repeat(np.arange(first, first + len(lengths), dtype=np.int32), lengths)
        order = np.argsort(shard["terms"], kind="stable")  # by term, doc order kept within a term
        terms = shard["terms"][order]
        starts = np.flatnonzero(np.r_[True, terms[1:] != terms[:-1]]) if len(terms) else np.zeros(0, int)
        run_lengths = np.diff(np.r_[starts, len(terms)])
        within = np.arange(len(terms)) - np.repeat(starts, run_lengths)
        at = cursor[terms] + within
        docs[at] = doc_of[order]
        impacts[at] = shard["impacts"][order]
        np.add.at(cursor, terms[starts], run_lengths)
        doc_ids.append(shard["doc_ids"])
        first += len(lengths)
    doc_ids = np.concatenate(doc_ids) if doc_ids else np.zeros(0, dtype="<U1")
    id_order = np.empty(len(doc_ids), dtype=np.int64)
    id_order[np.argsort(doc_ids, kind="stable")[::-1]] = np.arange(len(doc_ids))
    arrays = {"indptr": indptr, "docs": docs, "impacts": impacts, "doc_ids": doc_ids, "id_order": id_order}
    manifest = {
        **meta,
        "format": FORMAT_VERSION,
        "scale": SCALE,
        "docs_count": int(n_docs),
        "vocab_size": int(vocab_size),
        "postings": int(indptr[-1]),
        "index_seconds": round(time.perf_counter() - started, 3),
    }
    with atomic_dir(folder, "manifest.json") as tmp:
        files = {}
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
            files[f"{name}.npy"] = {
                "bytes": (tmp / f"{name}.npy").stat().st_size,
                "shape": list(array.shape),
                "dtype": array.dtype.str,
            }
        manifest["files"] = files
        manifest["index_bytes"] = sum(f["bytes"] for f in files.values())
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return load_index(folder)


def load_index(folder: Path, identity: dict | None = None) -> ImpactIndex:
    """The index in ``folder``, memory-mapped, checked against its manifest (and, with
    ``identity``, against the query encoder: model and revision must be the index's)."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise FirstStageError(f"{manifest_path}: no readable index manifest ({exc})") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise FirstStageError(
            f"{manifest_path}: index format {manifest.get('format')}, this cerepro "
            f"reads {FORMAT_VERSION}; delete {folder} to rebuild it"
        )
    if identity is not None:
        for key in ("model", "revision"):
            if manifest.get(key) != identity[key]:
                raise FirstStageError(
                    f"{manifest_path}: index built with {key} {manifest.get(key)!r}, but the query "
                    f"encoder is {identity[key]!r}; queries and passages must come from one model "
                    f"(delete {folder} or encode the queries with the index's model)"
                )
    arrays = {}
    for name in INDEX_ARRAYS:
        path = folder / f"{name}.npy"
        expected = manifest["files"][f"{name}.npy"]
        size = path.stat().st_size if path.is_file() else None
        if size != expected["bytes"]:
            raise FirstStageError(
                f"{path}: truncated or missing index file ({size} bytes, the "
                f"manifest says {expected['bytes']}); delete {folder} to rebuild it"
            )
        try:
            array = np.load(path, mmap_mode="r" if name in ("docs", "impacts") else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise FirstStageError(f"{path}: unreadable index file ({exc}); delete {folder}") from None
        if list(array.shape) != expected["shape"] or array.dtype.str != expected["dtype"]:
            raise FirstStageError(
                f"{path}: shape {array.shape} {array.dtype.str}, the manifest says "
                f"{expected['shape']} {expected['dtype']}; delete {folder}"
            )
        arrays[name] = array
    if arrays["indptr"][-1] != len(arrays["docs"]) or len(arrays["doc_ids"]) != manifest["docs_count"]:
        raise FirstStageError(f"{folder}: postings and doc ids disagree with {manifest_path}")
    return ImpactIndex(**arrays, manifest=manifest, folder=folder)


def _shard_path(folder: Path, k: int) -> Path:
    return folder / f"passages-{k:05d}.npz"


def _write_shard(path: Path, doc_ids: Sequence[str], q) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            doc_ids=np.asarray(doc_ids, dtype=str),
            offsets=q.indptr.astype(np.int64),
            terms=q.indices.astype(np.int32),
            impacts=q.data.astype(np.uint16),
            meta=np.asarray(json.dumps({"format": FORMAT_VERSION, "scale": SCALE})),
        )


def _read_shard(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            shard = {k: npz[k] for k in ("doc_ids", "offsets", "terms", "impacts")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise FirstStageError(f"{path}: unreadable passage shard ({exc}); delete it to re-encode") from None
    if shard["offsets"][-1] != len(shard["terms"]) or len(shard["offsets"]) != len(shard["doc_ids"]) + 1:
        raise FirstStageError(f"{path}: inconsistent passage shard; delete it to re-encode")
    return shard


def _intact_shard(path: Path, size: int) -> bool:
    """A shard on disk that reads whole and holds ``size`` passages; one that does not (cut by
    a copy, a full disk) is named and encoded again, not trusted on its name."""
    try:
        shard = _read_shard(path)
        if len(shard["doc_ids"]) != size:
            raise FirstStageError(f"{path}: {len(shard['doc_ids'])} passages, {size} expected")
    except FirstStageError as exc:
        print(f"cerepro: {str(exc).replace('; delete it to re-encode', '')}: encoding it again", file=sys.stderr)
        return False
    return True


def encode_passages(
    passages: Iterable[tuple[str, str]],
    total: int,
    model,
    tokenizer,
    folder: Path,
    *,
    max_length: int,
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_tokens: int | None = None,
    precision: str = "auto",
    progress: bool = True,
    encode: bool = True,
) -> list[Path]:
    """Encode ``(doc id, text)`` pairs into quantised shards of ``shard_size`` passages in
    ``folder``; shards already on disk are kept (a killed job resumes at the first missing one).
    With ``encode=False`` every shard must be on disk already (else FirstStageError)."""
    folder.mkdir(parents=True, exist_ok=True)
    n_shards = -(-total // shard_size)
    paths = [_shard_path(folder, k) for k in range(n_shards)]
    done = sum(1 for p in paths if p.is_file())
    if not encode:
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise FirstStageError(
                f"{missing[0]}: passage shard missing ({len(missing)} of {n_shards}); "
                "the collection's encode job (python -m cerepro.retrieval.first_stage --stage "
                "encode) writes the shards before the index is built"
            )
        return paths  # encoded and checked against the collection when they were written
    bar = tqdm(total=total, unit="passage", desc="encode passages", disable=not progress)
    iterator = iter(passages)
    for k, path in enumerate(paths):
        size = min(shard_size, total - k * shard_size)
        if path.is_file() and _intact_shard(path, size):
            next(islice(iterator, size - 1, size), None)  # skip its passages without encoding
            bar.update(size)
            continue
        chunk = list(islice(iterator, size))
        if len(chunk) != size:
            raise FirstStageError(
                f"{folder}: the collection yielded {k * shard_size + len(chunk)} passages, {total} were announced"
            )
        ids, texts = zip(*chunk)
        weights = encode_texts(
            model, tokenizer, texts, max_length=max_length, max_tokens=max_tokens, precision=precision, progress=bar
        )
        _write_shard(path, ids, quantise(weights))
    bar.close()
    if next(iterator, None) is not None:
        raise FirstStageError(
            f"{folder}: the collection yields more than the {total} passages it "
            f"counts (duplicate doc ids?); nothing past them would be indexed"
        )
    if done:
        log.info("%s: %d of %d shards were already encoded", folder, done, n_shards)
    return paths


# ---------------------------------------------------------------------------------------------
# Search


def search(
    index: ImpactIndex,
    queries,
    depth: int,
    *,
    engine: str = DEFAULT_ENGINE,
    progress: bool = False,
    block_postings: int = BLOCK_POSTINGS,
    threads: int = 1,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Exact top-``depth`` of each row of ``queries`` (a CSR matrix (Q, V) of integer impacts):
    per query, doc numbers and integer scores, ranked by the module's tie rule.

    ``threads`` > 1 searches queries side by side in a thread pool (scipy's sparse product and
    numpy's sorts release the GIL; the postings are shared, not copied). Each query's result is
    computed exactly as on one thread and returned in the queries' order, so the run is
    identical. impact-index's engine is searched on one thread (its thread safety is not
    documented)."""
    if engine not in ENGINES:
        raise FirstStageError(f"unknown search engine {engine!r}; known: {', '.join(ENGINES)}")
    if queries.shape[1] != index.vocab_size:
        raise FirstStageError(f"queries have {queries.shape[1]} terms, the index {index.vocab_size}")
    if threads < 1:
        raise FirstStageError(f"threads must be at least 1, got {threads}")
    search_one = _scipy(index, block_postings) if engine == "scipy" else _impact_index(index)

    def one(q):
        lo, hi = queries.indptr[q], queries.indptr[q + 1]
        return search_one(queries.indices[lo:hi], queries.data[lo:hi].astype(np.int64), depth)

    bar = tqdm(total=queries.shape[0], desc=f"search ({engine})", unit="query", disable=not progress)
    found = []
    if threads == 1 or engine != "scipy" or queries.shape[0] < 2:
        for q in range(queries.shape[0]):
            found.append(one(q))
            bar.update()
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=threads) as pool:
            for result in pool.map(one, range(queries.shape[0])):  # results in the queries' order
                found.append(result)
                bar.update()
    bar.close()
    return [d for d, _ in found], [s for _, s in found]


def _rank(index: ImpactIndex, docs: np.ndarray, scores: np.ndarray, depth: int):
    """Sort by score descending, then doc id descending, and cut at ``depth``."""
    order = np.lexsort((index.id_order[docs], -scores))[:depth]
    return docs[order], scores[order]


def _scipy(index: ImpactIndex, block_postings: int = BLOCK_POSTINGS):
    """The exhaustive sparse product ``q (1, V) @ postings (V, D)`` per query: scipy's
    term-at-a-time accumulation in C over every posting of the query's terms (exact).

    The postings are cut into blocks of consecutive documents with fewer than
    ``block_postings`` postings each, so every block keeps int32 doc numbers (8 bytes a posting
    with the int32 impacts; one matrix over MS MARCO's ~1.5 billion postings would need int64,
    12 bytes); each block's hits are merged before the top-k cut."""
    import threading

    import scipy.sparse as sp

    max_impact = index.max_impact
    blocks = _doc_blocks(index, block_postings)
    matrices = {}
    building = threading.Lock()  # threads share one copy of the postings, built once

    def postings(dtype):  # int32 impacts unless a query's score bound says otherwise
        with building:
            if dtype not in matrices:
                matrices[dtype] = [(first, _block_matrix(index, first, last, dtype)) for first, last in blocks]
            return matrices[dtype]

    def one(terms, weights, depth):
        bound = int((weights * max_impact[terms]).sum()) if len(terms) else 0
        dtype = np.int32 if bound < np.iinfo(np.int32).max else np.int64
        query = sp.csr_matrix((weights.astype(dtype), terms, [0, len(terms)]), shape=(1, index.vocab_size))
        hits, scores = [], []
        for first, matrix in postings(dtype):
            row = query @ matrix  # (1, block docs) sparse: only documents sharing a term
            hits.append(row.indices.astype(np.int64) + first)
            scores.append(row.data.astype(np.int64))
        hits, scores = np.concatenate(hits), np.concatenate(scores)
        if len(hits) > depth:  # keep every document tied with the depth-th score, then rank
            kth = np.partition(scores, len(scores) - depth)[len(scores) - depth]
            keep = scores >= kth
            hits, scores = hits[keep], scores[keep]
        return _rank(index, hits, scores, depth)

    return one


def _doc_blocks(index: ImpactIndex, block_postings: int) -> list[tuple[int, int]]:
    """Consecutive document ranges ``[first, last)`` with at most ``block_postings`` postings."""
    n_docs = len(index.doc_ids)
    ends = np.cumsum(np.bincount(np.asarray(index.docs), minlength=n_docs))  # postings up to doc d
    blocks, first = [], 0
    while first < n_docs:
        before = ends[first - 1] if first else 0
        last = max(first + 1, int(np.searchsorted(ends, before + block_postings, side="right")))
        blocks.append((first, min(last, n_docs)))
        first = last
    return blocks


def _block_matrix(index: ImpactIndex, first: int, last: int, dtype):
    """The (V, last - first) postings of documents ``[first, last)``: doc numbers increase
    within a term, so each term's slice is one contiguous run found by binary search."""
    import scipy.sparse as sp

    docs = np.asarray(index.docs)
    if first == 0 and last == len(index.doc_ids):
        return sp.csr_matrix(
            (np.asarray(index.impacts, dtype=dtype), docs, index.indptr), shape=(index.vocab_size, last - first)
        )
    starts, stops = index.indptr[:-1], index.indptr[1:]
    lo = np.array([s + np.searchsorted(docs[s:e], first) for s, e in zip(starts, stops)], dtype=np.int64)
    hi = np.array([s + np.searchsorted(docs[s:e], last) for s, e in zip(starts, stops)], dtype=np.int64)
    from cerepro.data.tokenize import _ranges

    take = _ranges(lo, hi - lo)
    indptr = np.zeros(index.vocab_size + 1, dtype=np.int64)
    np.cumsum(hi - lo, out=indptr[1:])
    return sp.csr_matrix(
        ((np.asarray(index.impacts)[take]).astype(dtype), (docs[take] - first).astype(np.int32), indptr),
        shape=(index.vocab_size, last - first),
    )


def _impact_index(index: ImpactIndex):
    """impact-index's MaxScore over the same integer impacts (built once next to the index)."""
    import impact_index

    if index.folder is None:
        raise FirstStageError("the impact-index engine searches an index saved on disk (build_index)")
    folder = index.folder / "impact-index"
    if not (folder / "manifest.json").is_file():
        with atomic_dir(folder, "manifest.json") as tmp:
            builder = impact_index.IndexBuilder(str(tmp))
            by_doc = _doc_major(index)
            for d, (terms, impacts) in enumerate(by_doc):
                builder.add(d, terms.astype(np.uintp), impacts.astype(np.float32))
            builder.build(in_memory=False)
    engine = impact_index.Index.load(str(folder), True)

    def one(terms, weights, depth):
        query = {int(t): float(w) for t, w in zip(terms, weights)}
        found = engine.search_maxscore(query, top_k=depth)
        docs = np.fromiter((r.docid for r in found), dtype=np.int64, count=len(found))
        # impact-index sums in float32: integer scores stay exact below 2^24 (SPLADE's are ~1e5)
        scores = np.fromiter((round(r.score) for r in found), dtype=np.int64, count=len(found))
        keep = scores > 0
        return _rank(index, docs[keep], scores[keep], depth)

    return one


def _doc_major(index: ImpactIndex):
    import scipy.sparse as sp

    csc = sp.csc_matrix(
        (np.asarray(index.impacts), np.asarray(index.docs), index.indptr), shape=(len(index.doc_ids), index.vocab_size)
    )
    csr = csc.tocsr()
    for d in range(csr.shape[0]):
        lo, hi = csr.indptr[d], csr.indptr[d + 1]
        yield csr.indices[lo:hi], csr.data[lo:hi]


def run_frame(index: ImpactIndex, query_ids: Sequence[str], docs, scores) -> pd.DataFrame:
    """The search results as DataFrame[query_id, doc_id, score, rank]; score = integer / SCALE²."""
    lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
    flat_docs = np.concatenate(docs) if len(docs) else np.zeros(0, np.int64)
    flat_scores = np.concatenate(scores) if len(scores) else np.zeros(0, np.int64)
    frame = pd.DataFrame(
        {
            "query_id": np.repeat(np.asarray(query_ids, dtype=object), lengths),
            "doc_id": np.asarray(index.doc_ids, dtype=object)[flat_docs],
            "score": flat_scores / SCALE**2,
            "rank": np.concatenate([np.arange(1, n + 1) for n in lengths]) if len(lengths) else [],
        }
    )
    return frame[RUN_COLUMNS]


# ---------------------------------------------------------------------------------------------
# The whole first stage of one collection


def index_collection(
    dataset_id: str,
    model,
    tokenizer,
    identity: dict,
    *,
    max_length: int,
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_tokens: int | None = None,
    precision: str = "auto",
    progress: bool = True,
    encode: bool = True,
) -> ImpactIndex:
    """The impact index of a collection's passages for this encoder, built on first use.

    ``encode=False`` (a CPU job after the GPU's encode job) builds it from the shards on disk
    and refuses to encode a missing one: no passage is ever encoded on a job without the GPU
    the grid planned for it."""
    collection = load_collection(dataset_id)
    docs = collection.docs
    where = getattr(docs, "path", None) or dataset_id
    total = _count_passages(collection, where)
    key = index_key(identity, docs.key, max_length)
    root = cache_dir() / "splade" / key
    root.mkdir(parents=True, exist_ok=True)
    # one writer per folder: collections sharing passages (TREC DL 2019 and 2020) may start
    # their jobs together; the second waits here, then finds the index built
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "index" / "manifest.json").is_file():
            return load_index(root / "index", identity)
        return _build_collection_index(
            docs,
            total,
            root,
            model,
            tokenizer,
            identity,
            max_length=max_length,
            shard_size=shard_size,
            max_tokens=max_tokens,
            precision=precision,
            progress=progress,
            encode=encode,
        )


def encode_collection(
    dataset_id: str,
    model,
    tokenizer,
    identity: dict,
    *,
    max_length: int,
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_tokens: int | None = None,
    precision: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """The encoded passage shards of a collection (the GPU's part), written on first use; the
    index is left to a CPU job (:func:`index_collection` with ``encode=False``)."""
    collection = load_collection(dataset_id)
    docs = collection.docs
    total = _count_passages(collection, getattr(docs, "path", None) or dataset_id)
    root = cache_dir() / "splade" / index_key(identity, docs.key, max_length)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return encode_passages(
            iter(docs),
            total,
            model,
            tokenizer,
            root / "shards",
            max_length=max_length,
            shard_size=shard_size,
            max_tokens=max_tokens,
            precision=precision,
            progress=progress,
        )


def _build_collection_index(
    docs,
    total,
    root,
    model,
    tokenizer,
    identity,
    *,
    max_length,
    shard_size,
    max_tokens,
    precision,
    progress,
    encode=True,
) -> ImpactIndex:
    started = time.perf_counter()
    shards = encode_passages(
        iter(docs),
        total,
        model,
        tokenizer,
        root / "shards",
        max_length=max_length,
        shard_size=shard_size,
        max_tokens=max_tokens,
        precision=precision,
        progress=progress,
        encode=encode,
    )
    encode_seconds = time.perf_counter() - started
    meta = {
        **identity,
        "docs": docs.key,
        "max_length": max_length,
        "shard_size": shard_size,
        "quantisation": f"round({SCALE} * weight) as uint16",
        "encode_seconds": round(encode_seconds, 3),
        "device": str(next(model.parameters()).device),
    }
    vocab = model.get_output_embeddings().out_features
    return build_index(shards, root / "index", meta, vocab_size=vocab)


def _count_passages(collection, where) -> int:
    if collection.irds is not None and not collection.irds.has_docs():
        raise FirstStageError(f"{where}: the collection has no passages to index")
    try:
        total = len(collection.docs)
    except (FileNotFoundError, OSError) as exc:
        raise FirstStageError(f"{where}: passages unreadable ({exc})") from None
    if total == 0:
        raise FirstStageError(f"{where}: the collection has no passages (no texts to encode)")
    return total


def produce_run(
    dataset_id: str,
    name: str,
    *,
    engine: str = DEFAULT_ENGINE,
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_tokens: int | None = None,
    precision: str = "auto",
    device: str | None = None,
    progress: bool = True,
    root: Path | None = None,
    threads: int = 1,
    encode: bool = True,
) -> Path:
    """Make ``run:<name>`` (``<model slug>-top<depth>``) of ``dataset_id`` exist; returns its path.

    A run already produced for the same passages, queries and model is kept; a run the user
    placed under that name (no manifest beside it) is used as it is, never overwritten.
    ``threads``: the search's threads (the run is the same on any number); ``encode=False``: the
    index must be built or its shards encoded already (a CPU search job after the GPU's).
    """
    produced = CandidateSource("run", name).produced(root)
    if produced is None:
        known = ", ".join(first_stage_models(root)) or "none"
        raise FirstStageError(
            f"run name {name!r} is not <model>-top<depth> with a model of params/first_stage.yaml (known: {known})"
        )
    spec, depth = produced
    collection = load_collection(dataset_id)
    folder = collection.runs_dirs[-1]
    path = folder / f"{name}.trec"
    for other in collection.runs_dirs:
        placed = other / f"{name}.trec"
        if placed.is_file() and not run_manifest_path(placed).is_file():
            log.info("%s: using the run the user placed at %s", dataset_id, placed)
            return placed
    queries = collection.queries
    if not queries:
        raise FirstStageError(f"{dataset_id}: the collection has no queries to retrieve for")
    queries_key = hashlib.sha256(json.dumps(queries, sort_keys=True).encode()).hexdigest()
    # a produced run is reused only when everything it was made from is the same: the encoder as
    # params/first_stage.yaml names it (hf_id, revision, max_length), passages, queries, engine
    encoder = {"hf_id": spec.hf_id, "revision": spec.revision, "max_length": spec.max_length}
    if path.is_file() and run_manifest_path(path).is_file():
        found = json.loads(run_manifest_path(path).read_text())
        if (
            found.get("queries") == queries_key
            and found.get("docs") == collection.docs.key
            and found.get("engine") == engine
            and found.get("encoder") == encoder
        ):
            check_run_manifest(path)
            return path
        log.info(
            "%s: %s was made from other inputs than params/first_stage.yaml now names; producing it again",
            dataset_id,
            path,
        )
    # bad passages fail here, before a model is downloaded or a GPU is used
    _count_passages(collection, getattr(collection.docs, "path", None) or dataset_id)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer, identity = load_encoder(spec.hf_id, spec.revision, device=device)
    index = index_collection(
        dataset_id,
        model,
        tokenizer,
        identity,
        max_length=spec.max_length,
        shard_size=shard_size,
        max_tokens=max_tokens,
        precision=precision,
        progress=progress,
        encode=encode,
    )
    qids = list(queries)
    started = time.perf_counter()
    q = quantise(
        encode_texts(
            model,
            tokenizer,
            [queries[i] for i in qids],
            max_length=spec.max_length,
            max_tokens=max_tokens,
            precision=precision,
            progress=progress,
        )
    )
    encode_queries = time.perf_counter() - started
    started = time.perf_counter()
    docs, scores = search(index, q, depth, engine=engine, progress=progress, threads=threads)
    search_seconds = time.perf_counter() - started
    run = run_frame(index, qids, docs, scores)
    manifest = {
        "run": name,
        "dataset": dataset_id,
        "depth": depth,
        "engine": engine,
        **identity,
        "encoder": encoder,
        "docs": collection.docs.key,
        "queries": queries_key,
        "quantisation": index.manifest["quantisation"],
        "index": str(index.folder),
        "index_bytes": index.manifest["index_bytes"],
        "postings": index.manifest["postings"],
        "docs_count": index.manifest["docs_count"],
        "encode_passages_seconds": index.manifest["encode_seconds"],
        "encode_queries_seconds": round(encode_queries, 3),
        "search_seconds": round(search_seconds, 3),
        "queries_per_second": round(len(qids) / max(search_seconds, 1e-9), 2),
        "threads": threads,
        "rows": len(run),
        "queries_without_candidates": int(sum(len(d) == 0 for d in docs)),
    }
    write_produced_run(run, path, name, manifest)
    return path


def prepare_index(
    dataset_id: str,
    name: str,
    stage: str,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_tokens: int | None = None,
    precision: str = "auto",
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """One stage of the collection's index for ``run:<name>``'s model, as the grid's jobs split
    it: ``encode`` writes the passage shards (the GPU's work), ``index`` inverts them into the
    impact index (the CPU's; a missing shard is refused, never encoded here). Collections that
    share passages share both. Returns the shards' or the index's folder."""
    produced = CandidateSource("run", name).produced()
    if produced is None:
        known = ", ".join(first_stage_models()) or "none"
        raise FirstStageError(
            f"run name {name!r} is not <model>-top<depth> with a model of params/first_stage.yaml (known: {known})"
        )
    if stage not in ("encode", "index"):
        raise FirstStageError(f"unknown index stage {stage!r}; known: encode, index")
    spec, _ = produced
    collection = load_collection(dataset_id)
    _count_passages(collection, getattr(collection.docs, "path", None) or dataset_id)
    if device is None:
        device = "cuda" if stage == "encode" and torch.cuda.is_available() else "cpu"
    model, tokenizer, identity = load_encoder(spec.hf_id, spec.revision, device=device)
    settings = dict(
        max_length=spec.max_length, shard_size=shard_size, max_tokens=max_tokens, precision=precision, progress=progress
    )
    if stage == "encode":
        return encode_collection(dataset_id, model, tokenizer, identity, **settings)[0].parent
    return index_collection(dataset_id, model, tokenizer, identity, encode=False, **settings).folder


def write_produced_run(run: pd.DataFrame, path: Path, name: str, manifest: dict) -> Path:
    """The run and its manifest (rows, sha256), both atomic: the manifest lands first, so a run
    file never exists under this name without the facts that check it."""
    with atomic_path(path) as tmp:
        write_run(run, tmp, name)
        with atomic_path(run_manifest_path(path)) as m:
            m.write_text(
                json.dumps({**manifest, "sha256": file_sha256(tmp), "rows": len(run)}, indent=1, sort_keys=True),
                encoding="utf-8",
            )
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cerepro.retrieval.first_stage DATASET RUN_NAME``: what a grid's first-stage job runs."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m cerepro.retrieval.first_stage", description=main.__doc__)
    parser.add_argument("dataset", help="ir_datasets id, local:<folder> or demo:<split>")
    parser.add_argument("name", help="<model slug>-top<depth>, e.g. splade-v3-distilbert-top1000")
    parser.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE)
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE)
    parser.add_argument(
        "--stage",
        choices=("all", "encode", "index", "search"),
        default="all",
        help="all: encode, index and search in this process; encode: the passage shards "
        "(GPU); index: the impact index from the shards (CPU); search: the run from "
        "the index (CPU), encoding nothing but the queries",
    )
    parser.add_argument("--threads", type=int, default=1, help="search threads (the run is the same)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        if args.stage in ("encode", "index"):
            path = prepare_index(args.dataset, args.name, args.stage, shard_size=args.shard_size)
        else:
            path = produce_run(
                args.dataset,
                args.name,
                engine=args.engine,
                shard_size=args.shard_size,
                threads=args.threads,
                encode=args.stage == "all",
                device="cpu" if args.stage == "search" else None,
            )
    except (FirstStageError, ValueError, FileNotFoundError) as exc:
        print(f"cerepro.retrieval.first_stage: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.dataset}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
