"""Tokenizers for the tiny demo backbones: trained on the demo world's texts, cached by content.

A ``builtin:<arch>`` backbone is a tiny random model; its tokenizer is trained here with the
``tokenizers`` library on the demo world's training texts (WordPiece for BERT, ELECTRA and
DeBERTa-v2, byte-level BPE for RoBERTa and ModernBERT), in the family's own pair template, the
same vocabulary in every process. :func:`demo_tokenizer` trains it once and caches it under
``cache_dir()/tokenizers/``, keyed by architecture, vocabulary size, the texts and
:data:`TOKENIZER_VERSION`.

This module trains and caches tokenizers; it builds no model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Sequence

from cerepro.model.backbones import BUILTIN_ARCHS, DEMO_VOCAB_SIZE, BackboneError
from cerepro.paths import cache_dir

TOKENIZER_VERSION = 3  # bump when train_tokenizer changes, so cached tokenizers are rebuilt


def train_tokenizer(arch: str, texts: Iterable[str], *, vocab_size: int = DEMO_VOCAB_SIZE, max_length: int = 512):
    """A fast tokenizer of ``arch``'s family trained on ``texts`` with the ``tokenizers`` library.

    WordPiece with ``[CLS] q [SEP] p [SEP]`` and token types (BERT, ELECTRA, and DeBERTa-v2,
    whose real SentencePiece vocabulary the ``tokenizers`` Unigram trainer reproduces poorly on a
    corpus this small); byte-level BPE with ``<s> q </s></s> p </s>`` (RoBERTa) or with
    ``[CLS] q [SEP] p [SEP]`` and no token types (ModernBERT). Deterministic for given texts.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if arch not in BUILTIN_ARCHS:
        raise BackboneError(f"unknown builtin architecture {arch!r}; known: {', '.join(BUILTIN_ARCHS)}")
    if arch == "roberta":
        specials = {
            "cls_token": "<s>",
            "pad_token": "<pad>",
            "sep_token": "</s>",
            "unk_token": "<unk>",
            "mask_token": "<mask>",
        }
    else:
        specials = {
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        }
    special_list = list(specials.values())  # ids 0..4 in this order
    texts = list(texts)

    if arch in ("bert", "electra", "deberta-v2"):
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        # The trainer numbers the word-continuing letters ("##a") in hash order, which differs
        # per process, and breaks ties between merges by those numbers: trained on a scratch
        # tokenizer whose first ids are the special tokens and then those letters, sorted, the
        # vocabulary (and so every demo model and number) is the same in every process.
        continuing = sorted(
            {
                f"##{c}"
                for text in texts
                for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))
                for c in word[1:]
            }
        )
        scratch = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        scratch.normalizer, scratch.pre_tokenizer = tok.normalizer, tok.pre_tokenizer
        scratch.train_from_iterator(
            texts,
            length=len(texts),
            trainer=trainers.WordPieceTrainer(
                vocab_size=vocab_size, special_tokens=special_list + continuing, show_progress=False
            ),
        )
        tok.model = models.WordPiece(vocab=scratch.get_vocab(), unk_token="[UNK]")
        tok.add_special_tokens(special_list)
    else:  # roberta, modernbert
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=arch == "modernbert")
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=special_list,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer, length=len(texts))

    cls, sep = specials["cls_token"], specials["sep_token"]
    ids = {t: tok.token_to_id(t) for t in (cls, sep)}
    if arch == "roberta":
        tok.post_processor = processors.RobertaProcessing(
            (sep, ids[sep]), (cls, ids[cls]), trim_offsets=True, add_prefix_space=False
        )
        input_names = ["input_ids", "attention_mask"]
    else:
        second = 0 if arch == "modernbert" else 1
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}",
            pair=f"{cls} $A {sep} $B:{second} {sep}:{second}",
            special_tokens=[(cls, ids[cls]), (sep, ids[sep])],
        )
        input_names = (
            ["input_ids", "attention_mask"]
            if arch == "modernbert"
            else ["input_ids", "token_type_ids", "attention_mask"]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=max_length, model_input_names=input_names, **specials
    )


def demo_texts() -> list[str]:
    """Every query and passage text of the demo world's training split, in a fixed order."""
    from cerepro.data import datasets, demo_world

    collection = datasets.load_local(demo_world.split_folder("train"), "demo:train")
    return [text for _, text in collection.docs] + list(collection.queries.values())


def demo_tokenizer(arch: str, *, max_length: int = 512, texts: Sequence[str] | None = None):
    """The tokenizer of a tiny demo backbone, trained once on the demo world's texts and cached
    under ``cache_dir()/tokenizers/`` (keyed by architecture, vocabulary size and the texts)."""
    from transformers import AutoTokenizer

    texts = demo_texts() if texts is None else list(texts)
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    folder = cache_dir() / "tokenizers" / f"{arch}-{TOKENIZER_VERSION}-v{DEMO_VOCAB_SIZE}-{digest}"
    if not (folder / "tokenizer.json").is_file():
        tokenizer = train_tokenizer(arch, texts, vocab_size=DEMO_VOCAB_SIZE, max_length=max_length)
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, folder)  # atomic: a reader never sees a half-written folder
        except OSError:  # another process won the race; its folder is identical
            shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.model_max_length = max_length
    return tokenizer
