"""The demo world: a small, seeded, synthetic retrieval collection written as local dataset folders.

The offline demo runs exactly the code that real data runs: the generator writes the same files
(``queries.tsv``, ``docs.tsv``, TREC ``qrels.txt`` and ``runs/*.trec``, a triples TSV of ids, a
teacher TSV ``pos_score neg_score qid pos_pid neg_pid``, TREC runs for the hard negatives and for
the LLM lists) and the real readers in ``cerepro.data.datasets`` and ``cerepro.data.training_data`` read them.
Every number computed on it is synthetic and says nothing about MS MARCO.

Semantics (``book/setup-data.md`` says the same at more length):

- Words are pseudo-words. Each *concept* has a base form and two inflected forms (base + ``ek`` /
  ``ul`` in-domain, ``ar`` / ``im`` out of domain); each *field* has a name and three marker words.
- A passage (30-45 words) comes from a field, is about a *focus* concept (2-3 mentions) and
  mentions a *secondary* one (base form with probability 0.5, else inflected), and answers in
  one of four *styles* (definition, cause, procedure, place) whose sentence templates it uses.
  30% of the passages are keyword-stuffed spam: six concepts in base form among spam words
  ("best", "cheap", "click", ...), about nothing.
- A query (4-7 words) asks about one concept (mostly in base form) with one of four *intents*
  whose question words never occur in passages. Grades: 3 if the passage's focus is the concept
  and its style fits the intent; 2 if its focus is the concept and it is a definition (an
  overview half-answers any intent); 1 if its focus is the concept in another style, or the
  concept is secondary in the fitting style; else 0 (spam is always 0). Fields carry no relevance.
- BM25 matches words: it cannot see styles or intents, misses inflected forms and ranks spam high.
  It is clearly better than random (it finds the concept), clearly worse than the oracle. A tiny
  cross-encoder learns to push spam down within a couple of hundred steps (enough to beat BM25)
  and the intent-style fit with more training (most of the remaining headroom).
- Splits: ``train`` (queries with one judged positive each, like MS MARCO's sparse labels),
  ``validation`` and ``in-domain`` (fully judged test queries) share the in-domain passages;
  ``out-of-domain`` has its own passages, concepts, syllables, suffixes, question templates, half
  of its spam words and half of its style sentences.
- Teachers: a simulated cross-encoder ensemble scores a pair ``2.2 * grade - 3`` plus Gaussian
  noise (sd 1); a stronger simulated first stage (the ColBERTv2 run's stand-in) ranks by grade plus
  noise (sd 0.8); a simulated LLM re-orders its top 50 / 100 by grade plus noise (sd 0.6). The
  training sources are files in the real formats (see ``write_training_files``).

Same seed, same version: a byte-identical folder. This module generates files; it never trains.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cerepro.data.bm25 import bm25_run
from cerepro.data.trec import RUN_COLUMNS, LocalDocs, read_id_text, write_id_text, write_qrels, write_run
from cerepro.paths import atomic_dir, cache_dir, contents_damage, set_aside, write_contents, write_text_atomic

VERSION = "v1"  # the world's layout; world_id() adds a digest of this module's source
DEFAULT_SEED = 0
SPLITS = ("train", "validation", "in-domain", "out-of-domain")
STYLES = ("definition", "cause", "procedure", "place")
# How often a concept is written in its base form (the form queries mostly use) in passages and
# in queries, and how often a passage's field slot names the field (else one of its markers).
P_BASE_PASSAGE = 0.5
P_BASE_QUERY = 0.85
P_FIELD_NAME = 0.4
# Share of passages that are keyword-stuffed spam: many concepts in base form among spam words,
# about nothing (grade 0 for every query) and loved by BM25's term matching.
P_STUFFED = 0.3


@dataclass(frozen=True)
class Setting:
    """Vocabulary and templates of one side of the world: out-of-domain shifts all of them.

    Passage sentences depend on the passage's style, query templates on the query's intent;
    slots: ``{C}`` a concept, ``{D}`` the field, ``{F}`` a filler word. No word of a query
    template appears in a passage template, so BM25 cannot see whether a style fits an intent.
    """

    name: str
    onsets: tuple[str, ...]
    vowels: tuple[str, ...]
    codas: tuple[str, ...]
    suffixes: tuple[str, str]
    style_templates: dict[str, tuple[str, ...]]
    intent_templates: dict[str, tuple[str, ...]]
    spam: tuple[str, ...]  # the words of keyword-stuffed passages


IN_DOMAIN = Setting(
    name="in-domain",
    onsets=("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "t", "v", "z"),
    vowels=("a", "e", "i", "o", "u"),
    codas=("", "", "n", "r", "l", "k", "m"),
    suffixes=("ek", "ul"),
    style_templates={
        "definition": (
            "{C} is a kind of {F} {F} .",
            "in {D} , {C} denotes the {F} {F} .",
            "the term {C} names a {F} {F} .",
        ),
        "cause": (
            "{C} happens because of {F} {F} .",
            "in {D} , {C} is caused by {F} {F} .",
            "due to {F} , the {C} {F} .",
        ),
        "procedure": (
            "first {F} the {C} , then {F} it .",
            "to {F} a {C} in {D} , follow {F} stages .",
            "finally {F} the {C} .",
        ),
        "place": ("{C} is found in the {F} {F} .", "in {D} , the {C} lies near {F} .", "the {F} region holds {C} ."),
    },
    intent_templates={
        "definition": ("what is a {F} {C} exactly", "{F} {C} meaning in short", "define the {C} for {F}"),
        "cause": ("why does the {F} {C} start", "reason for the {F} {C}", "what makes {C} {F} go wrong"),
        "procedure": ("how to {C} a {F}", "how do you {C} with {F}", "{F} {C} instructions for beginners"),
        "place": ("where is the {F} {C}", "{C} {F} location on map", "where can {F} {C} be seen"),
    },
    spam=("best", "cheap", "free", "online", "click", "top", "deals", "review", "buy", "now"),
)

OUT_OF_DOMAIN = Setting(
    name="out-of-domain",
    onsets=("sh", "th", "ch", "w", "h", "j", "y", "x"),
    vowels=("ai", "ou", "e", "o", "ee"),
    codas=("", "", "sh", "th", "x", "w"),
    suffixes=("ar", "im"),
    # one sentence per style is shared with in-domain, the others are new: partial transfer
    style_templates={
        "definition": ("{C} is a kind of {F} {F} .", "{C} : a {F} {F} used in {D} ."),
        "cause": ("{C} happens because of {F} {F} .", "{C} results from {F} {F} in {D} ."),
        "procedure": ("first {F} the {C} , then {F} it .", "begin with {F} {C} ; next {F} the {D} ."),
        "place": ("{C} is found in the {F} {F} .", "{C} occurs around {F} {F} of {D} ."),
    },
    intent_templates={
        "definition": ("explain {C} for {F} please", "{F} {C} definition wanted"),
        "cause": ("what causes {F} {C} today", "{F} {C} origin story"),
        "procedure": ("guide to {C} {F} quickly", "{C} {F} howto for novices"),
        "place": ("{C} whereabouts near {F}", "{F} {C} where exactly"),
    },
    spam=("best", "cheap", "free", "subscribe", "promo", "offer", "win", "sale", "limited", "hurry"),
)


for _setting in (IN_DOMAIN, OUT_OF_DOMAIN):
    for _style, _options in _setting.style_templates.items():
        assert any("{C}" in t for t in _options) and any("{D}" in t for t in _options), (_setting.name, _style)


@dataclass(frozen=True)
class Sizes:
    fields: int = 6
    concepts: int = 200
    markers: int = 3  # words besides its name that mark a field
    passages: int = 3000
    ood_fields: int = 4
    ood_concepts: int = 120
    ood_passages: int = 1500
    train_queries: int = 600
    validation_queries: int = 60
    test_queries: int = 80
    triples_per_query: int = 20
    depth: int = 50  # BM25 candidates written to runs/bm25.trec
    hard_negatives_depth: int = 100  # the "ColBERTv2" run for InfoNCE negatives and LLM lists
    llm_queries: int = 300  # train queries the simulated LLM re-ranks


@dataclass
class World:
    """One side's vocabulary and passages, with each passage's hidden attributes for grading."""

    setting: Setting
    field_words: list[list[str]]  # [field] -> name, then markers
    concept_forms: list[tuple[str, str, str]]  # [concept] -> base form, two inflected forms
    filler: list[str]
    filler_p: np.ndarray
    doc_ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    doc_field: list[int] = field(default_factory=list)
    doc_focus: list[int] = field(default_factory=list)
    doc_secondary: list[int] = field(default_factory=list)
    doc_style: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Query:
    id: str
    text: str
    concept: int
    intent: int
    source: int  # the passage the query was drawn from: grade 3, the judged positive in train


# ---------------------------------------------------------------------------------------------
# Where the world lives


# A digest of this module's source: a changed generator never reads a world an older one cached.
_GENERATOR_DIGEST = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]


def world_id(seed: int = DEFAULT_SEED) -> str:
    """``v1-<digest>-s<seed>``, with the digest of this module's source."""
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


