"""Training sources on a tiny local train folder (hand-checkable), plus the msmarco-passage path
offline with files pre-placed where ir_datasets and cerepro's download cache keep them."""

from __future__ import annotations

import gzip
import itertools
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_data_offline import place_msmarco, run_offline

from cerepro.data.datasets import MissingTextError
from cerepro.data.records import Permutation, RecordFile
from cerepro.data.rows import infonce_groups
from cerepro.data.train_files import source_requirements
from cerepro.data.training_data import open_source, source_counts, training_source
from cerepro.data.trec import DataFormatError
from cerepro.training.training_blocks import read_groups

QUERIES = "q1\tcheap flights\nq2\tboiling water\nq3\tno judged positive\n"
DOCS = "".join(f"d{i}\tpassage {i}\n" for i in range(1, 10))
QRELS = "q1 0 d1 1\nq1 0 d2 1\nq2 0 d4 2\nq2 0 d5 0\n"
TRIPLES = "q1\td1\td3\nq1\td2\td6\nq2\td4\td7\nq2\td4\td8\nq1\td1\td9\n"
TEACHER = "9.5\t1.5\tq1\td1\td3\n8.0\t2.0\tq1\td2\td6\n7.5\t-1.0\tq2\td4\td7\n"
HARD = (
    "q1 Q0 d3 1 30 colbert\nq1 Q0 d1 2 29 colbert\nq1 Q0 d6 3 28 colbert\n"
    "q3 Q0 d7 1 10 colbert\nq3 Q0 d8 2 9 colbert\n"
    "q2 Q0 d5 1 20 colbert\nq2 Q0 d8 2 19 colbert\nq2 Q0 d4 3 18 colbert\n"
)
LISTS = (
    "q1 Q0 d3 1 3.0 zephyr\nq1 Q0 d1 2 2.0 zephyr\nq1 Q0 d99 3 1.0 zephyr\n"
    "q2 Q0 d4 2 5.0 zephyr\nq2 Q0 d8 1 6.0 zephyr\n"
)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CEREPRO_CACHE", str(tmp_path / "cache"))


def train_folder(root: Path, **files: str) -> str:
    contents = {
        "queries.tsv": QUERIES,
        "docs.tsv": DOCS,
        "qrels.txt": QRELS,
        "triples.tsv": TRIPLES,
        "teacher-pairs.tsv": TEACHER,
        "hard-negatives.run": HARD,
        "llm-lists-sampled-50.run": LISTS,
    }
    contents.update({k.replace("_", "-", k.count("_") - 1).replace("_", "."): v for k, v in files.items()})
    root.mkdir(parents=True, exist_ok=True)
    for name, text in contents.items():
        (root / name).write_text(text, encoding="utf-8")
    return f"local:{root}"


def take(kind, data, n, **kw):
    return list(itertools.islice(training_source(kind, data, **{"seed": 7, **kw}), n))


def source_config(training_source: str, data: str, seed: int) -> SimpleNamespace:
    """The run config keys :func:`open_source` reads, for ``training_source`` over ``data``."""
    return SimpleNamespace(
        training_source=training_source,
        train_data=data,
        seed=seed,
        group_size=2,
        llm_list="sampled-50",
        data_order="shuffled",
        hard_negative_groups="first-positive",
    )


def same(a, b) -> bool:
    return a == b


def test_permutation_is_a_bijection_that_depends_on_the_key():
    for n in (1, 2, 7, 100, 1000):
        perm = Permutation(n, (1, 0))
        assert sorted(perm[i] for i in range(n)) == list(range(n))
    a = [Permutation(1000, (1, 0))[i] for i in range(1000)]
    b = [Permutation(1000, (1, 1))[i] for i in range(1000)]
    assert a != b and a != list(range(1000))


