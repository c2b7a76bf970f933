"""The demo world: a small, seeded, synthetic retrieval collection written as local dataset folders.

The offline demo runs exactly the code that real data runs: the generator writes the same files
(``queries.tsv``, ``docs.tsv``, TREC ``qrels.txt`` and ``runs/*.trec``, a triples TSV of ids, a
teacher TSV ``pos_score neg_score qid pos_pid neg_pid``, TREC runs for the hard negatives and for
the LLM lists) and the real readers in ``cerepro.data.datasets`` and ``cerepro.data.training_data`` read them.
Every number computed on it is synthetic and says nothing about MS MARCO.

The generator is three modules: this one (where the world lives, and writing its four splits),
``cerepro.data.demo_texts`` (the words, passages, queries and grades: the semantics, which
``book/setup-data.md`` says at more length) and ``cerepro.data.demo_training`` (the training
sources and their simulated teachers).

Same seed, same version: a byte-identical folder. This module generates files; it never trains.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from cerepro.data import demo_texts, demo_training
from cerepro.data.bm25 import bm25_run
from cerepro.data.demo_texts import (
    IN_DOMAIN,
    OUT_OF_DOMAIN,
    Query,
    Sizes,
    World,
    grades_of,
    make_passages,
    make_queries,
    make_world,
)
from cerepro.data.demo_training import write_training_files
from cerepro.data.trec import LocalDocs, read_id_text, write_id_text, write_qrels, write_run
from cerepro.paths import atomic_dir, cache_dir, contents_damage, set_aside, write_contents, write_text_atomic

VERSION = "v1"  # the world's layout; world_id() adds a digest of the generator's source
DEFAULT_SEED = 0
SPLITS = ("train", "validation", "in-domain", "out-of-domain")


# ---------------------------------------------------------------------------------------------
# Where the world lives


# The generator's modules: a change in any of them changes the digest, so a changed generator
# never reads a world an older one cached (tests/test_demo_world.py checks every data/demo_*.py
# is listed).
GENERATOR_FILES = (Path(__file__), Path(demo_texts.__file__), Path(demo_training.__file__))


def generator_digest(files=GENERATOR_FILES) -> str:
    """The first 10 hex digits of the sha256 of every file's name and bytes."""
    h = hashlib.sha256()
    for path in files:
        data = Path(path).read_bytes()
        h.update(f"{Path(path).name}\0{len(data)}\0".encode() + data)
    return h.hexdigest()[:10]


_GENERATOR_DIGEST = generator_digest()


def world_id(seed: int = DEFAULT_SEED) -> str:
    """``v1-<digest>-s<seed>``, with the digest of the generator's source."""
    return f"{VERSION}-{_GENERATOR_DIGEST}-s{seed}"


def world_folder(seed: int = DEFAULT_SEED) -> Path:
    return cache_dir() / "demo-world" / world_id(seed)


def split_folder(split: str, seed: int = DEFAULT_SEED) -> Path:
    if split not in SPLITS:
        raise KeyError(f"unknown demo split {split!r}; splits: {', '.join(SPLITS)}")
    return ensure(seed) / split


_CHECKED: set[Path] = set()  # worlds whose every file's sha256 this process checked


def ensure(seed: int = DEFAULT_SEED) -> Path:
    """The world's folder, generated on first use into a temporary folder renamed into place;
    a world whose files differ from its CONTENTS.json (a file cut short, edited) is generated
    again, never read: half a line would be taken for a passage."""
    folder = world_folder(seed)
    if (folder / "README.md").is_file():
        damage = contents_damage(folder, checksums=folder not in _CHECKED)  # sizes on every call
        if damage is None:
            _CHECKED.add(folder)
            return folder
        logging.getLogger(__name__).warning("%s: demo world damaged (%s); generating it again", folder, damage)
        set_aside(folder)
    with atomic_dir(folder, "README.md") as tmp:
        generate(tmp, seed)
    _CHECKED.add(folder)
    return folder


# ---------------------------------------------------------------------------------------------
# Generation


