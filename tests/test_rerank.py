"""Re-ranking: exact scores whatever the batching, deterministic ranks, run files, shard resume,
and clear errors on bad candidates. Models are 2-layer, 32-hidden BERT/RoBERTa built in code."""

import numpy as np
import pandas as pd
import pytest
import torch
from test_tokenize import bert_tokenizer, random_texts, roberta_tokenizer
from tolerance import TF32_REL, assert_scores_close
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

import cerepro.evaluation.rerank as rerank_module
from cerepro.data.tokenize import encode_pairs
from cerepro.data.trec import read_run, write_run
from cerepro.evaluation.rerank import rank_scores, rerank, score_pairs
from cerepro.model.first_token import supports_first_token_last_layer


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a shared machine idle-spinning threads
    make each small op wait for a core (tests ran 100x slower under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(tokenizer, kind="bert", seed=0, attn_implementation="sdpa"):
    torch.manual_seed(seed)
    shape = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.5,  # scores spread well beyond the tolerances checked
    )
    if kind == "bert":
        config = BertConfig(max_position_embeddings=64, **shape)
        config._attn_implementation = attn_implementation
        return BertForSequenceClassification(config).eval()
    config = RobertaConfig(max_position_embeddings=66, **shape)
    config._attn_implementation = attn_implementation
    return RobertaForSequenceClassification(config).eval()


def one_at_a_time(model, tokenizer, queries, passages, max_length):
    """The reference: each pair tokenized by the tokenizer and scored alone, no padding."""
    with torch.no_grad():
        return np.array(
            [
                # Lists of one: a bare "" passage would be taken for "no pair" by the tokenizer.
                model(**tokenizer([q], [p], truncation=True, max_length=max_length, return_tensors="pt"))
                .logits[0, 0]
                .item()
                for q, p in zip(queries, passages)
            ]
        )


@pytest.fixture
def world():
    """Three queries, 12 documents, 24 candidate rows (documents shared between queries)."""
    queries = dict(zip(["q1", "q2", "q3"], random_texts(3, 6, seed=20)))
    docs = dict(zip([f"d{i:02d}" for i in range(12)], random_texts(12, 30, seed=21)))
    rng = np.random.default_rng(22)
    rows = [(q, d) for q in queries for d in rng.choice(sorted(docs), size=8, replace=False)]
    return queries, docs, pd.DataFrame(rows, columns=["query_id", "doc_id"])


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("max_tokens, batch_size", [(None, 1), (None, 5), (64, None), (200, 3), (10_000, None)])
def test_scores_equal_one_pair_at_a_time(kind, max_tokens, batch_size):
    tokenizer = bert_tokenizer() if kind == "bert" else roberta_tokenizer()
    model = tiny_model(tokenizer, kind)
    queries, passages = random_texts(23, 6, seed=30), random_texts(23, 40, seed=31)
    encoding = encode_pairs(tokenizer, queries, passages, max_length=40)
    scores = score_pairs(
        model,
        encoding,
        pad_token_id=tokenizer.pad_token_id,
        max_tokens=max_tokens,
        batch_size=batch_size,
        precision="fp32",
    )
    assert scores.dtype == np.float32
    expected = one_at_a_time(model, tokenizer, queries, passages, 40)
    assert_scores_close(scores, expected)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_first_token_last_layer_gives_the_same_scores(kind, attn_implementation):
    tokenizer = bert_tokenizer() if kind == "bert" else roberta_tokenizer()
    model = tiny_model(tokenizer, kind, attn_implementation=attn_implementation)
    assert supports_first_token_last_layer(model)
    last = model.base_model.encoder.layer[-1]
    queries, passages = random_texts(17, 6, seed=40), random_texts(17, 30, seed=41)
    encoding = encode_pairs(tokenizer, queries, passages, max_length=32)
    kwargs = dict(pad_token_id=tokenizer.pad_token_id, max_tokens=100, precision="fp32")
    full = score_pairs(model, encoding, first_token_last_layer=False, **kwargs)
    short = score_pairs(model, encoding, first_token_last_layer=True, **kwargs)
    assert_scores_close(short, full)
    assert model.base_model.encoder.layer[-1] is last  # the model is given back unchanged


