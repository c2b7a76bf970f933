"""One frozen, validated description of a training run, built from flat YAML fragments.

Params are layered in a fixed order (papermill's ``-f`` merges the same way, shallowly):

    base -> backbone -> objective -> profile -> explicit overrides

Each fragment is a flat mapping of keys to literal values. The merged mapping becomes a
:class:`RunConfig`; any unknown key, wrong type, unknown slug or impossible value raises
:class:`ParamsError` naming the key, the value and the file it came from. Grid files expand axes
(backbones x objectives x seeds) into run ids ``{backbone}.{objective}.s{seed}``.

This module reads params; it never trains, downloads or touches data.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cerepro.paths import params_dir, runs_dir
from cerepro.vocab import (
    DATA_ORDERS,
    DOCUMENT_TEXTS,
    FIRST_STAGE,
    HARD_NEGATIVE_GROUPS,
    PRECISIONS,
    RELEASED,
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
    objectives,
    parse_measures,
)

LAYER_ORDER = ("base", "backbone", "objective", "profile", "overrides")
BATCH_UNITS = ("group", "pair")


class ParamsError(ValueError):
    """A params file or override that cannot describe a run."""


# ---------------------------------------------------------------------------------------------
# Plain data: what a params file, a grid file or a `-p` value may hold


class PlainLoader(yaml.SafeLoader):
    """YAML limited to plain data: strings, numbers, booleans, null, lists and mappings with
    scalar keys. Every other tag (``!!binary``, ``!!set``, ``!!omap``, ``!!python/...``, any
    local ``!tag``) is refused: params reach notebooks and Snakemake, and a value that is not
    plain data could be rendered there as something other than itself. An unquoted date reads
    as its text. A key given twice in one mapping is refused (YAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key!r} appears twice (line {seen[key] + 1} and line "
                        f"{key_node.start_mark.line + 1}); YAML would keep the last one silently",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


PlainLoader.yaml_constructors = {
    tag: fn
    for tag, fn in yaml.SafeLoader.yaml_constructors.items()
    if tag and tag.rsplit(":", 1)[-1] in ("null", "bool", "int", "float", "str", "seq", "map")
}
PlainLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


def _refuse_tag(loader: PlainLoader, node: yaml.Node):
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    raise yaml.constructor.ConstructorError(None, None, f"tag {tag} is not plain data", node.start_mark)


PlainLoader.add_constructor(None, _refuse_tag)


def load_yaml(text: str) -> Any:
    """``text`` read by :class:`PlainLoader`; a ``yaml.YAMLError`` when it is not plain data."""
    data = yaml.load(text, Loader=PlainLoader)  # noqa: S506 (PlainLoader is a restricted SafeLoader)
    _check_keys(data)
    return data


def _check_keys(data: Any) -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is not a plain scalar", None)
            _check_keys(value)
    elif isinstance(data, list):
        for value in data:
            _check_keys(value)


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
    margin: float = 1.0
    temperature: float = 1.0
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
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_HINTS = typing.get_type_hints(RunConfig)


def scoring_precision(config: RunConfig) -> str:
    """The precision ``config``'s model is scored at: validation, evaluation, the contract."""
    return Precision.parse(config.precision).scoring


def paper_seeds(n: int) -> list[int]:
    """The paper's seeds: seed_i = numpy RandomState(12 + i).randint(2**32 - 1)."""
    return [int(np.random.RandomState(12 + i).randint(2**32 - 1)) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Reading fragments


def read_fragment(path: str | Path) -> dict[str, Any]:
    """A flat YAML mapping; nested mappings are refused (layering is shallow)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        data = load_yaml(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    for key, value in data.items():
        if isinstance(value, dict):
            raise ParamsError(f"{path}: key {key!r} holds a mapping; params fragments are flat")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error as 'what (line L, column C)', the position 1-based as editors show it."""
    mark = getattr(exc, "problem_mark", None)
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    began = f" (from line {start.line + 1}, column {start.column + 1})" if start is not None else ""
    return f"{context + began + ': ' if context else ''}{what}{where}"


def available(kind: str, root: Path | None = None) -> list[str]:
    """Slugs with a fragment in ``params/<kind>/`` (kind: backbones, objectives, profiles, grids)."""
    folder = (root or params_dir()) / kind
    return sorted(p.stem for p in folder.glob("*.yaml"))


SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def fragment_path(kind: str, slug: str, root: Path | None = None) -> Path:
    root = root or params_dir()
    singular = kind.rstrip("s")
    if not isinstance(slug, str) or not SLUG.fullmatch(slug) or ".." in slug:
        known = ", ".join(available(kind, root)) or "none"
        raise ParamsError(
            f"{singular} {slug!r} is not a slug (a name of params/{kind}/: letters, digits, "
            f"'.', '_' and '-', no path); known: {known}"
        )
    path = root / kind / f"{slug}.yaml"
    if not path.is_file():
        known = ", ".join(available(kind, root)) or "none"
        raise ParamsError(f"unknown {singular} {slug!r}: no {path}; known: {known}")
    return path


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
# Building and validating


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
    origin: dict[str, str] = {}
    for source, mapping in layers:
        for key, value in mapping.items():
            if key not in FIELDS:
                raise ParamsError(
                    f"{source}: unknown key {key!r} (value {value!r}); known keys: {', '.join(sorted(FIELDS))}"
                )
            merged[key] = _coerce(key, value, source)
            origin[key] = source
    missing = [f.name for f in FIELDS.values() if f.name not in merged and _required(f)]
    if missing:
        raise ParamsError(f"missing required keys {missing} after layering {list(dict.fromkeys(origin.values()))}")
    config = RunConfig(**merged)
    _check_values(config, origin)
    return config


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

    if c.objective not in objectives():
        fail("objective", f"unknown objective; known: {', '.join(objectives())}")
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
    if c.group_size < 2 and c.objective != "bce":
        fail("group_size", f"objective {c.objective!r} compares passages: needs at least 2 per group")
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


# ---------------------------------------------------------------------------------------------
# Known differences from the authors' code (params/expected/differences.yaml)

DIFFERENCE_KEYS = ("point", "code", "authors", "source", "cerepro", "status", "effect")
DIFFERENCE_STATUSES = ("fixed", "variant", "unconfirmed")
# which version of the authors' code a row describes: the one that produced the paper's table
# (February 2026), their later code (March 2026 on, cerepro's profile authors-head), or both
DIFFERENCE_CODES = ("table", "later", "both")


def differences(root: Path | None = None) -> list[dict[str, str]]:
    """params/expected/differences.yaml: every known difference from the authors' code, checked."""
    path = (root or params_dir()) / "expected" / "differences.yaml"
    entries = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("differences") or []
    for i, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or set(entry) != set(DIFFERENCE_KEYS):
            raise ParamsError(f"{path}: entry {i} must have exactly the keys {DIFFERENCE_KEYS}")
        if entry["status"] not in DIFFERENCE_STATUSES:
            raise ParamsError(
                f"{path}: entry {i} ({entry['point']!r}): status {entry['status']!r} "
                f"is not one of {DIFFERENCE_STATUSES}"
            )
        if entry["code"] not in DIFFERENCE_CODES:
            raise ParamsError(
                f"{path}: entry {i} ({entry['point']!r}): code {entry['code']!r} is not one of {DIFFERENCE_CODES}"
            )
    return entries


def differences_markdown(root: Path | None = None) -> str:
    """The differences as a Markdown table (the README's and the book's)."""

    def cell(text: str) -> str:
        text = " ".join(str(text).split()).replace("|", "\\|")
        return text.replace("<", "&lt;").replace(">", "&gt;")  # <s> is RoBERTa's, not HTML

    header = ["What", "Their code", "The authors' code", "Read in", "cerepro", "Status", "Expected effect"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for d in differences(root):
        lines.append("| " + " | ".join(cell(d[k]) for k in DIFFERENCE_KEYS) + " |")
    return "\n".join(lines)


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
            if entry.get("objective"):
                run, objective = RunId.released(entry["backbone"], entry["objective"]), entry["objective"]
            else:  # a baseline: scored like the paper's runs of its backbone's size
                run, objective = RunId.baseline(entry["name"]), "bce"
        except RunIdError as exc:
            raise ParamsError(f"{where}: {exc}") from None
        try:  # ``settings``: how this checkpoint was trained where the profile's backbone differs
            config = load_config(
                entry["backbone"], objective, 0, spec["profile"], {**(entry.get("settings") or {}), **overrides}, root
            )
        except ParamsError as exc:
            raise ParamsError(f"{where}: {exc}") from exc
        jobs.append(Evaluation(str(run), config, model=entry["hub_id"], revision=entry.get("revision")))
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
    )


def read_checkpoints(path: Path) -> list[dict[str, Any]]:
    """The ``checkpoints:`` list of a checkpoints file, each entry checked: a paper checkpoint
    names its backbone and objective, a baseline its name and the backbone it is sized like."""
    try:
        spec = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
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


def pair_limit(config: RunConfig) -> int:
    """The most tokens a (query, passage) pair of ``config`` holds, special tokens included: the
    sum of the side limits under the table's ``retokenize`` rule (288), else ``max_length``."""
    if config.truncation == "retokenize" and config.query_max_length and config.passage_max_length:
        return min(config.max_length, config.query_max_length + config.passage_max_length)
    return config.max_length


def read_grid_file(path: Path) -> dict[str, Any]:
    """A grid file's mapping, checked: known keys, axes as lists of slugs, and ``name`` (if
    given) equal to the file's name, which names the grid's folder ``runs/<name>/``."""
    if not path.is_file():
        raise ParamsError(f"grid file not found: {path}")
    try:
        spec = load_yaml(path.read_text(encoding="utf-8-sig")) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
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
