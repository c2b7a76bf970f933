"""Random access to the records of a large text file, in a seeded order, in constant memory.

- :class:`RecordFile`: the byte offsets of a file's records (a line, or a query's block of a TREC
  run), indexed in one pass and cached under ``cache_dir()/record-index/``, so reading record
  ``i`` is one seek whatever the file's size.
- :class:`Permutation`: a seeded bijection of ``range(n)`` computed index by index (a Feistel
  network), so shuffling costs constant memory whatever the file's size.
- :func:`cache_key`: the one way a cache derived from files is keyed (the record index, the
  per-query-block counts of a run, a verified training file, a source's tokenized blocks).

This module reads records; it never parses their columns (:mod:`cerepro.data.rows`).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cerepro.data.trec import LARGE_FILE, DataFormatError
from cerepro.paths import atomic_path, cache_dir

BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark


def cache_key(*facts, sep: str = " ") -> str:
    """The key of a cache: ``facts`` joined by ``sep``, each file among them (a ``Path``) standing
    for its content by its resolved path, size and mtime (an edited or replaced file has another).

    Every fact the cached content depends on goes in. ``sep`` is the one each cache's key was first
    written with, so that the caches already on disk keep their names."""
    parts = []
    for fact in facts:
        if isinstance(fact, Path):
            stat = fact.stat()
            parts += [str(fact.resolve()), str(stat.st_size), str(stat.st_mtime_ns)]
        else:
            parts.append(str(fact))
    return sep.join(parts)


def cache_file(folder: Path, of: Path, key: str, suffix: str) -> Path:
    """``folder/<name of the file it derives from>-<md5 of key, 12 hex><suffix>``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", of.name)[:60]
    return folder / f"{stem}-{hashlib.md5(key.encode()).hexdigest()[:12]}{suffix}"


# ---------------------------------------------------------------------------------------------
# Constant-memory shuffling: a seeded bijection of range(n), computed index by index