def test_models_without_the_shortcut_score_plainly():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    tokenizer = bert_tokenizer()
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=1)
    model = DistilBertForSequenceClassification(config).eval()
    assert not supports_first_token_last_layer(model)
    queries, passages = random_texts(9, 6, seed=42), random_texts(9, 30, seed=43)
    encoding = encode_pairs(tokenizer, queries, passages, max_length=32)
    scores = score_pairs(model, encoding, pad_token_id=0, batch_size=4, precision="fp32")
    with torch.no_grad():
        batch = tokenizer(queries, passages, truncation=True, max_length=32, padding=True, return_tensors="pt")
        del batch["token_type_ids"]
        expected = model(**batch).logits[:, 0].numpy()
    assert_scores_close(scores, expected)


def test_rerank_ranks_by_score_then_doc_id(world):
    queries, docs, candidates = world
    tokenizer = bert_tokenizer()
    model = tiny_model(tokenizer)
    run = rerank(
        model,
        tokenizer,
        candidates,
        queries,
        docs,
        max_length=32,
        max_tokens=96,
        precision="fp32",
        progress=False,
    )
    assert list(run.columns) == ["query_id", "doc_id", "score", "rank"]
    assert len(run) == len(candidates)
    expected = one_at_a_time(model, tokenizer, [queries[q] for q in run.query_id], [docs[d] for d in run.doc_id], 32)
    assert_scores_close(run.score, expected)
    for _, group in run.groupby("query_id"):
        assert group["rank"].tolist() == list(range(1, len(group) + 1))
        assert (np.diff(group.score) <= 0).all()


def test_ties_broken_by_doc_id_descending_as_trec_eval_does():
    candidates = pd.DataFrame({"query_id": ["b", "a", "a", "a", "b"], "doc_id": ["z", "y", "x", "w", "v"]})
    run = rank_scores(candidates, np.array([1.0, 0.5, 2.0, 0.5, 1.0], dtype=np.float32))
    assert run[["query_id", "doc_id", "rank"]].values.tolist() == [
        ["a", "x", 1],
        ["a", "y", 2],  # tied with w at 0.5: y > w
        ["a", "w", 3],
        ["b", "z", 1],  # tied with v at 1.0
        ["b", "v", 2],
    ]
    # Identical texts under different ids score identically; the order is still by doc id.
    tokenizer = bert_tokenizer()
    same = pd.DataFrame({"query_id": ["q"] * 4, "doc_id": ["d3", "d1", "d4", "d2"]})
    run = rerank(
        tiny_model(tokenizer),
        tokenizer,
        same,
        {"q": "dog"},
        lambda d: "a dog barks",
        max_length=16,
        progress=False,
    )
    assert run.doc_id.tolist() == ["d4", "d3", "d2", "d1"]
    assert run.score.nunique() == 1


def test_written_ranks_are_the_order_trec_eval_evaluates():
    """With tied scores, the rank column rerank writes agrees with pytrec_eval's own ranking: the
    relevant document sits at rank 2 of 3 in our file, and pytrec_eval's RR says 1/2."""
    import pytrec_eval

    candidates = pd.DataFrame({"query_id": ["q"] * 3, "doc_id": ["d1", "d2", "d3"]})
    run = rank_scores(candidates, np.array([0.5, 0.5, 0.5], dtype=np.float32))
    ours = 1 / run.loc[run.doc_id == "d2", "rank"].item()
    nested = {"q": {d: float(s) for d, s in zip(run.doc_id, run.score)}}
    theirs = pytrec_eval.RelevanceEvaluator({"q": {"d2": 1}}, {"recip_rank"}).evaluate(nested)["q"]["recip_rank"]
    assert ours == theirs == 0.5


