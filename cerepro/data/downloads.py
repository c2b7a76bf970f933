"""External files the experiments need, registered by name, URL and md5 as ir_datasets does.

Each :class:`ExternalFile` has a fixed place in the cache (``cache_dir()/downloads/<filename>``).
:func:`fetch` returns that path: a file already there is used without any network access once its
md5 matches (the check is remembered in a small ``.md5`` stamp next to it, keyed by size and
modification time, so a 2 GB file is hashed once); a missing file is downloaded into a temporary
file, hashed on the way and renamed into place only if its md5 matches. A wrong md5 raises
:class:`ChecksumError` naming the file, the expected and the actual md5.

A download is resumable: bytes arrive in ``<filename>.part`` next to the final file (never under
the final name); a connection that drops midway is resumed with an HTTP ``Range`` request where
the server honours it (``206``), else restarted from the first byte, a few times; a ``.part`` left
by a killed process is resumed by the next call. The md5 of the whole file is checked before it is
renamed into place; a wrong md5 removes the ``.part`` and names the URL and both md5s.

Users without network access place the files there themselves (``book/setup-data.md`` lists them),
or run ``cerepro fetch <grid>`` on a machine that has it (``cerepro.grid.fetch``).
``CEREPRO_CHECKSUMS`` names a file of ``md5  filename`` lines (``md5sum``'s output) whose md5s
replace the registered ones for those files: a mirror's re-packed copy, or the rehearsal's
generated inputs (``cerepro.data.rehearsal``). The check itself stays on.
``CEREPRO_DOWNLOAD_MIRROR`` (a base URL such as ``http://127.0.0.1:8000``) fetches every registered
file from that server at the registered URL's path and query instead of the registered host: a
site mirror, or the test suite's local server. The registry itself is never edited.
This module only finds, checks and downloads files; it never parses them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import shutil
import sys
import urllib.error
import urllib.parse
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


register(
    ExternalFile(
        name="hofstaetter-t2-teacher",
        url="https://zenodo.org/record/4068216/files/bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv?download=1",
        md5="4d99696386f96a7f1631076bcc53ac3c",
        filename="bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv",
        description="Hofstaetter et al. (2020) T2 BERT_CAT ensemble scores for MS MARCO train triples: "
        "TSV pos_score neg_score qid pos_pid neg_pid",
        size_hint="about 40M lines, about 1.7 GB",
    )
)
register(
    ExternalFile(
        name="rank-distillm-colbert-train",
        url=_ZENODO_RANK_DISTILLM + "__colbert__msmarco-passage-train-judged.run?download=1",
        md5="6ed152027f7270f32fcbfaaa6def951e",
        filename="__colbert__msmarco-passage-train-judged.run",
        description="Rank-DistiLLM's ColBERTv2 run for the judged MS MARCO train queries (TREC run)",
        size_hint="several GB",
    )
)
register(
    ExternalFile(
        name="rank-distillm-rankzephyr-sampled-50",
        url=_ZENODO_RANK_DISTILLM
        + "__rankzephyr-colbert-10000-sampled-50__msmarco-passage-train-judged.run?download=1",
        md5="c37b78874d4893a00566ab40aa453c56",
        filename="__rankzephyr-colbert-10000-sampled-50__msmarco-passage-train-judged.run",
        description="RankZephyr re-ranking of the ColBERTv2 top-50 of 10,000 sampled train queries "
        "(TREC run; the score column is the teacher score); the list the paper uses",
        size_hint="500k lines",
    )
)
register(
    ExternalFile(
        name="rank-distillm-rankzephyr-sampled-100",
        url=_ZENODO_RANK_DISTILLM
        + "__rankzephyr-colbert-10000-sampled-100__msmarco-passage-train-judged.run?download=1",
        md5="49f8dbf2c1ee7a2ca1fe517eda528af6",
        filename="__rankzephyr-colbert-10000-sampled-100__msmarco-passage-train-judged.run",
        description="RankZephyr re-ranking of the ColBERTv2 top-100 of 10,000 sampled train queries "
        "(TREC run); the list the original Rank-DistiLLM paper uses",
        size_hint="1M lines",
    )
)


def md5sum(path: str | os.PathLike, desc: str | None = None) -> str:
    path = Path(path)
    digest = hashlib.md5()
    with (
        path.open("rb") as f,
        tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=desc or f"md5 {path.name}", leave=False) as bar,
    ):
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
            raise ChecksumError(f"{source}:{number}: expected 'md5  filename' (md5sum's format), found {line[:80]!r}")
        if filename not in known:
            raise ChecksumError(
                f"{source}:{number}: {filename!r} is not a registered external file; known: {', '.join(sorted(known))}"
            )
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


def download_url(file: ExternalFile) -> str:
    """Where ``file`` is downloaded from: its registered URL, or the same path and query on the
    ``CEREPRO_DOWNLOAD_MIRROR`` server."""
    mirror = os.environ.get("CEREPRO_DOWNLOAD_MIRROR", "").strip()
    if not mirror:
        return file.url
    base = urllib.parse.urlsplit(mirror)
    if base.scheme not in ("http", "https", "file") or (base.scheme != "file" and not base.netloc):
        raise ValueError(
            f"CEREPRO_DOWNLOAD_MIRROR={mirror!r}: expected a base URL such as http://host:port or https://host/prefix"
        )
    url = urllib.parse.urlsplit(file.url)
    return urllib.parse.urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + url.path, url.query, ""))


def offline() -> bool:
    """Whether downloads are off (``CEREPRO_OFFLINE``, set by ``cerepro grid --offline``)."""
    return os.environ.get("CEREPRO_OFFLINE", "") not in ("", "0")


def partial_path(file: ExternalFile) -> Path:
    """Where a download in progress keeps its bytes (never the final name)."""
    return file.path.with_name(file.path.name + ".part")


def fetch(name: str, *, download: bool = True) -> Path:
    """The checked local path of the registered file ``name``, downloading it if it is missing."""
    if name not in REGISTRY:
        raise KeyError(f"unknown external file {name!r}; registered: {', '.join(sorted(REGISTRY))}")
    file = REGISTRY[name]
    if file.path.is_file():
        return verify(file)
    file = dataclasses.replace(file, md5=expected_md5(file))
    if not download or offline():
        why = " and CEREPRO_OFFLINE is set" if download else ""
        raise FileNotFoundError(
            f"{file.name}: {file.path} is missing{why}; run `cerepro fetch <grid>` on a machine with "
            f"network access, or download {download_url(file)} (md5 {file.md5}) there"
        )
    _download(file)
    return file.path


TRIES = 5  # connections per download: a dropped one is resumed (or restarted) this many times


def _download(file: ExternalFile) -> None:
    """Download ``file`` into its ``.part``, resuming where it stopped; check the md5 of the whole
    file, then rename it into place. A ``.part`` left by an earlier try is resumed; if the
    resumed file's md5 is wrong, it is downloaded once more from the first byte."""
    url = download_url(file)
    part = partial_path(file)
    part.parent.mkdir(parents=True, exist_ok=True)
    resumed = part.is_file() and part.stat().st_size > 0
    _receive(url, part, file)
    actual = md5sum(part, desc=f"md5 {file.filename}")
    if actual != file.md5 and resumed:
        part.unlink()
        _receive(url, part, file)
        actual = md5sum(part, desc=f"md5 {file.filename}")
    if actual != file.md5:
        part.unlink()  # nothing half-written or wrong stays in the cache
        raise ChecksumError(f"{url}: downloaded md5 {actual} does not match the expected {file.md5} of {file.name!r}")
    os.replace(part, file.path)
    write_text_atomic(_stamp(file.path), f"{file.md5} {_signature(file.path)}\n")


