"""Build the report: gather one grid's artifacts into ``book/generated/``, then run jupyter-book.

``build_book()`` copies what the grid engine produced under ``runs/<grid>/`` (only folders with
``DONE``) into ``book/generated/`` (git-ignored): the executed notebooks, a run index page that
links each of them, the grid file, and the grid's per-query results, which every page reads
through :func:`page`. It then executes the pages of the table of contents side by side, one
kernel per usable CPU (:func:`pre_execute`: jupyter-book runs them one at a time), and runs
``jupyter-book build -W -n --keep-going --all --config generated/_config.yml book/`` with this
environment's jupyter-book, as an argument list; that config reads the pages' outputs from the
fresh cache. The pages execute at build time and call
the report modules (:mod:`cerepro.report.tables`, :mod:`cerepro.report.figures`, :mod:`cerepro.report.verdicts`,
:mod:`cerepro.report.provenance`, :mod:`cerepro.report.protocol`); a failing cell, a warning or a broken cross-reference fails the build.

This module assembles and builds; it never trains, evaluates or computes a statistic.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cerepro import vocab
from cerepro.paths import book_dir, runs_dir, write_text_atomic
from cerepro.report import claims as claims_audit
from cerepro.report import provenance, tables, verdicts

GENERATED = "generated"
RESULTS_FILE = "results.pkl"
SHOWN_WARNINGS = 20  # evaluation warnings listed on a page; the rest are counted
RELEASED_GRID = "released"  # the authors' checkpoints, shown beside any trained grid on the scoreboard


def build_book(
    log: str | None = None, done: str | None = None, *, grid: str | None = None, book: str | os.PathLike | None = None
) -> int:
    """Gather ``grid``'s artifacts (default: ``$CEREPRO_BOOK_GRID`` or ``demo``) and build the
    book in ``book`` (default ``book/``); return jupyter-book's exit code. ``log``: a file for
    the build's output (else it goes to this process's). ``done``: a marker written atomically
    after a successful build."""
    grid = grid or tables.book_grid()
    folder = Path(book) if book else book_dir()
    generated = prepare(grid, folder)
    # The pages' kernels import this very cerepro and read the same runs and grid; the pydevd
    # variable keeps the kernels' debugger warning about frozen modules out of the log.
    package_parent = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)
    kernel_env = {
        tables.BOOK_GRID_ENV: grid,
        "CEREPRO_RUNS": str(runs_dir()),
        "PYTHONPATH": pythonpath,
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    config = pre_execute(folder, generated, kernel_env)
    command = [_jupyter_book(), "build", "-W", "-n", "--keep-going", "--all", "--config", str(config), str(folder)]
    env = {**os.environ, **kernel_env}
    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w", encoding="utf-8") as out:
            code = subprocess.call(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    else:
        code = subprocess.call(command, env=env)
    if code == 0 and done:
        write_text_atomic(done, "")
    return code


# ---------------------------------------------------------------------------------------------
# Executing the pages, side by side


CACHE = "_build/.cerepro_cache"  # the pages executed for one build (outside the sources Sphinx reads)


def pre_execute(folder: Path, generated: Path, kernel_env: dict[str, str], *, workers: int | None = None) -> Path:
    """Execute the book's pages side by side (``workers``, default one per usable CPU) into a fresh
    jupyter-cache, and return a config for this build (``generated/_config.yml``) that reads it.

    jupyter-book executes pages one at a time; a page's outputs found in the cache are used
    as they are. The cache is made anew on every build, after ``generated/``, from the same
    results the pages read; ``book/_config.yml`` itself stays ``force`` (a direct
    ``jupyter-book build book/`` executes every page). A page that fails here is left out of
    the cache: jupyter-book then executes it and reports the failure as usual.
    """
    import yaml
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from myst_nb.core.read import is_myst_markdown_notebook, read_myst_markdown_notebook
    from myst_parser.config.main import MdParserConfig

    settings = yaml.safe_load((folder / "_config.yml").read_text(encoding="utf-8"))
    cache_path = folder / CACHE
    if cache_path.exists():
        shutil.rmtree(cache_path)
    settings.setdefault("execute", {}).update(execute_notebooks="cache", cache=str(cache_path.resolve()))
    config = generated / "_config.yml"
    config.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")

    md_config = MdParserConfig(enable_extensions=set(settings.get("parse", {}).get("myst_enable_extensions", [])))
    pages = []
    for path in _toc_pages(folder):
        text = path.read_text(encoding="utf-8")
        if is_myst_markdown_notebook(text):
            notebook = read_myst_markdown_notebook(text, config=md_config, add_source_map=True, path=str(path))
            if any(cell.cell_type == "code" for cell in notebook.cells):
                pages.append((path, notebook))
    cache = get_cache(str(cache_path))
    workers = workers or _usable_cpus()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        executed = list(pool.map(lambda page: _execute_page(*page, kernel_env), pages))
    for (path, _), (notebook, seconds) in zip(pages, executed):
        if notebook is not None:
            cache.cache_notebook_bundle(
                CacheBundleIn(notebook, str(path), data={"execution_seconds": seconds}),
                check_validity=False,
                overwrite=True,
            )
    return config


def _usable_cpus() -> int:
    """The CPUs this process may run on (a SLURM job's allocation, not the whole node's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _toc_pages(folder: Path) -> list[Path]:
    """The Markdown pages the table of contents names (``root`` and every ``file``), in order
    (the grid's executed notebooks are ``.ipynb`` files, shown as they ran)."""
    import yaml

    names = []

    def walk(node):
        if isinstance(node, dict):
            names.extend(node[k] for k in ("root", "file") if isinstance(node.get(k), str))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load((folder / "_toc.yml").read_text(encoding="utf-8")))
    return [folder / f"{name}.md" for name in names if (folder / f"{name}.md").is_file()]


