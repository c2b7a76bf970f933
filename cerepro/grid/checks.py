"""What a job reads, checked before it starts (a kernel, a GPU or a Snakemake run): datasets, models,
first-stage runs, training files; each refusal names the dataset, the file or the key.

This module only looks; it never downloads, trains or evaluates.
"""

from __future__ import annotations

from typing import Any

from cerepro.config import EvaluationSettings, Grid, evaluation_settings, load_grid
from cerepro.grid import preflight
from cerepro.grid.runner import RunnerError, declared_parameters
from cerepro.vocab import produced_run


def check_evaluation(settings: EvaluationSettings) -> None:
    """An evaluation's datasets and model, checked before its kernel starts."""
    from cerepro.data.datasets import check_dataset

    for dataset in settings.datasets:
        check_dataset(dataset, "eval_datasets")
    if settings.model:  # a trained folder or a hub checkpoint: refused before scoring
        from cerepro.model.models import check_scorer, resolve_scorer

        check_scorer(resolve_scorer(settings.model, settings.revision))


def check_notebook_parameters(notebook: str, parameters: dict[str, Any]) -> None:
    """What ``cerepro run`` checks before a kernel starts or a folder is made: the run the
    parameters describe (slugs, profile, overrides, seed) is a valid one, its evaluation's
    datasets exist, and a first-stage run it validates on is in place (else how to produce it)."""
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
        check_first_stage_runs(
            config.validation_first_stage, config.validation_datasets, f"profile {config.profile!r} validates"
        )
    elif notebook == "evaluate":
        settings = evaluation_settings(
            load_grid(given["grid"]),
            given["run_name"],
            model=given["model"],
            revision=given["revision"],
            overrides=given.get("overrides") or {},
        )
        check_evaluation(settings)
        check_first_stage_runs(settings.first_stage, settings.datasets, "this evaluation re-ranks")
    elif notebook == "compare":
        load_grid(given["grid"])


def check_first_stage_runs(source: str | None, datasets, what: str) -> None:
    """A first-stage run the grid would produce (``run:<slug>-top<depth>``) must exist when a
    notebook is run alone; if not, say how to produce it."""
    if source is None or produced_run(source) is None:
        return
    from cerepro.data.datasets import load_collection

    name = source[len("run:") :]
    for dataset in datasets:
        try:
            load_collection(dataset).run_path(name)
        except FileNotFoundError:
            raise RunnerError(
                f"{what} on the first-stage run {name!r} of {dataset!r}, which does not exist yet: "
                f"produce it with `python -m cerepro.retrieval.first_stage {dataset} {name}` (or run a grid with "
                "this profile, `cerepro grid <grid>`, which produces it first)"
            ) from None


def check_inputs(grid: Grid) -> None:
    """Every dataset and local training file the grid's runs name exists (no data is read)."""
    from cerepro.data.training_data import check_inputs as check_run

    seen = set()
    for run in grid.runs or tuple(job.config for job in grid.evaluations):
        key = (run.validation_datasets, run.eval_datasets, run.train_data, run.training_source, run.llm_list)
        if key not in seen:
            seen.add(key)
            check_run(run)


def check_grid_inputs(grid: Grid, *, offline: bool = False, inputs: list | None = None) -> None:
    """Refuse to start a grid whose first-stage runs or training files are broken, whose licensed
    inputs are not provided, or (``offline``) whose downloads are not fetched
    (``cerepro.grid.preflight``), naming each, before any job is submitted."""
    problems = preflight.check_inputs(grid, offline=offline, inputs=inputs)
    if problems:
        raise RunnerError(
            f"grid {grid.name!r} cannot start; its inputs are missing or broken:\n  - " + "\n  - ".join(problems)
        )