def test_triples_give_one_positive_one_negative_each_line_once_per_epoch(tmp_path):
    data = train_folder(tmp_path / "train")
    groups = take("triples", data, 10)
    first, second = groups[:5], groups[5:]
    lines = {tuple(g.doc_ids) for g in first}
    assert lines == {("d1", "d3"), ("d2", "d6"), ("d4", "d7"), ("d4", "d8"), ("d1", "d9")}
    # shuffled once (seed 123, as the authors): every epoch visits the lines in the same order
    assert [g.doc_ids for g in second] == [g.doc_ids for g in first]
    g = next(g for g in first if g.doc_ids == ("d4", "d7"))
    assert (g.query_id, g.query, g.passages) == ("q2", "boiling water", ("passage 4", "passage 7"))
    assert g.labels == (1.0, 0.0) and g.mask == (True, True) and g.teacher is None
    assert [g.position for g in groups] == list(range(10))


def test_same_seed_same_stream_and_resume_from_any_position(tmp_path):
    data = train_folder(tmp_path / "train")
    for kind in ("triples", "teacher-pairs", "hard-negatives", "llm-lists"):
        full = take(kind, data, 12)
        assert take(kind, data, 12) == full
        for start in (1, 3, 5, 11):
            assert take(kind, data, 12 - start, start=start) == full[start:], (kind, start)
    assert [g.doc_ids for g in take("teacher-pairs", data, 5, seed=8)] != [
        g.doc_ids for g in take("teacher-pairs", data, 5)
    ]


def test_two_seeds_of_a_triples_run_see_the_same_first_100_triples(tmp_path):
    lines = "".join(f"q{i % 3 + 1}\td{i % 9 + 1}\td{(i * 7) % 9 + 1}\n" for i in range(150))
    data = train_folder(tmp_path / "train", triples_tsv=lines)
    a, b = take("triples", data, 100, seed=1), take("triples", data, 100, seed=2)
    assert [(g.position, g.doc_ids) for g in a] == [(g.position, g.doc_ids) for g in b]
    in_file = [tuple(line.split("\t")[1:]) for line in lines.splitlines()[:100]]
    assert [g.doc_ids for g in a] != in_file  # shuffled, not in file order
    config = source_config("triples", data, seed=1)
    assert open_source(config).cache_key == open_source(SimpleNamespace(**{**vars(config), "seed": 2})).cache_key


def test_hard_negatives_positive_is_the_first_retrieved_one_and_unretrieved_ones_skip(tmp_path):
    # q1: qrels list d2 before d1, the run retrieves d1 first -> d1 (the run's order wins).
    # q2: its only positive d4 is judged but not retrieved -> skipped, and counted.
    qrels = "q1 0 d2 1\nq1 0 d1 1\nq2 0 d4 1\n"
    run = "q1 Q0 d3 1 30 c\nq1 Q0 d1 2 29 c\nq1 Q0 d2 3 28 c\nq1 Q0 d6 4 27 c\nq2 Q0 d5 1 20 c\nq2 Q0 d8 2 19 c\n"
    data = train_folder(tmp_path / "train", qrels_txt=qrels, hard_negatives_run=run)
    groups = take("hard-negatives", data, 4, group_size=4)
    assert {g.query_id for g in groups} == {"q1"}
    assert all(g.doc_ids[0] == "d1" and set(g.doc_ids[1:]) <= {"d3", "d6"} for g in groups)
    counts = source_counts("hard-negatives", data)
    assert (counts.records, counts.used, counts.skipped) == (2, 1, 1)
    assert source_counts("triples", data).skipped == 0


def test_teacher_pairs_carry_the_teacher_scores(tmp_path):
    data = train_folder(tmp_path / "train")
    by_ids = {g.doc_ids: g for g in take("teacher-pairs", data, 3)}
    assert by_ids["d4", "d7"].teacher == (7.5, -1.0)
    assert by_ids["d1", "d3"].labels == (1.0, 0.0)