def generate(
    folder: str | os.PathLike,
    seed: int = DEFAULT_SEED,
    sizes: Sizes = Sizes(),  # noqa: B008 (Sizes is a frozen dataclass)
) -> Path:
    """Write all four splits and the training files under ``folder``; deterministic in ``seed``."""
    folder = Path(folder)
    rng = np.random.default_rng([seed, 2603])
    used: set[str] = set()
    inside = make_world(IN_DOMAIN, sizes.fields, sizes.concepts, sizes, rng, used)
    outside = make_world(OUT_OF_DOMAIN, sizes.ood_fields, sizes.ood_concepts, sizes, rng, used)
    make_passages(inside, sizes.passages, rng, prefix="p")
    make_passages(outside, sizes.ood_passages, rng, prefix="o")

    train = make_queries(inside, sizes.train_queries, rng, prefix="t")
    validation = make_queries(inside, sizes.validation_queries, rng, prefix="v")
    test = make_queries(inside, sizes.test_queries, rng, prefix="i")
    ood = make_queries(outside, sizes.test_queries, rng, prefix="x")

    for split, world, queries in (
        ("validation", inside, validation),
        ("in-domain", inside, test),
        ("out-of-domain", outside, ood),
    ):
        run = _write_folder(folder / split, world, queries, sizes.depth)
        write_qrels(_judged(world, queries, grades_of(world, queries), run), folder / split / "qrels.txt")
    bm25 = _write_folder(folder / "train", inside, train, sizes.depth)
    write_training_files(folder / "train", inside, train, bm25, sizes, rng)
    write_text_atomic(folder / "README.md", _readme(seed, sizes))
    write_contents(folder)  # every file's size and sha256, which ensure() checks
    return folder


def _write_folder(folder: Path, world: World, queries: list[Query], depth: int) -> pd.DataFrame:
    """queries.tsv, docs.tsv and runs/bm25.trec (computed by the same BM25 users call)."""
    write_id_text({q.id: q.text for q in queries}, folder / "queries.tsv")
    write_id_text(dict(zip(world.doc_ids, world.texts)), folder / "docs.tsv")
    # read back from the files, as load_candidates(..., "bm25") reads a local folder
    run = bm25_run(
        LocalDocs(folder / "docs.tsv"), read_id_text(folder / "queries.tsv", "query"), depth, name=f"local:{folder}"
    )
    write_run(run, folder / "runs" / "bm25.trec", tag="bm25")
    return run


def _judged(world: World, queries: list[Query], grades: np.ndarray, run: pd.DataFrame) -> pd.DataFrame:
    """Qrels: every passage with grade > 0, and grade 0 for the rest of the BM25 pool."""
    doc_index = {d: i for i, d in enumerate(world.doc_ids)}
    query_index = {q.id: i for i, q in enumerate(queries)}
    pairs = set(zip(*np.nonzero(grades)))
    pairs.update((query_index[q], doc_index[d]) for q, d in zip(run["query_id"], run["doc_id"]))
    rows = [(queries[q].id, world.doc_ids[d], int(grades[q, d])) for q, d in sorted(pairs)]
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "relevance"])


def _readme(seed: int, sizes: Sizes) -> str:
    return f"""# cerepro demo world {world_id(seed)}: SYNTHETIC data

Generated by cerepro.data.demo_world (cerepro.data.demo_texts' module docstring and
book/setup-data.md define the semantics). Every number computed on these folders is synthetic.

- in-domain: {sizes.passages} passages, {sizes.fields} domains, {sizes.concepts} concepts;
  out-of-domain: {sizes.ood_passages} passages, {sizes.ood_fields} domains, {sizes.ood_concepts} concepts
- train/: {sizes.train_queries} queries, qrels.txt (one judged positive each), triples.tsv,
  teacher-pairs.tsv, hard-negatives.run, llm-lists-sampled-50.run, llm-lists-sampled-100.run,
  runs/bm25.trec
- validation/ ({sizes.validation_queries} queries), in-domain/ ({sizes.test_queries}),
  out-of-domain/ ({sizes.test_queries}): queries.tsv, docs.tsv, qrels.txt (grades 0-3),
  runs/bm25.trec (BM25 top-{sizes.depth})
"""
