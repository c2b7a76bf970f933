"""One frozen, validated description of a training run, built from flat YAML fragments.

Params are layered in a fixed order (papermill's ``-f`` merges the same way, shallowly):

    base -> backbone -> objective -> profile -> explicit overrides

Each fragment is a flat mapping of keys to literal values. The merged mapping becomes a
:class:`RunConfig`; any unknown key, wrong type, unknown slug or impossible value raises
:class:`ParamsError` naming the key, the value and the file it came from. Grid files expand axes
(backbones x objectives x seeds) into run ids ``{backbone}.{objective}.s{seed}``
(:mod:`cerepro.grids`); the files are read as plain data by :mod:`cerepro.fragments`.

This module reads params; it never trains, downloads or touches data.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cerepro.fragments import ParamsError, fragment_path, read_fragment
from cerepro.objectives import registry
from cerepro.paths import params_dir
from cerepro.vocab import (
    DATA_ORDERS,
    DOCUMENT_TEXTS,
    HARD_NEGATIVE_GROUPS,
    PRECISIONS,
    SOURCE_PROVIDES,
    TRAIN_DATA,
    TRAINING_SOURCES,
    TRUNCATIONS,
    VALIDATION_AGGREGATES,
    CandidateSource,
    Precision,
    PrecisionError,
    RunId,
    RunIdError,
    SourceError,
    is_known_dataset,
    parse_measures,
)

LAYER_ORDER = ("base", "backbone", "objective", "profile", "overrides")
BATCH_UNITS = ("group", "pair")


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; the fields are the keys the params files may set."""

    # identity
    backbone: str
    objective: str
    seed: int
    profile: str
    # backbone (params/backbones/<slug>.yaml)
    hf_id: str
    revision: str
    lr: float
    batch_size: int
    max_length: int
    precision: str
    query_max_length: int | None = None
    passage_max_length: int | None = None
    truncation: str = "passage"
    # load the tokenizer with do_lower_case=True (the authors' MiniLM-L12 tokenizer, 2 Feb 2026)
    lower_case: bool = False
    gradient_checkpointing: bool = False
    # objective (params/objectives/<slug>.yaml)
    training_source: str = "triples"
    group_size: int = 2
    # what batch_size counts: "group" (triples or lists per step) or "pair" (passages per step,
    # split into batch_size // group_size groups, as the paper does for InfoNCE)
    batch_unit: str = "group"
    llm_list: str = "sampled-50"
    # hard-negatives groups: "per-positive" (one per judged positive, negatives drawn without
    # replacement: the table's xpmir of Feb 2026) or "first-positive" (the authors' later code)
    hard_negative_groups: str = "first-positive"
    # the order a training file's records are read in: "file" (the table's, the same for every
    # seed) or "shuffled" (reshuffled each epoch with the run's seed); the MS MARCO triples are
    # shuffled once with seed 123 either way
    data_order: str = "shuffled"
    # training data (profile)
    train_data: str = "msmarco-passage"
    # optimisation (params/base.yaml)
    optimizer: str = "adamw"
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 5000
    max_steps: int = 200_000
    grad_clip: float = 1.0
    grad_accum: int = 1
    compile: bool = False
    log_every: int = 100
    checkpoint_every: int = 5000
    # validation: re-rank each validation collection's candidates, keep the best checkpoint
    validate_every: int = 5000
    validation_datasets: tuple[str, ...] = ()
    validation_first_stage: str = "bm25"
    validation_depth: int = 100
    # the authors' validation listener: aggregated nDCG (no cutoff) over the top-100 re-ranked
    validation_measure: str = "nDCG"
    validation_queries: int = 500  # at most this many topics per validation set (validation.size)
    # the aggregate over the validation sets (cerepro.training.selection): "best-so-far" (each set's best
    # value so far, averaged: the table's xpmir aggregator) or "current" (this validation's values)
    validation_aggregate: str = "current"
    # stop when the aggregate has not risen for this many steps (0: never; the table's learner: 10000)
    early_stopping_steps: int = 0
    # evaluation
    eval_datasets: tuple[str, ...] = ()
    # how documents become text: "datamaestro" (the authors': Touche and SciDocs without title,
    # TREC-COVID text then title) or "ir-datasets" (title then text); validation and evaluation
    document_text: str = "ir-datasets"
    first_stage: str = "bm25"
    candidate_depth: int = 1000
    # resources a scheduler requests for the training job
    gpus: int = 1
    # training processes (DDP through accelerate launch): 0 = one per GPU (gpus), one on CPU;
    # with gpus 0 and processes > 1, that many CPU processes synchronise over gloo
    processes: int = 0
    cpus: int = 16
    mem_gb: int = 64
    runtime_min: int = 1200
    # the objective's hyperparameters by name (cerepro.objectives): its record's defaults, unless
    # params set them under their names (``margin``, ``temperature``, ``discount``, ...)
    hyperparameters: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def run_id(self) -> str:
        return str(RunId.trained(self.backbone, self.objective, self.seed))

    @property
    def groups_per_step(self) -> int:
        """Groups (triples, 1+7 groups, lists) scored per optimiser step."""
        if self.batch_unit == "pair":
            return self.batch_size // self.group_size
        return self.batch_size

    @property
    def pairs_per_step(self) -> int:
        return self.groups_per_step * self.group_size

    def to_dict(self) -> dict[str, Any]:
        """The config as params would set it: flat, the hyperparameters under their names."""
        out = {key: getattr(self, key) for key in FIELDS}
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return {**out, **self.hyperparameters}


