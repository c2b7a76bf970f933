"""The book: a smoke build from a synthetic grid, strictness (a failing cell or a broken
cross-reference fails the build), and a headless-Chromium look at the built pages."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import browser_check
import pytest
import yaml
from test_report import write_grid

from cerepro.paths import project_root
from cerepro.report import build, claims, execute, provenance, tables, verdicts

BOOK = project_root() / "book"
RQ_PAGES = [f"rq/rq{i}" for i in range(1, 6)]


def _copy_book(target: Path) -> Path:
    shutil.copytree(BOOK, target, ignore=shutil.ignore_patterns("_build", "generated"))
    return target


def _tiny_book(tmp_path: Path, page: str) -> Path:
    """The real config with a one-page table of contents."""
    folder = tmp_path / "book"
    folder.mkdir()
    shutil.copy(BOOK / "_config.yml", folder)
    shutil.copytree(BOOK / "_static", folder / "_static")
    (folder / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    (folder / "intro.md").write_text(page)
    return folder


NOTEBOOK_PAGE = """---
jupytext:
  text_representation:
    format_name: myst
kernelspec:
  display_name: Python 3
  name: python3
---
# A page

```{code-cell} ipython3
%s
```
"""


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The book built from a finished synthetic demo grid."""
    tmp = tmp_path_factory.mktemp("smoke")
    write_grid(tmp / "runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CEREPRO_RUNS", str(tmp / "runs"))
        mp.delenv(tables.BOOK_GRID_ENV, raising=False)
        folder = _copy_book(tmp / "book")
        code = build.build_book(log=str(tmp / "build.log"), done=str(tmp / "DONE"), book=folder)
        results, index = tables.grid_results("demo"), provenance.run_index("demo")
    return {
        "code": code,
        "book": folder,
        "html": folder / "_build" / "html",
        "log": tmp / "build.log",
        "done": tmp / "DONE",
        "results": results,
        "index": index,
    }


def _toc_pages(book: Path = BOOK) -> list[Path]:
    """Every page of ``book``'s table of contents that runs code (MyST notebooks): in a built book,
    the generated run index too."""
    toc = (book / "_toc.yml").read_text()
    names = re.findall(r"(?:root|file): (\S+)", toc)
    pages = [book / f"{name}.md" for name in names if (book / f"{name}.md").is_file()]
    return [p for p in pages if "kernelspec:" in p.read_text()]


@pytest.mark.parametrize("grid_state", ["finished", "not yet run"])
def test_every_page_runs_and_glues_what_its_prose_uses(grid_state, tmp_path, monkeypatch):
    """The pages' code cells, run in this process (fast, no Sphinx): no error, and every
    ``{glue:...}`` key the prose uses is glued, with results and without any."""
    import jupytext
    import matplotlib.pyplot as plt
    import myst_nb

    if grid_state == "finished":
        write_grid(tmp_path / "runs", backbones=("tiny-bert", "tiny-electra"), seeds=2, queries=8)
    monkeypatch.setenv("CEREPRO_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv(tables.BOOK_GRID_ENV, raising=False)
    folder = _copy_book(tmp_path / "book")
    build.prepare("demo", folder)
    glued = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: glued.__setitem__(name, value))
    pages = _toc_pages()
    assert len(pages) >= 14
    for page in pages:
        copy = folder / page.relative_to(BOOK)
        monkeypatch.chdir(copy.parent)
        glued.clear()
        scope = {}
        for cell in jupytext.read(copy).cells:
            if cell.cell_type == "code":
                exec(compile(cell.source, str(copy), "exec"), scope)
        plt.close("all")
        used = set(re.findall(r"\{glue:\w+\}`([^`:]+)", copy.read_text()))
        assert used <= set(glued), f"{page.name}: not glued {used - set(glued)}"
        if grid_state == "not yet run":
            assert "verdict" not in glued or glued["verdict"] == claims.NOT_RUN


def test_config_fails_on_errors():
    config = yaml.safe_load((BOOK / "_config.yml").read_text())
    assert config["execute"]["allow_errors"] is False and config["execute"]["raise_on_error"] is True
    assert config["execute"]["execute_notebooks"] == "force"


