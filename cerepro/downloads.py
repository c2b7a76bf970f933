"""External files the experiments need, registered by name, URL and md5 as ir_datasets does.

Each :class:`ExternalFile` has a fixed place in the cache (``cache_dir()/downloads/<filename>``).
:func:`fetch` returns that path: a file already there is used without any network access once its
md5 matches (the check is remembered in a small ``.md5`` stamp next to it, keyed by size and
modification time, so a 2 GB file is hashed once); a missing file is downloaded into a temporary
file, hashed on the way and renamed into place only if its md5 matches. A wrong md5 raises
:class:`ChecksumError` naming the file, the expected and the actual md5.

Users without network access place the files there themselves (``book/setup-data.md`` lists them).
``CEREPRO_CHECKSUMS`` names a file of ``md5  filename`` lines (``md5sum``'s output) whose md5s
replace the registered ones for those files: a mirror's re-packed copy, or the rehearsal's
generated inputs (``cerepro.rehearsal``). The check itself stays on.
This module only finds, checks and downloads files; it never parses them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from cerepro.paths import atomic_path, cache_dir, write_text_atomic

CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A cached or downloaded file whose md5 differs from the registered one."""


@dataclass(frozen=True)
class ExternalFile:
    name: str  # the slug params and code use
    url: str
    md5: str
    filename: str  # relative to cache_dir()/downloads
    description: str
    size_hint: str = "unknown"  # for the book and error messages, not checked

    @property
    def path(self) -> Path:
        return cache_dir() / "downloads" / self.filename


_ZENODO_RANK_DISTILLM = "https://zenodo.org/records/12528410/files/"

REGISTRY: dict[str, ExternalFile] = {}


def register(file: ExternalFile) -> ExternalFile:
    if file.name in REGISTRY and REGISTRY[file.name] != file:
        raise ValueError(f"external file {file.name!r} is already registered differently")
    REGISTRY[file.name] = file
    return file


register(ExternalFile(
    name="hofstaetter-t2-teacher",
    url="https://zenodo.org/record/4068216/files/bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv?download=1",
    md5="4d99696386f96a7f1631076bcc53ac3c",
    filename="bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv",
    description="Hofstaetter et al. (2020) T2 BERT_CAT ensemble scores for MS MARCO train triples: "
                "TSV pos_score neg_score qid pos_pid neg_pid",
    size_hint="about 40M lines, about 1.7 GB",
))
register(ExternalFile(
    name="rank-distillm-colbert-train",
    url=_ZENODO_RANK_DISTILLM + "__colbert__msmarco-passage-train-judged.run?download=1",
    md5="6ed152027f7270f32fcbfaaa6def951e",
    filename="__colbert__msmarco-passage-train-judged.run",
    description="Rank-DistiLLM's ColBERTv2 run for the judged MS MARCO train queries (TREC run)",
    size_hint="several GB",
))
register(ExternalFile(
    name="rank-distillm-rankzephyr-sampled-50",
    url=_ZENODO_RANK_DISTILLM + "__rankzephyr-colbert-10000-sampled-50__msmarco-passage-train-judged.run?download=1",
    md5="c37b78874d4893a00566ab40aa453c56",
    filename="__rankzephyr-colbert-10000-sampled-50__msmarco-passage-train-judged.run",
    description="RankZephyr re-ranking of the ColBERTv2 top-50 of 10,000 sampled train queries "
                "(TREC run; the score column is the teacher score); the list the paper uses",
    size_hint="500k lines",
))
register(ExternalFile(
    name="rank-distillm-rankzephyr-sampled-100",
    url=_ZENODO_RANK_DISTILLM + "__rankzephyr-colbert-10000-sampled-100__msmarco-passage-train-judged.run?download=1",
    md5="49f8dbf2c1ee7a2ca1fe517eda528af6",
    filename="__rankzephyr-colbert-10000-sampled-100__msmarco-passage-train-judged.run",
    description="RankZephyr re-ranking of the ColBERTv2 top-100 of 10,000 sampled train queries "
                "(TREC run); the list the original Rank-DistiLLM paper uses",
    size_hint="1M lines",
))


