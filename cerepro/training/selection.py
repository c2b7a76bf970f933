"""Model selection and early stopping over the validation sets: which checkpoint a run keeps.

Each validation gives one value per validation set (``validation_measure`` of the re-ranked
candidates). :class:`Selection` turns them into one aggregate and decides, at each validation,
whether the model of that step becomes the selected one, and after each step whether training
stops early. Two aggregates:

- ``"best-so-far"``: the mean over the sets of each set's best value so far. The rule of the code
  that produced the paper's table: xpmir's ``AggregatorValidationListener`` (``validation.py``,
  29 Jan - 20 Feb 2026) averages the ``top`` value of every per-set ``ValidationListener``, and
  keeps the model of a validation whose aggregate is strictly above the best aggregate so far.
  The aggregate never falls; it rises whenever one set reaches a new best, so the selected model
  is that of the last validation at which some set improved.
- ``"current"``: the mean of this validation's values, kept when strictly above the best mean
  so far (cerepro before the table's code was read; the usual rule).

Early stopping (``patience_steps`` > 0): training stops after the first step at which
``patience_steps`` steps have passed since the selected model's step, as xpm-torch's learner
(commit 8847b91, 12 Feb 2026, until f0cb12a, 19 Feb 2026, which also turned TF32 on) did with ``early_stop_epochs=100`` epochs of 100
steps on the ``aggregated_validation`` listener: checked after every epoch, after the listeners,
never before the first validation. ``patience_steps=0`` never stops.

This module is pure bookkeeping: it never sees a model, a tokenizer or a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cerepro.vocab import VALIDATION_AGGREGATES


class Selection:
    """The selection state of one run; ``state()`` / ``from_state()`` round-trip it through a
    checkpoint (plain JSON-able values)."""

    def __init__(self, aggregate: str = "best-so-far", patience_steps: int = 0):
        if aggregate not in VALIDATION_AGGREGATES:
            raise ValueError(f"aggregate must be one of {VALIDATION_AGGREGATES}, got {aggregate!r}")
        if patience_steps < 0:
            raise ValueError(f"patience_steps must be >= 0, got {patience_steps}")
        self.aggregate, self.patience_steps = aggregate, patience_steps
        self.best_per_set: dict[str, float] = {}  # each set's best value so far
        self.value: float | None = None  # the aggregate at the last validation
        self.best_step: int | None = None  # the selected model's step
        self.best_value: float | None = None  # the aggregate when it was selected
        self.best_per_dataset: dict[str, float] = {}  # the current values at the selected step

    def update(self, step: int, values: Mapping[str, float]) -> bool:
        """Record the validation of ``step`` (one value per set); True when the model of this
        step becomes the selected one."""
        if not values:
            raise ValueError(f"step {step}: a validation needs at least one set's value")
        values = {k: float(v) for k, v in values.items()}
        for name, value in values.items():
            if not np.isfinite(value):
                raise ValueError(f"step {step}: validation set {name!r} gave {value}")
            # strict '>' as the per-set listener: a tie keeps the earlier best
            if name not in self.best_per_set or value > self.best_per_set[name]:
                self.best_per_set[name] = value
        if self.aggregate == "best-so-far":
            self.value = float(np.mean([self.best_per_set[k] for k in values]))
        else:
            self.value = float(np.mean(list(values.values())))
        if self.best_value is None or self.value > self.best_value:
            self.best_step, self.best_value, self.best_per_dataset = step, self.value, values
            return True
        return False

    def should_stop(self, step: int) -> bool:
        """True once ``patience_steps`` steps have passed since the selected model's step."""
        if self.patience_steps == 0 or self.best_step is None:
            return False
        return step - self.best_step >= self.patience_steps

    def state(self) -> dict[str, Any]:
        return {
            "aggregate": self.aggregate,
            "patience_steps": self.patience_steps,
            "best_per_set": dict(self.best_per_set),
            "value": self.value,
            "best_step": self.best_step,
            "best_value": self.best_value,
            "best_per_dataset": dict(self.best_per_dataset),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Selection:
        out = cls(state["aggregate"], state["patience_steps"])
        out.best_per_set = dict(state["best_per_set"])
        out.value, out.best_step, out.best_value = state["value"], state["best_step"], state["best_value"]
        out.best_per_dataset = dict(state["best_per_dataset"])
        return out