def test_hard_negatives_first_judged_positive_and_seven_unjudged_negatives(tmp_path):
    data = train_folder(tmp_path / "train")
    groups = take("hard-negatives", data, 6, group_size=8)
    assert {g.query_id for g in groups} == {"q1", "q2"}  # q3 has no judged positive: skipped
    for g in groups:
        assert len(g.doc_ids) == 8 and g.labels == (1.0,) + (0.0,) * 7
        positive, negatives = g.doc_ids[0], set(g.doc_ids[1:])
        if g.query_id == "q1":
            assert positive == "d1" and negatives <= {"d3", "d6"}  # d1, d2 judged
        else:
            assert positive == "d4" and negatives <= {"d5", "d8"}  # d5 judged 0: a negative


def test_infonce_groups_one_per_positive_negatives_without_replacement_hand_case():
    rng = np.random.default_rng(0)
    #          block 1: 3 non-relevant rows, then a new block   | block 2
    ids = ["n1", "r1", "n2", "n3", "r2", "n4"]
    groups = infonce_groups(ids, {"r1", "r2"}, negatives=1, top_k=3, rng=rng)
    assert [p for p, _ in groups] == ["r1", "r2"]
    assert set(groups[0][1]) <= {"n1", "n2", "n3"} and groups[1][1] == ("n4",)
    for _ in range(50):  # never the same negative twice in a group
        ((_, negs),) = infonce_groups(["r", "a", "b", "c"], {"r"}, negatives=3, top_k=500, rng=rng)
        assert sorted(negs) == ["a", "b", "c"]
    # a positive whose block has too few non-relevant rows (none, or fewer than asked) raises, as the
    # authors' random.sample does; a block without a positive gives nothing whatever its length
    # (the trailing block of a query's run, here 2 rows after a first block of 3)
    with pytest.raises(ValueError, match="a block of 0 non-relevant passages .* cannot give 1 negatives"):
        infonce_groups(["r1", "r2"], {"r1", "r2"}, negatives=1, rng=rng)
    with pytest.raises(ValueError, match="a block of 1 non-relevant passages .* cannot give 2 negatives"):
        infonce_groups(ids, {"r1", "r2"}, negatives=2, top_k=3, rng=rng)
    tail = infonce_groups(["r1", "n1", "n2", "n3", "n4", "n5"], {"r1"}, negatives=2, top_k=3, rng=rng)
    assert [p for p, _ in tail] == ["r1"] and set(tail[0][1]) <= {"n1", "n2", "n3"}


def test_table_infonce_groups_per_retrieved_positive_in_file_order(tmp_path):
    # q1 retrieves two judged positives (d1, d6) and one other passage (d3): one group each
    qrels = "q1 0 d1 1\nq1 0 d6 1\nq2 0 d4 1\n"
    run = "q1 Q0 d3 1 30 c\nq1 Q0 d1 2 29 c\nq1 Q0 d6 3 28 c\nq2 Q0 d5 1 20 c\nq2 Q0 d8 2 19 c\nq2 Q0 d4 3 18 c\n"
    data = train_folder(tmp_path / "train", qrels_txt=qrels, hard_negatives_run=run)
    table = dict(group_size=2, order="file", hard_negative_groups="per-positive")
    groups = take("hard-negatives", data, 6, **table)
    assert [g.doc_ids[0] for g in groups] == ["d1", "d6", "d4"] * 2  # file order, every epoch
    assert [g.doc_ids[1] for g in groups[:2]] == ["d3", "d3"]
    assert all(g.doc_ids[1] in {"d5", "d8"} for g in groups[2::3])
    assert [g.position for g in groups] == list(range(6))
    # resumable from any position, the same stream
    for start in range(6):
        assert take("hard-negatives", data, 6 - start, start=start, **table) == groups[start:]
    # the later rule: the query's first positive only
    later = take("hard-negatives", data, 4, group_size=2, order="file")
    assert [g.doc_ids[0] for g in later] == ["d1", "d4"] * 2


