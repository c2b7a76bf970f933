"""Evaluation collections, candidates and external files, on tiny inline fixtures, offline.

The ir_datasets test pre-places tiny files where ir_datasets 0.6.3 keeps msmarco-passage under
IR_DATASETS_HOME and reads them through load_collection / load_candidates in a subprocess
(ir_datasets fixes its paths when it is imported).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from test_data_offline import place_msmarco, run_offline

from cerepro.data import bm25, downloads
from cerepro.data.datasets import MissingTextError, load_candidates, load_collection
from cerepro.data.trec import DataFormatError

QUERIES = "q1\tcheap flights to paris\nq2\tboiling point of water\n"
DOCS = (
    "d1\tcheap flights to paris from london\n"
    "d2\tparis hotels and flights\n"
    "d3\twater boils at one hundred degrees\n"
    "d4\tthe boiling point of water at altitude\n"
    "d5\tflights of stairs\n"
)
QRELS = "q1 0 d1 2\nq1 0 d2 1\nq2 0 d4 3\nq2 0 d3 2\nq2 0 d9 1\n"
RUN = "q1 Q0 d2 1 9.5 first\nq1 Q0 d1 2 9.5 first\nq1 Q0 d5 3 3.0 first\nq2 Q0 d3 1 7.0 first\nq2 Q0 d4 2 8.0 first\n"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CEREPRO_CACHE", str(tmp_path / "cache"))


def make_folder(root: Path, **files: str) -> Path:
    contents = {"queries.tsv": QUERIES, "docs.tsv": DOCS, "qrels.txt": QRELS, "runs/first.trec": RUN}
    contents.update({name.replace("__", "/").replace("_", "."): text for name, text in files.items()})
    for name, text in contents.items():
        if text is not None:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text, encoding="utf-8")
    return root


def test_local_folder_reads_queries_qrels_docs_and_runs(tmp_path):
    folder = make_folder(tmp_path / "ds")
    c = load_collection(f"local:{folder}")
    assert c.id == f"local:{folder}"
    assert c.queries == {"q1": "cheap flights to paris", "q2": "boiling point of water"}
    assert list(c.qrels.columns) == ["query_id", "doc_id", "relevance"]
    assert c.qrels.values.tolist()[:2] == [["q1", "d1", 2], ["q1", "d2", 1]]
    assert c.doc_text(["d3", "d1"]) == ["water boils at one hundred degrees", "cheap flights to paris from london"]
    assert c.doc_text("d3") == "water boils at one hundred degrees"  # one id, not its letters
    assert c.run_names() == ["first"]
    with pytest.raises(MissingTextError, match=r"1 of 2 doc ids have no text, e.g. \['d9'\]"):
        c.doc_text(["d1", "d9"])


def test_beir_corpus_jsonl_puts_the_title_first(tmp_path):
    corpus = "\n".join(
        json.dumps(r)
        for r in [{"_id": "d1", "title": "Paris", "text": "cheap flights"}, {"_id": "d2", "text": "no title here"}]
    )
    folder = make_folder(
        tmp_path / "beir",
        docs_tsv=None,
        corpus_jsonl=corpus,
        qrels_txt="q1 0 d1 1\n",
        runs__first_trec="q1 Q0 d1 1 1.0 x\nq2 Q0 d2 1 1.0 x\n",
    )
    c = load_collection(f"local:{folder}")
    assert c.doc_text(["d1", "d2"]) == ["Paris cheap flights", "no title here"]


def test_run_candidates_sorted_by_score_ties_by_file_rank_and_cut_at_depth(tmp_path):
    folder = make_folder(tmp_path / "ds")
    run = load_candidates(f"local:{folder}", "run:first", depth=2)
    assert list(run.columns) == ["query_id", "doc_id", "score", "rank"]
    # q1: d2 and d1 tie at 9.5 (file order kept), d5 falls below depth 2; q2: 8.0 before 7.0
    assert run.values.tolist() == [
        ["q1", "d2", 9.5, 1],
        ["q1", "d1", 9.5, 2],
        ["q2", "d4", 8.0, 1],
        ["q2", "d3", 7.0, 2],
    ]
    assert run.attrs["missing_text"] == 0
    by_path = load_candidates(f"local:{folder}", f"run:{folder / 'runs' / 'first.trec'}", depth=1)
    assert by_path["doc_id"].tolist() == ["d2", "d4"]


def test_candidates_without_text_are_an_error_or_dropped_and_counted(tmp_path):
    folder = make_folder(tmp_path / "ds", runs__first_trec=RUN + "q2 Q0 d9 3 1.0 first\nq2 Q0 d8 4 0.5 first\n")
    with pytest.raises(MissingTextError) as err:
        load_candidates(f"local:{folder}", "run:first", depth=10)
    assert "2 of 7 candidates (2 distinct docs, 1 queries) have no passage text" in str(err.value)
    assert "query q2 doc d9" in str(err.value)
    run = load_candidates(f"local:{folder}", "run:first", depth=10, missing_text="drop")
    assert run.attrs["missing_text"] == 2
    assert run[run.query_id == "q2"]["rank"].tolist() == [1, 2]


def test_bm25_candidates_match_terms_and_reuse_the_cached_index(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "ds")
    run = load_candidates(f"local:{folder}", "bm25", depth=3)
    top = run.groupby("query_id")["doc_id"].first().to_dict()
    assert top == {"q1": "d1", "q2": "d4"}
    # "boiling" and "boils" share the stem "boil": d3 is retrieved although it lacks "boiling"
    assert set(run[run.query_id == "q2"]["doc_id"]) == {"d3", "d4"}
    assert (run.groupby("query_id")["score"].diff().dropna() <= 0).all()
    index_dirs = list((tmp_path / "cache" / "bm25").iterdir())
    assert len(index_dirs) == 1
    monkeypatch.setattr(bm25, "_build_index", lambda *a: pytest.fail("index rebuilt"))
    again = load_candidates(f"local:{folder}", "bm25", depth=3)
    pd.testing.assert_frame_equal(run, again)


@pytest.mark.parametrize("damage", ["cut", "emptied", "removed"])
def test_a_damaged_bm25_index_is_built_again(tmp_path, caplog, damage):
    """An index whose files differ from its CONTENTS.json (a copy cut short, a full disk) is built
    again with a warning, never loaded into a raw error that every rerun repeats."""
    folder = make_folder(tmp_path / "ds")
    run = load_candidates(f"local:{folder}", "bm25", depth=3)
    [index] = (tmp_path / "cache" / "bm25").iterdir()
    victim = max((p for p in index.iterdir() if p.suffix == ".npy"), key=lambda p: p.stat().st_size)
    data = victim.read_bytes()
    if damage == "removed":
        victim.unlink()
    else:
        victim.write_bytes(data[: len(data) // 2] if damage == "cut" else b"")
    again = load_candidates(f"local:{folder}", "bm25", depth=3)
    pd.testing.assert_frame_equal(run, again)
    assert victim.read_bytes() == data
    assert f"{victim.name} has" in caplog.text and "building it again" in caplog.text


# --- each bad input fails with file, line and what was expected -----------------------------


@pytest.mark.parametrize(
    "files, action, message",
    [
        (
            {"queries_tsv": "q1\tcheap flights\nq2\n"},
            "queries",
            r"queries.tsv:2: expected 2 tab-separated columns \(query id, text\), found 1",
        ),
        (
            {"queries_tsv": "q1\ta\nq2\tb\nq1\tc\n"},
            "queries",
            r"queries.tsv:3: duplicate query id 'q1' \(first on line 1\)",
        ),
        ({"docs_tsv": "d1\tx\nd1\ty\n"}, "docs", r"docs.tsv:2: duplicate doc id 'd1' \(first on line 1\)"),
        (
            {"qrels_txt": "q1 0 d1 2\nq3 0 d1 1\n"},
            "qrels",
            r"qrels.txt:2: qrels for query 'q3', which is not in the queries file; 1 such queries: \['q3'\]",
        ),
        ({"qrels_txt": "q1 0 d1 high\n"}, "qrels", r"qrels.txt:1: relevance must be an integer, found 'high'"),
        (
            {"qrels_txt": "q1 0 d1\n"},
            "qrels",
            r"qrels.txt:1: expected 4 whitespace-separated columns \(query id, iteration, doc id, relevance\), found 3",
        ),
        (
            {"runs__first_trec": "q1 Q0 d1 1 9.0 r\nq2 Q0 d3 1 abc r\n"},
            "run",
            r"first.trec:2: score must be a number, found 'abc'",
        ),
        (
            {"runs__first_trec": "q1 Q0 d1 1 9.0 r\nq2 Q0 d3 1 7.0\n"},
            "run",
            r"first.trec:2: expected 6 whitespace-separated columns \(query id, Q0, doc id, rank, score, run tag\), found 5",
        ),
        (
            {"runs__first_trec": "q1 Q0 d1 1 9.0 r\nq1 Q0 d1 2 8.0 r\nq2 Q0 d3 1 7.0 r\n"},
            "run",
            r"first.trec:2: doc 'd1' appears twice for query 'q1' \(first on line 1\)",
        ),
        (
            {"runs__first_trec": "q1 Q0 d1 1 9.0 r\n"},
            "run",
            r"first.trec: empty run for 1 of 2 queries of local:.*, e.g. query 'q2' \('boiling point of water'\)",
        ),
    ],
)
def test_bad_input_names_file_line_and_expectation(tmp_path, files, action, message):
    folder = make_folder(tmp_path / "bad", **files)
    c = load_collection(f"local:{folder}")
    with pytest.raises(DataFormatError, match=message):
        if action == "queries":
            c.queries
        elif action == "docs":
            c.doc_text(["d1"])
        elif action == "qrels":
            c.qrels
        else:
            load_candidates(f"local:{folder}", "run:first", depth=10)


def test_unknown_ids_and_sources_are_named(tmp_path):
    folder = make_folder(tmp_path / "ds")
    with pytest.raises(FileNotFoundError, match="no run 'second'.*known runs: first"):
        load_candidates(f"local:{folder}", "run:second", depth=5)
    with pytest.raises(ValueError, match="unknown candidate source 'splade'"):
        load_candidates(f"local:{folder}", "splade", depth=5)
    with pytest.raises(ValueError, match="scoreddocs"):
        load_candidates(f"local:{folder}", "scoreddocs", depth=5)


# --- external files: the cache is used offline, md5 is checked, downloads are atomic ---------


def _register_tiny(
    monkeypatch, tmp_path, text: bytes, *, md5: str | None = None, url: str = "http://offline.invalid/x"
):
    entry = dataclasses.replace(
        downloads.REGISTRY["hofstaetter-t2-teacher"], url=url, md5=md5 or hashlib.md5(text).hexdigest()
    )
    monkeypatch.setitem(downloads.REGISTRY, entry.name, entry)
    return entry


def test_a_cached_file_is_used_offline_and_hashed_once(tmp_path, monkeypatch):
    text = b"1.0\t0.5\tq1\td1\td2\n"
    entry = _register_tiny(monkeypatch, tmp_path, text)
    entry.path.parent.mkdir(parents=True)
    entry.path.write_bytes(text)
    monkeypatch.setattr(downloads.urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used"))
    assert downloads.fetch(entry.name) == entry.path
    monkeypatch.setattr(downloads, "md5sum", lambda *a, **k: pytest.fail("hashed twice"))
    assert downloads.fetch(entry.name) == entry.path


def test_a_wrong_md5_names_the_file_and_both_checksums(tmp_path):
    entry = downloads.REGISTRY["hofstaetter-t2-teacher"]
    entry.path.parent.mkdir(parents=True)
    entry.path.write_bytes(b"not the teacher file\n")
    actual = hashlib.md5(b"not the teacher file\n").hexdigest()
    with pytest.raises(downloads.ChecksumError) as err:
        downloads.fetch(entry.name)
    message = str(err.value)
    assert str(entry.path) in message
    assert f"md5 {actual} does not match the expected 4d99696386f96a7f1631076bcc53ac3c" in message


def test_a_download_is_checked_and_written_atomically(tmp_path, monkeypatch):
    source = tmp_path / "remote.tsv"
    source.write_bytes(b"2.0\t1.0\tq1\td1\td2\n")
    entry = _register_tiny(monkeypatch, tmp_path, source.read_bytes(), url=source.as_uri())
    assert downloads.fetch(entry.name).read_bytes() == source.read_bytes()
    entry.path.unlink()
    bad = _register_tiny(monkeypatch, tmp_path, b"other", url=source.as_uri())
    with pytest.raises(downloads.ChecksumError, match="downloaded md5"):
        downloads.fetch(bad.name)
    # nothing half-written is left behind: only the first download's md5 stamp remains
    assert [p.name for p in entry.path.parent.iterdir()] == [entry.path.name + ".md5"]
    with pytest.raises(FileNotFoundError, match="is missing; run `cerepro fetch <grid>`"):
        downloads.fetch(bad.name, download=False)


# --- ir_datasets, offline: tiny files at the paths ir_datasets 0.6.3 reads -----------------


def test_ir_datasets_collection_and_candidates_from_preplaced_files(tmp_path):
    home = tmp_path / "irds"
    place_msmarco(home)
    first_stage = tmp_path / "cache" / "first-stage" / "msmarco-passage/trec-dl-2019/judged"
    first_stage.mkdir(parents=True)
    (first_stage / "splade-v3.trec").write_text(
        "100 Q0 3 1 20.0 splade\n100 Q0 1 2 19.0 splade\n200 Q0 4 1 9.0 splade\n300 Q0 5 1 1.0 splade\n"
    )
    out = run_offline(
        """