class Permutation:
    """A pseudo-random permutation of ``range(n)``: a 4-round Feistel network on the next even
    power of two, with cycle walking back into range. ``perm[i]`` costs O(1) time and memory."""

    def __init__(self, n: int, key: Sequence[int]):
        if n < 1:
            raise ValueError("cannot permute an empty range")
        self.n = n
        bits = max(2, (n - 1).bit_length())
        self.half = (bits + 1) // 2
        self.mask = (1 << self.half) - 1
        self.keys = [int(k) for k in np.random.default_rng(list(key)).integers(0, 2**63, size=4)]

    def _round(self, value: int, key: int) -> int:
        # splitmix64 finaliser: a cheap, well-mixed hash of (value, key)
        z = (value + key + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return (z ^ (z >> 31)) & self.mask

    def __getitem__(self, index: int) -> int:
        if not 0 <= index < self.n:
            raise IndexError(index)
        x = index
        while True:
            left, right = x >> self.half, x & self.mask
            for key in self.keys:
                left, right = right, left ^ self._round(right, key)
            x = (left << self.half) | right
            if x < self.n:
                return x

    def __len__(self) -> int:
        return self.n


# ---------------------------------------------------------------------------------------------
# Random access to the records of a large text file


class RecordFile:
    """Byte offsets of a text file's records, for random access in constant memory.

    ``unit="line"``: one record per non-blank line. ``unit="query"``: one record per block of
    consecutive lines with the same first column (a TREC run grouped by query); a query that
    comes back after another one is an error. The index is built in one pass (progress bar) and
    cached under ``cache_dir()/record-index/``, keyed by the file's path, size and mtime.
    """

    def __init__(self, path: str | os.PathLike, unit: str = "line"):
        if unit not in ("line", "query"):
            raise ValueError(f"unit must be 'line' or 'query', got {unit!r}")
        self.path = Path(path)
        self.unit = unit
        if not self.path.is_file():
            raise FileNotFoundError(self.path)

    @cached_property
    def _index(self) -> tuple[np.ndarray, np.ndarray]:
        stat = self.path.stat()
        key = cache_key(self.path, self.unit)
        folder = cache_dir() / "record-index"
        offsets = cache_file(folder, self.path, key, ".offsets.u64")
        numbers = cache_file(folder, self.path, key, ".lines.u64")
        if not numbers.is_file() or not self._whole(offsets, numbers, stat.st_size):
            self._build(offsets, numbers)
        return (np.memmap(offsets, dtype=np.uint64, mode="r"), np.memmap(numbers, dtype=np.uint64, mode="r"))

    @staticmethod
    def _whole(offsets: Path, numbers: Path, size: int) -> bool:
        """Whether a cached index is the one ``_build`` wrote: one offset per record plus the end
        of the file, which is the file's size (a cut or emptied cache file is rebuilt, not read)."""
        try:
            n_numbers, n_offsets = numbers.stat().st_size, offsets.stat().st_size
        except OSError:
            return False
        if n_numbers == 0 or n_numbers % 8 or n_offsets != n_numbers + 8:
            return False
        with offsets.open("rb") as f:
            f.seek(n_offsets - 8)
            return int(np.frombuffer(f.read(8), dtype=np.uint64)[0]) == size

    def _build(self, offsets_path: Path, numbers_path: Path) -> None:
        """Offsets of each record's first byte (plus the end of file) and its first line number."""
        chunk = 1 << 16
        offsets, numbers = [], []
        seen: dict[str, int] = {}
        current = None
        with (
            atomic_path(offsets_path) as tmp_offsets,
            atomic_path(numbers_path) as tmp_numbers,
            tmp_offsets.open("wb") as out_offsets,
            tmp_numbers.open("wb") as out_numbers,
            self.path.open("rb") as f,
            tqdm(
                total=self.path.stat().st_size,
                unit="B",
                unit_scale=True,
                leave=False,
                desc=f"index {self.path.name}",
                disable=self.path.stat().st_size < LARGE_FILE,
            ) as bar,
        ):
            position = 0
            for number, line in enumerate(f, start=1):
                if number == 1 and line.startswith(BOM):  # a byte-order mark is not the first id
                    position, line = len(BOM), line[len(BOM) :]
                if line.strip():
                    if self.unit == "line":
                        offsets.append(position)
                        numbers.append(number)
                    else:
                        qid = line.split(None, 1)[0].decode("utf-8", "replace")
                        if qid != current:
                            if qid in seen:
                                raise DataFormatError(
                                    f"{self.path}:{number}: query {qid!r} appears again after other "
                                    f"queries (its block starts on line {seen[qid]}); the run must be "
                                    f"grouped by query"
                                )
                            seen[qid] = number
                            current = qid
                            offsets.append(position)
                            numbers.append(number)
                position += len(line)
                bar.update(len(line))
                if len(offsets) >= chunk:
                    out_offsets.write(np.asarray(offsets, dtype=np.uint64).tobytes())
                    out_numbers.write(np.asarray(numbers, dtype=np.uint64).tobytes())
                    offsets, numbers = [], []
            offsets.append(position)  # the end of the last record
            out_offsets.write(np.asarray(offsets, dtype=np.uint64).tobytes())
            out_numbers.write(np.asarray(numbers, dtype=np.uint64).tobytes())
            if out_numbers.tell() == 0:
                raise DataFormatError(f"{self.path}: the file holds no records")

    def __len__(self) -> int:
        return len(self._index[1])

    @cached_property
    def _handle(self):
        return self.path.open("rb")

    def read(self, index: int) -> list[tuple[int, str]]:
        """``(line number, line)`` for each non-blank line of record ``index``."""
        offsets, numbers = self._index
        start = int(offsets[index])
        f = self._handle
        f.seek(start)
        if self.unit == "line":
            return [(int(numbers[index]), f.readline().decode("utf-8").rstrip("\r\n"))]
        data = f.read(int(offsets[index + 1]) - start).decode("utf-8")
        first = int(numbers[index])
        return [(first + i, line.rstrip("\r")) for i, line in enumerate(data.split("\n")) if line.strip()]

    def first_column(self, index: int) -> str:
        offsets, _ = self._index
        f = self._handle
        f.seek(int(offsets[index]))
        return f.readline().split(None, 1)[0].decode("utf-8")