def test_table_order_reads_each_file_from_the_top_for_every_seed(tmp_path):
    data = train_folder(tmp_path / "train")
    for kind, first_ids in (
        ("teacher-pairs", [("d1", "d3"), ("d2", "d6"), ("d4", "d7")]),
        ("llm-lists", [("d3", "d1", "", ""), ("d8", "d4", "", "")]),
    ):
        size = 2 if kind == "teacher-pairs" else 4
        n = len(first_ids)
        streams = [take(kind, data, 2 * n, seed=seed, group_size=size, order="file") for seed in (7, 8, 9)]
        assert [g.doc_ids for g in streams[0]] == first_ids * 2, kind
        assert streams[0] == streams[1] == streams[2], kind
    # shuffled (the later rule): the seed decides the order
    shuffled = {tuple(g.doc_ids for g in take("teacher-pairs", data, 3, seed=seed)) for seed in range(6)}
    assert len(shuffled) > 1


def test_llm_lists_follow_the_teacher_order_mask_missing_texts_and_pad(tmp_path):
    data = train_folder(tmp_path / "train")
    groups = {g.query_id: g for g in take("llm-lists", data, 2, group_size=4)}
    q1 = groups["q1"]
    assert q1.doc_ids == ("d3", "d1", "", "")  # d99 has no text: dropped, counted, padded
    assert q1.dropped == 1 and q1.mask == (True, True, False, False)
    assert q1.teacher[:2] == (3.0, 2.0) and q1.labels == (0.0, 1.0, 0.0, 0.0)
    q2 = groups["q2"]
    assert q2.doc_ids[:2] == ("d8", "d4") and q2.teacher[:2] == (6.0, 5.0) and q2.labels[:2] == (0.0, 2.0)
    by_rank = {g.query_id: g for g in take("llm-lists", data, 2, group_size=4, list_teacher="rank")}
    assert by_rank["q2"].teacher[:2] == (-1.0, -2.0)
    # as the training loop reads them (cerepro.training.training_blocks.read_groups): padding is 0, never nan
    queries, passages, arrays = read_groups(iter([q1, q2]), 2, 4)
    assert arrays["labels"].shape == arrays["teacher"].shape == arrays["mask"].shape == (2, 4)
    assert arrays["mask"].sum() == 4 and arrays["teacher"][0, 2] == 0.0
    assert queries == [q1.query, q2.query] and passages[0][2:] == [None, None]


def test_open_source_follows_the_run_config_and_names_its_files(tmp_path):
    data = train_folder(tmp_path / "train")
    config = source_config("teacher-pairs", data, seed=7)
    source = open_source(config)
    assert list(itertools.islice(source.groups(1), 2)) == take("teacher-pairs", data, 3)[1:]
    assert "teacher-pairs.tsv" in source.cache_key and "seed=7" in source.cache_key
    # the tokenized training blocks are keyed by the source: a change of order or of groups misses
    keys = {
        open_source(SimpleNamespace(**{**vars(config), **change})).cache_key
        for change in ({}, {"data_order": "file"}, {"hard_negative_groups": "per-positive"})
    }
    assert len(keys) == 3
    needs = source_requirements("llm-lists", "msmarco-passage", llm_list="sampled-100")
    assert needs[-1]["md5"] == "49f8dbf2c1ee7a2ca1fe517eda528af6"
    assert {n.get("ir_datasets") for n in source_requirements("triples", "msmarco-passage")} >= {
        "msmarco-passage",
        "msmarco-passage/train",
        "msmarco-passage/train/triples-v2",
    }


# --- bad rows fail with file, line and id ---------------------------------------------------