def generate(folder: str | os.PathLike, seed: int = DEFAULT_SEED, sizes: Sizes = Sizes()) -> Path:
    """Write all four splits and the training files under ``folder``; deterministic in ``seed``."""
    folder = Path(folder)
    rng = np.random.default_rng([seed, 2603])
    used: set[str] = set()
    inside = _make_world(IN_DOMAIN, sizes.fields, sizes.concepts, sizes, rng, used)
    outside = _make_world(OUT_OF_DOMAIN, sizes.ood_fields, sizes.ood_concepts, sizes, rng, used)
    _make_passages(inside, sizes.passages, rng, prefix="p")
    _make_passages(outside, sizes.ood_passages, rng, prefix="o")

    train = _make_queries(inside, sizes.train_queries, rng, prefix="t")
    validation = _make_queries(inside, sizes.validation_queries, rng, prefix="v")
    test = _make_queries(inside, sizes.test_queries, rng, prefix="i")
    ood = _make_queries(outside, sizes.test_queries, rng, prefix="x")

    for split, world, queries in (
        ("validation", inside, validation),
        ("in-domain", inside, test),
        ("out-of-domain", outside, ood),
    ):
        run = _write_folder(folder / split, world, queries, sizes.depth)
        write_qrels(_judged(world, queries, _grades(world, queries), run), folder / split / "qrels.txt")
    bm25 = _write_folder(folder / "train", inside, train, sizes.depth)
    write_training_files(folder / "train", inside, train, bm25, sizes, rng)
    write_text_atomic(folder / "README.md", _readme(seed, sizes))
    write_contents(folder)  # every file's size and sha256, which ensure() checks
    return folder


