"""SPLADE's quantised impact index: passages encoded in shards, inverted into term-major postings.

- **Quantisation** (``quantise``): impacts ``round(100 * w)`` as integers (weights under 0.005
  vanish), for passages and queries alike, so a score is an exact integer and every engine agrees
  on it.
- **Shards** (``encode_passages``): passages are encoded in shards (``passages-00000.npz``...)
  written atomically, so a killed job resumes at the first missing shard; a shard cut short (a
  copy, a full disk) is named and encoded again.
- **Index** (``build_index``, ``load_index``): the shards are inverted into term-major postings (a
  CSC matrix: ``indptr`` per term, doc numbers, impacts) with a manifest (model, revision,
  quantisation, sizes, timings). Index and shards live under
  ``cache_dir()/splade/<model>-<passages>-<hash of model, revision, passages, length,
  quantisation>/`` (``index_key``): collections that share passages (MS MARCO dev, TREC DL 2019
  and 2020) share one index.

Bad input fails with :class:`FirstStageError` naming the file: an index built by another model
revision, a truncated index, a passage count that is not the one announced.

This module builds and reads the index; it never searches it (:mod:`cerepro.retrieval.search`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from cerepro.paths import atomic_dir, atomic_path
from cerepro.retrieval.splade import encode_texts
from cerepro.vocab import FirstStageError

if TYPE_CHECKING:  # scipy is imported where it is used
    import scipy.sparse

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when shard or index arrays change meaning
SCALE = 100  # impacts are round(SCALE * weight)
DEFAULT_SHARD_SIZE = 100_000  # passages per shard: minutes of GPU work, so little is lost


def quantise(weights) -> scipy.sparse.csr_matrix:
    """Integer impacts ``round(SCALE * w)`` as uint16, zeros dropped (the index's weights)."""
    q = weights.copy()
    q.data = np.rint(q.data.astype(np.float64) * SCALE)
    if q.data.size and q.data.max() > np.iinfo(np.uint16).max:
        raise FirstStageError(f"a weight of {q.data.max() / SCALE:.1f} overflows the uint16 impacts")
    q.data = q.data.astype(np.uint16)
    q.eliminate_zeros()
    return q


@dataclass
class ImpactIndex:
    """Term-major postings of quantised passage impacts (a CSC matrix of shape (V, D))."""

    indptr: np.ndarray  # (V + 1,) int64: term t's postings are [indptr[t], indptr[t + 1])
    docs: np.ndarray  # (P,) int32: doc numbers, increasing within each term
    impacts: np.ndarray  # (P,) uint16
    doc_ids: np.ndarray  # (D,) str
    id_order: np.ndarray  # (D,) int64: rank of each doc id in descending string order (ties)
    manifest: dict
    folder: Path | None = None

    @property
    def vocab_size(self) -> int:
        return len(self.indptr) - 1

    @property
    def max_impact(self) -> np.ndarray:
        """(V,) the largest impact of each term's postings (0 for an empty list)."""
        out = np.zeros(self.vocab_size, dtype=np.int64)
        nonempty = np.flatnonzero(np.diff(self.indptr))
        if len(nonempty):
            out[nonempty] = np.maximum.reduceat(self.impacts, self.indptr[nonempty])
        return out


INDEX_ARRAYS = ("indptr", "docs", "impacts", "doc_ids", "id_order")


def index_key(identity: dict, docs_key: str, max_length: int) -> str:
    """The cache folder name of an index: model, revision, passages, length, quantisation."""
    facts = json.dumps(
        {**identity, "docs": docs_key, "max_length": max_length, "scale": SCALE, "format": FORMAT_VERSION},
        sort_keys=True,
    )
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{identity['model'].split('/')[-1]}-{docs_key}")[:60]
    return f"{slug}-{hashlib.sha256(facts.encode()).hexdigest()[:12]}"


def build_index(shards: Sequence[Path], folder: Path, meta: dict, *, vocab_size: int) -> ImpactIndex:
    """Invert passage shards into term-major postings in ``folder``, atomically.

    Two passes over the shards (count per term, then fill), so memory holds the postings once,
    never a second sorted copy: MS MARCO's ~1.5 billion postings fit in 6 bytes each.
    """
    started = time.perf_counter()
    counts = np.zeros(vocab_size, dtype=np.int64)
    n_docs = 0
    for path in shards:
        shard = _read_shard(path)
        counts += np.bincount(shard["terms"], minlength=vocab_size)[:vocab_size]
        n_docs += len(shard["doc_ids"])
    indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    docs = np.empty(int(indptr[-1]), dtype=np.int32)
    impacts = np.empty(int(indptr[-1]), dtype=np.uint16)
    cursor = indptr[:-1].copy()
    doc_ids, first = [], 0
    for path in tqdm(shards, desc="invert shards", unit="shard", disable=len(shards) < 4):
        shard = _read_shard(path)
        lengths = np.diff(shard["offsets"])
        doc_of = np.repeat(np.arange(first, first + len(lengths), dtype=np.int32), lengths)
        order = np.argsort(shard["terms"], kind="stable")  # by term, doc order kept within a term
        terms = shard["terms"][order]
        starts = np.flatnonzero(np.r_[True, terms[1:] != terms[:-1]]) if len(terms) else np.zeros(0, int)
        run_lengths = np.diff(np.r_[starts, len(terms)])
        within = np.arange(len(terms)) - np.repeat(starts, run_lengths)
        at = cursor[terms] + within
        docs[at] = doc_of[order]
        impacts[at] = shard["impacts"][order]
        np.add.at(cursor, terms[starts], run_lengths)
        doc_ids.append(shard["doc_ids"])
        first += len(lengths)
    doc_ids = np.concatenate(doc_ids) if doc_ids else np.zeros(0, dtype="<U1")
    id_order = np.empty(len(doc_ids), dtype=np.int64)
    id_order[np.argsort(doc_ids, kind="stable")[::-1]] = np.arange(len(doc_ids))
    arrays = {"indptr": indptr, "docs": docs, "impacts": impacts, "doc_ids": doc_ids, "id_order": id_order}
    manifest = {
        **meta,
        "format": FORMAT_VERSION,
        "scale": SCALE,
        "docs_count": int(n_docs),
        "vocab_size": int(vocab_size),
        "postings": int(indptr[-1]),
        "index_seconds": round(time.perf_counter() - started, 3),
    }
    with atomic_dir(folder, "manifest.json") as tmp:
        files = {}
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
            files[f"{name}.npy"] = {
                "bytes": (tmp / f"{name}.npy").stat().st_size,
                "shape": list(array.shape),
                "dtype": array.dtype.str,
            }
        manifest["files"] = files
        manifest["index_bytes"] = sum(f["bytes"] for f in files.values())
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return load_index(folder)


def load_index(folder: Path, identity: dict | None = None) -> ImpactIndex:
    """The index in ``folder``, memory-mapped, checked against its manifest (and, with
    ``identity``, against the query encoder: model and revision must be the index's)."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise FirstStageError(f"{manifest_path}: no readable index manifest ({exc})") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise FirstStageError(
            f"{manifest_path}: index format {manifest.get('format')}, this cerepro "
            f"reads {FORMAT_VERSION}; delete {folder} to rebuild it"
        )
    if identity is not None:
        for key in ("model", "revision"):
            if manifest.get(key) != identity[key]:
                raise FirstStageError(
                    f"{manifest_path}: index built with {key} {manifest.get(key)!r}, but the query "
                    f"encoder is {identity[key]!r}; queries and passages must come from one model "
                    f"(delete {folder} or encode the queries with the index's model)"
                )
    arrays = {}
    for name in INDEX_ARRAYS:
        path = folder / f"{name}.npy"
        expected = manifest["files"][f"{name}.npy"]
        size = path.stat().st_size if path.is_file() else None
        if size != expected["bytes"]:
            raise FirstStageError(
                f"{path}: truncated or missing index file ({size} bytes, the "
                f"manifest says {expected['bytes']}); delete {folder} to rebuild it"
            )
        try:
            array = np.load(path, mmap_mode="r" if name in ("docs", "impacts") else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise FirstStageError(f"{path}: unreadable index file ({exc}); delete {folder}") from None
        if list(array.shape) != expected["shape"] or array.dtype.str != expected["dtype"]:
            raise FirstStageError(
                f"{path}: shape {array.shape} {array.dtype.str}, the manifest says "
                f"{expected['shape']} {expected['dtype']}; delete {folder}"
            )
        arrays[name] = array
    if arrays["indptr"][-1] != len(arrays["docs"]) or len(arrays["doc_ids"]) != manifest["docs_count"]:
        raise FirstStageError(f"{folder}: postings and doc ids disagree with {manifest_path}")
    return ImpactIndex(**arrays, manifest=manifest, folder=folder)


def _shard_path(folder: Path, k: int) -> Path:
    return folder / f"passages-{k:05d}.npz"


def _write_shard(path: Path, doc_ids: Sequence[str], q) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            doc_ids=np.asarray(doc_ids, dtype=str),
            offsets=q.indptr.astype(np.int64),
            terms=q.indices.astype(np.int32),
            impacts=q.data.astype(np.uint16),
            meta=np.asarray(json.dumps({"format": FORMAT_VERSION, "scale": SCALE})),
        )


def _read_shard(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            shard = {k: npz[k] for k in ("doc_ids", "offsets", "terms", "impacts")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise FirstStageError(f"{path}: unreadable passage shard ({exc}); delete it to re-encode") from None
    if shard["offsets"][-1] != len(shard["terms"]) or len(shard["offsets"]) != len(shard["doc_ids"]) + 1:
        raise FirstStageError(f"{path}: inconsistent passage shard; delete it to re-encode")
    return shard


def _intact_shard(path: Path, size: int) -> bool:
    """A shard on disk that reads whole and holds ``size`` passages; one that does not (cut by
    a copy, a full disk) is named and encoded again, not trusted on its name."""
    try:
        shard = _read_shard(path)
        if len(shard["doc_ids"]) != size:
            raise FirstStageError(f"{path}: {len(shard['doc_ids'])} passages, {size} expected")
    except FirstStageError as exc:
        print(f"cerepro: {str(exc).replace('; delete it to re-encode', '')}: encoding it again", file=sys.stderr)
        return False
    return True


def encode_passages(
    passages: Iterable[tuple[str, str]],
    total: int,
    model,
    tokenizer,
    folder: Path,
    *,
    max_length: int,
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_tokens: int | None = None,
    precision: str = "auto",
    progress: bool = True,
    encode: bool = True,
) -> list[Path]:
    """Encode ``(doc id, text)`` pairs into quantised shards of ``shard_size`` passages in
    ``folder``; shards already on disk are kept (a killed job resumes at the first missing one).
    With ``encode=False`` every shard must be on disk already (else FirstStageError)."""
    folder.mkdir(parents=True, exist_ok=True)
    n_shards = -(-total // shard_size)
    paths = [_shard_path(folder, k) for k in range(n_shards)]
    done = sum(1 for p in paths if p.is_file())
    if not encode:
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise FirstStageError(
                f"{missing[0]}: passage shard missing ({len(missing)} of {n_shards}); "
                "the collection's encode job (python -m cerepro.retrieval.first_stage --stage "
                "encode) writes the shards before the index is built"
            )
        return paths  # encoded and checked against the collection when they were written
    bar = tqdm(total=total, unit="passage", desc="encode passages", disable=not progress)
    iterator = iter(passages)
    for k, path in enumerate(paths):
        size = min(shard_size, total - k * shard_size)
        if path.is_file() and _intact_shard(path, size):
            next(islice(iterator, size - 1, size), None)  # skip its passages without encoding
            bar.update(size)
            continue
        chunk = list(islice(iterator, size))
        if len(chunk) != size:
            raise FirstStageError(
                f"{folder}: the collection yielded {k * shard_size + len(chunk)} passages, {total} were announced"
            )
        ids, texts = zip(*chunk)
        weights = encode_texts(
            model, tokenizer, texts, max_length=max_length, max_tokens=max_tokens, precision=precision, progress=bar
        )
        _write_shard(path, ids, quantise(weights))
    bar.close()
    if next(iterator, None) is not None:
        raise FirstStageError(
            f"{folder}: the collection yields more than the {total} passages it "
            f"counts (duplicate doc ids?); nothing past them would be indexed"
        )
    if done:
        log.info("%s: %d of %d shards were already encoded", folder, done, n_shards)
    return paths
