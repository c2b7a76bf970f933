"""The last layer of a BERT-style cross-encoder computed at the first position only.

A sequence-classification head of the BERT family reads the last hidden state of the first token
alone, so the last layer's other positions are computed for nothing. Inside
:func:`last_layer_first_token_only`, the last layer is swapped for one that computes the first
position only (exact up to float rounding, in training too), then restored; re-ranking and the
training forward use it alike, where :func:`supports_first_token_last_layer` says the model is one
it applies to.

This module changes how a forward is computed, never what a model is or holds.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

# Sequence-classification heads that read only the first token of the last hidden states.
_FIRST_TOKEN_HEADS = {
    "BertForSequenceClassification",
    "RobertaForSequenceClassification",
    "XLMRobertaForSequenceClassification",
    "CamembertForSequenceClassification",
    "ElectraForSequenceClassification",
}


def supports_first_token_last_layer(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a BERT-style encoder whose head reads only the first token."""
    if type(model).__name__ not in _FIRST_TOKEN_HEADS or model.config.is_decoder:
        return False
    if model.config._attn_implementation not in ("eager", "sdpa"):
        return False  # other kernels take other mask layouts
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        return False
    last = layers[-1]
    return (
        all(hasattr(last, name) for name in ("attention", "intermediate", "output"))
        and all(
            hasattr(last.attention.self, name)
            for name in ("query", "key", "value", "scaling", "num_attention_heads", "attention_head_size", "dropout")
        )
        and all(isinstance(getattr(last.attention.self, name), torch.nn.Linear) for name in ("query", "key", "value"))
        and not getattr(last, "add_cross_attention", False)
        and not getattr(last, "chunk_size_feed_forward", 0)
    )


class _FirstTokenLayer(torch.nn.Module):
    """A BERT layer that returns only the first position's output, (B, L, H) -> (B, 1, H).

    With a single query, the key and value projections of the other positions fold away (per
    head h, query q_h, input rows x_t):

    - logits: ``q_h . (W_k x_t + b_k) = (W_k^T q_h) . x_t + q_h . b_k``;
    - context: ``sum_t p_t (W_v x_t + b_v) = W_v (sum_t p_t x_t) + (sum_t p_t) b_v``.

    So per token the layer costs two dot products per head instead of the key and value
    projections, the feed-forward and the output projection. Exact up to float rounding, in
    training too: the skipped positions feed nothing downstream, and attention dropout (training
    mode) drops the first query's weights as the full layer would.
    """

    def __init__(self, layer: torch.nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        layer, attention = self.layer, self.layer.attention.self
        batch, length, width = hidden_states.shape
        heads, head_size = attention.num_attention_heads, attention.attention_head_size
        first = hidden_states[:, :1]  # (B, 1, H): the only query
        query = attention.query(first).view(batch, heads, head_size)  # (B, h, d)
        key_weight = attention.key.weight.view(heads, head_size, width)  # (h, d, H)
        folded = torch.einsum("bhd,hdk->bhk", query, key_weight)  # W_k^T q: (B, h, H)
        logits = torch.bmm(folded, hidden_states.transpose(1, 2))  # (B, h, L)
        if attention.key.bias is not None:  # the same for every t (the softmax cancels it), kept
            # so that b_k gets the gradient it gets in the full layer
            logits = logits + (query * attention.key.bias.view(heads, head_size)).sum(-1, keepdim=True)
        logits = logits * attention.scaling
        if attention_mask is not None:
            mask = attention_mask[:, :, :1] if attention_mask.dim() == 4 else attention_mask[:, None, None]
            mask = mask.reshape(batch, -1, length)  # (B, 1 or h, L): the first query's row
            if mask.dtype == torch.bool:
                logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
            else:  # additive (eager attention)
                logits = logits + mask
        probs = logits.float().softmax(-1).to(hidden_states.dtype)
        if attention.training and attention.dropout.p:
            probs = torch.nn.functional.dropout(probs, attention.dropout.p)
        mixed = torch.bmm(probs, hidden_states)  # sum_t p_t x_t: (B, h, H)
        value_weight = attention.value.weight.view(heads, head_size, width)
        context = torch.einsum("bhk,hdk->bhd", mixed, value_weight)  # (B, h, d)
        if attention.value.bias is not None:
            context = context + probs.sum(-1, keepdim=True) * attention.value.bias.view(heads, head_size)
        hidden = layer.attention.output(context.reshape(batch, 1, heads * head_size), first)
        return layer.output(layer.intermediate(hidden), hidden)


@contextmanager
def last_layer_first_token_only(model: torch.nn.Module):
    """Swap the last layer for its first-token-only version (scoring, or a training forward whose
    backward may run later), then restore it: parameters and state dict are untouched."""
    layers = model.base_model.encoder.layer
    last = layers[-1]
    layers[-1] = _FirstTokenLayer(last)
    try:
        yield
    finally:
        layers[-1] = last