def _words(setting: Setting, n: int, rng: np.random.Generator, used: set[str]) -> list[str]:
    """``n`` new pseudo-words of two or three syllables; none of their forms collides."""
    out = []
    while len(out) < n:
        syllables = rng.integers(2, 4)
        word = "".join(rng.choice(setting.onsets) + rng.choice(setting.vowels) for _ in range(syllables))
        word += rng.choice(setting.codas)
        forms = (word, word + setting.suffixes[0], word + setting.suffixes[1])
        if not used.intersection(forms):
            used.update(forms)
            out.append(word)
    return out


def _make_world(setting: Setting, fields: int, concepts: int, sizes: Sizes, rng, used: set[str]) -> World:
    field_words = [_words(setting, 1 + sizes.markers, rng, used) for _ in range(fields)]
    concept_forms = [
        (w, w + setting.suffixes[0], w + setting.suffixes[1]) for w in _words(setting, concepts, rng, used)
    ]
    filler = _words(setting, 250, rng, used)
    zipf = 1.0 / np.arange(1, len(filler) + 1)
    return World(setting, field_words, concept_forms, filler, zipf / zipf.sum())


def _pick(words: Sequence[str], rng, p_first: float) -> str:
    """The first word with probability ``p_first``, else one of the others."""
    if rng.random() < p_first:
        return words[0]
    return words[1 + int(rng.integers(len(words) - 1))]


def _fill(template: str, slots: dict[str, list[str]], world: World, rng) -> list[str]:
    words = []
    for token in template.split():
        if token in slots and slots[token]:
            words.append(slots[token].pop(0))
        elif token in ("{C}", "{D}", "{F}"):
            words.append(world.filler[int(rng.choice(len(world.filler), p=world.filler_p))])
        else:
            words.append(token)
    return words


