"""Grids: the axes of an experiment expanded into validated runs, and what each evaluation scores.

A grid file (``params/grids/<name>.yaml``) names a profile and its axes, backbones x objectives x
seeds, or a checkpoints file (``params/checkpoints/``) whose models it scores without training.
:func:`load_grid` expands it into :class:`cerepro.config.RunConfig` objects, every one validated,
and :class:`Evaluation` jobs; :func:`evaluation_settings` says what one evaluation scores and how.

This module reads params; it never trains, downloads or touches data, and never imports torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cerepro.config import RunConfig, build_config, load_config, paper_seeds, scoring_precision
from cerepro.fragments import ParamsError, fragment_path, load_yaml, yaml_problem
from cerepro.objectives import BASELINE_OBJECTIVE
from cerepro.paths import params_dir, runs_dir
from cerepro.vocab import FIRST_STAGE, RELEASED, Precision, RunId, RunIdError

# ---------------------------------------------------------------------------------------------
# Grids

GRID_KEYS = {
    "name",
    "description",
    "profile",
    "backbones",
    "objectives",
    "seeds",
    "reproduces",
    "eval_datasets",
    "notebook",
    "checkpoints",
}
CHECKPOINT_KEYS = {
    "backbone",
    "objective",
    "hub_id",
    "revision",
    "repetition",
    "verified",
    "published",
    "name",
    "note",
    "card",
    "settings",
}
# How a released checkpoint's hub id is known: its card was read, it follows the naming rule only
# (it may not exist), or no card was found (not scheduled).
CHECKPOINT_CARDS = ("seen", "derived", "not-found")


@dataclass(frozen=True)
class Evaluation:
    """One evaluation job of a grid: a model scored on the grid's datasets with ``config``'s
    evaluation settings (first stage, depth, datasets, max lengths, precision).

    ``model`` is empty for a grid's own trained run (its ``train/model`` folder), else a
    hub id (with ``revision``) or a local folder: a released checkpoint or a baseline."""

    run_id: str
    config: RunConfig
    model: str = ""
    revision: str | None = None

    @property
    def trained(self) -> bool:
        return not self.model


@dataclass(frozen=True)
class Grid:
    """A grid file: the axes of an experiment and the paper table it reproduces."""

    name: str
    profile: str
    backbones: tuple[str, ...]
    objectives: tuple[str, ...]
    seeds: tuple[int, ...]
    path: Path
    description: str = ""
    reproduces: str | None = None
    eval_datasets: tuple[str, ...] = ()
    runs: tuple[RunConfig, ...] = field(default=(), repr=False)
    # evaluation jobs: one per trained run, or one per checkpoint of a ``checkpoints:`` grid
    evaluations: tuple[Evaluation, ...] = field(default=(), repr=False)
    # a ``checkpoints:`` grid's entries as its file lists them, the unscheduled ones included
    checkpoints: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    @property
    def run_ids(self) -> list[str]:
        return [c.run_id for c in self.runs]

    @property
    def first_config(self) -> RunConfig:
        """The settings the grid's first stage and data jobs are described by."""
        return self.runs[0] if self.runs else self.evaluations[0].config

    def evaluation(self, run_id: str) -> Evaluation:
        for job in self.evaluations:
            if job.run_id == run_id:
                return job
        known = [job.run_id for job in self.evaluations]
        shown = ", ".join(known[:4]) + (f", ... ({len(known)} in all)" if len(known) > 4 else "")
        raise ParamsError(
            f"run id {run_id!r} is not in grid {self.name!r} (its run ids: {shown}; "
            f"`cerepro runs {self.name}` lists them all)"
        )