# The keys params may set besides an objective's hyperparameters.
FIELDS = {f.name: f for f in dataclasses.fields(RunConfig) if f.name != "hyperparameters"}


def _hyperparameter_names() -> set[str]:
    """Every registered objective's hyperparameter names: a params key among them is checked once
    the run's objective is known."""
    return {h.name for o in registry().values() for h in o.hyperparameters}


_HINTS = typing.get_type_hints(RunConfig)


def scoring_precision(config: RunConfig) -> str:
    """The precision ``config``'s model is scored at: validation, evaluation, the contract."""
    return Precision.parse(config.precision).scoring


def paper_seeds(n: int) -> list[int]:
    """The paper's seeds: seed_i = numpy RandomState(12 + i).randint(2**32 - 1)."""
    return [int(np.random.RandomState(12 + i).randint(2**32 - 1)) for i in range(n)]


def layer_files(backbone: str, objective: str, profile: str, root: Path | None = None) -> list[Path]:
    """The fragment files of a run, in layering order."""
    root = root or params_dir()
    return [
        root / "base.yaml",
        fragment_path("backbones", backbone, root),
        fragment_path("objectives", objective, root),
        fragment_path("profiles", profile, root),
    ]


# ---------------------------------------------------------------------------------------------
# Layering and validating


def load_config(
    backbone: str,
    objective: str,
    seed: int,
    profile: str,
    overrides: Mapping[str, Any] | None = None,
    root: Path | None = None,
) -> RunConfig:
    """Layer base -> backbone -> objective -> profile -> overrides into a validated RunConfig."""
    files = layer_files(backbone, objective, profile, root)
    layers = [(str(f), read_fragment(f)) for f in files]
    for source, mapping in layers:
        if mapping.get("objective", objective) != objective:
            raise ParamsError(
                f"{source}: key 'objective' = {mapping['objective']!r}: unknown objective, or one "
                f"that disagrees with the fragment it was loaded as ({objective!r})"
            )
    identity = {"backbone": backbone, "objective": objective, "seed": seed, "profile": profile}
    layers.append(("overrides", {**identity, **(overrides or {})}))
    return build_config(layers)


def build_config(layers: Iterable[tuple[str, Mapping[str, Any]]]) -> RunConfig:
    """Merge (source, mapping) layers in order; later layers win. Sources name files in errors."""
    merged: dict[str, Any] = {}
    hyperparameters: dict[str, Any] = {}  # checked once the objective is known
    origin: dict[str, str] = {}
    names = _hyperparameter_names()
    for source, mapping in layers:
        for key, value in mapping.items():
            if key in FIELDS:
                merged[key] = _coerce(key, value, source)
            elif key in names:
                hyperparameters[key] = value
            else:
                raise ParamsError(
                    f"{source}: unknown key {key!r} (value {value!r}); known keys: {', '.join(sorted(FIELDS))}, "
                    f"and an objective's hyperparameters ({', '.join(sorted(names))})"
                )
            origin[key] = source
    missing = [f.name for f in FIELDS.values() if f.name not in merged and _required(f)]
    if missing:
        raise ParamsError(f"missing required keys {missing} after layering {list(dict.fromkeys(origin.values()))}")
    merged["hyperparameters"] = _objective_hyperparameters(merged["objective"], hyperparameters, origin)
    config = RunConfig(**merged)
    _check_values(config, origin)
    return config


