"""The project's vocabulary: the names every module speaks, each parsed and explained here once.

    run ids        {backbone}.{objective}.s{seed}, {backbone}.{objective}.released, baseline.<name>,
                   first-stage                         run_id(), parse_run_id(), system_of(), run_source()
    datasets       ir_datasets ids, their short names and groups (params/datasets.yaml), demo splits
                                                       dataset_registry(), short_name(), dataset_id(), dataset_group()
    training       the training sources and what each gives an objective; the training data sets
    first stages   run names <slug>-top<depth> and the SPLADE models of params/first_stage.yaml
    precisions     training precisions, the scoring precision of each, re-ranking precisions
    measures       ir_measures strings parsed once; the validation aggregates  parse_measures()
    objectives     the paper's table order, and one colour per objective for every figure

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
# A trained run is {backbone}.{objective}.s{seed}; a released checkpoint {backbone}.{objective}.released.
RUN_ID = re.compile(r"^(?P<backbone>[^.]+)\.(?P<objective>[^.]+)\.(?:s(?P<seed>\d+)|(?P<released>released))$")
_SEED = re.compile(r"\.s\d+$")


def run_id(backbone: str, objective: str, seed: int) -> str:
    return f"{backbone}.{objective}.s{seed}"


def parse_run_id(run: str) -> tuple[str, str, int | None]:
    """``bert-base.infonce.s42`` -> ("bert-base", "infonce", 42); a released checkpoint
    ``bert-base.infonce.released`` -> ("bert-base", "infonce", None); a baseline
    ``baseline.<name>`` -> ("baseline", name, None); the first stage -> (first-stage, first-stage, None)."""
    if run == FIRST_STAGE:
        return FIRST_STAGE, FIRST_STAGE, None
    if run.startswith(f"{BASELINE}.") and run.count(".") == 1:
        return BASELINE, run.split(".", 1)[1], None
    match = RUN_ID.match(run)
    if not match:
        raise ValueError(
            f"run id {run!r} is not {{backbone}}.{{objective}}.s{{seed}}, "
            f"{{backbone}}.{{objective}}.{RELEASED}, {BASELINE}.<name> nor {FIRST_STAGE!r}"
        )
    return match["backbone"], match["objective"], int(match["seed"]) if match["seed"] else None


def system_of(run: str) -> str:
    """The run id without its seed suffix: ``ettin-17m.bce.s42`` -> ``ettin-17m.bce``."""
    return _SEED.sub("", run)


def run_source(run: str) -> str:
    """Where a run's model came from: ``released`` (the authors' checkpoint) or ``trained`` here."""
    return RELEASED if run.endswith(f".{RELEASED}") else TRAINED


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

RUN_NAME = re.compile(r"^(?P<slug>[A-Za-z0-9._-]+?)-top(?P<depth>[1-9][0-9]*)$")


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


def first_stage_run_name(slug: str, depth: int) -> str:
    """The run a first stage produces: ``splade-v3-distilbert`` at depth 1000 ->
    ``splade-v3-distilbert-top1000`` (read back as ``run:splade-v3-distilbert-top1000``)."""
    return f"{slug}-top{depth}"


def produced_run(source: str, root: Path | None = None) -> tuple[SpladeModel, int] | None:
    """``(model, depth)`` when the candidate source ``run:<slug>-top<depth>`` names a first stage
    the grid produces; None for every other source (bm25, user-placed runs, paths)."""
    if not source.startswith("run:"):
        return None
    match = RUN_NAME.match(source[len("run:") :])
    if not match:
        return None
    model = first_stage_models(root).get(match["slug"])
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
# How an evaluation collection's documents become text (cerepro.data.datasets.document_text):
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
# torch.set_float32_matmul_precision per training precision. "high" (TF32) is what xpm-torch's
# learner sets for "32-true" runs from 19 Feb 2026 (the table's ran before, at "highest"). For
# bf16-mixed its newer Fabric configuration sets "medium" (bf16 inside fp32 matmuls); "high" here
# keeps the fp32 validation scores of a bf16 run free of bf16 rounding (listed in the book).
MATMUL_PRECISION = {"fp32": "highest", "tf32": "high", "bf16-mixed": "high"}
# Re-ranking (cerepro.evaluation.rerank): "auto" is bf16 on a GPU that supports it, else fp32; bf16 is the
# whole forward pass in bf16 (scoring has no fp32 master weights to mix with).
SCORING_PRECISIONS = ("auto", "fp32", "tf32", "bf16")
# Test-time (and validation) scoring precision per training precision: fp32 weights and
# activations for every run, TF32 matmuls for tf32 runs; never bf16 (a bf16 logit has 8
# significant bits, so close candidates among 1,000 would tie and follow the doc-id tie-break).
SCORING_PRECISION = {"fp32": "fp32", "tf32": "tf32", "bf16-mixed": "fp32"}

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