@dataclass(frozen=True)
class EvaluationSettings:
    """What one evaluation scores and how, read from its run's config (never copied by hand):
    the model (empty: the first stage alone), the datasets, their candidates and the scoring."""

    run_id: str
    model: str
    revision: str | None
    datasets: tuple[str, ...]
    first_stage: str
    depth: int
    max_length: int
    query_max_length: int | None
    passage_max_length: int | None
    truncation: str
    precision: str
    document_text: str = "ir-datasets"

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def evaluation_settings(
    grid: Grid, run_id: str, *, model: str = "", revision: str | None = None, overrides: Mapping[str, Any] | None = None
) -> EvaluationSettings:
    """The settings of ``grid``'s evaluation ``run_id``: a trained run scores its ``train/model``
    folder, a released checkpoint its hub id at its revision, ``first-stage`` the candidates
    alone (at fp32), each with its run's config. An ad hoc ``model`` (a folder or a hub id at
    ``revision``) is scored with the settings of the grid's first run and labelled with the
    ``run_id`` given, or with the model's name when that is the default ``first-stage`` (never
    with a run id of the grid); ``overrides`` replaces run-config keys (``eval_datasets``,
    ``candidate_depth``, ...), checked as params are."""
    if model and run_id in {e.run_id for e in grid.evaluations}:
        # its results would be labelled as that run's in every table
        raise ParamsError(
            f"run_name: {run_id!r} names a run of grid {grid.name!r}, but model={model!r} is scored "
            f"ad hoc; give the evaluation a name of its own (-p run_name=<name>) or leave it out"
        )
    if model and run_id == FIRST_STAGE:
        # the notebook's default run_name: an ad hoc model's results carry its name (one word:
        # a TREC run's tag column)
        run_id = "_".join(model.split())
    if model or run_id == FIRST_STAGE:
        config = grid.first_config
    else:
        job = grid.evaluation(run_id)
        config, revision = job.config, job.revision
        model = str(runs_dir() / grid.name / run_id / "train" / "model") if job.trained else job.model
    if overrides:
        config = build_config(
            [(f"grid {grid.name!r}, run {config.run_id}", config.to_dict()), ("the evaluation's overrides", overrides)]
        )
    return EvaluationSettings(
        run_id=run_id,
        model=model,
        revision=revision if model else None,
        datasets=tuple(config.eval_datasets),
        first_stage=config.first_stage,
        depth=config.candidate_depth,
        max_length=config.max_length,
        query_max_length=config.query_max_length,
        passage_max_length=config.passage_max_length,
        truncation=config.truncation,
        precision=scoring_precision(config) if model else "fp32",
        document_text=config.document_text,
    )


def load_grid(name_or_path: str | Path, root: Path | None = None) -> Grid:
    """Expand a grid file into validated run configs (backbones x objectives x seeds).

    ``seeds: N`` takes the paper's first N derived seeds; a list gives them explicitly.
    """
    root = root or params_dir()
    path = Path(name_or_path)
    if not path.suffix:
        path = fragment_path("grids", str(name_or_path), root)
    spec = read_grid_file(path)
    if "checkpoints" in spec:
        return _checkpoint_grid(spec, path, root)
    seeds_spec = spec.get("seeds", 3)
    if isinstance(seeds_spec, int) and not isinstance(seeds_spec, bool) and seeds_spec > 0:
        seeds = tuple(paper_seeds(seeds_spec))
    elif isinstance(seeds_spec, list) and seeds_spec and all(isinstance(s, int) for s in seeds_spec):
        seeds = tuple(seeds_spec)
    else:
        raise ParamsError(f"{path}: key 'seeds' = {seeds_spec!r}: expects a positive count or a list of ints")
    overrides = {}
    if spec.get("eval_datasets"):
        overrides["eval_datasets"] = spec["eval_datasets"]
    runs = tuple(
        load_config(b, o, s, spec["profile"], overrides, root)
        for b in spec["backbones"]
        for o in spec["objectives"]
        for s in seeds
    )
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ParamsError(f"{path}: duplicate run ids in the expanded grid")
    return Grid(
        name=path.stem,
        profile=spec["profile"],
        backbones=tuple(spec["backbones"]),
        objectives=tuple(spec["objectives"]),
        seeds=seeds,
        path=path,
        description=spec.get("description", ""),
        reproduces=spec.get("reproduces"),
        eval_datasets=tuple(spec.get("eval_datasets") or runs[0].eval_datasets),
        runs=runs,
        evaluations=tuple(Evaluation(run.run_id, run) for run in runs),
    )


