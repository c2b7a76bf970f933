"""Everything a grid reads that can be downloaded: listed, checked and fetched ahead of the run.

``grid_inputs(grid)`` lists, without any network access, what the grid's jobs would otherwise
download on first use, each as an :class:`~cerepro.grid.inputs.Input` with its state:

- **teacher files** registered in :mod:`cerepro.data.downloads` (the training sources' Zenodo files):
  present once their md5 matches, broken when it does not;
- **ir_datasets files** of the training, validation and evaluation ids: ir_datasets' own
  download objects, found by walking the handlers the grid reads (docs, queries, qrels and the
  training triples; :mod:`cerepro.grid.irds_inputs`);
- **hub models** (backbones, first-stage encoders, released checkpoints) in the Hugging Face
  cache, at the revision the params pin (:mod:`cerepro.grid.hub_inputs`);
- **licensed** inputs that cannot be downloaded (Robust04's documents, TREC disks 4-5), with the
  steps to provide them.

``fetch_inputs(grid)`` downloads the missing ones through the code that owns them (cerepro's
resumable md5-checked download, ir_datasets' own ``Download`` and extraction, huggingface_hub's
``snapshot_download``) and records each hub model's commit; ``offline_problems(grid)`` names
every input a run without network access would miss, with the command that fetches it.
``cerepro fetch``, ``cerepro plan`` and ``cerepro grid --offline`` call them; how the inputs are
printed is :mod:`cerepro.grid.inputs`.

This module finds and downloads inputs; it never parses, trains or evaluates.
"""

from __future__ import annotations

from dataclasses import replace

from cerepro.data import downloads
from cerepro.grid import hub_inputs, irds_inputs
from cerepro.grid.inputs import Input, human_bytes, licensed_steps
from cerepro.grids import Grid
from cerepro.vocab import DEMO_PREFIX, LOCAL_PREFIX

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
    for item, user in irds_inputs.ir_datasets_files(_ir_datasets_needs(grid)):
        add(item, user)
    for item, user in hub_inputs.hub_models(grid):
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
        size = sum(irds_inputs.disk_size(irds_inputs.target_path(s)) for s in item.handle)
        done = replace(item, state="present", size=size)
    else:
        done = replace(item, **hub_inputs.fetch_hub(*item.handle))
    return replace(done, needed_by=item.needed_by, action="downloaded")


# ---------------------------------------------------------------------------------------------
# Offline runs


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
