"""Everything a grid reads that can be downloaded: listed, checked and fetched ahead of the run.

``grid_inputs(grid)`` lists, without any network access, what the grid's jobs would otherwise
download on first use, each as an :class:`Input` with its state:

- **teacher files** registered in :mod:`cerepro.data.downloads` (the training sources' Zenodo files):
  present once their md5 matches, broken when it does not;
- **ir_datasets files** of the training, validation and evaluation ids: ir_datasets' own
  download objects, found by walking the handlers the grid reads (docs, queries, qrels and the
  training triples), with ir_datasets' URL, md5 and size hint; a file counts as present when
  ir_datasets' copy, or what it unpacks from it, is on disk. The walk reads the attributes of
  ir_datasets 0.6.3's source objects (``Cache``, ``Download``, ...; the version pyproject pins);
  the tests of the rehearsal and paper grids fail if they change;
- **hub models** (backbones, first-stage encoders, released checkpoints) in the Hugging Face
  cache, at the revision the params pin;
- **licensed** inputs that cannot be downloaded (Robust04's documents, TREC disks 4-5), with the
  steps to provide them.

``fetch_inputs(grid)`` downloads the missing ones through the code that owns them (cerepro's
resumable md5-checked download, ir_datasets' own ``Download`` and extraction, huggingface_hub's
``snapshot_download``) and records each hub model's commit; ``offline_problems(grid)`` names
every input a run without network access would miss, with the command that fetches it.
``cerepro fetch``, ``cerepro plan`` and ``cerepro grid --offline`` call them.

This module finds and downloads inputs; it never parses, trains or evaluates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from cerepro.data import downloads
from cerepro.grids import Grid
from cerepro.paths import cache_dir, write_text_atomic
from cerepro.vocab import DEMO_PREFIX, LOCAL_PREFIX, CandidateSource

# Hub files a backbone or an encoder needs: config, tokenizer and weights; safetensors when the
# repository has them, else its PyTorch weights (read with weights_only=True by transformers).
HUB_FILES = ["*.json", "*.txt", "*.model", "*.safetensors"]
HUB_TORCH_WEIGHTS = ["pytorch_model*.bin"]
# Hub files a released checkpoint needs (cerepro.model.models.SCORER_FILES: safetensors only)
SCORER_FILES = ["*.safetensors", "*.json", "*.txt", "*.model", "README.md"]
BYTES_PER_PARAMETER = 4  # fp32 checkpoints: the size estimate of a hub model not yet fetched
ROBUST04 = "disks45/nocr/trec-robust-2004"


@dataclass
class Input:
    """One thing a grid reads that is (or must be) on disk before its jobs start."""

    kind: str  # "teacher file" | "ir_datasets" | "hub model" | "licensed"
    name: str
    where: str  # the final path (or Hugging Face cache folder)
    state: str  # "present" | "missing" | "broken" | "manual" | "failed" (a fetch that failed)
    size: int | None = None  # bytes: on disk when present, to download when missing
    estimated: bool = False  # size is an estimate (hub models not yet fetched)
    size_hint: str = ""  # a registered file's size in words, when its bytes are not known
    url: str = ""
    detail: str = ""  # md5, commit, why it is broken, or the steps to provide it
    needed_by: list[str] = field(default_factory=list)
    action: str = ""  # what `cerepro fetch` did
    handle: object = field(default=None, repr=False, compare=False)  # what fetches it

    def size_text(self) -> str:
        if self.size is None:
            return self.size_hint or "size unknown"
        return ("~" if self.estimated else "") + human_bytes(self.size)


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


# ---------------------------------------------------------------------------------------------
# What a grid reads


def grid_inputs(grid: Grid) -> list[Input]:
    """Every downloadable (or licensed) input of ``grid`` with its state; no network access."""
    found: dict[tuple[str, str], Input] = {}

    def add(item: Input, user: str) -> None:
        # one line per file: ir_datasets unpacks several targets from one download
        key = (item.kind, item.url if item.kind == "ir_datasets" and item.state == "missing" else item.where)
        if key in found and isinstance(item.handle, list):
            found[key].handle += [h for h in item.handle if h not in found[key].handle]
        item = found.setdefault(key, item)
        if user not in item.needed_by:
            item.needed_by.append(user)

    for item, user in _teacher_files(grid):
        add(item, user)
    for item, user in _ir_datasets_files(grid):
        add(item, user)
    for item, user in _hub_models(grid):
        add(item, user)
    return list(found.values())


def _training_keys(grid: Grid):
    seen = set()
    for run in grid.runs:
        key = (run.training_source, run.train_data, run.llm_list)
        if key not in seen:
            seen.add(key)
            yield key


def _teacher_files(grid: Grid):
    from cerepro.data.train_files import source_requirements

    for source, train_data, llm_list in _training_keys(grid):
        for need in source_requirements(source, train_data, llm_list=llm_list):
            if "file" in need:
                yield teacher_file(need["file"]), f"training source {source}"


def teacher_file(name: str) -> Input:
    """The state of a registered file: present (md5 checked, remembered), broken or missing."""
    file = downloads.REGISTRY[name]
    md5 = downloads.expected_md5(file)
    item = Input(
        "teacher file",
        name,
        str(file.path),
        "missing",
        url=downloads.download_url(file),
        detail=f"md5 {md5}",
        size_hint=file.size_hint,
    )
    if file.path.is_file():
        try:
            downloads.verify(file)
        except downloads.ChecksumError as exc:
            return replace(item, state="broken", detail=str(exc), size=file.path.stat().st_size)
        return replace(item, state="present", size=file.path.stat().st_size)
    part = downloads.partial_path(file)
    if part.is_file():
        item.detail += f"; {human_bytes(part.stat().st_size)} already in {part.name}, resumed"
    return item


# --- ir_datasets ------------------------------------------------------------------------------


def _ir_datasets_needs(grid: Grid) -> dict[str, set[str]]:
    """``{ir_datasets id: handlers the grid reads}`` for training, validation and evaluation."""
    from cerepro.data.train_files import MSMARCO_TRIPLES

    needs: dict[str, set[str]] = {}
    for source, train_data, _ in _training_keys(grid):
        if train_data == "msmarco-passage":
            needs.setdefault("msmarco-passage", set()).add("docs")
            needs.setdefault("msmarco-passage/train", set()).update({"queries", "qrels"})
            if source == "triples":
                needs.setdefault(MSMARCO_TRIPLES, set()).add("docpairs")
    datasets = [d for run in grid.runs for d in run.validation_datasets]
    datasets += [d for job in grid.evaluations for d in job.config.eval_datasets]
    for dataset in datasets:
        if not dataset.startswith((DEMO_PREFIX, LOCAL_PREFIX)):
            needs.setdefault(dataset, set()).update({"docs", "queries", "qrels"})
    return needs


def _ir_datasets_files(grid: Grid):
    needs = _ir_datasets_needs(grid)
    if not needs:
        return
    import ir_datasets

    for dataset, handlers in needs.items():
        loaded = ir_datasets.load(dataset)
        for handler in sorted(handlers):
            if not getattr(loaded, f"has_{handler}")():
                continue
            for item in _sources(getattr(loaded, f"{handler}_handler")(), set()):
                yield item, f"{dataset} ({handler})"


def _target(node) -> Path | None:
    """The file or folder an ir_datasets source object materialises, if it has one."""
    from ir_datasets.util import Cache, Download, TarExtractAll, ZipExtractCache

    if isinstance(node, Cache):
        return Path(node._path)
    if isinstance(node, TarExtractAll):
        return Path(node._extract_path)
    if isinstance(node, ZipExtractCache):
        return Path(node.extract_path)
    if isinstance(node, Download) and node._cache_path:
        return Path(node._cache_path)
    return None


def _children(node) -> list:
    if isinstance(node, dict):
        return list(node.values())
    if isinstance(node, (list, tuple, set, frozenset)):
        return list(node)
    if isinstance(node, (str, bytes, int, float, bool, Path)) or node is None:
        return []
    return list(vars(node).values()) if hasattr(node, "__dict__") else []


def _downloads_below(node, seen: set[int]) -> list:
    """ir_datasets ``Download`` objects reachable from ``node`` whose data is not on disk."""
    from ir_datasets.util import Download

    if id(node) in seen:
        return []
    seen.add(id(node))
    target = _target(node)
    if target is not None and target.exists():
        return []
    if isinstance(node, Download):
        local = [m for m in node.mirrors if type(m).__name__ == "LocalDownload"]
        if any(Path(m._path).exists() for m in local):  # a copy in <home>/downloads/<md5>
            return []
        return [node]
    return [d for child in _children(node) for d in _downloads_below(child, seen)]


def _sources(node, seen: set[int]) -> list[Input]:
    """The outermost ir_datasets sources below a handler: present when their file is on disk,
    else missing (what ir_datasets would download for them) or licensed (no URL)."""
    if id(node) in seen:
        return []
    seen.add(id(node))
    target = _target(node)
    if target is None:
        return [item for child in _children(node) for item in _sources(child, seen)]
    if target.exists():
        return [Input("ir_datasets", _irds_name(target), str(target), "present", size=_disk_size(target))]
    missing = _downloads_below(node, set())
    out = []
    for download in missing:  # none: what it unpacks from is on disk, ir_datasets builds it offline
        urls = [m.url for m in download.mirrors if hasattr(m, "url")]
        where = Path(download._cache_path or target)
        if not urls:  # a licensed source ir_datasets asks the user to provide
            message = next((m._message for m in download.mirrors if getattr(m, "_message", None)), "")
            out.append(Input("licensed", _irds_name(where), str(where), "manual", detail=message.strip()))
            continue
        out.append(
            Input(
                "ir_datasets",
                _irds_name(where),
                str(where),
                "missing",
                size=download._size_hint or None,
                url=urls[0],
                handle=[node],
                detail=f"md5 {download.expected_md5}" if download.expected_md5 else "",
            )
        )
    return out


def _irds_name(path: Path) -> str:
    home = _irds_home()
    return str(path.relative_to(home)) if path.is_relative_to(home) else str(path)


def _irds_home() -> Path:
    import ir_datasets

    return Path(ir_datasets.util.home_path())


def _disk_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- the Hugging Face hub ---------------------------------------------------------------------


def _hub_models(grid: Grid):
    from cerepro.model.backbones import backbone_facts, backbone_of

    for run in grid.runs:
        if backbone_of(run.hf_id, run.revision).kind == "hub":
            size = _parameters(backbone_facts, run.backbone)
            yield hub_model(run.hf_id, run.revision, HUB_FILES, size), f"backbone {run.backbone}"
    for job in grid.evaluations:
        if job.model and not Path(job.model).is_dir():
            size = _parameters(backbone_facts, job.config.backbone)
            yield hub_model(job.model, job.revision, SCORER_FILES, size), f"checkpoint {job.run_id}"
    for run in [*grid.runs, *(job.config for job in grid.evaluations)]:
        for source in (run.first_stage, run.validation_first_stage):
            produced = CandidateSource.parse(source).produced() if source else None
            if produced and not produced[0].hf_id.startswith("builtin:") and not Path(produced[0].hf_id).is_dir():
                model = produced[0]
                yield (
                    hub_model(model.hf_id, model.revision, HUB_FILES, 66e6 if "distilbert" in model.hf_id else None),
                    f"first stage {source}",
                )


def _parameters(facts, slug: str) -> float | None:
    try:
        return float(facts(slug)["parameters"])
    except Exception:  # a backbone without a shipped config: size unknown
        return None


def hub_model(repo: str, revision: str | None, patterns: list[str], parameters: float | None) -> Input:
    """A hub model's state in the local Hugging Face cache (no network access)."""
    from huggingface_hub import constants

    name = f"{repo}@{revision or 'main'}"
    where = str(Path(constants.HF_HUB_CACHE) / ("models--" + repo.replace("/", "--")))
    item = Input(
        "hub model",
        name,
        where,
        "missing",
        url=f"{constants.ENDPOINT}/{repo}",
        size=int(parameters * BYTES_PER_PARAMETER) if parameters else None,
        estimated=True,
        handle=(repo, revision, patterns),
    )
    folder = cached_snapshot(repo, revision)
    if folder is None:
        return item
    return replace(
        item,
        state="present",
        where=str(folder),
        estimated=False,
        detail=f"commit {folder.name}",
        size=sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
    )


