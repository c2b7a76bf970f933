"""Build the report: gather one grid's artifacts into ``book/generated/``, then run jupyter-book.

``build_book()`` copies what the grid engine produced under ``runs/<grid>/`` (only folders with
``DONE``) into ``book/generated/`` (git-ignored): the executed notebooks, a run index page that
links each of them, the grid file, and the grid's per-query results, which every page reads
through :func:`cerepro.report.book.page`. It then executes the pages of the table of contents
side by side, one kernel per usable CPU (:func:`cerepro.report.execute.pre_execute`: jupyter-book
runs them one at a time), and runs
``jupyter-book build -W -n --keep-going --all --config generated/_config.yml book/`` with this
environment's jupyter-book, as an argument list; that config reads the pages' outputs from the
fresh cache. A failing cell, a warning or a broken cross-reference fails the build.

This module assembles and builds; it never trains, evaluates or computes a statistic.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from cerepro.paths import book_dir, runs_dir, write_text_atomic
from cerepro.report import execute, provenance, tables
from cerepro.report.book import GENERATED, RESULTS_FILE, notebook_page


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
    config = execute.pre_execute(folder, generated, kernel_env)
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

    name = notebook_page(run, kind).removeprefix("runs/")
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


RUN_INDEX_HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""


def _run_index_page(info: tables.GridInfo, index: pd.DataFrame, pages: list[str]) -> str:
    """The run index: the grid once (its axes and file), then one row per run with its main
    results and links to the notebooks it ran, in one sortable, searchable table with a CSV
    download (:meth:`Page.run_index`). The notebook pages themselves are listed by the table of
    contents (``generated/runs/*``)."""
    lines = [
        RUN_INDEX_HEADER,
        "(run-index)=",
        "# Run index",
        "",
        f"The grid `{info.name}` (profile `{info.profile}`, {{download}}`grid file <grid.yaml>`) and every run "
        "it finished, with its main results and the notebooks it executed, as they ran: parameters, outputs "
        "and figures. The grid engine writes them under `runs/<grid>/`; only folders with a `DONE` marker "
        "are listed.",
        "",
    ]
    if info.synthetic:
        lines += [":::{note}", info.provenance, ":::", ""]
    lines += [
        "```{code-cell} ipython3",
        ":tags: [remove-cell]",
        "from cerepro.report import book",
        "",
        "page = book.page()",
        "```",
        "",
        "## The grid",
        "",
        "```{code-cell} ipython3",
        ":tags: [remove-input]",
        "page.runs()",
        "```",
        "",
        "## Every run",
        "",
    ]
    if index.empty:
        return "\n".join(
            lines
            + [
                f"**Not yet run**: no finished job in `runs/{info.name}/`. Run "
                f"`cerepro grid {info.name}` (or `make report`), then rebuild the book.",
                "",
            ]
        )
    lines += [
        "One row per run: its backbone, objective and seed, its mean nDCG@10 per column of the paper's "
        "table (mean over the run's queries; the data and compare jobs have none), its agreement with its "
        "teacher where it was trained from one (Kendall's tau-b on the teacher's lists, mean over the "
        "lists; {ref}`per-query`), the notebooks it ran (links), their seconds, git commit and when they "
        "finished. Sort by any column (its header), filter by any text (the search box), download the rows "
        "as CSV (the button).",
        "",
        "```{code-cell} ipython3",
        ":tags: [remove-input]",
        "page.run_index()",
        "```",
        "",
    ]
    return "\n".join(lines)
