"""Where cerepro reads its params and writes caches and results.

Every other module asks here instead of building paths of its own, so one environment variable
moves a whole installation (a cluster's scratch disk, a test's temporary folder).

- ``CEREPRO_CACHE``: downloaded files, the demo world, tokenized inputs, BM25 indexes.
- ``CEREPRO_RUNS``: executed notebooks, checkpoints, run files, result tables.
- ``CEREPRO_PARAMS``: the params folder; ``CEREPRO_ROOT``: the checkout (notebooks, workflow).
- ``CEREPRO_BOOK``: the book's sources, where it is built (a copy of ``book/``: a grid's book
  built without touching the checkout's).
Unset, they live inside the project (``cache/``, ``runs/`` and ``book/`` next to ``params/``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
_UMASK = os.umask(0)
os.umask(_UMASK)


def project_root() -> Path:
    """The checkout holding ``params/``: ``CEREPRO_ROOT`` when set (``cerepro grid`` and the
    runner set it for their jobs and kernels, whose working directory is a run folder), else the
    working directory or one of its parents, else the folder above the installed package."""
    if os.environ.get("CEREPRO_ROOT"):
        return Path(os.environ["CEREPRO_ROOT"])
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "params" / "base.yaml").is_file():
            return folder
    return PACKAGE_ROOT.parent


def params_dir() -> Path:
    return Path(os.environ.get("CEREPRO_PARAMS", project_root() / "params"))


def cache_dir() -> Path:
    path = Path(os.environ.get("CEREPRO_CACHE", project_root() / "cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    path = Path(os.environ.get("CEREPRO_RUNS", project_root() / "runs"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def book_dir() -> Path:
    return Path(os.environ.get("CEREPRO_BOOK") or project_root() / "book")


def notebook_run_dir(run_dir: str | os.PathLike, notebook: str, run: str = "") -> Path:
    """Where a notebook writes: the run folder the runner passed, or, run by hand in JupyterLab
    (``run_dir`` empty), ``runs/interactive/<run>/<notebook>/`` (git-ignored like all of runs/),
    never the notebooks/ folder itself."""
    if run_dir:
        return Path(run_dir)
    return runs_dir() / "interactive" / (run or "adhoc") / notebook


@contextmanager
def atomic_path(target: str | os.PathLike):
    """Yield a temporary path next to ``target``; rename it onto ``target`` only if the block
    succeeds, so a reader never sees a half-written file."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():  # mkstemp creates 0600; give the file the mode a plain open() would
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(target: str | os.PathLike, marker: str):
    """Yield a temporary folder next to ``target``; rename it onto ``target`` if the block
    succeeds. A concurrent builder that got there first wins (its ``marker`` file proves it)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp's 0700 would hide the folder from other users
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / marker).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# A folder's contents, written last into the folder a cache builds: its marker says the folder
# is whole only together with each file's size (and, where asked, its sha256).
CONTENTS = "CONTENTS.json"


def write_contents(folder: str | os.PathLike, *, checksums: bool = True) -> Path:
    """Record every file under ``folder`` (sizes, and sha256 unless ``checksums`` is False) in
    ``folder/CONTENTS.json``, written atomically; call it when the folder is complete."""
    import json

    folder = Path(folder)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CONTENTS):
        facts = {"bytes": path.stat().st_size}
        if checksums:
            facts["sha256"] = file_sha256(path)
        files[path.relative_to(folder).as_posix()] = facts
    return write_text_atomic(folder / CONTENTS, json.dumps(files, indent=1, sort_keys=True))


def contents_damage(folder: str | os.PathLike, *, checksums: bool = True) -> str | None:
    """What differs between ``folder`` and its ``CONTENTS.json`` (a file missing, cut short,
    grown or, with ``checksums``, changed), or None when every listed file is as recorded."""
    import json

    folder = Path(folder)
    try:
        files = json.loads((folder / CONTENTS).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"no readable {CONTENTS} ({exc.__class__.__name__})"
    for name, facts in files.items():
        path = folder / name
        size = path.stat().st_size if path.is_file() else None
        if size != facts["bytes"]:
            return f"{name} has {size} bytes, {CONTENTS} says {facts['bytes']}"
        if checksums and "sha256" in facts and file_sha256(path) != facts["sha256"]:
            return f"{name} differs from its sha256 in {CONTENTS}"
    return None


def set_aside(folder: str | os.PathLike) -> None:
    """Remove a damaged cache folder so it can be built again: renamed first (one rename, so a
    reader sees the whole folder or none), then deleted; another process may have done it."""
    folder = Path(folder)
    aside = folder.with_name(f".{folder.name}.damaged-{os.getpid()}")
    try:
        os.rename(folder, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)
