"""The SPLADE first stage: weights against a plain transformers forward, exact top-k against a
dense product of the same quantised weights, resumable shards, the run names the paper profile
reads, and a clear error for every bad input (offline: a tiny random masked LM built in code)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tolerance import assert_scores_close

from cerepro import vocab
from cerepro.config import load_config
from cerepro.data.datasets import load_candidates, load_collection
from cerepro.data.trec import DataFormatError
from cerepro.paths import cache_dir
from cerepro.retrieval import first_stage as fs
from cerepro.retrieval import impacts, splade
from cerepro.retrieval.search import ENGINES, _doc_blocks, search

ROOT = Path(__file__).resolve().parents[1]
REAL_TEXT = Path(__file__).parent / "fixtures" / "real-text"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CEREPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CEREPRO_PARAMS", str(ROOT / "params"))


@pytest.fixture(scope="module")
def encoder():
    return splade.load_encoder("builtin:splade")


@pytest.fixture
def real_text(tmp_path):
    folder = tmp_path / "real-text"
    shutil.copytree(REAL_TEXT, folder)
    return folder


def plain_splade(model, tokenizer, text, max_length):
    """The textbook formula, one text at a time (no batching, no padding tricks)."""
    enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    weights = torch.log1p(torch.relu(logits)) * enc["attention_mask"][..., None]
    return weights.max(dim=1).values[0].numpy()


def texts_of(folder_or_id):
    collection = load_collection(folder_or_id)
    return collection, [t for _, t in collection.docs], list(collection.queries.values())


@pytest.mark.parametrize("source", ["real", "demo"])
def test_weights_equal_a_plain_transformers_forward(encoder, real_text, source):
    model, tokenizer, _ = encoder
    dataset = f"local:{real_text}" if source == "real" else "demo:in-domain"
    _, docs, queries = texts_of(dataset)
    texts = docs[:40] + queries[:10]
    # a small token budget: many batches, each padded to its own longest text
    got = splade.encode_texts(model, tokenizer, texts, max_length=48, max_tokens=200, precision="fp32").toarray()
    want = np.stack([plain_splade(model, tokenizer, t, 48) for t in texts])
    assert got.shape == want.shape and (want > 0).sum(1).min() > 0
    assert_scores_close(got, want)


def dense_oracle(doc_q, query_q, doc_ids, depth):
    """Every (query, doc) score as a dense int64 product, ranked by the documented tie rule."""
    scores = query_q.toarray().astype(np.int64) @ doc_q.toarray().astype(np.int64).T  # (Q, D)
    out = []
    for row in scores:
        hits = np.flatnonzero(row)
        ranked = sorted(hits, key=lambda d: (-row[d], _desc(doc_ids[d])))[:depth]
        out.append(([doc_ids[d] for d in ranked], [int(row[d]) for d in ranked]))
    return out


def _desc(doc_id):  # sort key for doc id descending
    return tuple(-ord(c) for c in doc_id) + (1,)


def build(dataset, encoder, shard_size=7):
    model, tokenizer, identity = encoder
    return fs.index_collection(
        dataset, model, tokenizer, identity, max_length=64, shard_size=shard_size, precision="fp32", progress=False
    )


def index_matrix(index):
    """The index's own quantised passage impacts as a (D, V) matrix, read back from its postings."""
    import scipy.sparse as sp

    return sp.csc_matrix(
        (np.asarray(index.impacts), np.asarray(index.docs), index.indptr), shape=(len(index.doc_ids), index.vocab_size)
    ).tocsr()


@pytest.fixture(scope="module")
def indexed(encoder, tmp_path_factory):
    """Per source, built once for both engines (the demo world alone takes seconds to generate):
    the index, its quantised passage matrix, the queries' quantised weights and the depth."""
    built = {}

    def get(source):
        if source not in built:
            model, tokenizer, _ = encoder
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("CEREPRO_CACHE", str(tmp_path_factory.mktemp("cache")))
                folder = tmp_path_factory.mktemp("real") / "real-text"
                shutil.copytree(REAL_TEXT, folder)
                dataset = f"local:{folder}" if source == "real" else "demo:in-domain"
                collection, docs, queries = texts_of(dataset)
                if source == "demo":
                    queries = queries[:15]
                index = build(dataset, encoder)
                assert list(index.doc_ids) == [d for d, _ in collection.docs]
                # the index holds the quantised encoder weights of every passage (fp32 here: bf16
                # would round differently in other batch shapes)
                doc_q = index_matrix(index)
                fresh = impacts.quantise(splade.encode_texts(model, tokenizer, docs, max_length=64, precision="fp32"))
                assert index.manifest["postings"] == doc_q.nnz
                assert abs(doc_q.astype(np.int64) - fresh.astype(np.int64)).max() <= 1  # rounding at .5 only
                query_q = impacts.quantise(splade.encode_texts(model, tokenizer, queries, max_length=64))
            built[source] = index, doc_q, query_q, 10 if source == "real" else 50
        return built[source]

    return get


