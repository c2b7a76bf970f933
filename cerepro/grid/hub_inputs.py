"""Which Hugging Face hub models a grid reads, whether they are cached, and fetching one.

The backbones, the first-stage encoders and the released checkpoints a grid's jobs load, each as
an :class:`~cerepro.grid.inputs.Input` with its state in the local Hugging Face cache at the
revision the params pin (``hub_model``, no network access); ``fetch_hub`` downloads one with
huggingface_hub's ``snapshot_download`` and records the commit it resolved to.

This module finds and downloads hub models; it never loads one.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from cerepro.grid.inputs import Input
from cerepro.grids import Grid
from cerepro.paths import cache_dir, write_text_atomic
from cerepro.vocab import CandidateSource

# Hub files a backbone or an encoder needs: config, tokenizer and weights; safetensors when the
# repository has them, else its PyTorch weights (read with weights_only=True by transformers).
HUB_FILES = ["*.json", "*.txt", "*.model", "*.safetensors"]
HUB_TORCH_WEIGHTS = ["pytorch_model*.bin"]
# Hub files a released checkpoint needs (cerepro.model.models.SCORER_FILES: safetensors only)
SCORER_FILES = ["*.safetensors", "*.json", "*.txt", "*.model", "README.md"]
BYTES_PER_PARAMETER = 4  # fp32 checkpoints: the size estimate of a hub model not yet fetched


def hub_models(grid: Grid):
    """``(input, user)`` for every hub model the grid's runs, evaluations and first stages load."""
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


def fetch_hub(repo: str, revision: str | None, patterns: list[str]) -> dict:
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
