"""ir_datasets' passages as text: a collection's docs store, built by one process at a time, and
the rule that turns a document into the text a cross-encoder reads (``document_text``: the text
ir_datasets gives, or the one the authors' pipeline read)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator
from functools import cached_property

from cerepro.vocab import DOCUMENT_TEXTS


def document_text(doc, rule: str = "ir-datasets") -> str:
    """The text of an ir_datasets document under ``rule``: ``"ir-datasets"`` is its
    ``default_text()`` (title then text where it has a title); ``"datamaestro"`` is the text the
    authors' pipeline read, through datamaestro_text's formats of Feb 2026 (commit b9d1d6b, 3 Feb
    2026; unchanged in that file since 28 Jan): Touche-2020 and SciDocs documents without their
    title (their formats expose the ``text`` field alone), TREC-COVID's as text then title (its
    format builds the title-body text from (text, title) in that order); every other collection
    of the paper as ``default_text()``."""
    if rule == "datamaestro":
        kind = type(doc).__name__
        if kind in ("BeirToucheDoc", "BeirSciDoc"):
            return doc.text
        if kind == "BeirCordDoc":
            return f"{doc.text} {doc.title}"
    elif rule != "ir-datasets":
        raise ValueError(f"document_text must be one of {DOCUMENT_TEXTS}, got {rule!r}")
    return doc.default_text()


class IrdsDocs:
    """Passages of an ir_datasets collection, looked up in its docs store (built on first use),
    their texts read by a :func:`document_text` rule."""

    def __init__(self, dataset, docs_id: str, text: str = "ir-datasets"):
        if text not in DOCUMENT_TEXTS:
            raise ValueError(f"document_text must be one of {DOCUMENT_TEXTS}, got {text!r}")
        self.dataset = dataset
        self.key = docs_id
        self.text = text

    @cached_property
    def store(self):
        """The docs store, built by one process at a time. ir_datasets checks whether a store is
        built before it takes the store's lock, so two jobs opening a fresh collection together
        (the first-stage jobs of MS MARCO dev and TREC DL) both wrote every passage into it, and
        every passage was then read twice. The build is serialised here, checked again under
        the lock."""
        store = self.dataset.docs_store()
        built, build, path = (getattr(store, name, None) for name in ("built", "build", "path"))
        if callable(built) and callable(build) and isinstance(path, str) and not built():
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(f"{path}.cerepro.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not built():
                    build()
        return store

    def get_many(self, doc_ids: Iterable[str]) -> dict[str, str]:
        return {doc.doc_id: document_text(doc, self.text) for doc in self.store.get_many_iter(list(doc_ids))}

    def __iter__(self) -> Iterator[tuple[str, str]]:
        self.store  # noqa: B018 - built (once, under the lock) before ir_datasets reads it
        for doc in self.dataset.docs_iter():
            yield doc.doc_id, document_text(doc, self.text)

    def __len__(self) -> int:
        # what the files hold: the docs store counts its records (it is built on first use, and
        # re-ranking needs it anyway); ir_datasets' own docs_count() is the count the release
        # announces, whatever was downloaded
        count = getattr(self.store, "count", None)
        return count() if callable(count) else self.dataset.docs_count()