def cached_snapshot(repo: str, revision: str | None) -> Path | None:
    """The cached snapshot of ``repo`` at ``revision`` holding a config and weights, or None.
    (huggingface_hub's own lookup of the revision's commit; a partial snapshot, as `cerepro
    fetch` leaves one with only the files a model loads, is enough.)"""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo, "config.json", revision=revision)
    if not isinstance(config, str):  # None: not cached; a sentinel: known to be absent
        return None
    folder = Path(config).parent
    weights = [*folder.glob("*.safetensors"), *folder.glob("pytorch_model*.bin")]
    return folder if weights else None


# ---------------------------------------------------------------------------------------------
# Fetching


def fetch_inputs(grid: Grid, *, log=print) -> list[Input]:
    """Download every missing input of ``grid``; returns each input with what was done. A
    broken file is left for the user (its message says how); licensed ones are named."""
    out = []
    for item in grid_inputs(grid):
        if item.state == "missing":
            log(f"fetching {item.kind} {item.name} ({item.size_text()}) from {item.url}", flush=True)
            try:
                item = _fetch(item)
            except Exception as exc:  # any library's failure: reported, the other inputs still fetched
                message = str(exc) if item.url in str(exc) else f"{item.url}: {exc}"
                item.action = f"FAILED: {type(exc).__name__}: {message}"
                item.state = "failed"
        else:
            item.action = {
                "present": "already present",
                "broken": "BROKEN, not fetched",
                "manual": "cannot be downloaded; see the steps below",
            }[item.state]
        out.append(item)
    return out