def test_trec_run_round_trip_and_atomic_write(tmp_path, world, monkeypatch):
    queries, docs, candidates = world
    tokenizer = bert_tokenizer()
    run = rerank(tiny_model(tokenizer), tokenizer, candidates, queries, docs, max_length=32, progress=False)
    path = write_run(run, tmp_path / "runs" / "tiny.trec", "tiny-bert.bce.s0")
    back = read_run(path)
    assert back[["query_id", "doc_id"]].values.tolist() == run[["query_id", "doc_id"]].values.tolist()
    assert back["rank"].tolist() == run["rank"].tolist()
    assert (back["score"].to_numpy(np.float32) == run["score"].to_numpy()).all()  # float32 round-trips
    assert {line.split()[5] for line in path.read_text().splitlines()} == {"tiny-bert.bce.s0"}
    assert path.read_text().splitlines()[0].split()[1] == "Q0"

    # A write that fails half-way leaves the previous file intact and no temporary file behind.
    before = path.read_text()

    def half_write(self, target, **kwargs):
        open(target, "w").write("q1 Q0 d1 1 ")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_write)
    with pytest.raises(OSError, match="disk full"):
        write_run(run, path, "other")
    assert path.read_text() == before
    assert [p.name for p in path.parent.iterdir()] == ["tiny.trec"]


def test_shards_resume_only_what_is_missing(tmp_path, world, monkeypatch):
    queries, docs, candidates = world
    tokenizer = bert_tokenizer()
    model = tiny_model(tokenizer)
    kwargs = dict(max_length=32, shard_dir=tmp_path / "shards", shard_size=7, precision="fp32", progress=False)
    scored = []
    real_score_pairs = rerank_module.score_pairs

    def counting(model, encoding, **kw):
        scored.append(len(encoding))
        return real_score_pairs(model, encoding, **kw)

    monkeypatch.setattr(rerank_module, "score_pairs", counting)
    first = rerank(model, tokenizer, candidates, queries, docs, **kwargs)
    shards = sorted(p.name for p in (tmp_path / "shards").glob("shard-*.npy"))
    assert shards == ["shard-00000.npy", "shard-00001.npy", "shard-00002.npy", "shard-00003.npy"]
    assert scored == [7, 7, 7, 3]

    scored.clear()
    (tmp_path / "shards" / "shard-00002.npy").unlink()
    (tmp_path / "shards" / "shard-00003.npy").write_bytes(b"truncated")  # a corrupt shard is redone
    second = rerank(model, tokenizer, candidates, queries, docs, **kwargs)
    assert scored == [7, 3]
    pd.testing.assert_frame_equal(first, second)
    unsharded = rerank(model, tokenizer, candidates, queries, docs, max_length=32, precision="fp32", progress=False)
    assert_scores_close(first.score, unsharded.score)  # other batches

    with pytest.raises(ValueError, match="holds shards of another job.*model"):
        rerank(tiny_model(tokenizer, seed=1), tokenizer, candidates, queries, docs, **kwargs)


def test_shards_of_other_texts_under_the_same_ids_are_refused(tmp_path, world):
    """The shard manifest holds a digest of the token ids: a passage edited under the same doc id
    (or another tokenizer of the same name) is not scored from the old shards."""
    queries, docs, candidates = world
    tokenizer = bert_tokenizer()
    model = tiny_model(tokenizer)
    kwargs = dict(max_length=32, shard_dir=tmp_path / "shards", shard_size=7, precision="fp32", progress=False)
    rerank(model, tokenizer, candidates, queries, docs, **kwargs)
    edited = {**docs, candidates.doc_id[0]: "an edited passage " + docs[candidates.doc_id[0]]}
    with pytest.raises(ValueError, match=r"holds shards of another job \(differs in: encoding\)"):
        rerank(model, tokenizer, candidates, queries, edited, **kwargs)


def cached_rerank(tmp_path, world, monkeypatch):
    """``world`` re-ranked with its tokenized pairs cached (key ``demo/test``) under ``tmp_path``:
    a function that re-ranks again with the same model and options (other texts or candidates
    given), and its first result."""
    monkeypatch.setenv("CEREPRO_CACHE", str(tmp_path))
    queries, docs, candidates = world
    tokenizer = bert_tokenizer()
    model = tiny_model(tokenizer)

    def again(texts=docs, candidates=candidates):
        return rerank(
            model, tokenizer, candidates, queries, texts, max_length=32, cache_key="demo/test", progress=False
        )

    return again, again()


