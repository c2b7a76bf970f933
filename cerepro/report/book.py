"""What a book page's code cells call: :func:`page` sets a page up with its grid and results,
and :class:`Page` gives the tables, figures and glued numbers of the pages (the report modules
compute them: :mod:`cerepro.report.tables`, :mod:`cerepro.report.figures`,
:mod:`cerepro.report.verdicts`, :mod:`cerepro.report.provenance`, :mod:`cerepro.report.protocol`);
:func:`interactive` draws a table a static page can sort, search and download.
:mod:`cerepro.report.build` gathers a grid's artifacts and builds the book.
"""

from __future__ import annotations

import functools
import html
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cerepro import vocab
from cerepro.objectives import BASELINE_OBJECTIVE
from cerepro.paths import book_dir, runs_dir
from cerepro.report import cells, provenance, tables, verdicts
from cerepro.report import claims as claims_audit

GENERATED = "generated"
RESULTS_FILE = "results.pkl"
SHOWN_WARNINGS = 20  # evaluation warnings listed on a page; the rest are counted
RELEASED_GRID = "released"  # the authors' checkpoints, shown beside any trained grid on the scoreboard


def notebook_page(run: str, kind: str) -> str:
    """The book page of a run's executed notebook, relative to ``generated/``."""
    return f"runs/{run.replace('/', '.')}.{kind}"


# ---------------------------------------------------------------------------------------------
# What a page's code cells call


