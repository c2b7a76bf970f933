"""Re-rank candidate lists with a cross-encoder and write TREC runs.

``rerank`` is the one call between a trained model and a run file: it checks the candidates
(duplicates, missing texts), pre-tokenizes them once through ``cerepro.data.tokenize`` (cached on disk
when given a ``cache_key``), scores them with ``score_pairs`` and ranks each query's candidates
with exact ties broken as trec_eval does (doc id descending). Very large candidate sets (MS MARCO
dev top-1000: ~7M pairs) are scored in shards written to disk, so an interrupted job resumes
where it stopped.

``score_pairs`` is the scoring loop alone, shared with training-time validation: pairs sorted by
length, batched by a token budget, padded per batch, ``torch.inference_mode()``, at one of three
precisions: ``fp32`` (full fp32 matmuls), ``tf32`` (fp32 weights and outputs, TF32 matmuls on
GPUs that have them) or ``bf16`` (autocast); ``auto`` picks bf16 where the hardware has it.
Evaluation scores each run at ``cerepro.config.scoring_precision`` (never bf16).

This module never trains, evaluates or reads datasets from disk: callers pass texts in.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cerepro.data.tokenize import PairEncoding, cached_encode_pairs, encode_pairs, padded_batch, token_budget_batches
from cerepro.data.trec import rank_by_score
from cerepro.model.first_token import last_layer_first_token_only, supports_first_token_last_layer
from cerepro.paths import atomic_path
from cerepro.vocab import SCORING_PRECISIONS, Precision

DEFAULT_SHARD_SIZE = 500_000  # pairs per shard: minutes of work on a GPU, so little is lost


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16 or AMX), else fp32."""
    if precision not in SCORING_PRECISIONS:
        raise ValueError(f"precision must be one of {SCORING_PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16: a CUDA GPU that supports it, or a CPU whose oneDNN runs
    bf16 matmuls natively (AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        return bool(native or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    return False


def autocast_to(precision: Precision, device: torch.device, *, enabled: bool = True):
    """``torch.autocast`` to ``precision``'s autocast dtype (bf16) on ``device``; off for a
    precision without one, or when not ``enabled`` (weights already in bf16, no native bf16)."""
    dtype = getattr(torch, precision.autocast or "bfloat16")
    return torch.autocast(device.type, dtype=dtype, enabled=enabled and precision.autocast is not None)


@contextmanager
def matmul_precision(precision: Precision):
    """fp32 matmuls at ``precision``'s setting ("highest": fp32, "high": TF32 where the GPU has it)
    inside the block, the process's setting restored after; a precision without one leaves it."""
    previous = torch.get_float32_matmul_precision()
    if precision.matmul is not None:
        torch.set_float32_matmul_precision(precision.matmul)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def default_max_tokens(device: torch.device) -> int:
    """Tokens per batch (batch size x longest pair) when the caller gives none.

    A GPU wants large batches. On a CPU, about 4,096 tokens per thread: with MiniLM-L6 on one
    thread, batches of 1-4k tokens ran ~20% faster per pair than 8k (their activations stay in
    cache), while with two threads on a busy machine 8k beat 2k by half (fewer, longer parallel
    regions, so fewer waits on a descheduled thread); see benchmarks/README.md.
    """
    if device.type == "cuda":
        return 65_536
    return 4_096 * torch.get_num_threads()


def score_pairs(
    model: torch.nn.Module,
    encoding: PairEncoding,
    *,
    pad_token_id: int | None = None,
    max_tokens: int | None = None,
    batch_size: int | None = None,
    precision: str = "auto",
    first_token_last_layer: bool | None = None,
    progress: bool | tqdm = False,
) -> np.ndarray:
    """Relevance scores (N,) float32 of the encoded pairs, in the encoding's order.

    Pairs are sorted by length (longest first) and cut into batches of at most ``max_tokens``
    tokens (``batch size x longest pair``) and at most ``batch_size`` pairs; ``max_tokens=None``
    with a ``batch_size`` gives fixed-size, length-sorted batches. The score is the model's single
    logit (for two-label models, logit 1 minus logit 0). ``progress`` is a bool or a tqdm bar
    to advance. ``precision="bf16"`` autocasts an fp32 model to bf16; a model whose weights are
    already bf16 runs in bf16 whatever ``precision`` says. ``"fp32"`` and ``"tf32"`` set the fp32
    matmul precision for the call (full fp32, or TF32 on GPUs that have it) and restore it.

    ``first_token_last_layer``: the classification head of BERT, RoBERTa and ELECTRA reads only
    the first token of the last layer, so that layer computes only that token's output (its
    keys and values still see every token): the same scores up to float rounding, one layer
    fewer of work per token. ``None`` uses it wherever the architecture allows.
    """
    device = next(model.parameters()).device
    precision = resolve_precision(precision, device)
    if pad_token_id is None:
        pad_token_id = getattr(model.config, "pad_token_id", None) or 0
    if max_tokens is None:
        max_tokens = default_max_tokens(device) if batch_size is None else np.iinfo(np.int64).max
    batches = token_budget_batches(encoding.lengths, max_tokens, batch_size)
    # Some models (DistilBERT, ModernBERT) take no token types even from a BERT-style tokenizer.
    takes_types = "token_type_ids" in inspect.signature(model.forward).parameters

    bar = progress if isinstance(progress, tqdm) else None
    if bar is None and progress:
        bar = tqdm(total=len(encoding), unit="pair", desc="scoring")
    was_training = model.training
    model.eval()
    scores = []  # device tensors; one sync at the end keeps a GPU busy while the CPU collates
    # Autocast only lifts fp32 weights to bf16 compute; a model already in bf16 runs as it is.
    fp32_weights = next(model.parameters()).dtype == torch.float32
    spec = Precision.parse(precision, scoring=True)
    autocast, matmul = autocast_to(spec, device, enabled=fp32_weights), matmul_precision(spec)
    if first_token_last_layer is None:
        first_token_last_layer = supports_first_token_last_layer(model)
    shortcut = last_layer_first_token_only(model) if first_token_last_layer else nullcontext()
    try:
        with torch.inference_mode(), autocast, matmul, shortcut:
            for indices in batches:
                batch = padded_batch(encoding, indices, pad_token_id)
                if not takes_types:
                    batch.pop("token_type_ids", None)
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                scores.append(_logit(model(**batch).logits))
                if bar is not None:
                    bar.update(len(indices))
    finally:
        model.train(was_training)
        if bar is not None and bar is not progress:
            bar.close()
    out = np.empty(len(encoding), dtype=np.float32)
    if batches:
        out[np.concatenate(batches)] = torch.cat(scores).float().cpu().numpy()
    return out


def rerank(
    model: torch.nn.Module,
    tokenizer,
    candidates: pd.DataFrame,
    queries: Mapping[str, str],
    doc_text: Mapping[str, str] | Callable[[str], str | None],
    *,
    max_length: int,
    query_max_length: int | None = None,
    passage_max_length: int | None = None,
    truncation: str = "passage",
    max_tokens: int | None = None,
    batch_size: int | None = None,
    precision: str = "auto",
    cache_key: str | None = None,
    shard_dir: str | Path | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: bool = True,
) -> pd.DataFrame:
    """Score every (query_id, doc_id) row of ``candidates`` and rank each query's documents.

    Returns a DataFrame ``query_id, doc_id, score, rank`` sorted by query id, then score
    descending, then doc id descending (trec_eval's tie-break, so the written ranks are the ones
    evaluated); ranks start at 1.

    ``queries`` maps query id to text; ``doc_text`` maps doc id to text (a mapping or a function
    returning None for unknown ids). Every candidate must have both texts: missing ones are
    counted and reported with examples, never dropped. Length limits and ``truncation`` are those
    of ``cerepro.data.tokenize.encode_pairs``. With ``cache_key`` (naming the collection and its texts,
    e.g. ``msmarco-passage/trec-dl-2019/judged``) the tokenized pairs are cached on disk for every
    model sharing the tokenizer. With ``shard_dir`` the pairs are scored ``shard_size`` at a time
    and each shard's scores saved there, so a rerun skips finished shards.
    """
    candidates = _check_candidates(candidates)
    digest = _candidates_digest(candidates) if cache_key is not None or shard_dir is not None else None
    limits = dict(
        max_length=max_length,
        query_max_length=query_max_length,
        passage_max_length=passage_max_length,
        truncation=truncation,
    )

    def texts():
        return _pair_texts(candidates, queries, doc_text)

    if cache_key is None:
        encoding = encode_pairs(tokenizer, *texts(), **limits)
    else:
        encoding = cached_encode_pairs(tokenizer, f"{cache_key}#{digest[:16]}", texts, **limits)
    scoring = dict(
        pad_token_id=tokenizer.pad_token_id, max_tokens=max_tokens, batch_size=batch_size, precision=precision
    )
    bar = tqdm(total=len(encoding), unit="pair", desc="re-ranking", disable=not progress)
    try:
        if shard_dir is None:
            scores = score_pairs(model, encoding, progress=bar, **scoring)
        else:
            manifest = {
                "candidates": digest,
                "pairs": len(encoding),
                # the token ids themselves: edited texts, another tokenizer or other limits
                # give other pairs under the same query and doc ids
                "encoding": encoding_digest(encoding),
                "shard_size": shard_size,
                "model": model_fingerprint(model),
                "precision": resolve_precision(precision, next(model.parameters()).device),
                "tokenizer": str(tokenizer.name_or_path),
                **limits,
            }
            scores = _score_in_shards(model, encoding, Path(shard_dir), shard_size, manifest, bar, scoring)
    finally:
        bar.close()
    return rank_scores(candidates, scores)


def rank_scores(candidates: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    """Candidates with their scores, ranked per query: score descending, ties by doc id descending
    (trec_eval's order, see ``cerepro.data.trec.rank_by_score``)."""
    run = pd.DataFrame(
        {
            "query_id": candidates["query_id"].to_numpy(),
            "doc_id": candidates["doc_id"].to_numpy(),
            "score": scores,
        }
    )
    return rank_by_score(run)


def encoding_digest(encoding: PairEncoding) -> str:
    """sha256 of the pairs' token ids, offsets and token-type splits."""
    h = hashlib.sha256()
    for array in (encoding.input_ids, encoding.offsets, encoding.type_split):
        if array is not None:
            h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:32]


def model_fingerprint(model: torch.nn.Module) -> str:
    """A cheap identity of the weights (names, shapes, rounded sums) to refuse mixing shards of
    different models in one ``shard_dir``."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.state_dict().items():
            total = float(p.double().sum()) if p.is_floating_point() else float(p.sum())
            h.update(f"{name}:{tuple(p.shape)}:{total:.6g};".encode())
    return h.hexdigest()


def _score_in_shards(model, encoding, shard_dir, shard_size, manifest, bar, scoring) -> np.ndarray:
    """Score pairs ``[k * shard_size, (k + 1) * shard_size)`` into ``shard-{k:05d}.npy``,
    skipping shards already on disk whose length and values check out."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    shard_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = shard_dir / "manifest.json"
    if manifest_path.is_file():
        found = json.loads(manifest_path.read_text())
        if found != manifest:
            changed = sorted(k for k in manifest if found.get(k) != manifest[k])
            raise ValueError(
                f"{shard_dir} holds shards of another job (differs in: {', '.join(changed)}); "
                "use an empty folder or delete it"
            )
    else:
        with atomic_path(manifest_path) as tmp:
            tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))

    scores = np.empty(len(encoding), dtype=np.float32)
    for k, start in enumerate(range(0, len(encoding), shard_size)):
        stop = min(start + shard_size, len(encoding))
        path = shard_dir / f"shard-{k:05d}.npy"
        done = _load_shard(path, stop - start)
        if done is None:
            done = score_pairs(model, encoding[start:stop], progress=bar, **scoring)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, done)
        else:
            bar.update(stop - start)
        scores[start:stop] = done
    return scores