def _checkpoint_grid(spec: dict[str, Any], path: Path, root: Path) -> Grid:
    """A grid that trains nothing: one evaluation per checkpoint of ``params/checkpoints/<name>.yaml``,
    each scored with the grid profile's settings for its backbone (as a trained run would be)."""
    source = fragment_path("checkpoints", str(spec["checkpoints"]), root)
    entries = read_checkpoints(source)
    overrides = {"eval_datasets": spec["eval_datasets"]} if spec.get("eval_datasets") else {}
    jobs = []
    for i, entry in enumerate(entries):
        where = f"{source}: checkpoints[{i}]"
        if entry.get("card") == "not-found":  # listed with its provenance, never scheduled
            continue
        try:
            run = checkpoint_run_id(entry)
        except RunIdError as exc:
            raise ParamsError(f"{where}: {exc}") from None
        # a baseline is scored like the paper's runs of its backbone's size
        objective = entry.get("objective") or BASELINE_OBJECTIVE
        try:  # ``settings``: how this checkpoint was trained where the profile's backbone differs
            config = load_config(
                entry["backbone"], objective, 0, spec["profile"], {**(entry.get("settings") or {}), **overrides}, root
            )
        except ParamsError as exc:
            raise ParamsError(f"{where}: {exc}") from exc
        jobs.append(Evaluation(run, config, model=entry["hub_id"], revision=entry.get("revision")))
    ids = [job.run_id for job in jobs]
    if len(set(ids)) != len(ids):
        raise ParamsError(f"{source}: two checkpoints share a run id: {sorted({i for i in ids if ids.count(i) > 1})}")
    return Grid(
        name=spec.get("name", path.stem),
        profile=spec["profile"],
        backbones=tuple(dict.fromkeys(j.config.backbone for j in jobs)),
        objectives=tuple(dict.fromkeys(j.config.objective for j in jobs if RunId.parse(j.run_id).kind == RELEASED)),
        seeds=(),
        path=path,
        description=spec.get("description", ""),
        reproduces=spec.get("reproduces"),
        eval_datasets=tuple(spec.get("eval_datasets") or jobs[0].config.eval_datasets),
        evaluations=tuple(jobs),
        checkpoints=tuple(entries),
    )


def checkpoint_run_id(entry: Mapping[str, Any]) -> str:
    """A checkpoints file entry's run id: ``{backbone}.{objective}.released`` for a paper
    checkpoint, ``baseline.<name>`` for a baseline."""
    if entry.get("objective"):
        return str(RunId.released(entry["backbone"], entry["objective"]))
    return str(RunId.baseline(entry["name"]))


