"""A table of cell means, and the authors' table read as one.

A *cell table* (:class:`CellTable`) holds one number per (backbone, objective, column): a mean
over seeds of nDCG@10, with what the claims need to know about its columns (which are
in-domain, which out of domain, which TREC DL) and, for published numbers, the CSV line of each
cell. The authors' table, ``params/expected/paper-ndcg10.csv``, is one (:func:`paper_table`),
its in-domain and OOD means derived as the paper derives them (:mod:`cerepro.report.aggregates`);
:func:`cerepro.report.verdicts.cell_table` builds another from a grid's runs. The claims
(:mod:`cerepro.report.claims`) are tests on either.

This module reads one CSV with pandas; it must not import torch, build a model, read runs or draw.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cerepro.paths import params_dir, project_root
from cerepro.report import aggregates
from cerepro.vocab import IN_DOMAIN, OOD, dataset_group, dataset_registry

PAPER_TABLE = "paper-ndcg10.csv"


class TableError(ValueError):
    """A table of published numbers that cannot be audited: names the file, line and column."""


@dataclass(frozen=True, eq=False)
class CellTable:
    """One mean per (backbone, objective, column), with what the claims need to know about it.

    ``values``: indexed by (backbone, objective), one column per table column (derived
    aggregates included). ``columns``: the columns tested one by one, ``in_domain`` and
    ``out_of_domain`` their two settings, ``trec_dl`` the TREC DL ones; ``in_domain_mean`` the
    column holding the in-domain mean (None without one). ``backbones``: smallest first.
    ``lines``: (backbone, objective) -> the CSV line the numbers were read from (published
    tables only). ``source``: where the numbers come from, as the book names it; ``label``: the
    title its figures carry."""

    values: pd.DataFrame
    backbones: tuple[str, ...]
    objectives: tuple[str, ...]
    in_domain: tuple[str, ...]
    out_of_domain: tuple[str, ...]
    trec_dl: tuple[str, ...] = ()
    in_domain_mean: str | None = None
    source: str = ""
    label: str = ""
    published: bool = False
    lines: dict = field(default_factory=dict)
    first_stage: dict = field(default_factory=dict)  # column -> the first stage's value, where known

    @property
    def columns(self) -> tuple[str, ...]:
        return self.in_domain + self.out_of_domain

    @property
    def shown(self) -> list[str]:
        """The columns a figure draws: the tested ones, then the aggregates."""
        extra = [c for c in (IN_DOMAIN, OOD) if c in self.values.columns and c not in self.columns]
        return [*self.columns, *extra]

    @property
    def empty(self) -> bool:
        return self.values.empty or not self.columns

    def value(self, backbone: str, objective: str, column: str) -> float:
        try:
            return float(self.values.loc[(backbone, objective), column])
        except KeyError:
            return float("nan")

    def where(self, *cells) -> str:
        """The CSV lines of (backbone, objective) pairs: ``line 4``, ``lines 2, 4`` or ``lines 2–7``
        ("" when the numbers are not read from a file)."""
        lines = sorted({self.lines[c] for c in cells if c in self.lines})
        if not lines:
            return ""
        if len(lines) == 1:
            return f"line {lines[0]}"
        runs, start = [], lines[0]  # three or more consecutive lines as a range: 2–7
        for previous, line in zip(lines, [*lines[1:], None]):
            if line is None or line != previous + 1:
                runs.append(
                    f"{start}–{previous}" if previous - start > 1 else ", ".join(map(str, range(start, previous + 1)))
                )
                start = line
        return "lines " + ", ".join(runs)


def paper_table(path: str | os.PathLike | None = None) -> CellTable:
    """The authors' table (default ``params/expected/paper-ndcg10.csv``) as a cell table, with the
    paper's in-domain and OOD means derived from its columns (:func:`cerepro.report.aggregates.weights`).

    Refuses, naming the file, line and column: a missing column, a repeated (backbone,
    objective), a missing or non-numeric value, a value outside [0, 1]."""
    path = Path(path) if path else params_dir() / "expected" / PAPER_TABLE
    name = _shown(path)
    columns = list(dataset_registry()["paper_table_columns"])
    try:
        raw = pd.read_csv(path, dtype=str, skip_blank_lines=False, keep_default_na=False)
    except FileNotFoundError:
        raise TableError(f"{name}: no such file") from None
    absent = [c for c in ["backbone", "objective", *columns] if c not in raw.columns]
    if absent:
        raise TableError(
            f"{name}, line 1: the header lacks {absent} (paper_table_columns of params/datasets.yaml: {columns})"
        )
    raw.index = raw.index + 2  # the CSV line of each row: the header is line 1
    raw = raw[(raw != "").any(axis=1)]
    if raw.empty:
        raise TableError(f"{name}: no rows under the header")
    seen = {}
    for line, backbone, objective in zip(raw.index, raw["backbone"], raw["objective"]):
        if not backbone or not objective:
            raise TableError(f"{name}, line {line}: backbone and objective must both be named")
        if (backbone, objective) in seen:
            raise TableError(f"{name}, line {line}: ({backbone}, {objective}) repeats line {seen[backbone, objective]}")
        seen[backbone, objective] = line
    values = pd.DataFrame(index=raw.index)
    for column in columns:
        numbers = pd.to_numeric(raw[column], errors="coerce")
        for line in raw.index[numbers.isna() | ~numbers.between(0, 1)]:
            raise TableError(
                f"{name}, line {line}, column {column}: {raw.loc[line, column]!r} is not an nDCG@10 between 0 and 1"
            )
        values[column] = numbers
    values.index = pd.MultiIndex.from_arrays([raw["backbone"], raw["objective"]], names=["backbone", "objective"])
    backbones = tuple(dict.fromkeys(raw["backbone"]))
    objectives = tuple(dict.fromkeys(raw["objective"]))
    incomplete = [(b, o) for b in backbones for o in objectives if (b, o) not in seen]
    if incomplete:
        raise TableError(f"{name}: the table is not a full grid, it lacks (backbone, objective) {incomplete[:5]}")
    for aggregate in (IN_DOMAIN, OOD):
        values[aggregate] = aggregates.weighted_mean(values, aggregates.weights(aggregate, columns))
    in_domain = tuple(c for c in columns if {dataset_group(m) for m in aggregates.members(c)} == {IN_DOMAIN})
    return CellTable(
        values=values,
        backbones=backbones,
        objectives=objectives,
        in_domain=in_domain,
        out_of_domain=tuple(c for c in columns if c not in in_domain),
        trec_dl=tuple(c for c in columns if c.startswith("trec-dl")),
        in_domain_mean=IN_DOMAIN,
        source=name,
        label=f"Published numbers: the authors' table ({name}), mean over 3 seeds",
        published=True,
        lines=seen,
    )


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(project_root()).as_posix()
    except ValueError:
        return os.fspath(path)
