"""Pre-tokenized (query, passage) pairs shared by training and re-ranking.

One implementation of how a cross-encoder sees its input, so training, validation and re-ranking
cannot drift apart:

- ``encode_pairs`` tokenizes every pair with the backbone's own pair template (``[CLS] q [SEP] p
  [SEP]`` for BERT, ELECTRA, DeBERTa-v3 and ModernBERT, ``<s> q </s></s> p </s>`` for RoBERTa),
  applying the query and passage limits first and then the total ``max_length``, by one of three
  rules (``truncation``): ``"retokenize"``, the rule of the code that produced the paper's table
  (xpmir's ``HFCrossScorer`` of 1-19 Feb 2026: each side cut to its limit, decoded back to text and
  the pair re-tokenized with ``longest_first`` to the sum of the limits); ``"passage"``, the
  authors' later rule (xpmir's ``HFQueryDocTokenizer``, March 2026 on: the query kept whole, the
  passage cut); or ``"longest_first"``, exactly the tokenizer's own truncation. Unique queries and
  unique passages are tokenized once, in batches, by the fast tokenizer; pairs are then assembled
  with array operations, never a Python loop per pair.
- ``PairEncoding`` holds the result as flat numpy arrays (token ids + offsets), cheap to save,
  load and slice.
- ``cached_encode_pairs`` keeps encodings on disk under ``cache_dir()/tokenized/``, keyed by the
  candidates' identity, the tokenizer's content and the length limits, so every model sharing a
  tokenizer reuses them.
- ``token_budget_batches`` and ``padded_batch`` turn an encoding into length-sorted batches padded only
  to their own longest pair.

This module never runs a model and never reads a dataset: callers pass texts in.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cerepro.paths import atomic_path, cache_dir
from cerepro.vocab import TRUNCATIONS

# Bump when the arrays' meaning changes, so old cache files are never read as new ones.
FORMAT_VERSION = 3  # 2: passage-first truncation by default; 3: the retokenize rule
_TOKENIZE_CHUNK = 16_384  # texts per tokenizer call: bounds the Python lists alive at once
_ASSEMBLE_CHUNK = 1 << 20  # pairs per vectorised assembly step: bounds the index arrays


@dataclass(frozen=True)
class PairTemplate:
    """Where the special tokens sit around the two segments, read from the tokenizer itself."""

    prefix: tuple[int, ...]  # before the query, e.g. (CLS,)
    middle: tuple[int, ...]  # between query and passage, e.g. (SEP,) or (</s>, </s>)
    suffix: tuple[int, ...]  # after the passage, e.g. (SEP,)
    # token_type_ids: first_type up to (prefix + query + type_split_in_middle), second_type after.
    # None when the model takes no token_type_ids.
    token_types: tuple[int, int] | None
    type_split_in_middle: int

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


@dataclass
class PairEncoding:
    """Tokenized pairs as flat arrays: pair ``i`` is ``input_ids[offsets[i]:offsets[i+1]]``.

    ``type_split[i]`` is the position where pair ``i``'s token type switches from
    ``token_types[0]`` to ``token_types[1]``; both are None for models without token types.
    """

    input_ids: np.ndarray  # (T,) uint16 or int32, all pairs concatenated
    offsets: np.ndarray  # (N + 1,) int64
    type_split: np.ndarray | None = None  # (N,) int32
    token_types: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """(N,) tokens per pair, special tokens included."""
        return np.diff(self.offsets)

    def pair_ids(self, i: int) -> list[int]:
        return self.input_ids[self.offsets[i] : self.offsets[i + 1]].tolist()

    def __getitem__(self, indices) -> PairEncoding:
        """The pairs at ``indices`` (an index array, a boolean mask or a slice), in that order."""
        indices = np.arange(len(self))[indices]
        lengths = self.lengths[indices]
        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return PairEncoding(
            input_ids=self.input_ids[_ranges(self.offsets[indices], lengths)],
            offsets=offsets,
            type_split=None if self.type_split is None else self.type_split[indices],
            token_types=self.token_types,
        )

    def save(self, path: str | Path, meta: dict | None = None) -> Path:
        """Write an uncompressed ``.npz`` atomically (a reader never sees half a file)."""
        arrays = {"input_ids": self.input_ids, "offsets": self.offsets}
        if self.type_split is not None:
            arrays["type_split"] = self.type_split
            arrays["token_types"] = np.asarray(self.token_types, dtype=np.int64)
        arrays["meta"] = np.asarray(json.dumps({"format": FORMAT_VERSION, **(meta or {})}))
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> tuple[PairEncoding, dict]:
        """Read a file written by ``save``; returns the encoding and its metadata."""
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            if meta.get("format") != FORMAT_VERSION:
                raise ValueError(f"{path}: format {meta.get('format')}, expected {FORMAT_VERSION}")
            has_types = "type_split" in npz.files
            encoding = cls(
                input_ids=npz["input_ids"],
                offsets=npz["offsets"],
                type_split=npz["type_split"] if has_types else None,
                token_types=tuple(int(t) for t in npz["token_types"]) if has_types else None,
            )
        return encoding, meta


def pair_template(tokenizer) -> PairTemplate:
    """Read the pair template off the tokenizer by encoding one probe pair.

    Uses the tokenizer's own post-processing, so every architecture gets its own special tokens
    and token types; only the positions of the two segments are inferred here.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"{type(tokenizer).__name__} is not a fast tokenizer; cerepro needs one")
    if getattr(tokenizer, "truncation_side", "right") != "right":
        raise ValueError("only truncation_side='right' is supported (keep the start of texts)")
    for probe in ("a", "the", "x y", "0"):
        enc = tokenizer(probe, probe, return_token_type_ids=True)
        seq = enc.sequence_ids()
        if 0 in seq and 1 in seq:
            break
    else:
        raise ValueError(f"could not probe the pair template of {tokenizer.name_or_path!r}")
    ids = enc["input_ids"]
    q_pos = [i for i, s in enumerate(seq) if s == 0]
    p_pos = [i for i, s in enumerate(seq) if s == 1]
    q0, q1, p0, p1 = q_pos[0], q_pos[-1] + 1, p_pos[0], p_pos[-1] + 1
    if q_pos != list(range(q0, q1)) or p_pos != list(range(p0, p1)) or q1 > p0:
        raise ValueError(f"unexpected pair layout {seq} from {tokenizer.name_or_path!r}")
    prefix, middle, suffix = ids[:q0], ids[q1:p0], ids[p1:]

    token_types, split_in_middle = None, 0
    if "token_type_ids" in tokenizer.model_input_names:
        types = list(enc["token_type_ids"])
        first = types[0]
        split = next((i for i, t in enumerate(types) if t != first), len(types))
        second = types[split] if split < len(types) else first
        # Supported: at most one switch, within or at the edges of the middle specials (BERT,
        # ELECTRA, DeBERTa); every architecture cerepro trains fits this.
        if split < len(types) and (any(t != second for t in types[split:]) or not q1 <= split <= p0):
            raise ValueError(f"unsupported token_type_ids layout {types} of {tokenizer.name_or_path!r}")
        token_types, split_in_middle = (first, second), min(split, p0) - q1
    return PairTemplate(tuple(prefix), tuple(middle), tuple(suffix), token_types, split_in_middle)


