"""The demo world: deterministic, read by the real readers, BM25 between random and the oracle."""

from __future__ import annotations

import hashlib
import itertools
import shutil
from pathlib import Path

import ir_measures
import numpy as np
import pandas as pd
import pytest
from bm25s.stopwords import STOPWORDS_EN
from ir_measures import nDCG

from cerepro.data import demo_texts, demo_world
from cerepro.data.datasets import load_candidates, load_collection
from cerepro.data.training_data import training_source

SPLITS = ("validation", "in-domain", "out-of-domain")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The default world (seed 0), generated once through ``demo:`` ids into a scratch cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CEREPRO_CACHE", str(tmp_path_factory.mktemp("cache")))
        folder = demo_world.ensure()
        assert folder == demo_world.world_folder(demo_world.DEFAULT_SEED)
        yield folder


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def test_same_seed_gives_a_byte_identical_folder(world, tmp_path):
    again = demo_world.generate(tmp_path / "again", seed=demo_world.DEFAULT_SEED)
    assert digest(again) == digest(world)
    small = demo_texts.Sizes(
        passages=300,
        ood_passages=150,
        concepts=30,
        ood_concepts=20,
        train_queries=20,
        validation_queries=5,
        test_queries=5,
        llm_queries=5,
    )
    one = demo_world.generate(tmp_path / "one", seed=1, sizes=small)
    assert digest(one) != digest(demo_world.generate(tmp_path / "two", seed=2, sizes=small))


def test_bm25_is_clearly_between_random_and_the_oracle(world):
    for split in ("in-domain", "out-of-domain"):
        c = load_collection(f"demo:{split}")
        run = load_candidates(f"demo:{split}", "bm25", 30)
        grades = c.qrels.set_index(["query_id", "doc_id"])["relevance"]
        oracle = run.assign(score=[grades.get(k, 0) for k in zip(run.query_id, run.doc_id)])
        rng = np.random.default_rng(0)
        random = np.mean(
            [
                ir_measures.calc_aggregate([nDCG @ 10], c.qrels, run.assign(score=rng.random(len(run))))[nDCG @ 10]
                for _ in range(10)
            ]
        )
        bm25 = ir_measures.calc_aggregate([nDCG @ 10], c.qrels, run)[nDCG @ 10]
        best = ir_measures.calc_aggregate([nDCG @ 10], c.qrels, oracle)[nDCG @ 10]
        assert random + 0.1 < bm25 < best - 0.25, (split, random, bm25, best)


def test_the_bm25_run_on_disk_is_what_load_candidates_computes(world):
    on_disk = load_candidates("demo:in-domain", "run:bm25", 50)
    computed = load_candidates("demo:in-domain", "bm25", 50)
    pd.testing.assert_frame_equal(
        on_disk.sort_values(["query_id", "rank"]).reset_index(drop=True),
        computed.sort_values(["query_id", "rank"]).reset_index(drop=True),
    )


def test_every_split_reads_through_the_local_folder_code(world):
    for split in SPLITS:
        c = load_collection(f"demo:{split}")
        assert c.run_names() == ["bm25"]
        assert set(c.qrels.query_id) == set(c.queries)
        assert set(c.qrels.relevance) == {0, 1, 2, 3}
        # each query was drawn from a passage, which is relevant at grade 3
        assert (c.qrels.groupby("query_id").relevance.max() == 3).all()
        lengths = [len(t.split()) for t in c.doc_text(c.qrels.doc_id.head(200))]
        assert 20 <= min(lengths) and max(lengths) <= 60
        assert all(4 <= len(q.split()) <= 7 for q in c.queries.values())
    inside = load_collection("demo:in-domain").doc_text(["p00001"])
    assert inside == load_collection("demo:validation").doc_text(["p00001"])


@pytest.mark.parametrize("kind, size", [("triples", 2), ("teacher-pairs", 2), ("hard-negatives", 8), ("llm-lists", 50)])
def test_all_training_sources_read_the_demo_files(world, kind, size):
    groups = list(itertools.islice(training_source(kind, "demo", seed=0, group_size=size), 64))
    assert all(len(g.passages) == size and all(g.passages) and g.query for g in groups)
    if kind == "teacher-pairs":
        # the simulated ensemble prefers the judged positive most of the time
        assert np.mean([g.teacher[0] > g.teacher[1] for g in groups]) > 0.6
    if kind == "llm-lists":
        assert all(g.teacher == tuple(sorted(g.teacher, reverse=True)) for g in groups)


def test_query_words_never_occur_in_passage_templates():
    """BM25 must not see intents: question words and style sentences share only stop words."""
    for setting in (demo_texts.IN_DOMAIN, demo_texts.OUT_OF_DOMAIN):
        passage = {w for ts in setting.style_templates.values() for t in ts for w in t.split()}
        query = {w for ts in setting.intent_templates.values() for t in ts for w in t.split()}
        assert (passage & query) - set(STOPWORDS_EN) - {"{C}", "{D}", "{F}"} == set()


def test_the_world_id_covers_every_module_of_the_generator(tmp_path):
    """The world's cache key hashes every file of the generator: a change in any of them (here one
    byte of each in turn, in a copy) gives a new world id, so no older world is read."""
    files = set(demo_world.GENERATOR_FILES)
    assert files == set(Path(demo_world.__file__).parent.glob("demo_*.py")), "a demo_*.py module is not hashed"
    copies = []
    for path in demo_world.GENERATOR_FILES:
        copies.append(tmp_path / path.name)
        copies[-1].write_bytes(path.read_bytes())
    assert demo_world.generator_digest(copies) == demo_world.world_id().split("-")[1]
    for copy in copies:
        data = copy.read_bytes()
        copy.write_bytes(data + b"\n")
        assert demo_world.generator_digest(copies) != demo_world.world_id().split("-")[1], copy.name
        copy.write_bytes(data)


def test_unknown_split_is_named():
    with pytest.raises(KeyError, match="unknown demo split 'test'"):
        demo_world.split_folder("test")


def test_a_damaged_world_is_generated_again(world, tmp_path, monkeypatch, caplog):
    """World files cut short (half a line would be read as a passage, a cut at a line's end as
    fewer queries) are found by their sizes in CONTENTS.json and the world generated again."""
    monkeypatch.setenv("CEREPRO_CACHE", str(tmp_path / "cache"))
    folder = demo_world.world_folder(demo_world.DEFAULT_SEED)
    shutil.copytree(world, folder)
    whole = {}
    for name, cut in (("in-domain/docs.tsv", -5), ("validation/queries.tsv", 1)):
        path = folder / name
        whole[name] = data = path.read_bytes()
        end = data.index(b"\n", len(data) // 2)
        path.write_bytes(data[: end + cut])
    assert demo_world.ensure() == folder
    assert {name: (folder / name).read_bytes() for name in whole} == whole
    assert digest(folder) == digest(world)
    assert ".tsv has" in caplog.text and "generating it again" in caplog.text