def read_checkpoints(path: Path) -> list[dict[str, Any]]:
    """The ``checkpoints:`` list of a checkpoints file, each entry checked: a paper checkpoint
    names its backbone and objective, a baseline its name and the backbone it is sized like."""
    try:
        spec = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    entries = spec.get("checkpoints") if isinstance(spec, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ParamsError(f"{path}: expected a non-empty list under 'checkpoints'")
    for i, entry in enumerate(entries):
        where = f"{path}: checkpoints[{i}]"
        if not isinstance(entry, dict):
            raise ParamsError(f"{where}: expected a mapping, got {entry!r}")
        unknown = set(entry) - CHECKPOINT_KEYS
        if unknown:
            raise ParamsError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(CHECKPOINT_KEYS)}")
        for key in ("backbone", "hub_id"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ParamsError(f"{where}: key {key!r} is required (a string)")
        if bool(entry.get("objective")) == bool(entry.get("name")):
            raise ParamsError(f"{where}: give either 'objective' (a paper checkpoint) or 'name' (a baseline)")
        if entry.get("objective") and entry.get("card") not in CHECKPOINT_CARDS:
            raise ParamsError(
                f"{where}: key 'card' = {entry.get('card')!r}: a paper checkpoint says how its hub id "
                f"is known, one of {CHECKPOINT_CARDS}"
            )
        revision = entry.get("revision")
        if revision is not None and (not isinstance(revision, str) or not revision):
            raise ParamsError(f"{where}: key 'revision' = {revision!r}: a branch, tag or commit hash")
        if not isinstance(entry.get("settings") or {}, dict):
            raise ParamsError(f"{where}: key 'settings' must map run-config keys to values")
        published = entry.get("published") or {}
        if not isinstance(published, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in published.items()
        ):
            raise ParamsError(f"{where}: key 'published' must map '<measure> <dataset>' to a number")
    return entries


def effective_settings(grid: Grid) -> list[dict[str, Any]]:
    """One row per backbone of ``grid``: the merged settings its runs train and score with, so a
    reader can check them against the paper in one place (``cerepro plan`` prints them, the
    book's protocol page shows them). ``per step`` lists groups x passages per optimiser step
    for each objective of the grid."""
    rows = []
    for backbone in grid.backbones:
        runs = {j.config.objective: j.config for j in grid.evaluations if j.config.backbone == backbone}
        first = next(iter(runs.values()))
        rows.append(
            {
                "backbone": backbone,
                "hf_id": first.hf_id,
                "precision": first.precision,
                "fp32 matmuls": Precision.parse(first.precision).matmul,
                "scoring": scoring_precision(first),
                "max_length": first.max_length,
                "query / passage max": f"{first.query_max_length or '-'} / {first.passage_max_length or '-'}",
                "truncation": first.truncation,
                "lr": first.lr,
                "batch_size": first.batch_size,
                "per step": ", ".join(f"{o} {r.groups_per_step}x{r.group_size}" for o, r in runs.items()),
                "warmup / steps": f"{first.warmup_steps} / {first.max_steps}",
                "selection": f"{first.validation_measure} {first.validation_aggregate} @ top-{first.validation_depth}",
                "early stop": f"{first.early_stopping_steps} steps" if first.early_stopping_steps else "off",
                "data": f"{first.data_order} order, infonce {first.hard_negative_groups}",
                "lower case": "yes" if first.lower_case else "-",
            }
        )
    return rows


def read_grid_file(path: Path) -> dict[str, Any]:
    """A grid file's mapping, checked: known keys, axes as lists of slugs, and ``name`` (if
    given) equal to the file's name, which names the grid's folder ``runs/<name>/``."""
    if not path.is_file():
        raise ParamsError(f"grid file not found: {path}")
    try:
        spec = load_yaml(path.read_text(encoding="utf-8-sig")) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(spec, dict):
        raise ParamsError(f"{path}: expected a mapping")
    if "name" in spec and spec["name"] != path.stem:
        raise ParamsError(
            f"{path}: key 'name' = {spec['name']!r} differs from the file's name {path.stem!r}; a grid "
            f"is named by its file (its runs go to runs/{path.stem}/): rename the file or fix the key"
        )
    unknown = set(spec) - GRID_KEYS
    if unknown:
        raise ParamsError(f"{path}: unknown grid key(s) {sorted(unknown)}; known: {sorted(GRID_KEYS)}")
    axes = () if "checkpoints" in spec else ("backbones", "objectives")
    if "checkpoints" in spec and {"backbones", "objectives", "seeds"} & set(spec):
        raise ParamsError(f"{path}: a grid of 'checkpoints' trains nothing: it takes no backbones, objectives or seeds")
    for key in ("profile", *axes):
        if key not in spec:
            raise ParamsError(f"{path}: missing key {key!r}")
    for key in axes:
        if not isinstance(spec[key], list) or not spec[key] or not all(isinstance(v, str) for v in spec[key]):
            raise ParamsError(f"{path}: key {key!r} = {spec[key]!r}: expects a non-empty list of slugs")
    return spec