def _load_shard(path: Path, expected: int) -> np.ndarray | None:
    """A finished shard's scores, or None if absent or unusable (then it is recomputed)."""
    if not path.is_file():
        return None
    try:
        scores = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if scores.shape != (expected,) or scores.dtype != np.float32 or not np.isfinite(scores).all():
        return None
    return scores


def _logit(logits: torch.Tensor) -> torch.Tensor:
    """(B, 1) -> the logit; (B, 2) -> relevant minus non-relevant logit (monoBERT style)."""
    if logits.shape[-1] == 1:
        return logits[:, 0]
    if logits.shape[-1] == 2:
        return logits[:, 1] - logits[:, 0]
    raise ValueError(f"a re-ranker needs 1 or 2 output labels, this model has {logits.shape[-1]}")


def _check_candidates(candidates: pd.DataFrame) -> pd.DataFrame:
    missing = {"query_id", "doc_id"} - set(candidates.columns)
    if missing:
        raise ValueError(f"candidates lack column(s) {sorted(missing)}; they have {list(candidates.columns)}")
    candidates = candidates[["query_id", "doc_id"]].reset_index(drop=True)
    duplicated = candidates.duplicated(keep="first")
    if duplicated.any():
        examples = candidates[duplicated].head(5).itertuples(index=False, name=None)
        raise ValueError(
            f"{int(duplicated.sum())} duplicate (query_id, doc_id) candidate rows, e.g. {list(examples)}; "
            "a document must appear once per query"
        )
    return candidates


