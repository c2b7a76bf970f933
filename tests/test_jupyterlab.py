"""The notebooks in JupyterLab, tried for real: a JupyterLab server started here on 127.0.0.1 and
headless Chromium (Debian's, installed by `make test`). With the default-viewer setting the
project ships (what `make install` copies into the environment), double-clicking
`notebooks/train.py` opens a notebook with its cells, not a text editor; saving a notebook that
was not changed leaves its file byte-identical (no jupytext version or kernel name rewritten);
and a figure of `cerepro.report.figures` is shown once, not twice."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import jupytext
import nbformat
import pytest
from browser_check import CHROMIUM_FLAGS, chromium
from probe_notebook import write_probe
from processes import stop

from cerepro.grid.runner import execute

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "jupyter" / "lab" / "settings"  # installed as <prefix>/share/jupyter/lab/settings
TOKEN = "cerepro-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, method: str = "GET", body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.loads(response.read() or b"{}")


class Lab:
    """A JupyterLab server over a copy of notebooks/, with its own home and settings."""

    def __init__(self, tmp: Path, settings: Path | None, extra: list[str] | None = None):
        self.root = tmp / "root"
        shutil.copytree(ROOT / "notebooks", self.root / "notebooks")
        app_settings = tmp / "settings"
        if settings is not None:
            shutil.copytree(settings, app_settings)
        else:
            app_settings.mkdir()
        home = tmp / "home"
        env = {
            **os.environ,
            "HOME": str(home),
            "JUPYTER_CONFIG_DIR": str(home / ".jupyter"),
            "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        }
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / "lab.log", "w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "lab",
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={self.port}",
                "--allow-root",
                f"--ServerApp.root_dir={self.root}",
                f"--IdentityProvider.token={TOKEN}",
                f"--LabApp.app_settings_dir={app_settings}",
                *(extra or []),
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 120
        while True:
            try:
                request(f"{self.url}/api/status")
                return
            except OSError:
                if time.time() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"JupyterLab did not start: {(tmp / 'lab.log').read_text()[-2000:]}") from None
                time.sleep(0.5)

    def stop(self) -> None:
        stop(self.process, 60)  # SIGTERM first: the server shuts its kernels down
        self.log.close()


@pytest.fixture
def lab(tmp_path):
    server = Lab(tmp_path, SETTINGS)
    yield server
    server.stop()


class Widgets(HTMLParser):
    """The main area's document widgets and notebook cells of a dumped JupyterLab DOM."""

    def __init__(self):
        super().__init__()
        self.classes: list[set[str]] = []

    def handle_starttag(self, tag, attrs):
        self.classes.append(set((dict(attrs).get("class") or "").split()))

    def count(self, name: str) -> int:
        return sum(name in c for c in self.classes)


def open_in_browser(lab: Lab, path: str, tmp: Path) -> tuple[Widgets, str]:
    """What Chromium shows after opening ``lab/tree/<path>``, the URL of a double-click."""
    browser = chromium()
    assert browser, "no Chromium: make test installs Debian's chromium (make browser)"
    dom = subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp / 'profile'}",
            "--virtual-time-budget=30000",
            "--dump-dom",
            f"{lab.url}/lab/tree/{path}?token={TOKEN}",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=180,
    ).stdout
    widgets = Widgets()
    widgets.feed(dom)
    return widgets, dom


@pytest.mark.slow
def test_train_notebook_opens_as_a_notebook_with_its_cells(lab, tmp_path):
    cells = jupytext.read(ROOT / "notebooks" / "train.py").cells
    widgets, dom = open_in_browser(lab, "notebooks/train.py", tmp_path)
    assert widgets.count("jp-NotebookPanel") >= 1 and widgets.count("jp-FileEditor") == 0
    assert widgets.count("jp-Notebook-cell") == len(cells)
    assert widgets.count("jp-MarkdownCell") == sum(c.cell_type == "markdown" for c in cells)
    assert "Train one cross-encoder" in dom