@dataclass
class Page:
    """The grid a page shows, its results, and the glue of a research question's claim."""

    grid: tables.GridInfo
    results: pd.DataFrame

    def __post_init__(self):
        self._tests: dict[str, pd.DataFrame] = {}

    def tests(self, baseline: str = BASELINE_OBJECTIVE) -> pd.DataFrame:
        """:func:`tables.significance` against ``baseline``, computed once per page."""
        if baseline not in self._tests:
            self._tests[baseline] = tables.significance(self.results, baseline=baseline)
        return self._tests[baseline]

    @functools.cached_property
    def claims(self) -> dict:
        return verdicts.claims(self.results, tests=self.tests(BASELINE_OBJECTIVE))

    @functools.cached_property
    def paper(self) -> cells.CellTable:
        """The authors' table (published numbers), read once per page."""
        return cells.paper_table()

    @functools.cached_property
    def published(self) -> dict:
        """The claims' verdicts on the authors' table."""
        return claims_audit.audit(self.paper)

    def significance_table(self, baseline: str = BASELINE_OBJECTIVE):
        """The research question pages' table: means with significance markers."""
        return tables.significance_table(self.results, baseline=baseline, tests=self.tests(baseline))

    def claims_table(self):
        """The overview's claims table, verdicts in colour."""
        table = verdicts.claims_table(self.results, self.grid.name, found=self.claims, published=self.published)
        return verdicts.styled(table.drop(columns="test"), hide_index=True)  # each RQ page states its test

    def audit_table(self):
        """Each claim's verdict on the authors' table, the cells that hold and the exceptions."""
        return verdicts.styled(claims_audit.audit_table(self.published, sep="<br>"), hide_index=True)

    def published_exceptions(self, key: str):
        """The cells of the authors' table that contradict a claim, both numbers and CSV lines."""
        from IPython.display import Markdown

        claim = self.published[key]
        if claim.verdict not in (claims_audit.SUPPORTED, claims_audit.NOT_SUPPORTED):
            return Markdown(f"*{claim.verdict}*: {claim.evidence}.")
        if not claim.exceptions:
            return Markdown(f"No exception: {claim.support} cells of the authors' table as claimed.")
        checks = claim.checks[~claim.checks["holds"]].drop(columns="holds")
        return verdicts.styled(checks, hide_index=True)

    def glue_published(self, key: str, prefix: str = "paper_") -> None:
        """Glue a claim's verdict on the authors' table, its evidence, the cells that hold and
        the number of exceptions under ``<prefix><name>``."""
        claim = self.published[key]
        _glue(f"{prefix}verdict", claim.verdict)
        _glue(f"{prefix}evidence", claim.evidence)
        _glue(f"{prefix}support", claim.support or "n/a")
        _glue(f"{prefix}share", claim.share or "n/a")
        _glue(f"{prefix}exceptions", str(len(claim.exceptions)))

    def provenance(self):
        """A note saying whose numbers these are (and that demo numbers are synthetic)."""
        from IPython.display import Markdown

        kind = "warning" if self.grid.synthetic else "note"
        missing = (
            ""
            if not tables.models_only(self.results).empty
            else f" **Not yet run**: no finished evaluation in `runs/{self.grid.name}/`."
        )
        note = f":::{{{kind}}}\n{self.grid.provenance}{missing}\n:::\n"
        warned = tables.grid_warnings(self.grid.name)
        if warned:  # results quietly wrong or hard to compare: said on every page that shows them
            shown = "".join(f"- {w}\n" for w in warned[:SHOWN_WARNINGS])
            more = (
                f"- and {len(warned) - SHOWN_WARNINGS} more (each evaluation's `contract.json`)\n"
                if len(warned) > SHOWN_WARNINGS
                else ""
            )
            note += (
                f"\n:::{{warning}}\n**{len(warned)} evaluation warnings** in `runs/{self.grid.name}/`:"
                f"\n\n{shown}{more}:::\n"
            )
        return Markdown(note)

    @functools.cached_property
    def released_results(self) -> pd.DataFrame:
        """The released checkpoints' results (grid ``released``), when the book shows another grid."""
        if self.grid.name == RELEASED_GRID or not (runs_dir() / RELEASED_GRID).is_dir():
            return self.results.iloc[0:0]
        return tables.grid_results(RELEASED_GRID)

    def reproductions(self):
        """The scoreboard with both reproductions, each cell labelled by where its model came
        from: ``trained`` (this grid's runs) or ``released`` (the authors' checkpoints)."""
        from IPython.display import Markdown

        both = pd.concat([self.results, self.released_results], ignore_index=True)
        sources = set(tables.models_only(both)["run"].map(lambda run: vocab.RunId.parse(run).source))
        if vocab.RELEASED not in sources:
            return Markdown(
                f"**Not yet run**: no released checkpoint evaluated in `runs/{RELEASED_GRID}/`. "
                f"`cerepro plan {RELEASED_GRID}` lists the jobs and their cost; "
                f"`cerepro grid {RELEASED_GRID}` runs them."
            )
        return verdicts.styled(verdicts.scoreboard_table(both, extra_columns=True))

    def baselines(self):
        """Public baselines next to their published figures (no verdict: other first stages)."""
        both = pd.concat([self.results, self.released_results], ignore_index=True)
        return verdicts.styled(verdicts.baselines_table(both), hide_index=True)

    def runs(self) -> pd.DataFrame:
        """The grid's axes and how many of its runs have finished."""
        done = tables.models_only(self.results)["run"].nunique()
        expected = len(self.grid.backbones) * len(self.grid.objectives) * self.grid.seeds
        rows = {
            "grid file": self.grid.path,
            "profile": self.grid.profile,
            "backbones": ", ".join(self.grid.backbones),
            "objectives": ", ".join(self.grid.objectives),
            "seeds": self.grid.seeds,
            "evaluated runs": f"{done} of {expected}",
            "reproduces": self.grid.reproduces or "—",
            "description": self.grid.description,
        }
        return pd.Series(rows, name=self.grid.name).to_frame()

    def glue_claim(self, key: str, prefix: str = "") -> None:
        """Glue a claim's text, verdict, evidence and numbers (``n/a`` when not yet run) under
        ``<prefix><name>`` for the page's prose."""
        claim = self.claims[key]
        _glue(f"{prefix}claim", claim.claim)
        _glue(f"{prefix}verdict", claim.verdict)
        _glue(f"{prefix}test", claim.test)
        _glue(f"{prefix}evidence", claim.evidence)
        for name, value in claim.numbers.items():
            _glue(f"{prefix}{name}", _text(name, value))

    def glue(self, name: str, value) -> None:
        _glue(name, _text(name, value))

    def interactive(self, table: pd.DataFrame, name: str, *, page_length: int = 10, allow_html: bool = False):
        """``table`` as a sortable, searchable table with a CSV button (itables, offline)."""
        return interactive(table, name, page_length=page_length, allow_html=allow_html)

    def every_cell(self):
        """The scoreboard's cells, sortable and filterable by backbone, objective, column and
        verdict, with a CSV download; a grid that runs none of the authors' cells says so in one
        line."""
        from IPython.display import Markdown

        board = verdicts.scoreboard_long(self.results)
        if (board["verdict"] == "not run").all():
            return Markdown(
                f"**Not run**: grid `{self.grid.name}` evaluates none of the {len(board)} cells of the "
                "authors' table ("
                + (
                    "its datasets are the demo world's splits"
                    if self.grid.synthetic
                    else "no finished evaluation on their datasets"
                )
                + ")."
            )
        return self.interactive(board, f"scoreboard-{self.grid.name}")

    def wins_losses(self, baseline: str = BASELINE_OBJECTIVE, *, in_domain: bool | None = None, objectives=None):
        """Queries won and lost against ``baseline`` per backbone, objective and dataset (only the
        in-domain ones, or only the others, when ``in_domain`` is given):
        :func:`cerepro.report.explorer.wins_losses_table`."""
        from cerepro.report import explorer

        datasets = None
        if in_domain is not None:
            inside = self.results["group"] == vocab.IN_DOMAIN
            datasets = list(dict.fromkeys(self.results.loc[inside if in_domain else ~inside, "dataset"]))
            if not datasets:
                return tables.placeholder(f"no {'in-domain' if in_domain else 'out-of-domain'} dataset in this grid")
        return explorer.wins_losses_table(self.results, baseline=baseline, objectives=objectives, datasets=datasets)

    def every_cell_wide(self):
        """The scoreboard as the authors' table, in verdict colours; one line when nothing is run."""
        from IPython.display import Markdown

        board = verdicts.scoreboard_long(self.results)
        if (board["verdict"] == "not run").all():
            return Markdown("")  # every_cell said it in one line
        return verdicts.styled(verdicts.scoreboard_table(self.results, self.grid.name))

    def run_results(self):
        """One row per finished run: its identity and its mean nDCG@10 per table column."""
        scores = tables.column_scores(self.results, tables.table_columns(self.results))
        if scores.empty:
            return tables.placeholder("no finished evaluation in this grid")
        scores = scores.assign(seed=scores["seed"].astype("string").fillna(""))  # the first stage has none
        wide = scores.pivot_table(
            index=["run", "backbone", "objective", "seed"], columns="column", values="value", sort=False
        )
        wide = wide[[c for c in tables.table_columns(self.results) if c in wide.columns]]
        wide.columns.name = None
        return wide.round(4).reset_index()

    def run_index(self):
        """Every run of the grid in one interactive table: its identity, main results
        (:meth:`run_results`), agreement with its teacher (:mod:`cerepro.report.agreement`) and
        the notebooks it ran, linked to their pages, with seconds, commit, model and finish time."""
        from cerepro.report import agreement, explore

        jobs = provenance.run_index(self.grid.name)
        if jobs.empty:
            return tables.placeholder("no finished job in this grid")
        rows = []
        for run, part in jobs.groupby("run", sort=False):
            seconds = pd.to_numeric(part["seconds"], errors="coerce").sum(min_count=1)
            links = " · ".join(
                f'<a href="{html.escape(notebook_page(run, kind))}.html">{html.escape(kind)}</a>'
                for kind in part["kind"]
            )
            rows.append(
                {
                    "run": run,
                    "notebooks": links,
                    "seconds": None if math.isnan(seconds) else round(seconds),
                    "git commit": ", ".join(dict.fromkeys(part["git_commit"].astype(str))),
                    "model": ", ".join(m for m in dict.fromkeys(part["model"]) if m),
                    "finished": str(part["finished"].max()),
                }
            )
        table = pd.DataFrame(rows)
        if not table["model"].astype(bool).any():  # hub ids and commits: released checkpoints only
            table = table.drop(columns="model")
        results = self.run_results()
        if "run" in results:
            table = results.merge(table, on="run", how="outer")
        taught = agreement.teacher_agreement(agreement.teacher_lists(self.grid.name))
        if not taught.empty:
            tau = taught["tau (mean)"].round(4).rename("tau with teacher")
            table = table.merge(tau, left_on="run", right_index=True, how="left")
            first = table.columns.get_loc("notebooks")
            table.insert(first, "tau with teacher", table.pop("tau with teacher"))
        order = {
            r: i for i, r in enumerate(explore.run_order(r for r in table["run"] if "/" not in r and r != "compare"))
        }
        rank = [(0 if r.startswith("data/") else 1 if r in order else 2, order.get(r, 0), r) for r in table["run"]]
        table = table.iloc[sorted(range(len(table)), key=lambda i: rank[i])].reset_index(drop=True)
        for column in ("backbone", "objective", "seed"):
            if column in table:
                table[column] = table[column].fillna("")
        return self.interactive(table, f"runs-{self.grid.name}", allow_html=True)

    def teacher_agreement(self):
        """Each run's agreement with its teacher (:func:`cerepro.report.agreement.teacher_agreement`),
        interactive; one line when no run of the grid has teacher lists."""
        from IPython.display import Markdown

        from cerepro.report import agreement, explore

        table = agreement.teacher_agreement(agreement.teacher_lists(self.grid.name))
        if table.empty:
            return Markdown(
                f"**Not yet run**: no evaluation in `runs/{self.grid.name}/` scored its teacher's lists (only runs "
                "trained from teacher scores have them)."
            )
        table = table.loc[explore.run_order(table.index)].round(4).reset_index()
        return self.interactive(table, f"teacher-{self.grid.name}")

    def per_query(self, baseline: str = BASELINE_OBJECTIVE):
        """One row per (dataset, query): each system's nDCG@10 (mean over seeds)."""
        rows = self.results[self.results["measure"] == tables.MEASURE]
        if rows.empty:
            return tables.placeholder("no finished evaluation in this grid")
        rows = rows.assign(system=[vocab.system_name(b, o) for b, o in zip(rows["backbone"], rows["objective"])])
        rows.loc[rows["run"] == vocab.FIRST_STAGE, "system"] = vocab.FIRST_STAGE
        wide = rows.pivot_table(index=["dataset", "query_id"], columns="system", values="value", sort=False)
        wide.columns.name = None
        return wide.round(4).reset_index()


