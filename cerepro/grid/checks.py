"""What a job reads, checked before it starts (a kernel, a GPU or a Snakemake run): one checker per
job kind, each refusal naming the dataset, the file or the key.

- ``check_data``: a data job's training source (a local folder's file; a registered file's md5, a
  complete gzip, ids ir_datasets knows; with ``verify``, every line of the file);
- ``check_train``: a training run (its validation sets and their first-stage runs, its source);
- ``check_evaluate``: an evaluation (its datasets and their first-stage runs, its model);
- ``check_compare``: a compare job (its grid).

A first-stage job (encode, index, search) checks its own run name and passages in
:mod:`cerepro.retrieval.first_stage`, before a model is loaded; the datasets it reads are the
validation and evaluation sets the checkers above check.

Every caller goes through them: ``cerepro run`` (``check_notebook_parameters``, the run alone), a
grid's jobs as they start (``cerepro.grid.engine.Job``; the train notebook before ``fit``), and a
grid as a whole before any job (``check_inputs``, ``grid_problems``: ``cerepro plan``, ``cerepro
grid``, ``cerepro fetch``). A checker given a ``problems`` list still raises for what cannot be
fixed by running the grid (an unknown dataset id, a missing local folder or file) and appends the
rest (a first-stage run not in place, a broken download), so a grid lists all of them at once.

This module only looks; it never downloads, trains or evaluates.
"""

from __future__ import annotations

from typing import Any

from cerepro.config import RunConfig
from cerepro.data.datasets import InputError, check_dataset
from cerepro.grid import preflight
from cerepro.grid.runner import RunnerError, declared_parameters
from cerepro.grids import EvaluationSettings, Grid, evaluation_settings, load_grid
from cerepro.vocab import LOCAL_PREFIX, TRAINING_SOURCES, CandidateSource


def _refuse(problem: str, problems: list[str] | None) -> None:
    """Raise ``problem`` (no list: the first problem stops), or append it to ``problems``."""
    if problems is None:
        raise InputError(problem)
    problems.append(problem)


# ---------------------------------------------------------------------------------------------
# One checker per job kind


def check_data(run: RunConfig, *, verify: bool = False, problems: list[str] | None = None) -> None:
    """A data job's inputs, the training source of ``run``: a local folder holds the source's file
    (else InputError naming the folder and what it holds); a registered file that is there is not
    broken (md5, a complete gzip) and the ids it names are known to ir_datasets (a file that is
    only missing is no problem: the data job downloads it); with ``verify``, every line of the file
    parses (``cerepro.data.training_data.verify_training_file``, cached)."""
    from cerepro.data import train_files, training_data

    if run.training_source not in TRAINING_SOURCES:  # params check theirs; `cerepro run data -p source=`
        raise InputError(
            f"source {run.training_source!r} is not a training source; known: {', '.join(TRAINING_SOURCES)}"
        )
    if run.train_data.startswith(LOCAL_PREFIX):
        train_files.training_file(run.training_source, run.train_data, run.llm_list)
    for problem in preflight.training_file_problems(run):
        _refuse(problem, problems)
    if verify:
        training_data.verify_training_file(run.training_source, run.train_data, run.llm_list)


def check_train(
    config: RunConfig, *, alone: bool = False, verify: bool = False, problems: list[str] | None = None
) -> None:
    """A training run's inputs: its validation datasets exist, their first-stage runs are in place
    (``alone``: a run the grid would produce too, else how to produce it), and its training source
    passes :func:`check_data`."""
    for dataset in config.validation_datasets:
        check_dataset(dataset, "validation_datasets")
    _check_candidates(
        config.validation_datasets,
        config.validation_first_stage,
        "validation",
        alone=f"profile {config.profile!r} validates" if alone else None,
        problems=problems,
    )
    check_data(config, verify=verify, problems=problems)


def check_evaluate(
    settings: EvaluationSettings, *, alone: bool = False, model: bool = True, problems: list[str] | None = None
) -> None:
    """An evaluation's inputs: its datasets exist, their first-stage runs are in place (``alone``:
    a run the grid would produce too), and (``model``) its model loads: a trained folder or a hub
    checkpoint, refused before scoring (a grid checks it when the job starts, after training)."""
    for dataset in settings.datasets:
        check_dataset(dataset, "eval_datasets")
    _check_candidates(
        settings.datasets,
        settings.first_stage,
        "evaluation",
        alone="this evaluation re-ranks" if alone else None,
        problems=problems,
    )
    if model and settings.model:
        from cerepro.model.models import check_scorer, resolve_scorer

        check_scorer(resolve_scorer(settings.model, settings.revision))


def check_compare(name: str) -> Grid:
    """A compare job's input: its grid, loaded and validated."""
    return load_grid(name)