def _fetch(item: Input) -> Input:
    if item.kind == "teacher file":
        downloads.fetch(item.name)
        done = teacher_file(item.name)
    elif item.kind == "ir_datasets":
        for source in item.handle:  # ir_datasets' own download, md5 check and extraction
            source.path()
        done = replace(item, state="present", size=sum(_disk_size(_target(s)) for s in item.handle))
    else:
        done = replace(item, **_fetch_hub(*item.handle))
    return replace(done, needed_by=item.needed_by, action="downloaded")


def _fetch_hub(repo: str, revision: str | None, patterns: list[str]) -> dict:
    """``snapshot_download`` at the pinned revision (safetensors, else PyTorch weights); the
    commit it resolved to is recorded in ``cache/fetched/hub/``."""
    from huggingface_hub import HfApi, snapshot_download

    files = HfApi().list_repo_files(repo, revision=revision)
    if patterns is HUB_FILES and not any(f.endswith(".safetensors") for f in files):
        patterns = patterns + HUB_TORCH_WEIGHTS
    folder = Path(snapshot_download(repo, revision=revision, allow_patterns=patterns))
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    record = {
        "repo": repo,
        "revision": revision or "main",
        "commit": folder.name,
        "bytes": size,
        "files": sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()),
    }
    write_text_atomic(
        cache_dir() / "fetched" / "hub" / f"{repo.replace('/', '--')}.json", json.dumps(record, indent=1) + "\n"
    )
    return {
        "state": "present",
        "where": str(folder),
        "size": size,
        "estimated": False,
        "detail": f"commit {folder.name}",
    }


