"""The file-level problems the job checkers (:mod:`cerepro.grid.checks`) report before any job starts.

Each finder returns one message per problem (empty: all in place), naming the dataset id or the
file: a ``run:<name>`` first stage that the grid does not produce (``params/first_stage.yaml``)
and whose run file is not in place for a validation or evaluation set, a training id ir_datasets
does not know, a registered training file whose md5 differs (``cerepro.data.downloads``; hashed
once, then remembered), a gzip that ends early. ``cerepro plan`` prints them and ``cerepro grid``
refuses to start while any remain, so no GPU time is spent on a grid that would stop at its first
broken file. A file that is only missing is no problem: the grid's jobs download it
(``cerepro.grid.fetch`` lists them, with sizes and URLs).

This module only looks at files; it never downloads, trains or evaluates.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

MSMARCO_TRIPLES = "msmarco-passage/train/triples-v2"
TRIPLES_GZ = "train/qidpidtriples.train.full.2.tsv.gz"


def _irds_known(dataset: str) -> bool:
    import ir_datasets

    return dataset in ir_datasets.registry


def first_stage_run_problems(dataset: str, source: str, role: str) -> list[str]:
    """A ``run:<name>`` first stage the grid does not produce whose run file is not in place."""
    from cerepro.data import datasets
    from cerepro.vocab import CandidateSource

    candidates = CandidateSource.parse(source)
    if dataset.startswith(datasets.DEMO_PREFIX) or candidates.kind != "run":
        return []
    if candidates.produced() is not None:  # the grid's first-stage job writes it
        return []
    collection = datasets.load_collection(dataset)  # lazy: reads no file
    name = candidates.run
    try:
        collection.run_path(name)
    except FileNotFoundError:
        return [
            f"{role} dataset {dataset!r}: first-stage run {name!r} is missing; put it at "
            f"{collection.runs_dirs[0] / (name + '.trec')} (TREC run format), or name a "
            f"run the grid produces (params/first_stage.yaml)"
        ]
    return []


def training_file_problems(run) -> list[str]:
    """A registered training file (``train_data: msmarco-passage``) that is there but broken, or an
    id ir_datasets does not know; a file that is only missing is no problem (the data job
    downloads it)."""
    from cerepro.data import downloads, train_files

    if run.train_data != "msmarco-passage":
        return []
    problems = []
    for need in train_files.source_requirements(run.training_source, run.train_data, llm_list=run.llm_list):
        if "ir_datasets" in need and not _irds_known(need["ir_datasets"]):
            problems.append(f"training data {need['ir_datasets']!r} is not an ir_datasets id")
        if "file" in need:
            file = downloads.REGISTRY[need["file"]]
            if not file.path.is_file():  # not broken: the data job downloads it (cerepro.grid.fetch)
                continue
            try:
                downloads.verify(file)
            except downloads.ChecksumError as exc:
                problems.append(f"training file {file.name}: {exc}")
    if run.training_source == "triples":
        problems += _check_triples_gzip()
    return problems


def _check_triples_gzip() -> list[str]:
    """A truncated ``qidpidtriples`` gzip (a broken download), when it is not unpacked yet."""
    import ir_datasets

    from cerepro.paths import cache_dir, write_text_atomic

    if (cache_dir() / "msmarco-passage" / "qidpidtriples.train.full.2.tsv").is_file():
        return []
    # where ir_datasets keeps its download (etc/downloads.json: train/docpairs/v2), read without
    # asking it, which would start a download
    path = Path(ir_datasets.util.home_path()) / "msmarco-passage" / TRIPLES_GZ
    if not path.is_file():  # not broken: the data job has ir_datasets download it (cerepro.grid.fetch)
        return []
    # reading the whole gzip takes a minute at full size: a complete one is remembered, keyed by
    # path, size and mtime, so `cerepro plan` and each grid start do not read it again
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|complete-gzip"
    marker = cache_dir() / "verified" / f"{hashlib.md5(key.encode()).hexdigest()}.json"
    if marker.is_file():
        return []
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 22):
                pass
    except (EOFError, OSError, zlib.error) as exc:
        return [f"training file {path} is not a complete gzip ({exc}); download it again"]
    write_text_atomic(marker, key + "\n")
    return []
