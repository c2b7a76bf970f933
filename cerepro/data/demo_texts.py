"""The demo world's texts and their grades: pseudo-words, passages, queries and relevance.

``cerepro.data.demo_world`` generates the world from these pieces; ``book/setup-data.md`` says
the same at more length.

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

This module draws words, passages and queries from a seeded generator and grades them; it writes
no file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

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


def make_world(setting: Setting, fields: int, concepts: int, sizes: Sizes, rng, used: set[str]) -> World:
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


def make_passages(world: World, n: int, rng, prefix: str) -> None:
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


def make_queries(world: World, n: int, rng, prefix: str) -> list[Query]:
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


def grades_of(world: World, queries: list[Query]) -> np.ndarray:
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