def test_a_cut_tokenized_cache_file_is_rebuilt(tmp_path, world, monkeypatch):
    again, first = cached_rerank(tmp_path, world, monkeypatch)
    [cached] = (tmp_path / "tokenized").glob("*.npz")
    data = cached.read_bytes()
    cached.write_bytes(data[: len(data) // 2])
    pd.testing.assert_frame_equal(again(), first)
    assert cached.read_bytes() == data


def test_cache_key_reuses_tokenized_pairs(tmp_path, world, monkeypatch):
    queries, docs, candidates = world
    again, first = cached_rerank(tmp_path, world, monkeypatch)
    lookups = []

    def doc_text(doc_id):
        lookups.append(doc_id)
        return docs[doc_id]

    second = again(doc_text)
    assert lookups == []  # a cache hit never reads the collection
    pd.testing.assert_frame_equal(first, second)
    again(doc_text, candidates.iloc[:-1])
    assert lookups  # other candidates: another cache entry
    assert len(list((tmp_path / "tokenized").glob("*.npz"))) == 2


def test_cached_pairs_are_rebuilt_when_lengths_rule_or_lower_casing_change(tmp_path, world, monkeypatch):
    """Evaluation pairs cached under one cache_key are keyed by every input setting too: the
    side limits, the truncation rule (the table's retokenize) and the tokenizer (lower-casing)."""
    from transformers import BertTokenizerFast

    monkeypatch.setenv("CEREPRO_CACHE", str(tmp_path))
    queries, docs, candidates = world
    words = sorted({w for t in [*queries.values(), *docs.values()] for w in t.split()})
    vocab = {
        w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *(w.upper() for w in words)])
    }
    cased = BertTokenizerFast(vocab=vocab, do_lower_case=False)
    folded = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    model = tiny_model(cased)
    shouting = {q: t.upper() for q, t in queries.items()}  # lower-casing changes their tokens
    base = dict(max_length=48, cache_key="demo/test", progress=False, precision="fp32")
    settings = [
        dict(),
        dict(query_max_length=4, passage_max_length=8),
        dict(query_max_length=4, passage_max_length=8, truncation="retokenize"),
        dict(query_max_length=4, passage_max_length=16, truncation="retokenize"),
    ]
    scores = [rerank(model, cased, candidates, shouting, docs, **base, **extra).score for extra in settings]
    scores.append(rerank(model, folded, candidates, shouting, docs, **base, **settings[2]).score)
    assert len(list((tmp_path / "tokenized").glob("*.npz"))) == 5  # one entry each, none reused
    assert not np.allclose(scores[2], scores[4])  # the folded queries are other tokens
    again = rerank(model, folded, candidates, shouting, docs, **base, **settings[2]).score
    np.testing.assert_array_equal(again, scores[4])  # the same settings: the entry is reused
    assert len(list((tmp_path / "tokenized").glob("*.npz"))) == 5


def test_bf16_scores_are_close_to_fp32(world):
    queries, docs, candidates = world
    tokenizer = bert_tokenizer()
    model = tiny_model(tokenizer)
    kwargs = dict(max_length=32, progress=False)
    fp32 = rerank(model, tokenizer, candidates, queries, docs, precision="fp32", **kwargs)
    bf16 = rerank(model, tokenizer, candidates, queries, docs, precision="bf16", **kwargs)
    merged = fp32.merge(bf16, on=["query_id", "doc_id"])
    assert not np.array_equal(merged.score_x, merged.score_y)  # bf16 did run
    assert np.corrcoef(merged.score_x, merged.score_y)[0, 1] > 0.97
    assert next(model.parameters()).dtype == torch.float32  # autocast: the weights stay fp32