# ---------------------------------------------------------------------------------------------
# Offline runs and reports


def offline_problems(grid: str, inputs: list[Input]) -> list[str]:
    """One message per input of ``inputs`` a run without network access would miss (missing,
    licensed or broken), naming it, where it belongs and the command that fetches it."""
    command = f"cerepro fetch {grid}"
    problems = []
    for item in inputs:
        users = ", ".join(item.needed_by)
        if item.state == "missing":
            where = (
                f"not in the Hugging Face cache {item.where}"
                if item.kind == "hub model"
                else f"{item.where} is missing"
            )
            problems.append(
                f"{item.kind} {item.name} (for {users}) is not fetched: {where}; "
                f"run `{command}` on a machine with network access ({item.size_text()} from {item.url})"
            )
        elif item.state == "manual":
            problems.append(f"{item.name} (for {users}) cannot be downloaded: {licensed_steps(item)}")
        elif item.state == "broken":
            problems.append(f"{item.kind} {item.name} is broken: {item.detail}")
    return problems


def licensed_steps(item: Input) -> str:
    """How to provide an input that cannot be downloaded, or run without it."""
    if any(user.startswith(ROBUST04) for user in item.needed_by):
        return (
            f"Robust04's documents are TREC disks 4 and 5, licensed by NIST: file the agreement "
            f"(https://trec.nist.gov/data/cd45/index.html; ir_datasets' steps: "
            f"https://ir-datasets.com/trec-robust04.html#DataAccess), then place the uncompressed "
            f"source at {item.where} (it holds NEWS_data/FBIS, NEWS_data/FR94, ...); or run without "
            f"Robust04: list the other evaluation datasets under `eval_datasets:` in the grid file "
            f"(the book's scoreboard then marks the robust04 cells 'not run')"
        )
    detail = " ".join(item.detail.split())
    return f"provide it at {item.where}" + (f" (ir_datasets: {detail})" if detail else "")