def _objective_hyperparameters(objective: str, given: Mapping[str, Any], origin: Mapping[str, str]) -> dict[str, Any]:
    """``objective``'s hyperparameters: each at its declared default unless ``given`` sets it; a
    hyperparameter of another objective is refused."""
    try:
        record = registry()[objective]
    except KeyError:
        raise ParamsError(
            f"{origin.get('objective', 'defaults')}: key 'objective' = {objective!r}: unknown objective; "
            f"known: {', '.join(registry())} (one of another package registers through its entry points, "
            f"group 'cerepro.objectives')"
        ) from None
    for key, value in given.items():
        if key not in record.defaults:
            takes = ", ".join(record.defaults) or "none"
            raise ParamsError(
                f"{origin[key]}: key {key!r} = {value!r}: objective {objective!r} has no hyperparameter {key!r} "
                f"(its hyperparameters: {takes})"
            )
    values = {}
    for h in record.hyperparameters:
        value = given.get(h.name, h.default)
        try:
            values[h.name] = h.check(value)
        except ValueError as exc:
            where = origin.get(h.name, f"objective {objective!r}'s default")
            raise ParamsError(f"{where}: key {h.name!r} = {value!r}: {exc}") from None
    return values


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _coerce(key: str, value: Any, source: str) -> Any:
    """Check ``value`` against the field's type; YAML lists become tuples."""
    hint = _HINTS[key]
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for kind in allowed:
        if kind is type(None) and value is None:
            return None
        if typing.get_origin(kind) is tuple:
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                return tuple(value)
            continue
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is float and isinstance(value, str):
            try:  # YAML 1.1 reads "1e-5" as a string
                return float(value)
            except ValueError:
                continue
        if kind is int and isinstance(value, bool):
            continue
        if isinstance(kind, type) and isinstance(value, kind):
            return value
    expected = " or ".join(
        "list of strings" if typing.get_origin(k) is tuple else getattr(k, "__name__", str(k)) for k in allowed
    )
    raise ParamsError(f"{source}: key {key!r} expects {expected}, got {value!r} ({type(value).__name__})")