@pytest.mark.slow
def test_without_the_shipped_setting_it_opens_in_a_text_editor(tmp_path):
    """The control: what users met before the setting shipped (so the check above can fail)."""
    server = Lab(tmp_path, None)
    try:
        widgets, _ = open_in_browser(server, "notebooks/train.py", tmp_path)
    finally:
        server.stop()
    assert widgets.count("jp-FileEditor") >= 1 and widgets.count("jp-NotebookPanel") == 0


def test_make_install_puts_the_setting_where_jupyterlab_reads_it():
    from jupyterlab.labapp import LabApp

    assert Path(LabApp().app_settings_dir) == Path(sys.prefix) / "share" / "jupyter" / "lab" / "settings"
    makefile = (ROOT / "Makefile").read_text()
    assert "jupyter/lab/settings/overrides.d/cerepro.json" in makefile
    assert "$(VENV)/share/jupyter/lab/settings/overrides.d/cerepro.json" in makefile
    viewers = json.loads((SETTINGS / "overrides.d" / "cerepro.json").read_text())
    assert viewers["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]["python"] == "Jupytext Notebook"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["data", "train", "evaluate", "compare", "explore"])
def test_saving_an_unchanged_notebook_leaves_its_file_byte_identical(lab, name):
    """A save as JupyterLab does it: the notebook model back through the server's (jupytext)
    contents manager, with the running kernel's spec and language info in its metadata."""
    path = f"notebooks/{name}.py"
    before = (lab.root / path).read_bytes()
    model = request(f"{lab.url}/api/contents/{path}?type=notebook&content=1")
    spec = request(f"{lab.url}/api/kernelspecs")["kernelspecs"]["python3"]["spec"]
    content = model["content"]
    content["metadata"]["kernelspec"] = {
        "name": "python3",
        "display_name": spec["display_name"],
        "language": spec["language"],
    }
    content["metadata"]["language_info"] = {
        "name": "python",
        "version": sys.version.split()[0],
        "mimetype": "text/x-python",
        "file_extension": ".py",
    }
    request(f"{lab.url}/api/contents/{path}", "PUT", {"type": "notebook", "format": "json", "content": content})
    assert (lab.root / path).read_bytes() == before


def test_a_report_figure_is_shown_once(tmp_path):
    write_probe(
        tmp_path / "figure.ipynb", "x = 0", "from cerepro.report import figures\nfigures._empty_figure('not yet run')"
    )
    execute(tmp_path / "figure.ipynb", tmp_path / "out.ipynb", {}, cwd=tmp_path)
    outputs = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[-1].outputs
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 1, outputs


def test_progress_bars_are_widgets_in_a_kernel_and_final_text_in_executed_copies(tmp_path):
    write_probe(
        tmp_path / "bars.ipynb", "x = 0", "from tqdm.auto import tqdm\nfor _ in tqdm(range(3), desc='steps'):\n    pass"
    )
    execute(tmp_path / "bars.ipynb", tmp_path / "out.ipynb", {}, cwd=tmp_path)
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert "application/vnd.jupyter.widget-view+json" in executed.cells[-1].outputs[0]["data"]  # a widget

    from cerepro.grid.runner import widgets_as_text

    widgets_as_text(tmp_path / "out.ipynb")
    copy = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    shown = copy.cells[-1].outputs[0]["data"]
    assert list(shown) == ["text/plain"] and re.match(r"steps:\W*100%\W*3/3", shown["text/plain"]), shown
    assert "widgets" not in copy.metadata


def test_training_curves_of_a_run_folder_are_titled_with_its_run_id(tmp_path):
    from cerepro.report import figures

    folder = tmp_path / "adhoc" / "train"  # `cerepro run train` without --out: no run id in the path
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"backbone": "tiny-bert", "objective": "bce", "seed": 1}))
    (folder / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1 / s}) + "\n" for s in (1, 2, 3)))
    fig = figures.training_curves(folder)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["tiny-bert.bce.s1"]