@pytest.mark.parametrize("source", ["real", "demo"])
@pytest.mark.parametrize("engine", ENGINES)
def test_top_k_equals_the_exhaustive_product_of_the_same_quantised_weights(indexed, source, engine):
    index, doc_q, query_q, depth = indexed(source)
    found_docs, found_scores = search(index, query_q, depth, engine=engine)
    for (want_docs, want_scores), got_docs, got_scores in zip(
        dense_oracle(doc_q, query_q, list(index.doc_ids), depth), found_docs, found_scores
    ):
        assert got_scores.tolist() == want_scores  # same scores, same order
        got_docs = [index.doc_ids[d] for d in got_docs]
        # same documents in the same order, except among exact ties with the last kept score,
        # where which of the tied documents make the cut is the engine's (scipy: the tie rule)
        last = want_scores[-1]
        strict = [d for d, s in zip(want_docs, want_scores) if s > last]
        assert got_docs[: len(strict)] == strict
        if engine == "scipy":
            assert got_docs == want_docs
    if engine == "scipy":  # cut into blocks of documents (as MS MARCO's 1.5e9 postings are): same
        blocked_docs, blocked_scores = search(index, query_q, depth, block_postings=index.manifest["postings"] // 5)
        assert len(_doc_blocks(index, index.manifest["postings"] // 5)) >= 5
        assert all((a == b).all() for a, b in zip(blocked_docs, found_docs))
        assert all((a == b).all() for a, b in zip(blocked_scores, found_scores))


def random_index(tmp_path, n_docs=600, n_queries=120, vocab=300, seed=0):
    """A built index of random integer impacts (few distinct values: many exact ties), in three
    shards, and random queries: the search's input without an encoder."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)

    def vectors(n, terms):
        rows = np.repeat(np.arange(n), terms)
        cols = rng.integers(0, vocab, n * terms)
        m = sp.csr_matrix((rng.integers(1, 4, n * terms).astype(np.float32), (rows, cols)), shape=(n, vocab))
        m.sum_duplicates()
        m.data = np.minimum(m.data, 3).astype(np.uint16)
        return m

    doc_q, query_q = vectors(n_docs, 12), vectors(n_queries, 4)
    ids = [f"d{i:04d}" for i in rng.permutation(n_docs)]
    shards = []
    for k, (lo, hi) in enumerate([(0, 200), (200, 450), (450, n_docs)]):
        shards.append(tmp_path / "shards" / f"passages-{k:05d}.npz")
        shards[-1].parent.mkdir(exist_ok=True)
        impacts._write_shard(shards[-1], ids[lo:hi], doc_q[lo:hi])
    index = impacts.build_index(shards, tmp_path / "index", {"model": "random", "revision": "-"}, vocab_size=vocab)
    return index, doc_q, query_q, ids


@pytest.mark.parametrize("threads", [2, 4])
def test_search_on_several_threads_returns_exactly_the_one_thread_top_k(tmp_path, threads):
    index, doc_q, query_q, ids = random_index(tmp_path)
    depth = 25
    one_docs, one_scores = search(index, query_q, depth, threads=1)
    many_docs, many_scores = search(index, query_q, depth, threads=threads)
    assert len(many_docs) == len(one_docs) == query_q.shape[0]
    for a, b, sa, sb in zip(one_docs, many_docs, one_scores, many_scores):
        assert a.tolist() == b.tolist() and sa.tolist() == sb.tolist()
    # and both are the exhaustive product's top-k under the tie rule (ties abound here)
    for (want_docs, want_scores), got_docs, got_scores in zip(
        dense_oracle(doc_q, query_q, ids, depth), many_docs, many_scores
    ):
        assert [index.doc_ids[d] for d in got_docs] == want_docs and got_scores.tolist() == want_scores
    # cut into document blocks too: still the same lists
    blocked_docs, _ = search(index, query_q, depth, threads=threads, block_postings=index.manifest["postings"] // 4)
    assert all(a.tolist() == b.tolist() for a, b in zip(one_docs, blocked_docs))


def test_search_with_fewer_than_one_thread_is_refused(tmp_path):
    index, _, query_q, _ = random_index(tmp_path, n_docs=20, n_queries=2)
    with pytest.raises(vocab.FirstStageError, match="threads must be at least 1, got 0"):
        search(index, query_q, 5, threads=0)


def test_search_breaks_exact_ties_by_doc_id_descending():
    import scipy.sparse as sp

    # three documents with the same impacts: ties everywhere
    doc_q = sp.csr_matrix(np.array([[0, 5, 0], [0, 5, 0], [3, 5, 0], [0, 5, 0]], dtype=np.uint16))
    index = impacts.ImpactIndex(
        indptr=doc_q.tocsc().indptr.astype(np.int64),
        docs=doc_q.tocsc().indices.astype(np.int32),
        impacts=doc_q.tocsc().data.astype(np.uint16),
        doc_ids=np.array(["a", "c", "b", "d"]),
        id_order=np.array([3, 1, 2, 0]),
        manifest={},
    )
    query = sp.csr_matrix(np.array([[1, 2, 0]], dtype=np.uint16))
    docs, scores = search(index, query, 3)
    assert [index.doc_ids[d] for d in docs[0]] == ["b", "d", "c"] and scores[0].tolist() == [13, 10, 10]


def test_produced_run_is_read_by_load_candidates_and_reused(real_text):
    dataset = f"local:{real_text}"
    path = fs.produce_run(dataset, "tiny-splade-top5", progress=False)
    manifest = json.loads(path.with_suffix(".json").read_text())
    for key in (
        "model",
        "revision",
        "quantisation",
        "index_bytes",
        "postings",
        "encode_passages_seconds",
        "search_seconds",
        "sha256",
    ):
        assert key in manifest
    assert manifest["model"] == "builtin:splade" and manifest["rows"] == 12 * 5
    run = load_candidates(dataset, "run:tiny-splade-top5", 5)
    assert len(run) == 60 and run["rank"].max() == 5
    mtime = path.stat().st_mtime_ns
    assert fs.produce_run(dataset, "tiny-splade-top5", progress=False) == path
    assert path.stat().st_mtime_ns == mtime  # nothing recomputed


def test_the_grid_stages_encode_index_and_search_make_the_run_of_one_process(real_text, tmp_path, monkeypatch):
    """encode (GPU job) -> index (CPU job, never encodes) -> search (CPU job, threads): the same
    run as every stage in one process, and no stage encodes what the one before must have."""
    dataset, name = f"local:{real_text}", "tiny-splade-top5"
    with pytest.raises(
        vocab.FirstStageError,
        match=r"passages-00000.npz: passage shard missing \(1 of 1\); "
        r"the collection's encode job",
    ):
        fs.prepare_index(dataset, name, "index", progress=False)
    shards = fs.prepare_index(dataset, name, "encode", progress=False)
    assert [p.name for p in shards.iterdir()] == ["passages-00000.npz"]
    assert not (shards.parent / "index").exists()  # the GPU job builds no index
    index = fs.prepare_index(dataset, name, "index", progress=False)
    assert (index / "manifest.json").is_file()
    staged = fs.produce_run(dataset, name, progress=False, threads=2, encode=False, device="cpu")
    assert json.loads(staged.with_suffix(".json").read_text())["threads"] == 2
    # every stage in one process, in a fresh cache: the same run, row for row
    monkeypatch.setenv("CEREPRO_CACHE", str(tmp_path / "other-cache"))
    fresh = tmp_path / "fresh"
    shutil.copytree(REAL_TEXT, fresh)
    whole = fs.produce_run(f"local:{fresh}", name, progress=False)
    assert staged.read_text() == whole.read_text()
    with pytest.raises(vocab.FirstStageError, match="unknown index stage 'search'"):
        fs.prepare_index(dataset, name, "search", progress=False)


def test_a_user_placed_run_under_the_produced_name_is_used_as_it_is(real_text):
    (real_text / "runs").mkdir()
    placed = real_text / "runs" / "tiny-splade-top5.trec"
    placed.write_text("".join(f"q{i} Q0 d{i:02d} 1 1.0 mine\n" for i in range(1, 13)))
    assert fs.produce_run(f"local:{real_text}", "tiny-splade-top5", progress=False) == placed
    assert not (cache_dir() / "splade").exists()  # nothing was encoded
    assert len(load_candidates(f"local:{real_text}", "run:tiny-splade-top5", 5)) == 12


def within(seconds: float, call):
    """``call()`` on a thread of its own; the test fails if it has not returned in ``seconds``
    (a lock that is never taken would hang the test run otherwise)."""
    import threading

    out = {}

    def run():
        try:
            out["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - raised again in the test's thread
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_two_jobs_indexing_shared_passages_at_once_build_one_index(encoder, real_text, monkeypatch):
    """Collections sharing passages may start their jobs together: one builds the index while
    the other waits for the folder's lock, then finds the index built."""
    import threading
    import time

    built = []

    def slow_build(*args, **kwargs):
        built.append(threading.current_thread().name)
        time.sleep(1.0)  # the other job arrives meanwhile
        return impacts.build_index(*args, **kwargs)

    monkeypatch.setattr(fs, "build_index", slow_build)
    results = {}

    def job(k):
        results[k] = build(f"local:{real_text}", encoder)

    threads = [threading.Thread(target=job, args=(k,), daemon=True) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 2 and len(built) == 1
    assert results[0].folder == results[1].folder
    assert results[0].manifest == results[1].manifest


def test_a_job_killed_while_holding_the_index_folder_is_taken_over_and_resumes(real_text):
    """A job killed mid-encoding leaves its lock and the shards it finished: the next job takes
    the lock over (its holder is gone) and encodes only the missing shard."""
    import os
    import subprocess
    import sys

    from cerepro.lock import LOCK_NAME

    dataset, name = f"local:{real_text}", "tiny-splade-top5"
    shards = fs.prepare_index(dataset, name, "encode", shard_size=7, progress=False)
    paths = sorted(shards.iterdir())
    before = {p: p.stat().st_mtime_ns for p in paths}
    paths[-1].unlink()
    root = shards.parent
    killed = (
        "import os, signal, sys\n"
        "from cerepro.lock import FolderLock\n"
        "FolderLock(sys.argv[1]).acquire()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", killed, str(root)], env=env, timeout=120)
    assert done.returncode == -9 and (root / LOCK_NAME).is_file()
    again = within(120, lambda: fs.prepare_index(dataset, name, "encode", shard_size=7, progress=False))
    assert again == shards and sorted(shards.iterdir()) == paths
    assert all(p.stat().st_mtime_ns == before[p] for p in paths[:-1])  # kept, not encoded again
    assert not (root / LOCK_NAME).exists()


def test_killed_encoding_resumes_at_the_first_missing_shard(encoder, real_text):
    dataset = f"local:{real_text}"
    model, tokenizer, identity = encoder
    collection = load_collection(dataset)
    folder = cache_dir() / "shards"
    paths = impacts.encode_passages(
        iter(collection.docs), 30, model, tokenizer, folder, max_length=64, shard_size=7, progress=False
    )
    assert [p.name for p in paths] == [f"passages-{k:05d}.npz" for k in range(5)]
    before = {p: p.stat().st_mtime_ns for p in paths}
    paths[2].unlink()  # a job killed while writing shard 2 leaves no shard 2 (atomic rename)
    again = impacts.encode_passages(
        iter(collection.docs), 30, model, tokenizer, folder, max_length=64, shard_size=7, progress=False
    )
    assert again == paths and paths[2].is_file()
    assert all(p.stat().st_mtime_ns == before[p] for p in paths if p != paths[2])
    resumed = impacts.build_index(again, cache_dir() / "a", identity, vocab_size=len(tokenizer))
    oneshot = impacts.build_index(
        impacts.encode_passages(
            iter(collection.docs),
            30,
            model,
            tokenizer,
            cache_dir() / "fresh",
            max_length=64,
            shard_size=7,
            progress=False,
        ),
        cache_dir() / "b",
        identity,
        vocab_size=len(tokenizer),
    )
    for name in ("indptr", "docs", "impacts", "doc_ids"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(oneshot, name))


def test_run_names_the_paper_profile_reads_are_what_the_first_stage_produces():
    run = load_config("bert-base", "bce", 0, "paper")
    for source, depth, _datasets in (
        (run.first_stage, run.candidate_depth, run.eval_datasets),
        (run.validation_first_stage, run.validation_depth, run.validation_datasets),
    ):
        model, produced_depth = vocab.CandidateSource.parse(source).produced()
        assert model.hf_id == "naver/splade-v3-distilbert" and produced_depth == depth
        assert source == str(vocab.CandidateSource.produced_by(model.slug, depth))
    assert run.first_stage == "run:splade-v3-distilbert-top1000" and len(run.eval_datasets) == 22
    assert run.validation_first_stage == "run:splade-v3-distilbert-top100" and len(run.validation_datasets) == 13
    for source in ("bm25", "scoreddocs", "run:my-own-run", "run:unknown-model-top10"):
        assert vocab.CandidateSource.parse(source).produced() is None
    # the docs name the same files
    for doc in (ROOT / "README.md", ROOT / "book" / "setup-data.md"):
        text = doc.read_text()
        assert "splade-v3-distilbert-top1000" in text and "splade-v3-distilbert-top100" in text, doc
        assert "run:splade-v3`" not in text and "splade-v3.trec" not in text, doc


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error naming the file, nothing half-written left behind


def test_a_checkpoint_that_is_not_a_masked_lm_is_refused(tmp_path):
    from cerepro.model.models import build_cross_encoder

    model, tokenizer = build_cross_encoder("builtin:bert", max_length=64)
    folder = tmp_path / "cross-encoder"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    with pytest.raises(vocab.FirstStageError, match=rf"{folder}/config.json: not a masked language model"):
        splade.load_encoder(str(folder))


def test_a_collection_without_texts_is_refused_before_encoding(real_text, monkeypatch):
    (real_text / "docs.tsv").write_text("")
    monkeypatch.setattr(fs, "load_encoder", lambda *a, **k: pytest.fail("the encoder was loaded"))
    with pytest.raises(vocab.FirstStageError, match=rf"{real_text}/docs.tsv: the collection has no passages"):
        fs.produce_run(f"local:{real_text}", "tiny-splade-top5", progress=False)
    assert not (cache_dir() / "splade").exists()


def test_an_index_of_another_model_revision_is_refused(encoder, real_text):
    index = build(f"local:{real_text}", encoder)
    model, _ = splade.tiny_mlm(seed=1)  # the same architecture with other weights
    identity = {"model": "builtin:splade", "revision": f"weights:{splade.weights_fingerprint(model)[:16]}"}
    assert identity["revision"] != index.manifest["revision"]
    with pytest.raises(vocab.FirstStageError, match=rf"{index.folder}/manifest.json: index built with revision"):
        impacts.load_index(index.folder, identity)


def test_a_truncated_index_is_refused(encoder, real_text):
    index = build(f"local:{real_text}", encoder)
    path = index.folder / "docs.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(vocab.FirstStageError, match=rf"{path}: truncated or missing index file"):
        impacts.load_index(index.folder)


def test_a_half_written_run_is_refused(real_text):
    dataset = f"local:{real_text}"
    path = fs.produce_run(dataset, "tiny-splade-top5", progress=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=rf"{path}: the run does not match its manifest"):
        load_candidates(dataset, "run:tiny-splade-top5", 5)
    with pytest.raises(DataFormatError, match=rf"{path}: the run does not match its manifest"):
        fs.produce_run(dataset, "tiny-splade-top5", progress=False)


def test_an_interrupted_index_build_leaves_nothing_behind(encoder, real_text, monkeypatch):
    model, tokenizer, identity = encoder
    collection = load_collection(f"local:{real_text}")
    shards = impacts.encode_passages(
        iter(collection.docs),
        30,
        model,
        tokenizer,
        cache_dir() / "s",
        max_length=64,
        shard_size=10,
        progress=False,
    )
    saved = []

    def dying_save(path, array, **kwargs):
        if saved:
            raise KeyboardInterrupt("killed")
        saved.append(path)
        np.lib.format.write_array(open(path, "wb"), array)

    monkeypatch.setattr(np, "save", dying_save)
    target = cache_dir() / "index"
    with pytest.raises(KeyboardInterrupt):
        impacts.build_index(shards, target, identity, vocab_size=len(tokenizer))
    assert not target.exists() and not list(target.parent.glob(".index.*"))


def test_unknown_run_names_and_engines_are_refused(real_text):
    with pytest.raises(vocab.FirstStageError, match=r"run name 'splade-top5' is not <model>-top<depth>"):
        fs.produce_run(f"local:{real_text}", "splade-top5")
    with pytest.raises(vocab.FirstStageError, match="unknown search engine 'pisa'"):
        search(None, None, 5, engine="pisa")


def test_scoreboard_rows_put_the_first_stage_next_to_the_model_card():
    import pandas as pd

    from cerepro.report import scoreboard

    def rows(dataset, measure, values):
        return [
            {"run": "first-stage", "dataset": dataset, "measure": measure, "query_id": str(i), "value": v}
            for i, v in enumerate(values)
        ]

    per_query = pd.DataFrame(
        rows("msmarco-passage/dev/small", "RR@10", [0.5, 0.254])  # mean 0.377: 0.010 below 0.387
        + rows("msmarco-passage/dev/small", "nDCG@10", [0.4, 0.5])
        + rows("msmarco-passage/trec-dl-2019/judged", "nDCG@10", [0.7, 0.8])
        + rows("msmarco-passage/trec-dl-2020/judged", "nDCG@10", [0.6, 0.7])  # in-domain 0.6167
        + rows("beir/scifact/test", "nDCG@10", [0.7])
    )  # 1 of the 13 BEIR sets: not run
    board = scoreboard.first_stage_board(per_query, "run:splade-v3-distilbert-top1000")
    got = board.set_index("column")
    assert got.loc["msmarco-dev-small", "expected"] == 0.387 and got.loc["beir-13", "expected"] == 0.5
    assert got.loc["msmarco-dev-small", "verdict"] == "OK"
    assert got.loc["msmarco-dev-small", "ours"] == pytest.approx(0.377)
    assert got.loc["in-domain", "verdict"] == "FAIL" and got.loc["beir-13", "verdict"] == "not run"
    assert got["source"].str.contains("model card").sum() == 2
    assert scoreboard.first_stage_board(per_query, "bm25").empty  # no published figure for it


def test_a_produced_run_shallower_than_the_depth_read_from_it_is_refused_in_params():
    from cerepro.fragments import ParamsError

    with pytest.raises(
        ParamsError,
        match=r"key 'first_stage' = 'run:splade-v3-distilbert-top100': a "
        r"top-100 run cannot give candidate_depth = 1000",
    ):
        load_config("bert-base", "bce", 0, "paper", {"first_stage": "run:splade-v3-distilbert-top100"})


def test_a_produced_run_is_made_again_when_its_encoder_in_params_changed(real_text, tmp_path, monkeypatch):
    """The reuse check covers what the run is made from: the SPLADE model, its revision and its
    max length (params/first_stage.yaml), besides passages, queries and engine. Each is changed in
    turn and the run made again; the same params then reuse it."""
    params = tmp_path / "params"
    shutil.copytree(ROOT / "params", params)
    monkeypatch.setenv("CEREPRO_PARAMS", str(params))
    dataset = f"local:{real_text}"
    path = fs.produce_run(dataset, "tiny-splade-top5", progress=False)
    manifest = json.loads(path.with_suffix(".json").read_text())
    facts = {"hf_id": "builtin:splade", "revision": None, "max_length": 128}
    assert manifest["encoder"] == facts
    model, tokenizer = splade.tiny_mlm(seed=1)  # other weights, the same shape
    model.save_pretrained(tmp_path / "other-splade")
    tokenizer.save_pretrained(tmp_path / "other-splade")
    for key, value in (
        ("max_length", 4),  # passages cut to two words: another run
        ("revision", "v2"),  # the builtin model ignores it; the key must not
        ("hf_id", str(tmp_path / "other-splade")),
    ):
        facts = {**facts, key: value}
        (params / "first_stage.yaml").write_text("models:\n  tiny-splade: " + json.dumps(facts) + "\n")
        before = manifest
        assert fs.produce_run(dataset, "tiny-splade-top5", progress=False) == path
        manifest = json.loads(path.with_suffix(".json").read_text())
        assert manifest["encoder"] == facts, key
        if key != "revision":
            assert manifest["sha256"] != before["sha256"], key  # another encoder ranks otherwise
    mtime = path.stat().st_mtime_ns
    assert fs.produce_run(dataset, "tiny-splade-top5", progress=False) == path
    assert path.stat().st_mtime_ns == mtime  # the same params: reused