def longest_first(a: np.ndarray, b: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Lengths kept of two segments under a shared ``budget``: the tokenizers library's
    ``longest_first`` rule, vectorised (the longer one is cut first; when both must be cut, each
    keeps half and the longer one the odd token)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    short = np.minimum(a, b)
    long_kept = np.where(short > budget, short, np.maximum(short, budget - short))
    both = short + long_kept > budget
    short_kept = np.where(both, budget // 2, short)
    long_kept = np.where(both, budget // 2 + budget % 2, long_kept)
    swap = a > b  # a was the longer one
    fits = a + b <= budget
    a_kept = np.where(fits, a, np.minimum(a, np.where(swap, long_kept, short_kept)))
    b_kept = np.where(fits, b, np.minimum(b, np.where(swap, short_kept, long_kept)))
    return a_kept, b_kept


def passage_first(a: np.ndarray, b: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Lengths kept of a query (``a``) and a passage (``b``) under a shared ``budget``: the query
    whole (cut only if it alone exceeds the budget), the passage cut to what is left; the rule of
    the authors' xpmir ``HFQueryDocTokenizer``."""
    a = np.minimum(np.asarray(a, dtype=np.int64), budget)
    return a, np.minimum(np.asarray(b, dtype=np.int64), budget - a)


def retokenized_texts(tokenizer, texts: Sequence[str], limit: int) -> list[str]:
    """Each text cut to its first ``limit`` tokens (no special tokens) and decoded back to a
    string, special tokens skipped and tokenization spaces cleaned up: the side cut of the code
    that produced the paper's table (xpmir ``HFCrossScorer.batch_tokenize``, 1-19 Feb 2026).

    Every text goes through the round trip, short ones too: decoding drops what the tokenizer
    marks unknown and applies its normalizer (lower-casing, accents) and spacing rules, so the
    text the pair is built from may differ from the original even when nothing is cut.
    """
    from tokenizers import Tokenizer

    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    out: list[str] = []
    for start in range(0, len(texts), _TOKENIZE_CHUNK):
        chunk = [str(t) for t in texts[start : start + _TOKENIZE_CHUNK]]
        ids = [e.ids[:limit] for e in encode(chunk, add_special_tokens=False)]
        out.extend(tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True))
    return out


def retokenize_limit(tokenizer, max_length: int, query_max_length: int | None, passage_max_length: int | None) -> int:
    """The pair limit of the ``retokenize`` rule: the smallest of ``max_length``, the tokenizer's
    ``model_max_length`` and, when both sides have a limit, their sum (special tokens counted
    inside it, as the authors' call does: 32 + 256 = 288 tokens in all)."""
    limit = min(max_length, int(min(tokenizer.model_max_length, 2**31)))
    if query_max_length is not None and passage_max_length is not None:
        limit = min(limit, query_max_length + passage_max_length)
    return limit


def encoding_options(settings) -> dict[str, Any]:
    """:func:`encode_pairs`' length and truncation keywords (``max_length``, ``query_max_length``,
    ``passage_max_length``, ``truncation``) as a run's config or an evaluation's settings give
    them: the one reading of those four settings wherever pairs are encoded or re-ranked."""
    return {
        "max_length": settings.max_length,
        "query_max_length": settings.query_max_length,
        "passage_max_length": settings.passage_max_length,
        "truncation": settings.truncation,
    }


def encode_pairs(
    tokenizer,
    queries: Sequence[str],
    passages: Sequence[str],
    *,
    max_length: int,
    query_max_length: int | None = None,
    passage_max_length: int | None = None,
    truncation: str = "passage",
) -> PairEncoding:
    """Tokenize ``(queries[i], passages[i])`` pairs with the tokenizer's pair template.

    Limits, in this order: the query keeps at most ``query_max_length`` tokens and the passage at
    most ``passage_max_length`` (special tokens not counted), then the pair is cut to
    ``max_length`` tokens in total (special tokens counted): ``truncation="passage"`` keeps the
    query and cuts the passage (the authors' rule from March 2026); ``"longest_first"`` cuts the
    longer segment first, so with no segment limits the result equals ``tokenizer(q, p,
    truncation=True, max_length=...)``. ``"retokenize"`` (the rule of the paper's table) cuts each
    side to its limit through :func:`retokenized_texts` and encodes the decoded pair with
    ``longest_first`` to :func:`retokenize_limit`; the result equals ``tokenizer(q', p',
    truncation=True, max_length=limit)`` on the decoded texts ``q'``, ``p'``.
    """
    if len(queries) != len(passages):
        raise ValueError(f"{len(queries)} queries but {len(passages)} passages")
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    cut = passage_first if truncation == "passage" else longest_first
    template = pair_template(tokenizer)
    if truncation == "retokenize":
        max_length = retokenize_limit(tokenizer, max_length, query_max_length, passage_max_length)
    budget = max_length - template.n_special
    if budget < 1:
        raise ValueError(f"max_length={max_length} leaves no room for text")
    # A segment never keeps more than the whole budget, so only that many ids are kept per text;
    # the true lengths still decide which segment longest_first cuts.
    q_codes, q_unique = _factorize(queries, "query")
    p_codes, p_unique = _factorize(passages, "passage")
    if truncation == "retokenize":  # each side cut and decoded, then the pair cut longest-first
        if query_max_length is not None:
            q_unique = retokenized_texts(tokenizer, q_unique, query_max_length)
        if passage_max_length is not None:
            p_unique = retokenized_texts(tokenizer, p_unique, passage_max_length)
        query_max_length = passage_max_length = None
    q_flat, q_offsets, q_len = _tokenize_flat(tokenizer, q_unique, budget, query_max_length)
    p_flat, p_offsets, p_len = _tokenize_flat(tokenizer, p_unique, budget, passage_max_length)

    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.int32
    pieces, all_lengths, splits = [], [], []
    for start in range(0, len(q_codes), _ASSEMBLE_CHUNK):
        qc, pc = q_codes[start : start + _ASSEMBLE_CHUNK], p_codes[start : start + _ASSEMBLE_CHUNK]
        a, b = cut(q_len[qc], p_len[pc], budget)
        ids, lengths = _assemble(template, q_flat, q_offsets[qc], a, p_flat, p_offsets[pc], b)
        pieces.append(ids.astype(dtype, copy=False))
        all_lengths.append(lengths)
        if template.token_types is not None:
            splits.append((len(template.prefix) + a + template.type_split_in_middle).astype(np.int32))
    lengths = np.concatenate(all_lengths) if all_lengths else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return PairEncoding(
        input_ids=np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype),
        offsets=offsets,
        type_split=(np.concatenate(splits) if splits else np.zeros(0, np.int32))
        if template.token_types is not None
        else None,
        token_types=template.token_types,
    )


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's full definition (vocabulary, normalizer, pre-tokenizer, pair
    template), ignoring the truncation/padding state that calls leave behind. Two tokenizers with
    the same fingerprint tokenize identically whatever their names."""
    from tokenizers import Tokenizer

    # A private copy with truncation and padding off serialises the same for every caller state
    # (and costs a fraction of re-encoding the JSON).
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    blob = f"{type(tokenizer).__name__}|{tokenizer.model_input_names}|{backend.to_str()}"
    return hashlib.sha256(blob.encode()).hexdigest()


def cached_encode_pairs(
    tokenizer,
    cache_key: str,
    texts: Callable[[], tuple[Sequence[str], Sequence[str]]] | tuple[Sequence[str], Sequence[str]],
    *,
    max_length: int,
    query_max_length: int | None = None,
    passage_max_length: int | None = None,
    truncation: str = "passage",
) -> PairEncoding:
    """``encode_pairs`` through a disk cache under ``cache_dir()/tokenized/``.

    ``cache_key`` names the pairs and their texts (e.g. ``msmarco-passage/trec-dl-2019/judged``
    plus the candidates' checksum; ``rerank`` derives one): the caller vouches that equal keys
    mean equal texts. The file is keyed by it, the tokenizer's fingerprint, the three limits and the
    truncation rule.
    ``texts`` is ``(queries, passages)`` or a function returning them, called only on a miss so a
    hit never reads the collection.
    """
    key = {
        "truncation": truncation,
        "cache_key": cache_key,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": max_length,
        "query_max_length": query_max_length,
        "passage_max_length": passage_max_length,
        "format": FORMAT_VERSION,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", cache_key)[:80]
    path = cache_dir() / "tokenized" / f"{slug}.{digest}.npz"
    if path.is_file():
        try:
            encoding, meta = PairEncoding.load(path)
        except Exception:  # noqa: BLE001 - a cut or damaged cache file is rebuilt, never trusted
            meta = {}
        if meta and all(meta.get(k) == v for k, v in key.items()):
            return encoding
    queries, passages = texts() if callable(texts) else texts
    encoding = encode_pairs(
        tokenizer,
        queries,
        passages,
        max_length=max_length,
        query_max_length=query_max_length,
        passage_max_length=passage_max_length,
        truncation=truncation,
    )
    encoding.save(path, meta={**key, "tokenizer_name": str(tokenizer.name_or_path)})
    return encoding


def token_budget_batches(lengths: np.ndarray, max_tokens: int, max_batch_size: int | None = None) -> list[np.ndarray]:
    """Indices in batches of similar length with ``len(batch) * max(lengths[batch]) <=
    max_tokens`` (a single pair longer than ``max_tokens`` gets a batch of its own).

    Longest first, so the biggest batch runs first and an out-of-memory shows at once; ties keep
    index order, so the batches are deterministic.
    """
    lengths = np.asarray(lengths)
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        size = max(1, max_tokens // int(lengths[order[start]]))  # the first is the longest
        if max_batch_size is not None:
            size = min(size, max_batch_size)
        batches.append(order[start : start + size])
        start += size
    return batches


def padded_batch(encoding: PairEncoding, indices: np.ndarray, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Model inputs for the pairs at ``indices``, right-padded to the longest of them.

    Returns ``input_ids`` and ``attention_mask`` (B, L) int64, plus ``token_type_ids`` (B, L)
    when the model takes them (0 on padding, as transformers' tokenizers pad).
    """
    indices = np.asarray(indices)
    starts = encoding.offsets[indices]
    lengths = encoding.offsets[indices + 1] - starts
    width = int(lengths.max()) if len(lengths) else 0
    positions = np.arange(width)
    mask = positions < lengths[:, None]  # (B, L)
    ids = np.full((len(indices), width), pad_token_id, dtype=np.int64)
    ids[mask] = encoding.input_ids[_ranges(starts, lengths)]
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask.astype(np.int64))}
    if encoding.token_types is not None:
        first, second = encoding.token_types
        types = np.where(positions >= encoding.type_split[indices][:, None], second, first)
        batch["token_type_ids"] = torch.from_numpy((types * mask).astype(np.int64))
    return batch


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each (s, n), without a Python loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    before = np.cumsum(lengths) - lengths  # exclusive cumsum
    return np.repeat(np.asarray(starts, dtype=np.int64) - before, lengths) + np.arange(total)