@pytest.mark.parametrize(
    "kind, files, error, message",
    [
        (
            "teacher-pairs",
            {"teacher_pairs_tsv": "9.5\t1.5\tq1\td1\td3\nhigh\t2.0\tq1\td2\td6\n"},
            DataFormatError,
            r"teacher-pairs.tsv:2: positive score must be a number, found 'high'",
        ),
        (
            "teacher-pairs",
            {"teacher_pairs_tsv": "9.5\t1.5\tq1\td1\n"},
            DataFormatError,
            r"teacher-pairs.tsv:1: expected 5 tab-separated columns \(positive score, negative score, query id, "
            r"positive doc id, negative doc id\), found 4",
        ),
        (
            "teacher-pairs",
            {"teacher_pairs_tsv": "9.5\t1.5\tq1\td1\td3\n8.0\t2.0\tq2\td4\td42\n"},
            MissingTextError,
            r"teacher-pairs.tsv:2: passage 'd42' has no text in local:",
        ),
        (
            "teacher-pairs",
            {"teacher_pairs_tsv": "9.5\t1.5\tq9\td1\td3\n"},
            MissingTextError,
            r"teacher-pairs.tsv:1: query 'q9' has no text in local:",
        ),
        (
            "triples",
            {"triples_tsv": "q1\td1\td3\nq1\td77\td3\n"},
            MissingTextError,
            r"triples.tsv:2: passage 'd77' has no text",
        ),
        (
            "hard-negatives",
            {"hard_negatives_run": "q1 Q0 d3 1 3 c\nq2 Q0 d8 1 2 c\nq1 Q0 d6 2 1 c\n"},
            DataFormatError,
            r"hard-negatives.run:3: query 'q1' appears again after other queries \(its block starts on line 1\)",
        ),
        (
            "llm-lists",
            {"llm_lists_sampled_50_run": "q1 Q0 d3 1 3.0 z\nq1 Q0 d1 two 2.0 z\n"},
            DataFormatError,
            r"llm-lists-sampled-50.run:2: rank must be an integer, found 'two'",
        ),
    ],
)
def test_bad_training_rows_name_file_line_and_id(tmp_path, kind, files, error, message):
    data = train_folder(tmp_path / "train", **files)
    with pytest.raises(error, match=message):
        take(kind, data, 4)


def test_wrong_group_sizes_and_names_are_refused(tmp_path):
    data = train_folder(tmp_path / "train")
    with pytest.raises(ValueError, match="group_size must be 2"):
        take("triples", data, 1, group_size=8)
    with pytest.raises(ValueError, match="unknown training source 'pairs'"):
        take("pairs", data, 1)
    with pytest.raises(ValueError, match="unknown llm_list 'sampled-20'"):
        take("llm-lists", data, 1, llm_list="sampled-20")