def _check_values(c: RunConfig, origin: Mapping[str, str]) -> None:
    def fail(key: str, why: str) -> None:
        value = getattr(c, key)
        raise ParamsError(f"{origin.get(key, 'defaults')}: key {key!r} = {value!r}: {why}")

    objective = registry()[c.objective]  # known: its hyperparameters were read
    for key in ("lr", "adam_eps", "grad_clip"):
        if not getattr(c, key) > 0:
            fail(key, "must be > 0")
    if c.weight_decay < 0:
        fail("weight_decay", "must be >= 0")
    for key in (
        "batch_size",
        "max_steps",
        "max_length",
        "group_size",
        "grad_accum",
        "log_every",
        "checkpoint_every",
        "validate_every",
        "validation_depth",
        "validation_queries",
        "candidate_depth",
        "cpus",
        "mem_gb",
        "runtime_min",
    ):
        if getattr(c, key) <= 0:
            fail(key, "must be > 0")
    for key in ("warmup_steps", "gpus", "processes", "seed"):
        if getattr(c, key) < 0:
            fail(key, "must be >= 0")
    if c.seed >= 2**32:
        fail("seed", "must be below 2**32 = 4294967296 (numpy's and the data order's seeds are 32-bit)")
    try:  # the names a run is known by, built once here (cerepro.vocab)
        RunId.trained(c.backbone, c.objective, c.seed)
    except RunIdError as exc:
        fail(exc.part or "seed", f"cannot be part of a run id: {exc}")
    for key in ("first_stage", "validation_first_stage"):
        try:
            CandidateSource.parse(getattr(c, key))
        except SourceError as exc:
            fail(key, str(exc))
    if c.gpus and c.processes not in (0, c.gpus):
        fail("processes", f"GPU runs train one process per GPU: set 0 or gpus ({c.gpus})")
    if c.warmup_steps >= c.max_steps:
        fail("warmup_steps", f"must be smaller than max_steps ({c.max_steps})")
    if c.truncation not in TRUNCATIONS:
        fail("truncation", f"must be one of {TRUNCATIONS}")
    for key in ("query_max_length", "passage_max_length"):
        value = getattr(c, key)
        # the retokenize rule cuts the pair to the smaller of max_length and the sum of the limits,
        # so a side limit above max_length is meaningful there (256 for a 96-token demo model)
        if value is not None and not 0 < value and c.truncation == "retokenize":
            fail(key, "must be >= 1")
        if value is not None and c.truncation != "retokenize" and not 0 < value < c.max_length:
            fail(key, f"must be between 1 and max_length - 1 ({c.max_length - 1})")
    try:
        parse_measures([c.validation_measure])
    except ValueError as exc:
        fail("validation_measure", str(exc))
    try:
        Precision.parse(c.precision)
    except PrecisionError:
        fail("precision", f"must be one of {PRECISIONS}")
    if c.training_source not in TRAINING_SOURCES:
        fail("training_source", f"must be one of {TRAINING_SOURCES}")
    # the one check that the training source gives what the objective needs
    missing = objective.requires - SOURCE_PROVIDES[c.training_source]
    if missing:
        givers = [s for s, gives in SOURCE_PROVIDES.items() if objective.requires <= gives]
        fail(
            "training_source",
            f"objective {c.objective!r} needs {', '.join(sorted(missing))} scores, which this source does not "
            f"give; use one that does ({', '.join(givers)})",
        )
    if c.train_data not in TRAIN_DATA and not c.train_data.startswith("local:"):
        fail("train_data", f"must be one of {TRAIN_DATA} or 'local:<folder>'")
    if c.validation_aggregate not in VALIDATION_AGGREGATES:
        fail("validation_aggregate", f"must be one of {VALIDATION_AGGREGATES}")
    if c.early_stopping_steps < 0:
        fail("early_stopping_steps", "must be >= 0 (0: no early stopping)")
    if c.document_text not in DOCUMENT_TEXTS:
        fail("document_text", f"must be one of {DOCUMENT_TEXTS}")
    if c.data_order not in DATA_ORDERS:
        fail("data_order", f"must be one of {DATA_ORDERS}")
    if c.hard_negative_groups not in HARD_NEGATIVE_GROUPS:
        fail("hard_negative_groups", f"must be one of {HARD_NEGATIVE_GROUPS}")
    if c.truncation not in TRUNCATIONS:
        fail("truncation", f"must be one of {TRUNCATIONS}")
    if c.batch_unit not in BATCH_UNITS:
        fail("batch_unit", f"must be one of {BATCH_UNITS}")
    if c.batch_unit == "pair" and c.batch_size % c.group_size:
        fail("batch_size", f"counts pairs and must be divisible by group_size ({c.group_size})")
    if c.optimizer != "adamw":
        fail("optimizer", "only 'adamw' (the paper's optimiser) is implemented")
    if c.group_size < objective.min_group_size:
        fail(
            "group_size",
            f"objective {c.objective!r} compares passages: needs at least {objective.min_group_size} per group",
        )
    for source_key, depth_key in (("first_stage", "candidate_depth"), ("validation_first_stage", "validation_depth")):
        produced = CandidateSource.parse(getattr(c, source_key)).produced()
        if produced is not None and produced[1] < getattr(c, depth_key):
            fail(
                source_key,
                f"a top-{produced[1]} run cannot give {depth_key} = {getattr(c, depth_key)} "
                f"candidates; name the run <model>-top{getattr(c, depth_key)}",
            )
    for key in ("validation_datasets", "eval_datasets"):
        for dataset in getattr(c, key):
            if not is_known_dataset(dataset):
                fail(
                    key,
                    f"unknown dataset {dataset!r}: use an id from params/datasets.yaml, "
                    "'demo:<split>' or 'local:<folder>'",
                )


def pair_limit(config: RunConfig) -> int:
    """The most tokens a (query, passage) pair of ``config`` holds, special tokens included: the
    sum of the side limits under the table's ``retokenize`` rule (288), else ``max_length``."""
    if config.truncation == "retokenize" and config.query_max_length and config.passage_max_length:
        return min(config.max_length, config.query_max_length + config.passage_max_length)
    return config.max_length