def md5sum(path: str | os.PathLike, desc: str | None = None) -> str:
    path = Path(path)
    digest = hashlib.md5()
    with path.open("rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                    desc=desc or f"md5 {path.name}", leave=False) as bar:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".md5")


def _signature(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size} {stat.st_mtime_ns}"


def checksum_overrides() -> dict[str, str]:
    """{filename: md5} from the ``CEREPRO_CHECKSUMS`` file (none when the variable is unset)."""
    source = os.environ.get("CEREPRO_CHECKSUMS")
    if not source:
        return {}
    known = {f.filename for f in REGISTRY.values()}
    out = {}
    try:
        lines = Path(source).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ChecksumError(f"CEREPRO_CHECKSUMS={source}: cannot read it ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        md5, _, filename = line.strip().partition("  ")
        if len(md5) != 32 or any(c not in "0123456789abcdef" for c in md5) or not filename:
            raise ChecksumError(f"{source}:{number}: expected 'md5  filename' (md5sum's format), "
                                f"found {line[:80]!r}")
        if filename not in known:
            raise ChecksumError(f"{source}:{number}: {filename!r} is not a registered external file; "
                                f"known: {', '.join(sorted(known))}")
        out[filename] = md5
    return out


def expected_md5(file: ExternalFile) -> str:
    """The md5 ``file`` must have: the registered one, or the ``CEREPRO_CHECKSUMS`` override."""
    return checksum_overrides().get(file.filename, file.md5)


def verify(file: ExternalFile, path: Path | None = None) -> Path:
    """Check the md5 of ``file``'s cached copy (or ``path``), hashing only when it changed."""
    path = path or file.path
    if expected_md5(file) != file.md5:
        file = dataclasses.replace(file, md5=expected_md5(file))
    stamp = _stamp(path)
    expected = f"{file.md5} {_signature(path)}"
    if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == expected:
        return path
    actual = md5sum(path)
    if actual != file.md5:
        raise ChecksumError(
            f"{path}: md5 {actual} does not match the expected {file.md5} of {file.name!r} "
            f"({file.url}); delete the file to download it again, or place the right copy there"
        )
    write_text_atomic(stamp, expected + "\n")
    return path


def fetch(name: str, *, download: bool = True) -> Path:
    """The checked local path of the registered file ``name``, downloading it if it is missing."""
    if name not in REGISTRY:
        raise KeyError(f"unknown external file {name!r}; registered: {', '.join(sorted(REGISTRY))}")
    file = REGISTRY[name]
    if file.path.is_file():
        return verify(file)
    file = dataclasses.replace(file, md5=expected_md5(file))
    if not download:
        raise FileNotFoundError(
            f"{file.name}: {file.path} is missing; download {file.url} (md5 {file.md5}) there"
        )
    _download(file)
    return file.path


def _download(file: ExternalFile) -> None:
    digest = hashlib.md5()
    try:
        response = urllib.request.urlopen(file.url, timeout=60)
    except OSError as exc:
        raise ConnectionError(
            f"cannot download {file.name} from {file.url} ({exc}); without network access, "
            f"place the file at {file.path} (md5 {file.md5})"
        ) from exc
    with response, atomic_path(file.path) as tmp, tmp.open("wb") as out:
        total = int(response.headers.get("content-length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {file.filename}") as bar:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
        out.flush()
        if digest.hexdigest() != file.md5:
            # atomic_path removes the temporary file: nothing half-written stays in the cache
            raise ChecksumError(
                f"{file.url}: downloaded md5 {digest.hexdigest()} does not match the expected "
                f"{file.md5} of {file.name!r}"
            )
    write_text_atomic(_stamp(file.path), f"{file.md5} {_signature(file.path)}\n")


def place(name: str, source: str | os.PathLike) -> Path:
    """Copy a file obtained elsewhere into the cache, checking its md5 first."""
    file = REGISTRY[name]
    actual = md5sum(source)
    if actual != file.md5:
        raise ChecksumError(f"{source}: md5 {actual} does not match the expected {file.md5} of {name!r}")
    with atomic_path(file.path) as tmp:
        shutil.copyfile(source, tmp)
    return verify(file)