import json
from cerepro.data.datasets import load_collection, load_candidates
c = load_collection("msmarco-passage/trec-dl-2019/judged")
runs = {s: load_candidates(c.id, s, depth=2).values.tolist() for s in ("scoreddocs", "run:splade-v3", "bm25")}
print(json.dumps({"queries": c.queries, "qrels": c.qrels.values.tolist(), "texts": c.doc_text(["4", "1"]),
                  "runs": runs, "names": c.run_names()}))
""",
        home,
        tmp_path / "cache",
    )
    # /judged keeps the queries with qrels: 300 is dropped from queries and candidates alike
    assert out["queries"] == {"100": "paris flights", "200": "boiling water"}
    assert out["qrels"] == [["100", "1", 3], ["100", "2", 0], ["200", "4", 2], ["200", "11", 1]]
    assert out["texts"] == ["passage number 4 about boiling water", "passage number 1 about paris flights"]
    assert out["names"] == ["splade-v3"]
    # the official top-1000 has no scores: the file order is the ranking
    assert [r[:2] for r in out["runs"]["scoreddocs"]] == [["100", "1"], ["100", "3"], ["200", "4"], ["200", "6"]]
    assert [r[:2] for r in out["runs"]["run:splade-v3"]] == [["100", "3"], ["100", "1"], ["200", "4"]]
    assert {r[1] for r in out["runs"]["bm25"] if r[0] == "100"} <= {"1", "3", "5", "7", "9"}


def test_document_text_drops_titles_where_the_authors_pipeline_did():
    """datamaestro_text's formats (3 Feb 2026) read Touche-2020 and SciDocs without title and
    TREC-COVID as text then title; ir_datasets' default_text is title then text everywhere."""
    from ir_datasets.datasets.beir import BeirCordDoc, BeirSciDoc, BeirTitleDoc, BeirToucheDoc
    from ir_datasets.formats import GenericDoc

    from cerepro.data.datasets import load_collection
    from cerepro.data.irds import document_text

    touche = BeirToucheDoc("t1", "Argument body.", "Debate title", "PRO", "http://x")
    scidoc = BeirSciDoc("s1", "An abstract.", "A paper", [], 2020, [], [])
    cord = BeirCordDoc("c1", "The abstract.", "The title", "http://y", "123")
    plain = BeirTitleDoc("a1", "Body text.", "Title")
    generic = GenericDoc("p1", "A passage.")
    assert [document_text(d, "datamaestro") for d in (touche, scidoc, cord, plain, generic)] == [
        "Argument body.",
        "An abstract.",
        "The abstract. The title",
        "Title Body text.",
        "A passage.",
    ]
    assert [document_text(d, "ir-datasets") for d in (touche, scidoc, cord, plain, generic)] == [
        "Debate title Argument body.",
        "A paper An abstract.",
        "The title The abstract.",
        "Title Body text.",
        "A passage.",
    ]
    with pytest.raises(ValueError, match=r"document_text must be one of \('datamaestro', 'ir-datasets'\)"):
        document_text(plain, "titles")
    # the rule reaches the collection's passage store (loaded lazily: nothing is read here)
    assert load_collection("beir/webis-touche2020/v2", "datamaestro").docs.text == "datamaestro"
    assert load_collection("beir/webis-touche2020/v2").docs.text == "ir-datasets"