def _make_passages(world: World, n: int, rng, prefix: str) -> None:
    """Each passage: a field, a focus concept (2-3 mentions), a secondary one, a style; or spam."""
    templates = world.setting.style_templates
    for number in range(1, n + 1):
        field_ = int(rng.integers(len(world.field_words)))
        if rng.random() < P_STUFFED:
            _add_passage(world, f"{prefix}{number:05d}", _stuffed(world, field_, rng), field_, -1, -1, -1)
            continue
        focus, secondary = (int(c) for c in rng.choice(len(world.concept_forms), size=2, replace=False))
        style = int(rng.integers(len(STYLES)))
        mentions = [focus] * int(rng.integers(2, 4)) + [secondary]
        rng.shuffle(mentions)
        slots = {
            "{C}": [_pick(world.concept_forms[c], rng, P_BASE_PASSAGE) for c in mentions],
            "{D}": [_pick(world.field_words[field_], rng, P_FIELD_NAME) for _ in range(int(rng.integers(1, 4)))],
        }
        sentences = []
        options = templates[STYLES[style]]
        while slots["{C}"]:  # one sentence per mention; field names left over are dropped
            sentences.append(_fill(options[int(rng.integers(len(options)))], slots, world, rng))
        while sum(map(len, sentences)) < 30:  # more sentences of the style, about fillers
            sentences.append(_fill(options[int(rng.integers(len(options)))], slots, world, rng))
        order = rng.permutation(len(sentences))
        text = " ".join(w for i in order for w in sentences[i])
        _add_passage(world, f"{prefix}{number:05d}", text, field_, focus, secondary, style)


def _stuffed(world: World, field_: int, rng) -> str:
    """Spam: six concepts in base form, some twice, the field's name, and spam words."""
    concepts = rng.choice(len(world.concept_forms), size=6, replace=False)
    words = [world.concept_forms[c][0] for c in concepts for _ in range(1 + int(rng.random() < 0.5))]
    spam = world.setting.spam
    words += [world.field_words[field_][0]] + [spam[int(i)] for i in rng.integers(len(spam), size=14)]
    words += [world.filler[int(rng.choice(len(world.filler), p=world.filler_p))] for _ in range(8)]
    return " ".join(words[i] for i in rng.permutation(len(words)))


def _add_passage(world: World, doc_id: str, text: str, field_: int, focus: int, secondary: int, style: int) -> None:
    world.doc_ids.append(doc_id)
    world.texts.append(text)
    world.doc_field.append(field_)
    world.doc_focus.append(focus)
    world.doc_secondary.append(secondary)
    world.doc_style.append(style)


def _make_queries(world: World, n: int, rng, prefix: str) -> list[Query]:
    """Each query is drawn from a passage (its focus and style), so it has a grade-3 passage."""
    queries = []
    sources = [i for i, style in enumerate(world.doc_style) if style >= 0]  # not spam
    for number in range(1, n + 1):
        doc = sources[int(rng.integers(len(sources)))]
        concept, intent = world.doc_focus[doc], world.doc_style[doc]
        slots = {"{C}": [_pick(world.concept_forms[concept], rng, P_BASE_QUERY)]}
        options = world.setting.intent_templates[STYLES[intent]]
        text = " ".join(_fill(options[int(rng.integers(len(options)))], slots, world, rng))
        queries.append(Query(f"{prefix}{number:04d}", text, concept, intent, doc))
    return queries


def _grades(world: World, queries: list[Query]) -> np.ndarray:
    """(Q, D) relevance grades 0-3, as defined in the module docstring."""
    focus, secondary = np.asarray(world.doc_focus), np.asarray(world.doc_secondary)
    style = np.asarray(world.doc_style)
    out = np.zeros((len(queries), len(world.doc_ids)), dtype=np.int64)
    for i, q in enumerate(queries):
        fits = style == q.intent
        overview = style == STYLES.index("definition")  # a definition half-answers any intent
        out[i] = np.where(
            focus == q.concept,
            np.where(fits, 3, np.where(overview, 2, 1)),
            np.where((secondary == q.concept) & fits, 1, 0),
        )
    return out


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


