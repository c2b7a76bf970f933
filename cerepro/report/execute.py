"""The book's pages executed side by side into a fresh jupyter-cache, for one build.

jupyter-book executes a book's pages one at a time; :func:`pre_execute` runs the pages the table
of contents names (those with code cells), one kernel per usable CPU, each in its page's folder
with the build's environment, and stores each executed page where jupyter-book finds it
(``execute_notebooks: cache``). A page that fails here is left out of the cache: jupyter-book
executes it again and reports the failure as usual. Called by :func:`cerepro.report.build.build_book`.

This module executes pages; it reads no results and computes nothing the pages show.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import tempfile
from pathlib import Path

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