def _pair_texts(candidates, queries, doc_text) -> tuple[np.ndarray, np.ndarray]:
    """Query and document text of every candidate row; raises if any text is missing."""
    qids = candidates["query_id"].to_numpy()
    dids = candidates["doc_id"].to_numpy()
    q_codes, q_unique = pd.factorize(qids)
    d_codes, d_unique = pd.factorize(dids)
    q_text = np.array([queries.get(q) for q in q_unique], dtype=object)
    lookup = doc_text.get if isinstance(doc_text, Mapping) else doc_text
    d_text = np.array([lookup(d) for d in d_unique], dtype=object)
    problems = []
    for what, unique, text, codes in (
        ("query", q_unique, q_text, q_codes),
        ("document", d_unique, d_text, d_codes),
    ):
        absent = np.array([t is None or (isinstance(t, float) and np.isnan(t)) for t in text], dtype=bool)
        if absent.any():
            rows = int(absent[codes].sum())
            examples = [str(x) for x in unique[absent][:5]]
            problems.append(
                f"{int(absent.sum())} of {len(unique)} {what} ids have no text ({rows} of {len(codes)} "
                f"candidate pairs), e.g. {examples}"
            )
    if problems:
        raise ValueError("missing texts: " + "; ".join(problems))
    return q_text[q_codes], d_text[d_codes]


def _candidates_digest(candidates: pd.DataFrame) -> str:
    """sha256 of the (query_id, doc_id) rows in order: the identity of a candidate list."""
    h = hashlib.sha256()
    for column in ("query_id", "doc_id"):
        h.update(pd.util.hash_array(candidates[column].astype(str).to_numpy(dtype=object)).tobytes())
    h.update(str(len(candidates)).encode())
    return h.hexdigest()