def _receive(url: str, part: Path, file: ExternalFile) -> None:
    """Append the missing bytes of ``url`` to ``part``: a ``Range`` request from its size, or the
    whole file again when the server answers with all of it; up to TRIES connections."""
    problem = None
    for _ in range(TRIES):
        have = part.stat().st_size if part.is_file() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            response = urllib.request.urlopen(request, timeout=60)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # the .part is not a prefix the server knows: start over
                part.unlink()
                problem = exc
                continue
            raise ConnectionError(f"cannot download {file.name} from {url}: HTTP {exc.code} {exc.reason}") from None
        except OSError as exc:
            if have and problem is not None:  # the server went away after sending some bytes
                problem = exc
                continue
            raise ConnectionError(
                f"cannot download {file.name} from {url} ({getattr(exc, 'reason', exc)}); without network "
                f"access, run `cerepro fetch` on a machine that has it, or place the file at "
                f"{file.path} (md5 {file.md5})"
            ) from None
        with response:
            if have and getattr(response, "status", None) != 206:  # Range ignored: all of it again
                have = 0
            length = response.headers.get("content-length")
            total = have + int(length) if length else None
            try:
                with (
                    part.open("ab" if have else "wb") as out,
                    tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=f"download {file.filename}") as bar,
                ):
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
                    received = out.tell()
                if total is None or received >= total:
                    return
                # http.client ends a read quietly when the server closes the connection early
                raise http.client.IncompleteRead(b"", total - received)
            except (http.client.HTTPException, OSError) as exc:  # dropped midway: resume
                problem = exc
                print(
                    f"{url}: connection lost after {part.stat().st_size} bytes ({type(exc).__name__}); resuming",
                    file=sys.stderr,
                )
    raise ConnectionError(
        f"cannot download {file.name} from {url}: {TRIES} connections failed, the "
        f"last with {type(problem).__name__}: {problem}; run the command again to resume "
        f"from {part}"
    )


def place(name: str, source: str | os.PathLike) -> Path:
    """Copy a file obtained elsewhere into the cache, checking its md5 first."""
    file = REGISTRY[name]
    actual = md5sum(source)
    if actual != file.md5:
        raise ChecksumError(f"{source}: md5 {actual} does not match the expected {file.md5} of {name!r}")
    with atomic_path(file.path) as tmp:
        shutil.copyfile(source, tmp)
    return verify(file)
