"""Training groups tokenized ahead of the loop, in blocks of whole optimiser steps.

A training source (:mod:`cerepro.data.training_data`) yields groups: a query, its passages and, as the
source gives them, labels, teacher scores and a mask. :class:`TokenizedBlocks` reads them in
blocks of ``steps_per_block`` steps, tokenizes each block once with the fast tokenizer
(:func:`cerepro.data.tokenize.encode_pairs`) and keeps it on disk when the source names itself
(``cache_key``); step ``s`` of a resumed run reads the same rows as in an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cerepro.config import RunConfig
from cerepro.data.tokenize import PairEncoding, encode_pairs, encoding_options, tokenizer_fingerprint
from cerepro.paths import atomic_path, cache_dir
from cerepro.training.checkpoints import TrainingError

BLOCK_PAIRS = 8192  # pairs tokenized per block ahead of the loop


@dataclass
class Block:
    """Consecutive training groups, tokenized: pair ``slots[g, d]`` of group ``g`` (-1: none)."""

    start: int  # position of the first group in the source
    encoding: PairEncoding
    slots: np.ndarray  # (G, D) int64
    mask: np.ndarray  # (G, D) bool
    labels: np.ndarray | None  # (G, D) float32
    teacher: np.ndarray | None  # (G, D) float32


def read_groups(groups: Iterator, n: int, width: int) -> tuple[list[str], list[list[str]], dict]:
    """The next ``n`` groups as (queries, passages per group, arrays of labels/teacher/mask).

    A group has ``query`` (str), ``passages`` (list of str) and optional ``labels``, ``teacher``
    (numbers per passage) and ``mask`` (bool per passage); attributes or mapping keys.
    """
    queries, passages = [], []
    labels = np.zeros((n, width), np.float32)
    teacher = np.zeros((n, width), np.float32)
    mask = np.zeros((n, width), bool)
    has = {"labels": False, "teacher": False}
    for g in range(n):
        try:
            group = next(groups)
        except StopIteration:
            raise TrainingError(
                f"the training source ran out after {g} groups of a block of {n}; "
                "lower max_steps or use more training data"
            ) from None
        get = group.get if isinstance(group, dict) else (lambda k, d=None, _g=group: getattr(_g, k, d))
        texts = list(get("passages"))
        if len(texts) > width:
            raise TrainingError(f"a training group has {len(texts)} passages, more than group_size {width}")
        queries.append(str(get("query")))
        group_mask = get("mask")
        group_mask = np.ones(len(texts), bool) if group_mask is None else np.asarray(group_mask, bool)
        mask[g, : len(texts)] = group_mask
        passages.append([t if m else None for t, m in zip(texts, group_mask)])
        for key, array in (("labels", labels), ("teacher", teacher)):
            values = get(key)
            if values is not None:
                array[g, : len(texts)] = np.asarray(values, np.float32)
                has[key] = True
    return (
        queries,
        passages,
        {"labels": labels if has["labels"] else None, "teacher": teacher if has["teacher"] else None, "mask": mask},
    )


class TokenizedBlocks:
    """Training groups in blocks of whole steps, tokenized once (batched, fast tokenizer) and
    kept on disk when the source has a ``cache_key``; step ``s`` reads rows of one block."""

    def __init__(self, source, tokenizer, config: RunConfig):
        self.source, self.tokenizer, self.config = source, tokenizer, config
        self.groups_per_step = config.groups_per_step
        self.steps_per_block = max(1, min(BLOCK_PAIRS // config.pairs_per_step, config.max_steps))
        self.block_groups = self.steps_per_block * self.groups_per_step
        self.current: Block | None = None
        self._iterator, self._position = None, None
        key = getattr(source, "cache_key", None)
        self.cache_key = (
            None
            if key is None
            else json.dumps(
                {
                    "source": key,
                    "tokenizer": tokenizer_fingerprint(tokenizer),
                    "group_size": config.group_size,
                    "limits": [
                        config.max_length,
                        config.query_max_length,
                        config.passage_max_length,
                        config.truncation,
                    ],
                    "block_groups": self.block_groups,
                }
            )
        )

    def step_rows(self, step: int) -> tuple[Block, np.ndarray]:
        index, within = divmod(step, self.steps_per_block)
        start = index * self.block_groups
        if self.current is None or self.current.start != start:
            self.current = self._block(start)
        first = within * self.groups_per_step
        return self.current, np.arange(first, first + self.groups_per_step)

    def _block(self, start: int) -> Block:
        path = None
        if self.cache_key is not None:
            digest = hashlib.sha256(self.cache_key.encode()).hexdigest()[:20]
            path = cache_dir() / "train-blocks" / digest / f"{start:012d}.npz"
            if path.is_file():
                try:
                    return _load_block(path, start)
                except Exception:  # noqa: BLE001 - a broken cache file is rebuilt, never trusted
                    pass
        if self._position != start:  # sources resume from an integer position
            self._iterator = iter(self.source.groups(start))
        queries, passages, arrays = read_groups(self._iterator, self.block_groups, self.config.group_size)
        self._position = start + self.block_groups
        mask = arrays["mask"]
        flat_q = np.repeat(np.asarray(queries, dtype=object), mask.sum(axis=1))
        flat_p = [p for row in passages for p in row if p is not None]
        encoding = encode_pairs(
            self.tokenizer,
            flat_q,
            flat_p,
            **encoding_options(self.config),
        )
        slots = np.full(mask.shape, -1, np.int64)
        slots[mask] = np.arange(int(mask.sum()))
        block = Block(start, encoding, slots, mask, arrays["labels"], arrays["teacher"])
        if path is not None:
            _save_block(block, path)
        return block


def _save_block(block: Block, path: Path) -> None:
    arrays = {"slots": block.slots, "mask": block.mask}
    for key in ("labels", "teacher"):
        if getattr(block, key) is not None:
            arrays[key] = getattr(block, key)
    enc = block.encoding
    arrays.update(input_ids=enc.input_ids, offsets=enc.offsets)
    if enc.type_split is not None:
        arrays.update(type_split=enc.type_split, token_types=np.asarray(enc.token_types))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _load_block(path: Path, start: int) -> Block:
    with np.load(path, allow_pickle=False) as z:
        types = tuple(int(t) for t in z["token_types"]) if "token_types" in z.files else None
        encoding = PairEncoding(z["input_ids"], z["offsets"], z["type_split"] if types else None, types)
        return Block(
            start,
            encoding,
            z["slots"],
            z["mask"],
            z["labels"] if "labels" in z.files else None,
            z["teacher"] if "teacher" in z.files else None,
        )