_ITABLES_READY = False


def interactive(table: pd.DataFrame, name: str, *, page_length: int = 10, allow_html: bool = False):
    """A table a static page can sort, search and download as CSV: itables in its offline mode
    (``init_notebook_mode(connected=False)`` puts the DataTables bundle in the page, once per
    kernel, so the table works from ``file://`` with no network). ``name``: the CSV file's name.
    ``allow_html``: cells hold HTML of our own making (links), drawn as HTML; the CSV keeps their
    text."""
    import itables
    from IPython.display import HTML

    global _ITABLES_READY
    if not _ITABLES_READY:
        itables.init_notebook_mode(all_interactive=False, connected=False)
        _ITABLES_READY = True
    return HTML(
        itables.to_html_datatable(
            table,
            connected=False,
            buttons=[{"extend": "csvHtml5", "text": "CSV", "filename": name, "title": None}],
            pageLength=page_length,
            classes="display compact cell-border",
            maxBytes=0,
            showIndex=False,
            scrollX=True,
            display_logo_when_loading=False,
            allow_html=allow_html,
        )
    )


def _text(name: str, value) -> str:
    """A number as prose shows it: gains and gaps signed, three decimals; n/a when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:+.3f}" if any(k in name for k in ("gain", "gap", "diff")) else f"{value:.3f}"
    return str(value)


def _glue(name: str, value) -> None:
    from myst_nb import glue

    glue(name, value, display=False)


def book_root(start: Path | None = None) -> Path:
    """The book folder holding the executing page: the nearest folder with ``_config.yml``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_config.yml").is_file():
            return folder
    return book_dir()


def page() -> Page:
    """Set up a page: display options, the grid and its results (from ``generated/``, written
    by :func:`cerepro.report.build.build_book`; read from ``runs/`` when the page runs outside a build)."""
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_rows", 400)
    pd.set_option("display.precision", 4)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "font.size": 9})
    grid = tables.book_grid()
    cached = book_root() / GENERATED / RESULTS_FILE
    results = pd.read_pickle(cached) if cached.is_file() else tables.grid_results(grid)
    return Page(tables.grid_info(grid), results)
