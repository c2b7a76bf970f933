"""A training step's pairs scored in a few length-homogeneous forwards instead of one padded to the
longest pair: where to cut, and what one more forward costs.

Used by :func:`cerepro.training.train.fit` on one process; the cuts depend on the data only, so a
run stays deterministic. This module scores; it never computes a loss or steps an optimiser.
"""

from __future__ import annotations

import numpy as np
import torch

from cerepro.data.tokenize import PairEncoding, padded_batch
from cerepro.model import backbones


def score_pairs_train(
    model,
    encoding: PairEncoding,
    pairs: np.ndarray,
    lengths: np.ndarray,
    pad_id: int,
    device,
    *,
    overhead_tokens: int | None,
) -> torch.Tensor:
    """Scores (P,) of ``pairs`` with gradients, in input order.

    With ``overhead_tokens`` (None: one forward), the pairs are sorted by length and scored in a
    few length-homogeneous forwards, each padded to its own longest pair, instead of one padded to
    the longest of all; the cuts minimise padded tokens plus ``overhead_tokens`` per forward
    (``chunk_overhead_tokens``), so short, uniform batches stay in one forward. The cuts depend
    on the data only, so a run stays deterministic.
    """
    if overhead_tokens is None or len(pairs) < 8:
        batch = padded_batch(encoding, pairs, pad_id)
        return model(**{k: v.to(device, non_blocking=True) for k, v in batch.items()}).logits[:, 0]
    order = np.argsort(lengths, kind="stable")
    batches = [
        padded_batch(encoding, pairs[idx], pad_id)
        for idx in np.split(order, length_cuts(lengths[order], overhead_tokens=overhead_tokens))
    ]
    # One word-embedding lookup for all chunks: its backward then builds the dense (vocab, hidden)
    # gradient once per step, not once per chunk (47 MB of zeros and adds per chunk for MiniLM).
    ids = torch.cat([b["input_ids"].reshape(-1) for b in batches]).to(device)
    vectors = model.get_input_embeddings()(ids)  # (tokens, hidden)
    pieces, start = [], 0
    for batch in batches:
        shape = batch["input_ids"].shape  # (B_chunk, L_chunk)
        embeds = vectors[start : start + shape.numel()].view(*shape, -1)
        start += shape.numel()
        rest = {k: v.to(device) for k, v in batch.items() if k != "input_ids"}
        pieces.append(model(inputs_embeds=embeds, **rest).logits[:, 0])
    inverse = torch.from_numpy(np.argsort(order, kind="stable")).to(device)
    return torch.cat(pieces)[inverse]


def chunk_overhead_tokens(model_config, device_type: str, bf16: bool) -> int:
    """The fixed cost of one more forward + backward (Python, kernel launches), in tokens of the
    model's own work: an assumed per-forward time (0.5-1 ms plus a little per layer) times an
    assumed sustained rate (50 GFLOP/s fp32 on CPU, twice that in bf16; 400 TFLOP/s on GPU) over
    the training FLOPs per token of a 128-token pair. Fixed numbers, not measured ones, so the
    cuts are reproducible; a 2-layer demo model gets about a hundred tokens, MiniLM a few,
    bert-base on a GPU about a thousand."""
    layers = model_config.num_hidden_layers
    if device_type == "cuda":
        seconds, rate = (0.5 + 0.1 * layers) * 1e-3, 4e14
    else:
        seconds, rate = (1.0 + 0.4 * layers) * 1e-3, (1e11 if bf16 else 5e10)
    per_token = backbones.pair_flops(model_config, [128], training=True) / 128
    return max(1, int(seconds * rate / per_token))


def length_cuts(sorted_lengths: np.ndarray, *, overhead_tokens: int = 512, max_chunks: int = 8) -> list[int]:
    """Where to cut ascending ``sorted_lengths`` into equal-count chunks: the number of chunks
    that minimises padded tokens + ``overhead_tokens`` per forward (vectorised over candidates)."""
    n = len(sorted_lengths)
    best_cost, best_cuts = None, []
    for k in range(1, min(max_chunks, n // 4) + 1):
        cuts = [round(n * i / k) for i in range(1, k)]
        ends = np.array(cuts + [n]) - 1
        sizes = np.diff(np.array([0] + cuts + [n]))
        cost = int((sorted_lengths[ends] * sizes).sum()) + overhead_tokens * k
        if best_cost is None or cost < best_cost:
            best_cost, best_cuts = cost, cuts
    return best_cuts
