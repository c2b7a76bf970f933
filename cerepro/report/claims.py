"""The paper's claims as tests on a table of cell means, and the authors' own table audited with them.

Each claim of the claims table is one function of a cell table (:class:`cerepro.report.cells.CellTable`:
the authors' table, :func:`cerepro.report.cells.paper_table`, or a grid's means,
:func:`cerepro.report.verdicts.cell_table`), so the verdict on the published numbers and the
verdict on ours come from the same code:

    table = paper_table()                      # 9 backbones x 6 objectives, + in-domain and ood
    found = audit(table)                       # key -> Claim: verdict, checked cells, exceptions
    found["llm-distillation"].exceptions       # the cells that contradict it, with both numbers
    scaling_gains(table, "in-domain")          # what the objective and the scale buy, arithmetic shown

A claim a table of means cannot decide (significance needs per-query values) says so: its
verdict is ``not testable on this table``. The other numbers the claims pages quote (aggregates,
ranks, best objectives) are :mod:`cerepro.report.derived`'.

This module computes on a cell table; it must not import torch, build a model, read runs or draw
(figures of a cell table are :mod:`cerepro.report.figures`').
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cerepro.objectives import BASELINE_OBJECTIVE, family
from cerepro.report.cells import CellTable
from cerepro.report.derived import best_of, ranked

# The paper's two families of objectives compared in its claims, and the baseline they are
# compared with (BASELINE_OBJECTIVE): each objective's record says its family.
RELATIVE = family("relative")
LLM_DISTILLATION = family("llm-distillation")
# Two means closer than this (nDCG@10) count as a tie in the claims' verdicts.
TIE_TOLERANCE = 0.01
_EPS = 1e-9  # float slack at the tolerance: 0.7408 - 0.7308 is 0.010000000000000009
SUPPORTED, NOT_SUPPORTED, NOT_RUN = "supported", "not supported", "not yet run"
UNTESTABLE = "not testable on this table"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, NOT_RUN, UNTESTABLE)

# key -> (research question, the claim as the paper states it, how a cell table tests it)
CLAIMS = {
    "relative-beats-bce": (
        "RQ1",
        "Relative objectives (pairwise MarginMSE, listwise InfoNCE) beat pointwise BCE on every backbone in-domain.",
        "infonce and margin-mse above bce on every backbone and in-domain column",
    ),
    "relative-significant": (
        "RQ1",
        "The gains of InfoNCE and MarginMSE over BCE are statistically significant (the paper marks "
        "significant differences with a t-test).",
        "every infonce and margin-mse vs bce difference on the in-domain columns significant: paired t-test, "
        "Holm-corrected over a backbone's objectives, p < 0.05 (the authors' Welch test counted alongside)",
    ),
    "relative-beats-bce-ood": (
        "RQ2",
        "Relative objectives beat pointwise BCE on every backbone under domain shift.",
        "infonce and margin-mse above bce on every backbone and out-of-domain column",
    ),
    "objective-vs-scaling": (
        "RQ3",
        "Objective choice can yield gains comparable to scaling the backbone (the abstract).",
        "on the in-domain mean: the mean over backbones of the best objective's gain over bce is at least the "
        "mean over objectives of the largest backbone's gain over the smallest",
    ),
    "llm-distillation": (
        "RQ4",
        "LLM distillation (DistillRankNet, ADR-MSE on RankZephyr lists) is competitive on TREC-DL for larger "
        "backbones, but not better than InfoNCE or MarginMSE.",
        f"on TREC-DL (else the in-domain columns): on the larger half of the backbones the best LLM objective is "
        f"within {TIE_TOLERANCE} of the best relative objective, and on no backbone more than {TIE_TOLERANCE} "
        "above it",
    ),
    "consistent-choice": (
        "RQ5",
        "A controlled evaluation gives a consistent design choice: InfoNCE or MarginMSE is the best "
        "objective on every backbone and setting (our reading of RQ5 from the headline claims).",
        f"in every (backbone, column) cell, infonce or margin-mse is best or within {TIE_TOLERANCE} of the best",
    ),
}
# The numbers each claim reports (None when not yet run), for the book's prose.
CLAIM_NUMBERS = {
    "relative-beats-bce": ("wins", "cells", "min_gain", "mean_gain", "significant", "tested"),
    "relative-significant": ("significant", "welch", "tested"),
    "relative-beats-bce-ood": ("wins", "cells", "min_gain", "mean_gain", "significant", "tested"),
    "objective-vs-scaling": ("objective_gain", "scaling_gain", "smallest", "largest", "column"),
    "llm-distillation": ("columns", "larger", "min_gap_larger", "max_gap"),
    "consistent-choice": ("consistent", "cells", "most_often_best", "times_best"),
}


# ---------------------------------------------------------------------------------------------
# Claims


@dataclass(frozen=True, eq=False)
class Claim:
    """A claim's verdict on one cell table: the cells checked (``checks``, one row each with
    ``holds``), the exceptions named with their numbers, and the figures the prose quotes."""

    key: str
    rq: str
    claim: str
    test: str
    verdict: str
    evidence: str
    numbers: dict
    checks: pd.DataFrame = field(default_factory=pd.DataFrame)
    exceptions: tuple[str, ...] = ()

    @property
    def support(self) -> str:
        """``n of m cells`` where the claim was checked cell by cell, else ""."""
        if self.checks.empty:
            return ""
        return f"{int(self.checks['holds'].sum())} of {len(self.checks)}"

    @property
    def share(self) -> str:
        """How close the claim comes: ``50 of 54 (93%)`` where checked cell by cell, else ""."""
        if self.checks.empty:
            return ""
        return f"{self.support} ({100 * self.checks['holds'].mean():.0f}%)"


def _claim(
    key: str,
    verdict: str,
    evidence: str,
    numbers: dict | None = None,
    checks: pd.DataFrame | None = None,
    exceptions=(),
) -> Claim:
    rq, text, test = CLAIMS[key]
    numbers = {k: (numbers or {}).get(k) for k in CLAIM_NUMBERS[key]}
    return Claim(
        key, rq, text, test, verdict, evidence, numbers, pd.DataFrame() if checks is None else checks, tuple(exceptions)
    )


def _f(x: float) -> str:
    return f"{x:.4f}"


def relative_beats_bce(table: CellTable, key: str = "relative-beats-bce", tests: pd.DataFrame | None = None) -> Claim:
    """RQ1 (in-domain columns) or RQ2 (``relative-beats-bce-ood``, out-of-domain columns): each
    relative objective above bce, backbone by backbone and column by column."""
    columns = table.in_domain if key == "relative-beats-bce" else table.out_of_domain
    rows = []
    for column in columns:
        for backbone in table.backbones:
            base = table.value(backbone, BASELINE_OBJECTIVE, column)
            for objective in RELATIVE:
                value = table.value(backbone, objective, column)
                if np.isnan(base) or np.isnan(value):
                    continue
                rows.append(
                    {
                        "backbone": backbone,
                        "column": column,
                        "objective": objective,
                        "value": value,
                        "versus": BASELINE_OBJECTIVE,
                        "versus_value": base,
                        "diff": value - base,
                        "holds": value > base,
                        "lines": table.where((backbone, objective), (backbone, BASELINE_OBJECTIVE)),
                    }
                )
    if not rows:
        return _claim(key, NOT_RUN, "needs bce and infonce or margin-mse on the same backbone and column")
    checks = pd.DataFrame(rows)
    numbers = {
        "wins": int(checks["holds"].sum()),
        "cells": len(checks),
        "min_gain": float(checks["diff"].min()),
        "mean_gain": float(checks["diff"].mean()),
    }
    evidence = (
        f"{numbers['wins']} of {numbers['cells']} (backbone, column, objective) cells above bce on "
        f"{', '.join(columns)}; mean gain {numbers['mean_gain']:+.3f}, smallest {numbers['min_gain']:+.3f}"
    )
    if tests is not None:
        tested = _tests_on(tests, columns)
        numbers |= {"significant": int(tested["paired"].sum()), "tested": len(tested)}
        evidence += f"; {numbers['significant']} of {numbers['tested']} significant (paired t, Holm)"
    exceptions = [
        f"{r.backbone} on {r.column}: {r.objective} {_f(r.value)} vs bce {_f(r.versus_value)} "
        f"({r.diff:+.4f})" + (f", {r.lines}" if r.lines else "")
        for r in checks[~checks["holds"]].itertuples()
    ]
    verdict = SUPPORTED if not exceptions else NOT_SUPPORTED
    return _claim(key, verdict, evidence, numbers, checks, exceptions)


def _tests_on(tests: pd.DataFrame, columns) -> pd.DataFrame:
    return tests[tests["column"].isin(columns) & tests["objective"].isin(RELATIVE)]


def relative_significant(table: CellTable, tests: pd.DataFrame | None) -> Claim:
    """RQ1's significance: needs per-query values, so a table of means cannot test it
    (``tests`` None); else the tests of :func:`cerepro.report.tables.significance` against bce."""
    if tests is None:
        return _claim(
            "relative-significant",
            UNTESTABLE,
            "needs per-query values of every run; a table of means over seeds has none",
        )
    tested = _tests_on(tests, table.in_domain)
    if tested.empty:
        return _claim("relative-significant", NOT_RUN, "needs per-query results of bce and a relative objective")
    numbers = {"significant": int(tested["paired"].sum()), "welch": int(tested["welch"].sum()), "tested": len(tested)}
    checks = tested[["backbone", "column", "objective", "diff", "p_holm", "p_welch"]].assign(
        holds=tested["paired"].to_numpy()
    )
    exceptions = [
        f"{r.backbone} on {r.column}: {r.objective} {r.diff:+.4f} over bce, p = {r.p_holm:.3g} (Holm)"
        for r in checks[~checks["holds"]].itertuples()
    ]
    evidence = (
        f"{numbers['significant']} of {numbers['tested']} differences significant (paired t, Holm); "
        f"{numbers['welch']} under the authors' Welch test"
    )
    return _claim(
        "relative-significant",
        SUPPORTED if not exceptions else NOT_SUPPORTED,
        evidence,
        numbers,
        checks.reset_index(drop=True),
        exceptions,
    )


def scaling_gains(table: CellTable, column: str | None = None) -> pd.DataFrame:
    """What the objective buys and what scaling buys on one column (default: the in-domain
    mean), each with its arithmetic and CSV lines: one ``objective gain`` row per backbone
    (best objective minus bce) and one ``scaling gain`` row per objective (largest backbone
    minus smallest)."""
    column = column or table.in_domain_mean
    rows = []
    if column is None or column not in table.values.columns:
        return pd.DataFrame(columns=["gain", "on", "value", "arithmetic", "lines"])
    for backbone in table.backbones:
        cells = dict(ranked(table, backbone, column))
        if BASELINE_OBJECTIVE not in cells or len(cells) < 2:
            continue
        best, best_value = next(iter(cells.items()))
        gain = best_value - cells[BASELINE_OBJECTIVE]
        rows.append(
            {
                "gain": "objective",
                "on": backbone,
                "value": gain,
                "arithmetic": f"{best} {_f(best_value)} − bce {_f(cells[BASELINE_OBJECTIVE])} = {gain:+.4f}",
                "lines": table.where((backbone, best), (backbone, BASELINE_OBJECTIVE)),
            }
        )
    present = [b for b in table.backbones if any(not np.isnan(table.value(b, o, column)) for o in table.objectives)]
    if len(present) > 1:
        smallest, largest = smallest_and_largest(table, column)
        for objective in table.objectives:
            low, high = table.value(smallest, objective, column), table.value(largest, objective, column)
            if np.isnan(low) or np.isnan(high):
                continue
            rows.append(
                {
                    "gain": "scaling",
                    "on": objective,
                    "value": high - low,
                    "arithmetic": f"{largest} {_f(high)} − {smallest} {_f(low)} = {high - low:+.4f}",
                    "lines": table.where((largest, objective), (smallest, objective)),
                }
            )
    return pd.DataFrame(rows, columns=["gain", "on", "value", "arithmetic", "lines"])


def objective_vs_scaling(table: CellTable) -> Claim:
    """RQ3 and the abstract: the mean objective gain against the mean scaling gain on the
    in-domain mean; a backbone whose own objective gain falls short is named."""
    column = table.in_domain_mean
    gains = scaling_gains(table, column)
    objective, scaling = gains[gains["gain"] == "objective"], gains[gains["gain"] == "scaling"]
    if objective.empty or scaling.empty:
        return _claim(
            "objective-vs-scaling",
            NOT_RUN,
            "needs in-domain results of bce and another objective on at least two backbones",
        )
    smallest, largest = smallest_and_largest(table, column)
    numbers = {
        "objective_gain": float(objective["value"].mean()),
        "scaling_gain": float(scaling["value"].mean()),
        "smallest": smallest,
        "largest": largest,
        "column": column,
    }
    checks = objective.rename(columns={"on": "backbone"}).assign(
        column=column, versus=numbers["scaling_gain"], holds=lambda t: t["value"] >= numbers["scaling_gain"] - _EPS
    )
    exceptions = [
        f"{r.backbone}: {r.arithmetic}, below the mean scaling gain {numbers['scaling_gain']:+.4f}"
        + (f", {r.lines}" if r.lines else "")
        for r in checks[~checks["holds"]].itertuples()
    ]
    verdict = SUPPORTED if numbers["objective_gain"] >= numbers["scaling_gain"] - _EPS else NOT_SUPPORTED
    evidence = (
        f"on {column}: best objective over bce {numbers['objective_gain']:+.3f} (mean over {len(objective)} "
        f"backbones); {numbers['largest']} over {numbers['smallest']} {numbers['scaling_gain']:+.3f} "
        f"(mean over {len(scaling)} objectives)"
    )
    return _claim("objective-vs-scaling", verdict, evidence, numbers, checks.reset_index(drop=True), exceptions)


def smallest_and_largest(table: CellTable, column: str) -> tuple[str, str]:
    """The smallest and the largest backbone with a number on ``column``."""
    present = [b for b in table.backbones if any(not np.isnan(table.value(b, o, column)) for o in table.objectives)]
    return present[0], present[-1]


def llm_distillation(table: CellTable) -> Claim:
    """RQ4: the best LLM-distilled objective against the best relative one on TREC DL, per
    backbone; competitive (within the tie tolerance) on the larger half of the backbones, and
    not above it by more than the tolerance anywhere."""
    columns = table.trec_dl or table.in_domain
    larger = table.backbones[len(table.backbones) // 2 :]
    rows = []
    for column in columns:
        for backbone in table.backbones:
            llm, llm_value = best_of(table, backbone, column, LLM_DISTILLATION)
            relative, relative_value = best_of(table, backbone, column, RELATIVE)
            if llm is None or relative is None:
                continue
            gap = llm_value - relative_value
            competitive = backbone not in larger or gap >= -TIE_TOLERANCE - _EPS
            rows.append(
                {
                    "backbone": backbone,
                    "column": column,
                    "objective": llm,
                    "value": llm_value,
                    "versus": relative,
                    "versus_value": relative_value,
                    "diff": gap,
                    "larger": backbone in larger,
                    "holds": competitive and gap <= TIE_TOLERANCE + _EPS,
                    "lines": table.where((backbone, llm), (backbone, relative)),
                }
            )
    if not rows:
        return _claim(
            "llm-distillation",
            NOT_RUN,
            "needs TREC-DL (or in-domain) results of an LLM-distilled and a relative objective",
        )
    checks = pd.DataFrame(rows)
    on_larger = checks[checks["larger"]]
    numbers = {
        "columns": ", ".join(dict.fromkeys(checks["column"])),
        "larger": ", ".join(larger),
        "min_gap_larger": float(on_larger["diff"].min()) if not on_larger.empty else None,
        "max_gap": float(checks["diff"].max()),
    }
    exceptions = [
        f"{r.backbone} on {r.column}: {r.objective} {_f(r.value)} vs {r.versus} {_f(r.versus_value)} "
        f"({r.diff:+.4f}, {'better' if r.diff > 0 else 'not competitive'})" + (f", {r.lines}" if r.lines else "")
        for r in checks[~checks["holds"]].itertuples()
    ]
    worst = "n/a" if numbers["min_gap_larger"] is None else f"{numbers['min_gap_larger']:+.3f}"
    evidence = (
        f"best LLM objective minus best relative objective on {numbers['columns']}: at worst {worst} on "
        f"the larger backbones ({numbers['larger']}), at best {numbers['max_gap']:+.3f} on any backbone; "
        f"{int(checks['holds'].sum())} of {len(checks)} (backbone, column) cells as claimed"
    )
    verdict = SUPPORTED if not exceptions else NOT_SUPPORTED
    return _claim("llm-distillation", verdict, evidence, numbers, checks, exceptions)


def consistent_choice(table: CellTable) -> Claim:
    """RQ5: in every (backbone, column) cell a relative objective is best or tied with the best."""
    rows = []
    for column in table.columns:
        for backbone in table.backbones:
            best, best_value = best_of(table, backbone, column, table.objectives)
            relative, relative_value = best_of(table, backbone, column, RELATIVE)
            if relative is None or sum(not np.isnan(table.value(backbone, o, column)) for o in table.objectives) < 2:
                continue
            rows.append(
                {
                    "backbone": backbone,
                    "column": column,
                    "objective": relative,
                    "value": relative_value,
                    "versus": best,
                    "versus_value": best_value,
                    "diff": relative_value - best_value,
                    "holds": relative_value >= best_value - TIE_TOLERANCE - _EPS,
                    "lines": table.where((backbone, relative), (backbone, best)),
                }
            )
    if not rows:
        return _claim("consistent-choice", NOT_RUN, "needs results of several objectives")
    checks = pd.DataFrame(rows)
    counts = checks["versus"].value_counts()
    numbers = {
        "consistent": int(checks["holds"].sum()),
        "cells": len(checks),
        "most_often_best": counts.index[0],
        "times_best": int(counts.iloc[0]),
    }
    exceptions = [
        f"{r.backbone} on {r.column}: best {r.versus} {_f(r.versus_value)}, best relative {r.objective} "
        f"{_f(r.value)} ({r.diff:+.4f})" + (f", {r.lines}" if r.lines else "")
        for r in checks[~checks["holds"]].itertuples()
    ]
    evidence = (
        f"{numbers['consistent']} of {numbers['cells']} (backbone, column) cells; best most often: "
        f"{numbers['most_often_best']} ({numbers['times_best']} cells)"
    )
    return _claim(
        "consistent-choice", SUPPORTED if not exceptions else NOT_SUPPORTED, evidence, numbers, checks, exceptions
    )


def audit(table: CellTable, tests: pd.DataFrame | None = None) -> dict[str, Claim]:
    """Every claim of :data:`CLAIMS` tested on ``table``, in the claims table's order.
    ``tests``: per-query significance tests against bce (:func:`cerepro.report.tables.significance`)
    where the table comes from runs; None for a table of means (the authors')."""
    if table.empty:
        found = [
            _claim(
                key,
                UNTESTABLE if key == "relative-significant" and tests is None else NOT_RUN,
                "no finished evaluation",
            )
            for key in CLAIMS
        ]
        return {c.key: c for c in found}
    found = [
        relative_beats_bce(table, "relative-beats-bce", tests),
        relative_significant(table, tests),
        relative_beats_bce(table, "relative-beats-bce-ood", tests),
        objective_vs_scaling(table),
        llm_distillation(table),
        consistent_choice(table),
    ]
    return {c.key: c for c in found}


def audit_table(found: dict[str, Claim], sep: str = "; ") -> pd.DataFrame:
    """One row per claim: RQ, claim, the cells that hold (how close it comes), the exceptions
    (joined by ``sep``), then the strict verdict (every cell as claimed)."""
    rows = [
        {
            "RQ": c.rq,
            "claim": c.claim,
            "cells as claimed": c.share or "—",
            "exceptions": (sep.join(c.exceptions) or "none") if c.verdict in (SUPPORTED, NOT_SUPPORTED) else c.evidence,
            "verdict": c.verdict,
        }
        for c in found.values()
    ]
    return pd.DataFrame(rows)