def test_an_evaluation_at_the_runs_precision_is_not_bf16_rounded(world):
    """What the evaluate notebook passes for an fp32 (or tf32) run gives the exact fp32 scores;
    the old default ("auto", bf16 on CUDA and on CPUs with native bf16) would not."""
    from cerepro.grid import engine
    from cerepro.grids import load_grid

    queries, docs, candidates = world
    tokenizer = bert_tokenizer()
    model = tiny_model(tokenizer)
    grid = load_grid("demo")
    precision = engine.job_parameters(grid, "evaluate", run_id=grid.runs[0].run_id).settings.precision
    assert precision == "fp32"
    kwargs = dict(max_length=32, progress=False)
    scored = rerank(model, tokenizer, candidates, queries, docs, precision=precision, **kwargs)
    exact = rerank(model, tokenizer, candidates, queries, docs, precision="fp32", **kwargs)
    bf16 = rerank(model, tokenizer, candidates, queries, docs, precision="bf16", **kwargs)
    pd.testing.assert_frame_equal(scored, exact)
    merged = scored.merge(bf16, on=["query_id", "doc_id"])
    assert not np.array_equal(merged.score_x, merged.score_y)


def test_fp32_and_tf32_scoring_set_the_matmul_precision_and_restore_it(world, monkeypatch):
    queries, docs, candidates = world
    tokenizer = bert_tokenizer()
    model = tiny_model(tokenizer)
    seen = []
    forward = model.forward
    monkeypatch.setattr(
        model, "forward", lambda *a, **k: (seen.append(torch.get_float32_matmul_precision()), forward(*a, **k))[1]
    )
    encoding = encode_pairs(tokenizer, ["dog"] * 3, ["the cat", "a dog", "big pet"], max_length=16)
    assert torch.get_float32_matmul_precision() == "highest"
    tf32 = score_pairs(model, encoding, pad_token_id=0, precision="tf32")
    assert set(seen) == {"high"} and torch.get_float32_matmul_precision() == "highest"
    seen.clear()
    torch.set_float32_matmul_precision("medium")
    try:
        fp32 = score_pairs(model, encoding, pad_token_id=0, precision="fp32")
        assert set(seen) == {"highest"} and torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision("highest")
    assert_scores_close(tf32, fp32, rel=TF32_REL)  # TF32 exists on GPUs only: equal on CPU


def test_missing_texts_are_counted_with_examples(world):
    queries, docs, candidates = world
    tokenizer = bert_tokenizer()
    model = tiny_model(tokenizer)
    partial = {d: t for d, t in docs.items() if d not in {"d01", "d05"}}
    n_rows = int(candidates.doc_id.isin(["d01", "d05"]).sum())
    n_docs = candidates.doc_id.nunique()
    expected = (
        rf"2 of {n_docs} document ids have no text \({n_rows} of 24 candidate pairs\), "
        r"e.g. \['d0[15]', 'd0[15]'\]"
    )
    with pytest.raises(ValueError, match=expected):
        rerank(model, tokenizer, candidates, queries, partial, max_length=32, progress=False)
    with pytest.raises(ValueError, match=r"1 of 3 query ids have no text \(8 of 24"):
        rerank(model, tokenizer, candidates, {"q1": "a", "q2": "b"}, docs, max_length=32, progress=False)


def test_bad_candidates_are_rejected(world):
    queries, docs, candidates = world
    tokenizer = bert_tokenizer()
    model = tiny_model(tokenizer)
    doubled = pd.concat([candidates, candidates.iloc[[0, 3]]])
    with pytest.raises(ValueError, match=r"2 duplicate \(query_id, doc_id\) candidate rows, e.g. \[\('q1'"):
        rerank(model, tokenizer, doubled, queries, docs, max_length=32, progress=False)
    with pytest.raises(ValueError, match=r"lack column\(s\) \['doc_id'\]"):
        rerank(model, tokenizer, candidates.rename(columns={"doc_id": "docno"}), queries, docs, max_length=32)
    with pytest.raises(ValueError, match="precision must be one of"):
        rerank(model, tokenizer, candidates, queries, docs, max_length=32, precision="fp16", progress=False)