@pytest.mark.slow
def test_smoke_book_builds_from_a_synthetic_grid(smoke):
    assert smoke["code"] == 0, smoke["log"].read_text()[-3000:]
    assert smoke["done"].is_file()
    html = smoke["html"]
    for page in [
        "intro",
        "setup/data",
        "setup/objectives",
        "setup/backbones",
        "setup/protocol",
        "metric-contract",
        "published",
        *RQ_PAGES,
        "scoreboard",
        "queries",
        "generated/run-index",
        "appendix/training",
        "appendix/compute",
        "appendix/first-stage-scale",
        "appendix/environment",
        "appendix/limits",
        "appendix/bad-inputs",
        "appendix/log",
    ]:
        assert (html / f"{page}.html").is_file(), page
    for page in ["intro", *RQ_PAGES, "scoreboard"]:
        text = (html / f"{page}.html").read_text()
        assert "synthetic" in text, page  # demo numbers say so on every page that shows them
        assert "Traceback" not in text, page
    # the real verdicts on the authors' table, computed at build time, beside the grid's
    published = verdicts.published_claims()
    audit = (html / "published.html").read_text()
    assert "paper-ndcg10.csv" in audit
    for claim in published.values():
        assert claim.verdict in audit
        for exception in claim.exceptions:
            assert exception.split(":")[0] in audit  # every exception named, e.g. its backbone and column
    intro = (html / "intro.html").read_text()
    assert verdicts.PUBLISHED_VERDICT in intro and "not testable on this table" in intro
    # prose numbers are the results' (glued), not typed
    claim = verdicts.claims(smoke["results"])["relative-beats-bce"]
    rq1 = (html / "rq/rq1.html").read_text()
    assert f'<span class="pasted-text">{claim.numbers["wins"]}</span> of' in rq1
    assert f'<span class="pasted-text">{claim.numbers["mean_gain"]:+.3f}</span>' in rq1
    # every executed notebook of the grid is a page of the run index
    assert len(smoke["index"]) == 36 * 2 + 3  # train and evaluate per run, first stage, data, compare
    index = (html / "generated/run-index.html").read_text()
    notebooks = list((smoke["book"] / "generated" / "runs").glob("*.ipynb"))
    assert len(notebooks) == len(smoke["index"])
    for notebook in notebooks:
        assert f'href="runs/{notebook.stem}.html"' in index
        assert (html / "generated" / "runs" / f"{notebook.stem}.html").is_file()


@pytest.mark.slow
def test_browser_sees_the_figures(smoke):
    assert smoke["code"] == 0
    browser = browser_check.chromium(install=True)
    assert browser, "headless Chromium is needed: apt-get install -y chromium"
    seen = browser_check.browser_check(smoke["html"], ["index.html", "published.html", "rq/rq1.html"], browser=browser)
    index, published, rq1 = seen["index.html"], seen["published.html"], seen["rq/rq1.html"]
    assert index["page"] == "intro.html" and index["title"].startswith("Overview")
    assert rq1["title"].startswith("RQ1") and published["title"].startswith("The paper")
    for page in (index, published, rq1):
        assert page["probed"] and not page["missing"], page
        assert page["images"] and all(i["loaded"] and i["png"] for i in page["images"]), page["images"]
        assert page["screenshot"].stat().st_size > 10_000
    figures = [i for i in rq1["images"] if "_images/" in i["src"]]
    # this grid's heatmaps only: the authors' figures are on the published page, gain vs scaling on
    # RQ3, in domain vs out on RQ2, seed spread on RQ5
    assert len(figures) == 1
    assert len([i for i in published["images"] if "_images/" in i["src"]]) == 2  # heatmaps, gain vs scaling
    assert (smoke["html"].parent / "screenshots" / "rq_rq1.png").is_file()
    assert (smoke["html"].parent / "screenshots" / "published.png").is_file()


