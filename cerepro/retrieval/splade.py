"""The SPLADE encoder: a masked LM's term weights of texts, over its vocabulary.

- **Encoding** (``encode_texts``): a masked LM's logits (B, L, V); the weight of term v is
  ``max_t log(1 + relu(logits[t, v]))`` over the non-padding positions t (SPLADE's max pooling).
  Texts are length-sorted and batched by a token budget (``cerepro.data.tokenize``), bf16 on CUDA.
- **Identity** (``load_encoder``): the model and its revision (the hub commit, else a fingerprint
  of the weights), so an index is never searched with queries of another model.

The first stage's engines sit side by side in this wing: SPLADE's encoder here, its quantised
impact index in :mod:`cerepro.retrieval.impacts` and the exact top-k search over it in
:mod:`cerepro.retrieval.search`. A dense retriever would add its encoder and index as modules of
their own beside these; BM25's index and search are :mod:`cerepro.data.bm25` (the data wing reads
BM25 candidates itself).

Bad input fails before encoding with :class:`FirstStageError` naming the file: a checkpoint that
is not a masked LM, or whose masked-LM head is missing.

This module encodes; it never indexes, searches, trains or re-ranks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from cerepro.data.tokenize import PairEncoding, padded_batch, token_budget_batches
from cerepro.vocab import FirstStageError, Precision

if TYPE_CHECKING:  # scipy is imported where it is used
    import scipy.sparse

# Tiny masked LM for offline tests: DistilBERT's shape (no token types), 2 layers, hidden 64.
TINY_MLM = {"n_layers": 2, "dim": 64, "n_heads": 4, "hidden_dim": 256, "dropout": 0.0, "attention_dropout": 0.0}


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

    from cerepro.model.demo_tokenizers import demo_tokenizer

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