def download_volume(items: list[Input]) -> tuple[int, list[Input]]:
    """Bytes still to download (known or estimated) and the missing inputs whose size is unknown."""
    missing = [i for i in items if i.state == "missing"]
    return sum(i.size for i in missing if i.size), [i for i in missing if i.size is None]


def format_inputs(items: list[Input], *, done: bool = False, compact: bool = False) -> str:
    """One line per input: what it is, its state (or what fetch did), its size and where it is
    (``compact``: its size and URL only), then the volume to download."""
    lines = []
    for item in items:
        if compact:
            lines.append(f"  {item.kind:<12} {item.name:<56} {item.size_text():>22}  {item.url or item.where}")
            continue
        state = (
            item.action
            if done
            else {
                "missing": "to download",
                "present": "present",
                "broken": "BROKEN",
                "manual": "NOT DOWNLOADABLE",
                "failed": "FAILED",
            }[item.state]
        )
        lines.append(
            f"  {item.kind:<12} {item.name}: {state}, {item.size_text()}, {item.where}"
            + (f" [{item.detail}]" if item.detail and item.state not in ("manual", "broken") else "")
            + (f" from {item.url}" if item.state == "missing" and not done else "")
        )
    if done:
        got = [i for i in items if i.action == "downloaded"]
        failed = [i for i in items if i.state == "failed"]
        lines.append(
            f"downloaded {len(got)} input(s), {human_bytes(sum(i.size or 0 for i in got))}"
            + (f"; {len(failed)} failed: {', '.join(i.name for i in failed)}" if failed else "")
        )
    else:
        volume, unknown = download_volume(items)
        summary = f"to download: {human_bytes(volume)}"
        if unknown:
            summary += " plus " + ", ".join(f"{i.name} ({i.size_text()})" for i in unknown)
        if any(i.estimated and i.state == "missing" for i in items):
            summary += " (hub models estimated at 4 bytes per parameter)"
        lines.append(summary)
    for item in items:
        if item.state == "manual":
            lines.append(f"  {item.name} cannot be downloaded: {licensed_steps(item)}")
    return "\n".join(lines)


def offline_requested() -> bool:
    """``CEREPRO_OFFLINE`` is set: the setting equivalent to ``cerepro grid --offline``."""
    return downloads.offline()


def offline_environment() -> dict[str, str]:
    """Variables that keep a job's libraries from the network: the Hugging Face hub,
    transformers and datasets in offline mode, and cerepro's own downloads off. ir_datasets has
    no offline switch: the check before the run makes sure it finds every file in place."""
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "CEREPRO_OFFLINE": "1",
    }  # cerepro.grid.runner.OFFLINE_VARIABLES records them in each job's meta.json