def _factorize(texts: Sequence[str], what: str) -> tuple[np.ndarray, np.ndarray]:
    codes, unique = pd.factorize(np.asarray(texts, dtype=object), use_na_sentinel=True)
    if (codes < 0).any():
        raise ValueError(f"{int((codes < 0).sum())} {what} texts are missing (None/NaN)")
    return codes, unique


def _tokenize_flat(
    tokenizer, texts: Sequence[str], keep: int, limit: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids of ``texts`` without special tokens: the first ``min(keep, limit)`` of each as
    flat ids + offsets, and each text's length after its own ``limit`` (its true length if None).
    """
    from tokenizers import Tokenizer

    # A private copy of the Rust tokenizer without truncation: the caller's is left untouched,
    # and len(encoding) gives the full length without building a Python list of all its ids.
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # fast: no char offsets
    keep = min(keep, limit or keep)
    flats, kept, lengths = [], [], []
    for start in range(0, len(texts), _TOKENIZE_CHUNK):
        chunk = [str(t) for t in texts[start : start + _TOKENIZE_CHUNK]]
        encodings = encode(chunk, add_special_tokens=False)
        n = np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings))
        k = np.minimum(n, keep)
        flats.append(np.fromiter((t for e in encodings for t in e.ids[:keep]), dtype=np.int64, count=int(k.sum())))
        kept.append(k)
        lengths.append(n if limit is None else np.minimum(n, limit))
    kept = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum(kept, out=offsets[1:])
    flat = np.concatenate(flats) if flats else np.zeros(0, dtype=np.int64)
    return flat, offsets, (np.concatenate(lengths) if lengths else kept)


def _assemble(template: PairTemplate, q_flat, q_starts, a, p_flat, p_starts, b):
    """Pairs laid out as prefix + query[:a] + middle + passage[:b] + suffix, all vectorised."""
    n_pre, n_mid, n_suf = len(template.prefix), len(template.middle), len(template.suffix)
    lengths = n_pre + a + n_mid + b + n_suf
    starts = np.cumsum(lengths) - lengths
    out = np.empty(int(lengths.sum()), dtype=np.int64)
    for tokens, at in (
        (template.prefix, starts),
        (template.middle, starts + n_pre + a),
        (template.suffix, starts + lengths - n_suf),
    ):
        if tokens:
            out[(at[:, None] + np.arange(len(tokens))).ravel()] = np.tile(tokens, len(at))
    out[_ranges(starts + n_pre, a)] = q_flat[_ranges(q_starts, a)]
    out[_ranges(starts + n_pre + a + n_mid, b)] = p_flat[_ranges(p_starts, b)]
    return out, lengths
