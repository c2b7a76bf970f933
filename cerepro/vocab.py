"""The project's vocabulary: the names every module speaks, each parsed and explained here once.

    run ids        {backbone}.{objective}.s{seed}, {backbone}.{objective}.released, baseline.<name>,
                   first-stage                                     RunId.parse(), str(RunId), system_of()
    datasets       ir_datasets ids, their short names and groups (params/datasets.yaml), demo splits
                                                       dataset_registry(), short_name(), dataset_id(), dataset_group()
    first stages   candidate sources bm25 | scoreddocs | run:<name>, produced runs run:<slug>-top<depth>
                   and the SPLADE models of params/first_stage.yaml    CandidateSource.parse(), .produced()
    training       the training sources and what each gives an objective; the training data sets
    precisions     each precision's matmul setting, autocast, scoring precision and GPU peak, and
                   the one table of GPU peaks                          Precision.parse(), GPU_PEAK_TFLOPS
    measures       ir_measures strings parsed once; the validation aggregates  parse_measures()
    objectives     the paper's table order, and one colour per objective for every figure

The small types (RunId, CandidateSource, Precision) are built when params are validated
(cerepro.config) and written by their ``str()``: a name's string form exists in one place.
Every other module imports these names from here instead of spelling them again. This module
reads params files only (``params/datasets.yaml``, ``params/first_stage.yaml``); it imports neither torch nor pandas (ir_measures for the measure names), so every layer of the package may import it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ir_measures
import yaml

from cerepro.objectives import order as objective_order  # the one order of objectives, re-exported
from cerepro.paths import params_dir

# ---------------------------------------------------------------------------------------------
# Run ids

FIRST_STAGE = "first-stage"  # the run id of a grid's evaluation of its candidates alone
RELEASED = "released"  # the last part of a released checkpoint's run id, where a seed would be
BASELINE = "baseline"  # the first part of a public baseline's run id: baseline.<name>
TRAINED = "trained"  # where a run's model came from: trained here, or released by the authors
RUN_KINDS = (TRAINED, RELEASED, BASELINE, FIRST_STAGE)
_SEED = re.compile(r"s(0|[1-9][0-9]*)")  # no leading zero, so that str(parse(x)) == x


class RunIdError(ValueError):
    """A run id none of the four forms reads: names the part that is wrong (``part``)."""

    def __init__(self, message: str, part: str | None = None):
        super().__init__(message)
        self.part = part


@dataclass(frozen=True)
class RunId:
    """A run's id, read once by ``parse`` and written once by ``str()``; four forms:

    ``bert-base.infonce.s42``        trained here: backbone, objective, seed
    ``bert-base.infonce.released``   the authors' released checkpoint of (backbone, objective)
    ``baseline.<name>``              a public checkpoint scored as it is (backbone ``baseline``)
    ``first-stage``                  the grid's candidates scored alone (backbone and objective too)

    Backbone and objective are the slugs of params' fragments: non-empty, no dot.
    """

    kind: str
    backbone: str
    objective: str
    seed: int | None = None

    def __post_init__(self):
        if self.kind not in RUN_KINDS:
            raise RunIdError(f"run kind {self.kind!r} is not one of {RUN_KINDS}")
        for part in ("backbone", "objective"):
            value = getattr(self, part)
            if not isinstance(value, str) or not value.strip() or "." in value or value != value.strip():
                raise RunIdError(f"its {part} {value!r} must be a name without '.' or surrounding spaces", part)
        seeded = isinstance(self.seed, int) and not isinstance(self.seed, bool)
        if (self.kind == TRAINED) != seeded or (seeded and self.seed < 0):
            raise RunIdError(
                f"its seed {self.seed!r}: a trained run has one (an int >= 0), a {self.kind} run none", "seed"
            )

    @classmethod
    def trained(cls, backbone: str, objective: str, seed: int) -> RunId:
        return cls(TRAINED, backbone, objective, seed)

    @classmethod
    def released(cls, backbone: str, objective: str) -> RunId:
        return cls(RELEASED, backbone, objective)

    @classmethod
    def baseline(cls, name: str) -> RunId:
        return cls(BASELINE, BASELINE, name)

    @classmethod
    def parse(cls, text: str) -> RunId:
        """The run id ``text`` names; RunIdError, naming the part that is wrong, when none."""
        if text == FIRST_STAGE:
            return cls(FIRST_STAGE, FIRST_STAGE, FIRST_STAGE)
        parts = text.split(".") if isinstance(text, str) else []
        if len(parts) == 2 and parts[0] == BASELINE:
            kind, backbone, objective, seed = BASELINE, BASELINE, parts[1], None
        elif len(parts) == 3 and (parts[2] == RELEASED or _SEED.fullmatch(parts[2])):
            (backbone, objective), released = parts[:2], parts[2] == RELEASED
            kind, seed = (RELEASED, None) if released else (TRAINED, int(parts[2][1:]))
        elif len(parts) == 3:
            raise RunIdError(
                f"run id {text!r}: its last part {parts[2]!r} is neither s<seed> (digits, "
                f"no leading zero) nor {RELEASED!r}"
            )
        else:
            raise RunIdError(
                f"run id {text!r} has {len(parts)} dot-separated parts: it is not "
                f"{{backbone}}.{{objective}}.s{{seed}}, {{backbone}}.{{objective}}.{RELEASED}, "
                f"{BASELINE}.<name> nor {FIRST_STAGE!r}"
            )
        try:
            return cls(kind, backbone, objective, seed)
        except RunIdError as exc:
            raise RunIdError(f"run id {text!r}: {exc}", exc.part) from None

    def __str__(self) -> str:
        if self.kind in (BASELINE, FIRST_STAGE):
            return self.objective if self.kind == FIRST_STAGE else f"{BASELINE}.{self.objective}"
        return f"{system_name(self.backbone, self.objective)}.{RELEASED if self.seed is None else f's{self.seed}'}"

    @property
    def system(self) -> str:
        """What the seeds of one (backbone, objective) share: ``ettin-17m.bce.s42`` -> ``ettin-17m.bce``;
        a run of any other kind is its own system."""
        return system_name(self.backbone, self.objective) if self.kind == TRAINED else str(self)

    @property
    def source(self) -> str:
        """Where the model came from: ``released`` (the authors' checkpoint) or ``trained`` here."""
        return RELEASED if self.kind == RELEASED else TRAINED


def system_name(backbone: str, objective: str) -> str:
    """A (backbone, objective) over its seeds, as the paired tests name it: ``ettin-17m.bce``."""
    return f"{backbone}.{objective}"


def system_of(run: str) -> str:
    """The system of a run id (:attr:`RunId.system`); a name that is no run id (an ad hoc
    evaluation's run name) is its own system."""
    try:
        return RunId.parse(run).system
    except RunIdError:
        return run


# ---------------------------------------------------------------------------------------------
# Datasets: ids, short names and groups (params/datasets.yaml)

IN_DOMAIN, OOD = "in-domain", "ood"
DEMO_PREFIX, LOCAL_PREFIX = "demo:", "local:"


def dataset_registry(root: Path | None = None) -> dict[str, Any]:
    """params/datasets.yaml: the evaluation datasets, their groups and the paper's aggregates."""
    path = (root or params_dir()) / "datasets.yaml"
    return _read_registry(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_registry(path: Path, mtime_ns: int) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def is_known_dataset(dataset: str, root: Path | None = None) -> bool:
    if dataset.startswith((DEMO_PREFIX, LOCAL_PREFIX, "nano-beir/")):
        return True
    return dataset in dataset_registry(root)["datasets"]


def dataset_id(name: str, *, strict: bool = True) -> str:
    """The ir_datasets id of a short name (an id maps to itself). Unknown: a KeyError when
    ``strict``, else the name itself (``demo:in-domain``)."""
    datasets = dataset_registry()["datasets"]
    if name in datasets:
        return name
    for dataset, info in datasets.items():
        if info["short"] == name:
            return dataset
    if strict:
        raise KeyError(f"unknown dataset {name!r}: not an id or short name in params/datasets.yaml")
    return name


def short_name(dataset: str, *, strict: bool = True) -> str:
    """The table name of a dataset id (a short name maps to itself). Unknown: a KeyError when
    ``strict``, else the id itself (``demo:in-domain``)."""
    info = dataset_registry()["datasets"].get(dataset_id(dataset, strict=strict))
    return info["short"] if info else dataset


def dataset_group(dataset: str) -> str:
    """The evaluation group of a dataset id or short name: params/datasets.yaml's group; a demo
    split is its own group (``demo:out-of-domain`` -> ``out-of-domain``)."""
    for name, info in dataset_registry()["datasets"].items():
        if dataset in (name, info["short"]):
            return info["group"]
    if dataset.startswith(DEMO_PREFIX):
        return dataset.split(":", 1)[1]
    return "other"


# ---------------------------------------------------------------------------------------------
# First stages: run names <slug>-top<depth> and the SPLADE models behind the slugs
# (params/first_stage.yaml); cerepro.retrieval.first_stage produces the runs.

RUN_PREFIX = "run:"  # a candidate source that is a run file: run:<name>
SOURCE_KINDS = ("bm25", "scoreddocs", "run")
RUN_NAME = re.compile(r"^(?P<slug>[A-Za-z0-9._-]+?)-top(?P<depth>[1-9][0-9]*)$")  # a produced run's name


class FirstStageError(ValueError):
    """A first stage that cannot run on its inputs: names the file or key and what is wrong."""


@dataclass(frozen=True)
class SpladeModel:
    slug: str  # as in run names: splade-v3-distilbert
    hf_id: str  # naver/splade-v3-distilbert, a local folder, or builtin:splade
    revision: str | None
    max_length: int


def first_stage_models(root: Path | None = None) -> dict[str, SpladeModel]:
    """The SPLADE models of ``params/first_stage.yaml``, by slug."""
    path = (root or params_dir()) / "first_stage.yaml"
    return _read_models(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_models(path: Path, mtime_ns: int) -> dict[str, SpladeModel]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out = {}
    for slug, facts in (raw.get("models") or {}).items():
        unknown = set(facts) - {"hf_id", "revision", "max_length"}
        if unknown or "hf_id" not in facts:
            raise FirstStageError(
                f"{path}: model {slug!r} needs hf_id (and optionally revision, "
                f"max_length); unknown keys {sorted(unknown)}"
            )
        out[slug] = SpladeModel(slug, str(facts["hf_id"]), facts.get("revision"), int(facts.get("max_length", 256)))
    return out


class SourceError(ValueError):
    """A candidate source that is none of bm25, scoreddocs and run:<name>."""


@dataclass(frozen=True)
class CandidateSource:
    """Where the candidates a model re-ranks come from (params' ``first_stage`` and
    ``validation_first_stage``), read once by ``parse`` and written once by ``str()``:

    ``bm25``          BM25 over the collection's passages
    ``scoreddocs``    the dataset's own scored documents (ir_datasets' scoreddocs)
    ``run:<name>``    a TREC run of that name beside the collection, or a path; a name
                      ``<slug>-top<depth>`` with a slug of params/first_stage.yaml is a run the grid
                      produces itself (``produced()``), ``CandidateSource.produced_by(slug, depth)``
    """

    kind: str  # bm25 | scoreddocs | run
    run: str = ""  # kind run: the run's name (or path)

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS or (self.kind == "run") != bool(self.run) or self.run != self.run.strip():
            raise SourceError(
                f"candidate source ({self.kind!r}, {self.run!r}): use bm25, scoreddocs or {RUN_PREFIX}<name>"
            )

    @classmethod
    def parse(cls, text: str) -> CandidateSource:
        """The source ``text`` names; SourceError, naming what is wrong, when none."""
        if isinstance(text, str) and text.startswith(RUN_PREFIX):
            name = text[len(RUN_PREFIX) :]
            if not name.strip() or name != name.strip():
                raise SourceError(f"candidate source {text!r}: the run name after {RUN_PREFIX!r} is empty or padded")
            return cls("run", name)
        if text not in SOURCE_KINDS[:2]:
            raise SourceError(f"unknown candidate source {text!r}: use bm25, scoreddocs or {RUN_PREFIX}<name>")
        return cls(text)

    @classmethod
    def produced_by(cls, slug: str, depth: int) -> CandidateSource:
        """The run a first stage produces: ``splade-v3-distilbert`` at depth 1000 ->
        ``run:splade-v3-distilbert-top1000``."""
        return cls("run", f"{slug}-top{depth}")

    def __str__(self) -> str:
        return f"{RUN_PREFIX}{self.run}" if self.kind == "run" else self.kind

    def produced(self, root: Path | None = None) -> tuple[SpladeModel, int] | None:
        """``(model, depth)`` when this is a run the grid produces (``run:<slug>-top<depth>``, the
        slug a model of params/first_stage.yaml); None for bm25, scoreddocs and user-placed runs."""
        match = RUN_NAME.match(self.run) if self.kind == "run" else None
        model = first_stage_models(root).get(match["slug"]) if match else None
        return (model, int(match["depth"])) if model else None


# ---------------------------------------------------------------------------------------------
# Training sources and data

TRAINING_SOURCES = ("triples", "teacher-pairs", "hard-negatives", "llm-lists")
# What each training source gives an objective (cerepro.objectives.INPUTS; each record says what it needs).
SOURCE_PROVIDES = {
    "triples": {"labels"},
    "teacher-pairs": {"labels", "teacher"},
    "hard-negatives": {"labels"},
    "llm-lists": {"teacher"},
}
TRAIN_DATA = ("msmarco-passage", "demo")
LLM_LISTS = ("sampled-50", "sampled-100")
# How an evaluation collection's documents become text (cerepro.data.irds.document_text):
# "datamaestro" as the authors' pipeline read them (Touche-2020 and SciDocs without title,
# TREC-COVID text then title), "ir-datasets" as ir_datasets' default_text (title then text)
DOCUMENT_TEXTS = ("datamaestro", "ir-datasets")
# The order a training file's records are read in (cerepro.data.training_data): "file" as the table's
# code read them, "shuffled" per epoch with the run's seed
DATA_ORDERS = ("file", "shuffled")
# InfoNCE groups of the hard-negatives source: one per judged positive (the table's code) or the
# query's first positive (the authors' later code)
HARD_NEGATIVE_GROUPS = ("per-positive", "first-positive")
# How a pair is cut: "retokenize" cuts each side to its limit, decodes it and re-tokenizes the
# pair longest-first to the sum of the limits (xpmir's HFCrossScorer of 1-19 Feb 2026: the code
# that produced the paper's table); "passage" keeps the query whole and cuts the passage (xpmir's
# HFQueryDocTokenizer, March 2026 on); "longest_first" is the tokenizers library's rule.
TRUNCATIONS = ("retokenize", "passage", "longest_first")

# ---------------------------------------------------------------------------------------------
# Precisions

# Training. fp32: weights, activations and matmuls in fp32 (xpm-torch's "32-true" before 19 Feb
# 2026: the table's runs); tf32: fp32 weights and activations, matmuls in TF32
# (torch.set_float32_matmul_precision("high"), xpm-torch's "32-true" from 19 Feb 2026: the authors'
# later code); bf16-mixed: bf16 autocast over fp32 weights (the DeBERTa rerun).
PRECISIONS = ("fp32", "tf32", "bf16-mixed")
# Re-ranking (cerepro.evaluation.rerank): "auto" is bf16 on hardware that computes in bf16, else
# fp32; bf16 is the whole forward pass in bf16 (scoring has no fp32 master weights to mix with).
SCORING_PRECISIONS = ("auto", "fp32", "tf32", "bf16")


class PrecisionError(ValueError):
    """A precision name that is not one of the project's."""


@dataclass(frozen=True)
class Precision:
    """A precision and all it means, one row of ``PRECISION_TABLE`` (``parse`` reads a name,
    ``str()`` writes it):

    matmul    torch.set_float32_matmul_precision while it runs: "highest" (fp32), "high" (TF32
              where the GPU has it); None leaves the process's setting as it is
    autocast  the dtype fp32 weights are autocast to ("bfloat16"), or None
    scoring   the precision a model trained at this one is scored at (validation, evaluation)
    peak      the column of GPU_PEAK_TFLOPS its matmuls run at (bf16, tf32, fp32)
    """

    name: str
    matmul: str | None
    autocast: str | None
    scoring: str
    peak: str

    @classmethod
    def parse(cls, name: str, *, scoring: bool = False) -> Precision:
        """A training precision (PRECISIONS) or, with ``scoring``, a scoring one (fp32, tf32,
        bf16; ``auto`` is the hardware's to resolve: cerepro.evaluation.rerank.resolve_precision)."""
        known = SCORING_PRECISIONS[1:] if scoring else PRECISIONS
        if name not in known:
            raise PrecisionError(f"{'scoring' if scoring else 'training'} precision {name!r} is not one of {known}")
        return PRECISION_TABLE[name]

    def __str__(self) -> str:
        return self.name

    def peak_tflops(self, gpu: str) -> float | None:
        """Dense peak TFLOP/s of the GPU named ``gpu`` at this precision; None for a GPU not listed."""
        column = 1 + ("bf16", "tf32", "fp32").index(self.peak)
        return next((row[column] for row in GPU_PEAK_TFLOPS if row[0] in gpu), None)


# torch.set_float32_matmul_precision: "high" (TF32) is what xpm-torch's learner sets for "32-true"
# runs from 19 Feb 2026 (the table's ran before, at "highest"). For bf16-mixed its newer Fabric
# configuration sets "medium" (bf16 inside fp32 matmuls); "high" here keeps the fp32 validation
# scores of a bf16 run free of bf16 rounding (listed in the book). Scoring: fp32 weights and
# activations for every trained run, TF32 matmuls for tf32 runs; never bf16 (a bf16 logit has 8
# significant bits, so close candidates among 1,000 would tie and follow the doc-id tie-break).
PRECISION_TABLE = {p.name: p for p in (
    Precision("fp32", matmul="highest", autocast=None, scoring="fp32", peak="fp32"),
    Precision("tf32", matmul="high", autocast=None, scoring="tf32", peak="tf32"),
    Precision("bf16-mixed", matmul="high", autocast="bfloat16", scoring="fp32", peak="bf16"),
    Precision("bf16", matmul=None, autocast="bfloat16", scoring="bf16", peak="bf16"),
)}  # fmt: skip
# Dense peak TFLOP/s per GPU in bf16 / TF32 / fp32 (CUDA cores), for MFU and the cost plan; a
# device matches the first row whose name its name contains. H100 is the SXM part.
GPU_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0, 378.0, 51.0), ("H100 NVL", 835.0, 418.0, 60.0), ("H100", 989.0, 494.7, 66.9),
    ("GH200", 989.0, 495.0, 67.0), ("H200", 989.0, 495.0, 67.0), ("B200", 2250.0, 1125.0, 80.0),
    ("A100", 312.0, 156.0, 19.5), ("L40S", 362.0, 183.0, 91.6), ("L4", 121.0, 60.0, 30.3),
    ("A10G", 70.0, 35.0, 31.2), ("RTX 4090", 165.0, 82.6, 82.6),
)  # fmt: skip

# ---------------------------------------------------------------------------------------------
# Measures: ir_measures strings, and how a run's validation values are aggregated

VALIDATION_AGGREGATES = ("best-so-far", "current")  # over each set's best value so far, or the current


def parse_measures(measures) -> dict[str, ir_measures.Measure]:
    """Parse ir_measures strings; the key is the canonical name (aliases like ``MRR@10`` become
    ``RR@10``). An unknown or malformed string raises ValueError naming it."""
    if isinstance(measures, str):
        measures = [measures]
    parsed = {}
    for text in measures:
        try:
            measure = ir_measures.parse_measure(text)
            measure.validate_params()
        except (NameError, ValueError, AssertionError, SyntaxError) as error:
            raise ValueError(
                f"unknown measure string {text!r} ({error}); use ir_measures names such as "
                f"'nDCG@10', 'RR@10', 'AP', 'R@1000', 'P(rel=2)@10'"
            ) from None
        if not ir_measures.DefaultPipeline.supports(measure):
            raise ValueError(f"measure string {text!r}: no installed ir_measures provider computes it")
        name = explicit_measure(measure) if "rel" in measure.params else str(measure)
        if name in parsed:
            raise ValueError(f"measure {text!r} is listed twice (as {name!r})")
        parsed[name] = measure
    if not parsed:
        raise ValueError("no measures to compute")
    return parsed


def explicit_measure(measure) -> str:
    """The ir_measures string with its relevance threshold written out, even when it is the
    default that ir_measures' own repr omits: ``RR(rel=1)@10``, ``AP(rel=2)``, ``nDCG@10``."""
    text = str(measure)
    if "rel" not in measure.SUPPORTED_PARAMS or "rel=" in text:
        return text
    head, at, cutoff = text.partition("@")
    rel = f"rel={measure['rel']}"
    head = f"{head[:-1]},{rel})" if head.endswith(")") else f"{head}({rel})"
    return head + at + cutoff


# ---------------------------------------------------------------------------------------------
# Objectives: the paper's order (their records, cerepro.objectives) and one colour each


def objective_colours() -> dict[str, tuple[float, float, float]]:
    """One colour per objective slug, the same in every figure of the project."""
    return dict(_palette(tuple(objective_order())))


@functools.lru_cache(maxsize=4)
def _palette(slugs: tuple[str, ...]) -> dict[str, tuple[float, float, float]]:
    import seaborn as sns  # figures only: the rest of the package never needs matplotlib

    # seaborn's colorblind palette, hues picked apart: blue, sky blue, green, orange, purple,
    # black, grey (in its own order, hinge, margin-mse and adr-mse were orange, vermillion and
    # tan: three oranges side by side). Its light pink and yellow are unreadable on white.
    palette = sns.color_palette("colorblind", 10)
    colours = [
        palette[0],
        palette[9],
        palette[2],
        palette[1],
        palette[4],
        (0.0, 0.0, 0.0),
        palette[7],
        palette[3],
        palette[5],
    ]
    return dict(zip(slugs, colours * 2))