def _execute_page(path: Path, notebook, kernel_env: dict[str, str]):
    """``notebook`` (a page as myst-nb reads it) executed in its page's folder: its own cells
    with the outputs, so that jupyter-cache matches it to the page; ``(None, 0)`` if it fails."""
    import time

    import nbformat

    from cerepro.grid import runner

    with tempfile.TemporaryDirectory(prefix="cerepro-page-") as tmp:
        source, output = Path(tmp) / "page.ipynb", Path(tmp) / "executed.ipynb"
        nbformat.write(notebook, source)
        started = time.time()
        try:
            runner.execute(source, output, {}, cwd=path.parent, kernel_env=kernel_env)
        except Exception:  # noqa: BLE001 - jupyter-book executes the page again and reports it
            return None, 0.0
        seconds = time.time() - started
        ran = nbformat.read(output, as_version=4)
    page = nbformat.from_dict(notebook)
    for cell, done in zip(page.cells, ran.cells):
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = done.get("outputs", []), done.get("execution_count")
    return page, seconds


def _jupyter_book() -> str:
    """This environment's jupyter-book (next to the running Python), else the one on PATH."""
    here = Path(sys.executable).parent / "jupyter-book"
    found = str(here) if here.is_file() else shutil.which("jupyter-book")
    if not found:
        raise FileNotFoundError("jupyter-book is not installed in this environment (pip install jupyter-book)")
    return found


# ---------------------------------------------------------------------------------------------
# Gathering


def prepare(grid: str, folder: Path) -> Path:
    """Write ``<folder>/generated/``: results, grid file, executed notebooks
    and the run index. Everything there is rewritten from ``runs/`` on every build."""
    info = tables.grid_info(grid)  # a grid of params/grids/ (a slug, no path), before anything is cleared
    generated = folder / GENERATED
    if generated.exists():
        shutil.rmtree(generated)
    (generated / "runs").mkdir(parents=True)
    tables.grid_results(grid).to_pickle(generated / RESULTS_FILE)
    shutil.copyfile(info.file, generated / "grid.yaml")
    index = provenance.run_index(grid)
    pages = [
        _copy_notebook(runs_dir() / grid / row.notebook, generated / "runs", row.kind, row.run)
        for row in index.itertuples()
    ]
    (generated / "run-index.md").write_text(_run_index_page(info, index, pages), encoding="utf-8")
    return generated


def _copy_notebook(source: Path, target_dir: Path, kind: str, run: str) -> str:
    """Copy an executed notebook under a flat name, titled by its run (the notebook's own title
    follows in italics), so the sidebar tells the runs apart. Returns the page's name relative
    to ``generated/``."""
    import nbformat

    name = f"{run.replace('/', '.')}.{kind}"
    nb = nbformat.read(source, as_version=4)
    title = f"# {run} · {kind}\n"
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("# "):
            first, _, rest = cell.source.lstrip().partition("\n")
            cell.source = f"{title}\n*{first[2:].strip()}*\n{rest}"
            break
    else:
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(title))
    nbformat.write(nb, target_dir / f"{name}.ipynb")
    return f"runs/{name}"