def _check_candidates(datasets, source: str | None, role: str, *, alone: str | None, problems) -> None:
    """Each dataset's first-stage run named by ``source`` is in place: a ``run:<name>`` the grid does
    not produce must be there whenever the grid starts; one it produces (``alone``: the run is not
    part of a grid, and says what reads it) must exist already, else how to produce it."""
    if source is None:
        return
    for dataset in datasets:
        for problem in preflight.first_stage_run_problems(dataset, source, role):
            _refuse(problem, problems)
    candidates = CandidateSource.parse(source)
    if alone is None or candidates.produced() is None:
        return
    from cerepro.data.datasets import load_collection

    name = candidates.run
    for dataset in datasets:
        try:
            load_collection(dataset).run_path(name)
        except FileNotFoundError:
            raise RunnerError(
                f"{alone} on the first-stage run {name!r} of {dataset!r}, which does not exist yet: "
                f"produce it with `python -m cerepro.retrieval.first_stage {dataset} {name}` (or run a grid with "
                "this profile, `cerepro grid <grid>`, which produces it first)"
            ) from None


# ---------------------------------------------------------------------------------------------
# The callers' views: a notebook run alone, a whole grid


def check_notebook_parameters(notebook: str, parameters: dict[str, Any]) -> None:
    """What ``cerepro run`` checks before a kernel starts or a folder is made: the run the
    parameters describe (slugs, profile, overrides, seed) is a valid one, and its job kind's
    checker passes with the run alone (a first-stage run it reads is in place, else how to
    produce it)."""
    given = {**declared_parameters(notebook), **parameters}
    if not isinstance(given.get("overrides", {}), dict):
        raise RunnerError(
            f"--param overrides: {given['overrides']!r} is not a mapping of params keys to "
            "values, e.g. -p 'overrides={max_steps: 10}'"
        )
    if notebook == "train":
        from cerepro.config import load_config

        config = load_config(
            given["backbone"], given["objective"], given["seed"], given["profile"], given.get("overrides") or {}
        )
        check_train(config, alone=True)
    elif notebook == "evaluate":
        settings = evaluation_settings(
            load_grid(given["grid"]),
            given["run_name"],
            model=given["model"],
            revision=given["revision"],
            overrides=given.get("overrides") or {},
        )
        check_evaluate(settings, alone=True)
    elif notebook == "data":
        from types import SimpleNamespace

        source = SimpleNamespace(
            training_source=given["source"], train_data=given["train_data"], llm_list=given["llm_list"]
        )
        check_data(source)  # the notebook's first cell parses every line
    elif notebook == "compare":
        check_compare(given["grid"])


def check_inputs(grid: Grid) -> list[str]:
    """Every job of ``grid`` through its kind's checker, before any job starts: raises for an
    unknown dataset id or a missing local folder or training file; returns the problems a grid
    run must not start with (first-stage runs not in place, broken downloads). Models are checked
    as their evaluations start (a trained one does not exist yet)."""
    problems: list[str] = []
    seen = set()
    for run in grid.runs:
        key = (run.validation_datasets, run.validation_first_stage, run.train_data, run.training_source, run.llm_list)
        if key not in seen:
            seen.add(key)
            check_train(run, problems=problems)
    for job in grid.evaluations:
        key = (job.config.eval_datasets, job.config.first_stage)
        if key not in seen:
            seen.add(key)
            check_evaluate(evaluation_settings(grid, job.run_id), model=False, problems=problems)
    return list(dict.fromkeys(problems))


def grid_problems(grid: Grid, *, offline: bool = False, inputs: list | None = None) -> list[str]:
    """Problems that refuse the grid: :func:`check_inputs`'s, licensed inputs not provided, and with
    ``offline`` every input not fetched. ``inputs``: ``cerepro.grid.fetch.grid_inputs(grid)`` when the
    caller has it already."""
    from cerepro.grid import fetch

    problems = check_inputs(grid)
    inputs = fetch.grid_inputs(grid) if inputs is None else inputs
    # broken teacher files are reported by check_data
    problems += fetch.offline_problems(
        grid.name, [i for i in inputs if i.state == "manual" or (offline and i.state == "missing")]
    )
    return list(dict.fromkeys(problems))


def check_grid_inputs(grid: Grid, *, offline: bool = False, inputs: list | None = None) -> None:
    """Refuse to start a grid whose first-stage runs or training files are broken, whose licensed
    inputs are not provided, or (``offline``) whose downloads are not fetched
    (:func:`grid_problems`), naming each, before any job is submitted."""
    problems = grid_problems(grid, offline=offline, inputs=inputs)
    if problems:
        raise RunnerError(
            f"grid {grid.name!r} cannot start; its inputs are missing or broken:\n  - " + "\n  - ".join(problems)
        )
