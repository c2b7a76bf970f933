"""What an objective is: one declared record per training objective, read without torch.

A record says everything the rest of the package needs to know about an objective: its loss
function (named by import path, imported only when a run trains), the inputs its training source
must give and those it reads, its hyperparameters with their defaults (each settable from params
under its name), its family in the paper's claims, and whether it is one of the paper's six. The
records are listed once, in the order of the paper's tables::

    get("adr-mse").defaults          # {"temperature": 1.0, "discount": "log2"}
    get("adr-mse").function()        # cerepro.training.losses.adr_mse (imports torch)
    order(); family("relative"); PAPER_OBJECTIVES; BASELINE_OBJECTIVE

Params stay data: ``params/objectives/<slug>.yaml`` names an objective by its slug and sets its
hyperparameters by name; it never holds or names code. An objective defined outside cerepro is
registered by its own package, through the entry-point group ``cerepro.objectives``::

    [project.entry-points."cerepro.objectives"]     # the package's pyproject.toml
    square-hinge = "mypackage.objectives:SQUARE_HINGE"   # an Objective whose slug is square-hinge

Its loss follows the calling convention of :mod:`cerepro.training.losses`.

This module imports nothing of cerepro and never torch: params validation (:mod:`cerepro.config`)
and the report read it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINTS = "cerepro.objectives"
# What a training source can give an objective besides the student's scores (cerepro.vocab's
# SOURCE_PROVIDES says which source gives which).
INPUTS = ("labels", "teacher")
# The objectives' families in the paper's claims: the pointwise baseline the others are compared
# with, the relative objectives (pairwise MarginMSE, listwise InfoNCE) and LLM distillation.
FAMILIES = ("baseline", "relative", "llm-distillation")
DISCOUNTS = ("log2", "reciprocal", None)  # adr-mse's weights of a squared rank error
SLUG = re.compile(r"[a-z0-9][a-z0-9-]*")
LOSS_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


class ObjectiveError(ValueError):
    """An objective that is not registered, or a record that cannot describe one."""


@dataclass(frozen=True)
class Hyperparameter:
    """One keyword argument of a loss, set from params under ``name``. ``kind``: the type of its
    values (an int is taken as a float); ``choices``: the allowed values, when they are few;
    ``positive``: must be > 0. None is allowed when it is the default or one of the choices."""

    name: str
    default: Any
    kind: type = float
    choices: tuple = ()
    positive: bool = False

    def check(self, value: Any) -> Any:
        """``value`` as the loss takes it; ValueError saying what it must be."""
        if value is None and (self.default is None or None in self.choices):
            return None
        if self.kind is float and isinstance(value, str):
            try:  # YAML 1.1 reads "1e-5" as a string
                value = float(value)
            except ValueError:
                pass
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.kind) or (isinstance(value, bool) and self.kind is not bool):
            none = " or null" if self.default is None or None in self.choices else ""
            raise ValueError(f"expects {self.kind.__name__}{none}, got {value!r} ({type(value).__name__})")
        if self.choices and value not in self.choices:
            raise ValueError(f"must be one of {self.choices}")
        if self.positive and not value > 0:
            raise ValueError("must be > 0")
        return value


@dataclass(frozen=True)
class Objective:
    """One training objective. ``loss``: its function as ``module:name``; ``requires``: the inputs
    (of ``INPUTS``) it cannot run without, which its training source must give; ``accepts``: those
    it reads (any other is refused); ``family``: its family in the paper's claims (one of
    ``FAMILIES``, or None); ``paper``: one of the paper's six; ``min_group_size``: the fewest
    passages a group may hold (2 for an objective that compares passages)."""

    slug: str
    loss: str
    requires: frozenset[str] = frozenset()
    accepts: frozenset[str] = frozenset()
    hyperparameters: tuple[Hyperparameter, ...] = ()
    family: str | None = None
    paper: bool = False
    min_group_size: int = 2

    def __post_init__(self):
        object.__setattr__(self, "requires", frozenset(self.requires))
        object.__setattr__(self, "accepts", frozenset(self.accepts))
        object.__setattr__(self, "hyperparameters", tuple(self.hyperparameters))
        where = f"objective {self.slug!r}"
        if not isinstance(self.slug, str) or not SLUG.fullmatch(self.slug):
            raise ObjectiveError(f"{where}: a slug is lower-case letters, digits and '-'")
        if not isinstance(self.loss, str) or not LOSS_PATH.fullmatch(self.loss):
            raise ObjectiveError(f"{where}: loss {self.loss!r} is not 'module:function'")
        if not self.requires <= self.accepts <= set(INPUTS):
            raise ObjectiveError(
                f"{where}: requires {sorted(self.requires)} must be among accepts "
                f"{sorted(self.accepts)}, and both among {INPUTS}"
            )
        if self.family is not None and self.family not in FAMILIES:
            raise ObjectiveError(f"{where}: family {self.family!r} is not one of {FAMILIES} (or None)")
        names = [h.name for h in self.hyperparameters]
        if len(set(names)) != len(names):
            raise ObjectiveError(f"{where}: a hyperparameter is declared twice: {names}")
        if not 1 <= self.min_group_size:
            raise ObjectiveError(f"{where}: min_group_size must be >= 1")

    @property
    def defaults(self) -> dict[str, Any]:
        """The hyperparameters at their declared defaults, by name."""
        return {h.name: h.default for h in self.hyperparameters}

    def function(self) -> Callable:
        """The loss, imported now; an ObjectiveError when it cannot be, or when its keyword
        arguments do not match the declared hyperparameters and their defaults."""
        module, _, name = self.loss.partition(":")
        try:
            function = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ObjectiveError(f"objective {self.slug!r}: cannot import its loss {self.loss!r}: {exc}") from None
        parameters = inspect.signature(function).parameters
        for h in self.hyperparameters:
            given = parameters.get(h.name)
            if given is None or given.kind is not inspect.Parameter.KEYWORD_ONLY or given.default != h.default:
                raise ObjectiveError(
                    f"objective {self.slug!r}: its loss {self.loss} must take the keyword argument "
                    f"{h.name}={h.default!r} that the record declares"
                )
        return function


# The paper's six in the order of its tables, then cerepro's extension. Each loss's formula,
# shapes and source are in its docstring (cerepro.training.losses) and the book's Objectives page.
# hinge is pairwise, but the paper's claims name only InfoNCE and MarginMSE as relative objectives.
LOSSES = "cerepro.training.losses"
TEMPERATURE = Hyperparameter("temperature", 1.0, positive=True)
BUILTIN = (
    Objective("bce", f"{LOSSES}:bce", accepts={"labels"}, family="baseline", paper=True, min_group_size=1),
    Objective(
        "hinge", f"{LOSSES}:hinge", accepts={"labels"}, hyperparameters=(Hyperparameter("margin", 1.0),), paper=True
    ),
    Objective(
        "infonce",
        f"{LOSSES}:infonce",
        accepts={"labels"},
        hyperparameters=(TEMPERATURE,),
        family="relative",
        paper=True,
    ),
    Objective(
        "margin-mse",
        f"{LOSSES}:margin_mse",
        requires={"teacher"},
        accepts={"labels", "teacher"},
        family="relative",
        paper=True,
    ),
    Objective(
        "distill-ranknet",
        f"{LOSSES}:distill_ranknet",
        requires={"teacher"},
        accepts={"teacher"},
        family="llm-distillation",
        paper=True,
    ),
    Objective(
        "adr-mse",
        f"{LOSSES}:adr_mse",
        requires={"teacher"},
        accepts={"teacher"},
        hyperparameters=(TEMPERATURE, Hyperparameter("discount", "log2", kind=str, choices=DISCOUNTS)),
        family="llm-distillation",
        paper=True,
    ),
    Objective(
        "listnet-kl",
        f"{LOSSES}:listnet_kl",
        requires={"teacher"},
        accepts={"teacher"},
        hyperparameters=(TEMPERATURE, Hyperparameter("teacher_temperature", None, positive=True)),
    ),
)
PAPER_OBJECTIVES = tuple(o.slug for o in BUILTIN if o.paper)
BASELINE_OBJECTIVE = next(o.slug for o in BUILTIN if o.family == "baseline")  # what the others are compared with


def registry() -> dict[str, Objective]:
    """Every objective by slug: cerepro's in the paper's order, then those other packages
    register (by entry-point name)."""
    return dict(_registry())


@functools.lru_cache(maxsize=1)
def _registry() -> tuple[tuple[str, Objective], ...]:
    found = {o.slug: o for o in BUILTIN}
    for entry in sorted(entry_points(group=ENTRY_POINTS), key=lambda e: e.name):
        where = f"entry point {entry.name} = {entry.value} (group {ENTRY_POINTS})"
        try:
            record = entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is named, whatever it raised
            raise ObjectiveError(f"{where} cannot be loaded: {exc}") from None
        if not isinstance(record, Objective):
            raise ObjectiveError(f"{where} is a {type(record).__name__}, not a cerepro.objectives.Objective")
        if record.slug != entry.name:
            raise ObjectiveError(f"{where}: the record's slug {record.slug!r} differs from the entry point's name")
        if record.slug in found:
            raise ObjectiveError(f"{where}: objective {record.slug!r} is registered already")
        found[record.slug] = record
    return tuple(found.items())


def get(slug: str) -> Objective:
    """The record of ``slug``; an ObjectiveError naming the registered ones if there is none."""
    known = registry()
    if slug not in known:
        raise ObjectiveError(
            f"unknown objective {slug!r}; registered: {', '.join(known)} (an objective of another "
            f"package registers through its entry points, group {ENTRY_POINTS!r})"
        )
    return known[slug]


def order(slugs: Iterable[str] | None = None) -> list[str]:
    """Every registered slug in the paper's order (then the others); with ``slugs``, those in
    that order, unknown ones last (sorted)."""
    known = list(registry())
    if slugs is None:
        return known
    present = set(slugs)
    return [o for o in known if o in present] + sorted(present - set(known))


def family(name: str) -> tuple[str, ...]:
    """The slugs of family ``name`` (one of ``FAMILIES``), in order."""
    if name not in FAMILIES:
        raise ObjectiveError(f"unknown family {name!r}; known: {FAMILIES}")
    return tuple(slug for slug, o in registry().items() if o.family == name)