def write_training_files(
    folder: Path, world: World, queries: list[Query], bm25: pd.DataFrame, sizes: Sizes, rng
) -> None:
    """The four training sources of the paper, in the formats of the real files.

    - ``qrels.txt``: one judged positive per query (relevance 1), like MS MARCO's train qrels;
    - ``triples.tsv``: ``qid pos_pid neg_pid``, negatives from the BM25 top-``depth`` (they may
      be unjudged relevant passages, as in MS MARCO), shuffled;
    - ``teacher-pairs.tsv``: the same triples scored by the simulated cross-encoder ensemble,
      ``pos_score neg_score qid pos_pid neg_pid`` like Hofstaetter et al.'s file;
    - ``hard-negatives.run``: a stronger simulated first stage (the ColBERTv2 run's stand-in),
      top-``hard_negatives_depth``, TREC format;
    - ``llm-lists-sampled-50.run`` / ``-100.run``: the simulated LLM's orderings of that run's top
      50 / 100 for ``llm_queries`` sampled queries, TREC format, score = list length + 1 - rank.
    """
    grades = _grades(world, queries)
    judged = pd.DataFrame(
        {"query_id": [q.id for q in queries], "doc_id": [world.doc_ids[q.source] for q in queries], "relevance": 1}
    )
    write_qrels(judged, folder / "qrels.txt")

    teacher = 2.2 * grades - 3.0 + rng.normal(0.0, 1.0, size=grades.shape)
    doc_index = {d: i for i, d in enumerate(world.doc_ids)}
    triples = []
    for qi, q in enumerate(queries):
        pool = [doc_index[d] for d in bm25.loc[bm25["query_id"] == q.id, "doc_id"] if doc_index[d] != q.source]
        for neg in rng.choice(pool, size=sizes.triples_per_query, replace=len(pool) < sizes.triples_per_query):
            triples.append((qi, q.source, int(neg)))
    order = rng.permutation(len(triples))
    with (
        (folder / "triples.tsv").open("w", encoding="utf-8") as ids,
        (folder / "teacher-pairs.tsv").open("w", encoding="utf-8") as scored,
    ):
        for i in order:
            qi, pos, neg = triples[i]
            qid, pid, nid = queries[qi].id, world.doc_ids[pos], world.doc_ids[neg]
            ids.write(f"{qid}\t{pid}\t{nid}\n")
            scored.write(f"{teacher[qi, pos]:.4f}\t{teacher[qi, neg]:.4f}\t{qid}\t{pid}\t{nid}\n")

    # a stronger first stage than BM25: it sees relevance through noise and never favours spam
    utility = grades + rng.normal(0.0, 0.8, size=grades.shape)
    first_stage = _top(utility, queries, world, sizes.hard_negatives_depth)
    write_run(first_stage, folder / "hard-negatives.run", tag="simulated-colbert")

    sampled = np.sort(rng.choice(len(queries), size=min(sizes.llm_queries, len(queries)), replace=False))
    llm = grades + rng.normal(0.0, 0.6, size=grades.shape)
    for k in (50, 100):
        lists = []
        for qi in sampled:
            top = first_stage[first_stage["query_id"] == queries[qi].id].head(k)
            docs = np.array([doc_index[d] for d in top["doc_id"]])
            ranked = docs[np.argsort(-llm[qi, docs], kind="stable")]
            lists.append(
                pd.DataFrame(
                    {
                        "query_id": queries[qi].id,
                        "doc_id": [world.doc_ids[d] for d in ranked],
                        "score": np.arange(len(ranked), 0, -1, dtype=float),
                        "rank": np.arange(1, len(ranked) + 1),
                    }
                )
            )
        write_run(pd.concat(lists, ignore_index=True), folder / f"llm-lists-sampled-{k}.run", tag="simulated-llm")


def _top(scores: np.ndarray, queries: list[Query], world: World, depth: int) -> pd.DataFrame:
    frames = []
    for qi, q in enumerate(queries):
        best = np.argsort(-scores[qi], kind="stable")[:depth]
        frames.append(
            pd.DataFrame(
                {
                    "query_id": q.id,
                    "doc_id": [world.doc_ids[d] for d in best],
                    "score": scores[qi, best].round(4),
                    "rank": np.arange(1, len(best) + 1),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[RUN_COLUMNS]


def _readme(seed: int, sizes: Sizes) -> str:
    return f"""# cerepro demo world {world_id(seed)}: SYNTHETIC data

Generated by cerepro.data.demo_world (its module docstring and book/setup-data.md define the
semantics). Every number computed on these folders is synthetic.

- in-domain: {sizes.passages} passages, {sizes.fields} domains, {sizes.concepts} concepts;
  out-of-domain: {sizes.ood_passages} passages, {sizes.ood_fields} domains, {sizes.ood_concepts} concepts
- train/: {sizes.train_queries} queries, qrels.txt (one judged positive each), triples.tsv,
  teacher-pairs.tsv, hard-negatives.run, llm-lists-sampled-50.run, llm-lists-sampled-100.run,
  runs/bm25.trec
- validation/ ({sizes.validation_queries} queries), in-domain/ ({sizes.test_queries}),
  out-of-domain/ ({sizes.test_queries}): queries.tsv, docs.tsv, qrels.txt (grades 0-3),
  runs/bm25.trec (BM25 top-{sizes.depth})
"""