def _run_index_page(info: tables.GridInfo, index: pd.DataFrame, pages: list[str]) -> str:
    lines = [
        "(run-index)=",
        "# Run index",
        "",
        f"Every notebook the grid `{info.name}` executed (profile `{info.profile}`), as it ran: parameters, "
        "outputs and figures. The grid engine writes them under `runs/<grid>/`; only folders with a "
        "`DONE` marker are listed.",
        "",
    ]
    if info.synthetic:
        lines += [":::{note}", info.provenance, ":::", ""]
    if index.empty:
        return "\n".join(
            lines
            + [
                f"**Not yet run**: no finished job in `runs/{info.name}/`. Run "
                f"`cerepro grid {info.name}` (or `make report`), then rebuild the book.",
                "",
            ]
        )
    rank = {"data": 0, vocab.FIRST_STAGE: 1, "compare": 3}
    index = index.assign(page=pages, rank=[rank.get(r.split("/")[0], 2) for r in index["run"]])
    index = index.sort_values(["rank", "run"], kind="stable")
    hub = "model" in index and index["model"].astype(bool).any()  # released checkpoints: the weights loaded
    lines += [
        "| run | notebooks | seconds | git commit | " + ("model (hub id@commit) | " if hub else "") + "finished |",
        "|---|---|---|---|" + ("---|" if hub else "") + "---|",
    ]
    for run, jobs in index.groupby("run", sort=False):
        links = " · ".join(f"{{doc}}`{kind} <{page}>`" for kind, page in zip(jobs["kind"], jobs["page"]))
        seconds = pd.to_numeric(jobs["seconds"], errors="coerce").sum(min_count=1)
        commits = ", ".join(f"`{c}`" for c in dict.fromkeys(jobs["git_commit"].astype(str)))
        model = ", ".join(f"`{m}`" for m in dict.fromkeys(jobs["model"]) if m) if hub else None
        lines.append(
            f"| `{run}` | {links} | {'' if math.isnan(seconds) else f'{seconds:,.0f}'} | {commits} | "
            + (f"{model} | " if hub else "")
            + f"{jobs['finished'].max()} |"
        )
    return "\n".join(lines + [""])


# ---------------------------------------------------------------------------------------------
# What a page's code cells call


@dataclass
class Page:
    """The grid a page shows, its results, and the glue of a research question's claim."""

    grid: tables.GridInfo
    results: pd.DataFrame

    def __post_init__(self):
        self._tests: dict[str, pd.DataFrame] = {}

    def tests(self, baseline: str = "bce") -> pd.DataFrame:
        """:func:`tables.significance` against ``baseline``, computed once per page."""
        if baseline not in self._tests:
            self._tests[baseline] = tables.significance(self.results, baseline=baseline)
        return self._tests[baseline]

    @functools.cached_property
    def claims(self) -> dict:
        return verdicts.claims(self.results, tests=self.tests("bce"))

    @functools.cached_property
    def paper(self) -> claims_audit.CellTable:
        """The authors' table (published numbers), read once per page."""
        return claims_audit.paper_table()

    @functools.cached_property
    def published(self) -> dict:
        """The claims' verdicts on the authors' table."""
        return claims_audit.audit(self.paper)

    def significance_table(self, baseline: str = "bce"):
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

    def interactive(self, table: pd.DataFrame, name: str, *, page_length: int = 10):
        """``table`` as a sortable, searchable table with a CSV button (itables, offline)."""
        return interactive(table, name, page_length=page_length)

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

    def wins_losses(self, baseline: str = "bce", *, in_domain: bool | None = None, objectives=None):
        """Queries won and lost against ``baseline`` per backbone, objective and dataset (only the
        in-domain ones, or only the others, when ``in_domain`` is given):
        :func:`cerepro.report.explore.wins_losses_table`."""
        from cerepro.report import explore

        datasets = None
        if in_domain is not None:
            inside = self.results["group"] == vocab.IN_DOMAIN
            datasets = list(dict.fromkeys(self.results.loc[inside if in_domain else ~inside, "dataset"]))
            if not datasets:
                return tables.placeholder(f"no {'in-domain' if in_domain else 'out-of-domain'} dataset in this grid")
        return explore.wins_losses_table(self.results, baseline=baseline, objectives=objectives, datasets=datasets)

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

    def per_query(self, baseline: str = "bce"):
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


def interactive(table: pd.DataFrame, name: str, *, page_length: int = 10):
    """A table a static page can sort, search and download as CSV: itables in its offline mode
    (``init_notebook_mode(connected=False)`` puts the DataTables bundle in the page, once per
    kernel, so the table works from ``file://`` with no network). ``name``: the CSV file's name."""
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
    by :func:`build_book`; read from ``runs/`` when the page runs outside a build)."""
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_rows", 400)
    pd.set_option("display.precision", 4)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "font.size": 9})
    grid = tables.book_grid()
    cached = book_root() / GENERATED / RESULTS_FILE
    results = pd.read_pickle(cached) if cached.is_file() else tables.grid_results(grid)
    return Page(tables.grid_info(grid), results)