def test_the_build_uses_every_page_as_executed_side_by_side(smoke):
    """Every page of the table of contents was executed before Sphinx (in parallel) and found
    in that build's cache: none is executed again one at a time."""
    log = smoke["log"].read_text()
    assert log.count("Using cached notebook") == len(_toc_pages(smoke["book"])), log[-3000:]
    assert "Executing notebook" not in log
    config = yaml.safe_load((smoke["book"] / "generated" / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "cache"
    assert yaml.safe_load((smoke["book"] / "_config.yml").read_text())["execute"]["execute_notebooks"] == "force"


TIMED_CELL = """import time, json, pathlib
start = time.time(); time.sleep(1.5)
pathlib.Path("%s.json").write_text(json.dumps([start, time.time()]))"""


def test_pages_execute_side_by_side_into_a_fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CEREPRO_RUNS", str(tmp_path / "runs"))
    folder = _tiny_book(tmp_path, NOTEBOOK_PAGE % (TIMED_CELL % "intro"))
    (folder / "other.md").write_text(NOTEBOOK_PAGE % (TIMED_CELL % "other"))
    (folder / "failing.md").write_text(NOTEBOOK_PAGE % "raise RuntimeError('left to jupyter-book')")
    (folder / "not-in-the-toc.md").write_text(NOTEBOOK_PAGE % "raise RuntimeError('never run')")
    (folder / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n- file: other\n- file: failing\n")
    stale = folder / execute.CACHE / "stale"
    stale.mkdir(parents=True)
    (folder / "generated").mkdir()
    config = execute.pre_execute(folder, folder / "generated", {}, workers=3)
    import json

    from jupyter_cache import get_cache

    (a0, a1), (b0, b1) = (json.loads((folder / f"{n}.json").read_text()) for n in ("intro", "other"))
    assert a0 < b1 and b0 < a1  # the two pages ran at the same time
    assert not stale.exists()  # every build starts from an empty cache
    cached = {Path(r.uri).name for r in get_cache(str(folder / execute.CACHE)).list_cache_records()}
    assert cached == {"intro.md", "other.md"}  # the failing page is executed (and reported) by the build
    assert yaml.safe_load(config.read_text())["execute"]["cache"] == str((folder / execute.CACHE).resolve())


def test_a_failing_cell_fails_the_build(tmp_path, monkeypatch):
    monkeypatch.setenv("CEREPRO_RUNS", str(tmp_path / "runs"))
    folder = _tiny_book(tmp_path, NOTEBOOK_PAGE % "raise RuntimeError('cell failed on purpose')")
    code = build.build_book(log=str(tmp_path / "build.log"), done=str(tmp_path / "DONE"), book=folder)
    assert code != 0
    assert "cell failed on purpose" in (tmp_path / "build.log").read_text()
    assert not (tmp_path / "DONE").exists()


def test_a_broken_cross_reference_fails_the_build(tmp_path, monkeypatch):
    monkeypatch.setenv("CEREPRO_RUNS", str(tmp_path / "runs"))
    folder = _tiny_book(tmp_path, "# A page\n\nSee {ref}`a-label-that-does-not-exist` and {doc}`no-such-page`.\n")
    code = build.build_book(log=str(tmp_path / "build.log"), book=folder)
    log = (tmp_path / "build.log").read_text()
    assert code != 0
    assert "a-label-that-does-not-exist" in log and "no-such-page" in log


def test_a_finished_grid_whose_book_is_not_built_in_this_checkout_has_its_book_job_redone(
    smoke, tmp_path, monkeypatch, capsys
):
    """`make report` (`cerepro grid demo --book`) after the grid finished, in a checkout whose book
    is not built: the book job's DONE (in runs/) does not stand for a book here, so it is redone."""
    from cerepro.grid.workflow import outputs_to_redo
    from cerepro.grids import load_grid

    runs = tmp_path / "runs"
    write_grid(runs)
    monkeypatch.setenv("CEREPRO_RUNS", str(runs))
    (runs / "demo" / "book").mkdir()
    shutil.copy(smoke["done"], runs / "demo" / "book" / "DONE")  # the marker the successful build wrote
    grid = load_grid("demo")
    monkeypatch.setenv("CEREPRO_BOOK", str(smoke["book"]))  # the checkout that built it
    assert "book/DONE" not in outputs_to_redo(grid, book=True)
    monkeypatch.setenv("CEREPRO_BOOK", str(_copy_book(tmp_path / "fresh-checkout")))
    assert "book/DONE" in outputs_to_redo(grid, book=True)
    assert "is not built in" in capsys.readouterr().err
    assert "book/DONE" not in outputs_to_redo(grid, book=False)