def test_record_index_is_cached_and_survives_blank_lines(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("a\tb\n\nc\td\n")
    records = RecordFile(path)
    assert len(records) == 2 and records.read(1) == [(3, "c\td")]
    assert len(list((tmp_path / "cache" / "record-index").iterdir())) == 2


def test_files_with_the_same_name_get_their_own_index(tmp_path):
    """The index is keyed by path, size and mtime, never by the file name alone: a second world's
    teacher-pairs.tsv must not be read with the first one's offsets."""
    first, second = tmp_path / "a" / "teacher-pairs.tsv", tmp_path / "b" / "teacher-pairs.tsv"
    first.parent.mkdir(), second.parent.mkdir()
    first.write_text("".join(f"{i}.0\t-{i}.0\tq{i}\tp{i}\tn{i}\n" for i in range(30)))
    second.write_text("".join(f"{i}.12345\t-{i}.5\tq{i}\tp{i}\tn{i}\n" for i in range(30)))
    assert RecordFile(first).read(29) == [(30, "29.0\t-29.0\tq29\tp29\tn29")]
    assert RecordFile(second).read(29) == [(30, "29.12345\t-29.5\tq29\tp29\tn29")]
    assert len(list((tmp_path / "cache" / "record-index").iterdir())) == 4


# --- msmarco-passage, offline: ir_datasets' files and the teacher file pre-placed -----------


def test_msmarco_passage_sources_read_preplaced_files(tmp_path):
    home = tmp_path / "irds"
    base = place_msmarco(home)
    (base / "train").mkdir()
    (base / "train/queries.tsv").write_text("500\tparis flights\n600\tboiling water\n")
    (base / "train/qrels").write_text("500 0 1 1\n600 0 4 1\n")
    with gzip.open(base / "train/qidpidtriples.train.full.2.tsv.gz", "wt") as f:
        f.write("500\t1\t2\n600\t4\t3\n")
    cache = tmp_path / "cache"
    (cache / "downloads").mkdir(parents=True)
    (cache / "downloads/bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv").write_text(
        "10.5\t-2.0\t500\t1\t2\n9.0\t1.0\t600\t4\t42\n"
    )
    out = run_offline(
        """
import dataclasses, itertools, json
from cerepro.data import downloads
from cerepro.data.training_data import training_source
# the tiny stand-in for Hofstaetter's file is registered with its own md5; everything else is real
entry = downloads.REGISTRY["hofstaetter-t2-teacher"]
downloads.REGISTRY[entry.name] = dataclasses.replace(entry, md5=downloads.md5sum(entry.path))
triples = list(itertools.islice(training_source("triples", "msmarco-passage", seed=1), 2))
try:
    list(itertools.islice(training_source("teacher-pairs", "msmarco-passage", seed=1), 2))
except Exception as exc:
    error = f"{type(exc).__name__}: {exc}"
print(json.dumps({"triples": sorted([g.query, *g.passages] for g in triples), "error": error}))
""",
        home,
        cache,
    )
    assert out["triples"] == [
        ["boiling water", "passage number 4 about boiling water", "passage number 3 about paris flights"],
        ["paris flights", "passage number 1 about paris flights", "passage number 2 about boiling water"],
    ]
    assert out["error"].startswith("MissingTextError: ")
    assert (
        "bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv:2: passage '42' has no text in msmarco-passage/train"
        in out["error"]
    )


# --- caches follow what they hold (issue 26) --------------------------------------------------


def _blocks(data: str):
    from cerepro.config import load_config
    from cerepro.model.demo_tokenizers import demo_tokenizer
    from cerepro.training.training_blocks import TokenizedBlocks

    cfg = load_config(
        "tiny-bert",
        "bce",
        0,
        "smoke",
        {
            "train_data": data,
            "training_source": "triples",
            "max_steps": 2,
            "batch_size": 2,
            "warmup_steps": 0,
            "validation_datasets": [],
            "max_length": 32,
        },
    )
    tokenizer = demo_tokenizer("bert", max_length=32, texts=["cheap flights boiling water passage"])
    blocks = TokenizedBlocks(open_source(cfg), tokenizer, cfg)
    block, _ = blocks.step_rows(0)
    texts = [tokenizer.decode(block.encoding.pair_ids(i), skip_special_tokens=True) for i in range(len(block.encoding))]
    return blocks.cache_key, texts


@pytest.mark.parametrize("changed", ["docs.tsv", "queries.tsv", "qrels.txt"])
def test_tokenized_blocks_of_a_local_train_folder_follow_its_texts(tmp_path, changed):
    """The blocks' cache key covers the passages, queries and qrels of a local train folder, not
    only the training file's path, size and mtime: an edited text is tokenized again."""
    folder = tmp_path / "train"
    data = train_folder(folder)
    key, texts = _blocks(data)
    triples = folder / "triples.tsv"
    stat = triples.stat()
    edits = {
        "docs.tsv": DOCS.replace("passage", "water"),
        "queries.tsv": QUERIES.replace("cheap flights", "water water"),
        "qrels.txt": QRELS.replace("q2 0 d5 0", "q2 0 d5 1"),
    }
    (folder / changed).write_text(edits[changed], encoding="utf-8")
    os.utime(triples, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the training file untouched
    key_after, texts_after = _blocks(data)
    assert key_after != key
    if changed == "docs.tsv":
        assert "cheap flights passage" in texts and "cheap flights passage" not in texts_after
        assert "cheap flights water" in texts_after
    if changed == "queries.tsv":
        assert any(t.startswith("water water") for t in texts_after)
        assert not any(t.startswith("water water") for t in texts)


@pytest.mark.parametrize("cut", ["offsets", "lines"])
def test_a_record_index_cut_in_half_is_rebuilt(tmp_path, cut):
    """A record-index cache file cut short (disk full, a copy interrupted) is rebuilt, never read
    as an index of fewer records, which would train on other groups without a word."""
    path = tmp_path / "t.tsv"
    path.write_text("".join(f"q{i}\td{i}\td{i + 1}\n" for i in range(40)))
    assert len(RecordFile(path)) == 40
    [cached] = (tmp_path / "cache" / "record-index").glob(f"*.{cut}.u64")
    data = cached.read_bytes()
    cached.write_bytes(data[: len(data) // 2])
    records = RecordFile(path)
    assert len(records) == 40 and records.read(39) == [(40, "q39\td39\td40")]
    assert cached.stat().st_size == len(data)


def test_every_cache_key_is_the_string_it_was_before_one_helper_built_them(tmp_path):
    """The record index, the two per-query-block caches of a run, a verified file's marker and a
    source's key for tokenized blocks are all keyed by ``records.cache_key``; each key and file
    name is spelled out here as it was written by hand before, so caches on disk are found again."""
    import hashlib

    from cerepro.data.training_data import FORMAT_VERSION, TrainingSource, verify_training_file

    def md5(text):
        return hashlib.md5(text.encode()).hexdigest()

    folder = tmp_path / "train"
    data = train_folder(folder)
    cache = tmp_path / "cache"
    run, triples = folder / "hard-negatives.run", folder / "triples.tsv"
    stamp = {p: f"{p.resolve()} {p.stat().st_size} {p.stat().st_mtime_ns}" for p in (run, triples)}
    positives = [("q1", ["d1", "d2"]), ("q2", ["d4"])]  # QRELS' relevance > 0, sorted
    qrels = hashlib.sha256(repr(positives).encode()).hexdigest()[:12]

    list(
        itertools.islice(
            training_source("hard-negatives", data, seed=0, group_size=2, hard_negative_groups="per-positive"), 2
        )
    )
    assert source_counts("hard-negatives", data).used == 2
    index = md5(f"{stamp[run]} query")[:12]
    blocks = {
        f"hard-negatives.run-{index}.offsets.u64",
        f"hard-negatives.run-{index}.lines.u64",
        f"hard-negatives.run-{md5(f'{stamp[run]} {qrels} top500')[:12]}.groups.npy",
        f"hard-negatives.run-{md5(f'{stamp[run]} {qrels}')[:12]}.positive.npy",
    }
    assert {p.name for p in (cache / "record-index").iterdir()} == blocks

    verify_training_file("triples", data)
    marker = md5(f"{stamp[triples].replace(' ', '|')}|triples|{FORMAT_VERSION}")
    assert [p.name for p in (cache / "verified").iterdir()] == [f"{marker}.json"]

    source = TrainingSource("triples", data, 5, 2, order="file")
    texts = hashlib.sha256()
    for name in ("queries.tsv", "docs.tsv", "qrels.txt"):
        texts.update(f"{name}:{hashlib.sha256((folder / name).read_bytes()).hexdigest()}\n".encode())
    assert source.cache_key == (
        f"triples|{data}|sampled-50|seed=123|D=2|order=file|groups=first-positive|"
        f"{stamp[triples].replace(' ', '|')}|{FORMAT_VERSION}|{texts.hexdigest()}"
    )
