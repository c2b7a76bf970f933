"""Built book pages in headless Chromium: each page's images decode, and a screenshot each.

A test helper (like ``figure_checks``): the book's tests and the JupyterLab test open pages
with it; the package never needs a browser.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

from processes import stop

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)
# Marks, in the DOM the browser dumps, whether each image decoded (a copy of the page carries it).
_IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) {
    img.setAttribute("data-loaded", String(img.complete && img.naturalWidth > 0));
  }
  document.body.setAttribute("data-probed", "yes");
});
</script>"""


def chromium(install: bool = False) -> str | None:
    """The Chromium binary on PATH; with ``install``, ``apt-get install -y chromium`` first
    when it is missing and this process may (root on a Debian-like system)."""
    names = ("chromium", "chromium-browser", "google-chrome")
    found = next((shutil.which(n) for n in names if shutil.which(n)), None)
    if found or not install or not shutil.which("apt-get") or os.geteuid() != 0:
        return found
    subprocess.run(["apt-get", "update"], check=True, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, capture_output=True)
    return shutil.which("chromium")


def browser_check(
    html: str | os.PathLike,
    pages=("index.html", "rq/rq1.html"),
    *,
    out=None,
    browser: str | None = None,
    width: int = 1280,
    height: int = 2400,
) -> dict[str, dict]:
    """Open each built page in headless Chromium: dump its DOM after load (images marked as
    decoded or not by a probe in a temporary copy of the page) and save a screenshot in ``out``
    (default ``<html>/../screenshots``). Returns, per page, its images with the browser's
    verdict and whether the file is a valid PNG, the missing local assets and the screenshot."""
    import tempfile

    html = Path(html)
    out = Path(out) if out else html.parent / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    browser = browser or chromium()
    if not browser:
        raise FileNotFoundError("no Chromium: apt-get install -y chromium")
    report_ = {}
    with tempfile.TemporaryDirectory() as profile:
        flags = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000"]
        for page_name in pages:
            page_path = (html / page_name).resolve()
            shot = out / (page_name.replace("/", "_").removesuffix(".html") + ".png")
            subprocess.run(
                [*flags, f"--window-size={width},{height}", f"--screenshot={shot}", page_path.as_uri()],
                check=True,
                capture_output=True,
                timeout=120,
            )
            target = _followed(page_path)
            probe = target.with_name(f".probe-{target.name}")
            text = target.read_text(encoding="utf-8")
            probe.write_text(text.replace("</body>", _IMAGE_PROBE + "</body>"), encoding="utf-8")
            try:
                dom = subprocess.run(
                    [*flags, "--dump-dom", probe.as_uri()], check=True, capture_output=True, text=True, timeout=120
                ).stdout
            finally:
                probe.unlink()
            parser = _Assets()
            parser.feed(dom)
            images = [
                {"src": src, "loaded": loaded == "true", "png": _valid_png(target.parent / src)}
                for src, loaded in parser.images
            ]
            missing = [ref for ref in parser.local if not (target.parent / ref.split("#")[0].split("?")[0]).exists()]
            report_[page_name] = {
                "page": target.relative_to(html.resolve()).as_posix(),
                "probed": parser.probed,
                "images": images,
                "missing": missing,
                "screenshot": shot,
                "title": parser.title.strip(),
            }
    return report_


def _followed(page: Path) -> Path:
    """The page a meta refresh (jupyter-book's index.html) leads to, else the page."""
    match = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', page.read_text(encoding="utf-8"), re.I)
    return (page.parent / match.group(1)).resolve() if match else page


def _valid_png(path: Path) -> bool:
    if path.suffix.lower() != ".png":
        return path.is_file()
    try:
        from PIL import Image

        with Image.open(path) as image:
            image.verify()
            return image.format == "PNG"
    except (OSError, SyntaxError, ValueError):
        return False


class _Assets(HTMLParser):
    """Images (src, data-loaded), local stylesheets and scripts, and the title of a dumped DOM."""

    def __init__(self):
        super().__init__()
        self.images, self.local, self.probed, self.title, self._in_title = [], [], False, "", False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append((attrs.get("src", ""), attrs.get("data-loaded")))
        elif tag == "body":
            self.probed = attrs.get("data-probed") == "yes"
        ref = (
            attrs.get("src")
            if tag == "script"
            else attrs.get("href")
            if tag == "link" and attrs.get("rel") in ("stylesheet", "preload")
            else None
        )
        if ref and not ref.startswith(("http:", "https:", "data:", "//")):
            self.local.append(ref)
        self._in_title = tag == "title" and not self.title  # the page's, not an icon's

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag):
        self._in_title = False


class Page:
    """One headless Chromium tab driven over the DevTools protocol (websocket-client): open a
    URL, evaluate JavaScript, wait for a condition. For checks a DOM dump cannot make (click a
    table header, pick a widget's option, catch a download)."""

    def __init__(self, browser: str | None = None, *, width: int = 1400, height: int = 1600):
        import json
        import socket
        import tempfile
        import time
        import urllib.request

        import websocket

        browser = browser or chromium()
        if not browser:
            raise FileNotFoundError("no Chromium: apt-get install -y chromium")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # Chromium's helper processes may still write to the profile as it exits
        self._profile = tempfile.TemporaryDirectory(prefix="cerepro-chromium-", ignore_cleanup_errors=True)
        self._process = subprocess.Popen(
            [
                browser,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={self._profile.name}",
                f"--remote-debugging-port={port}",
                f"--window-size={width},{height}",
                "--allow-file-access-from-files",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                    targets = [t for t in json.loads(response.read()) if t.get("type") == "page"]
                if targets:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                self.close()
                raise RuntimeError("Chromium's DevTools endpoint did not answer")
            time.sleep(0.3)
        self._socket = websocket.create_connection(targets[0]["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self._id = 0

    def send(self, method: str, **params) -> dict:
        import json

        self._id += 1
        self._socket.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        """The value of a JavaScript expression (awaited if it is a promise)."""
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.send("Page.enable")
        self.send("Page.navigate", url=url)

    def wait_for(self, expression: str, timeout: float = 60, what: str = "") -> object:
        """Evaluate ``expression`` until it is truthy; its value, or TimeoutError."""
        import time

        deadline = time.time() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            if time.time() > deadline:
                raise TimeoutError(f"waited {timeout:.0f} s for {what or expression}")
            time.sleep(0.5)

    def screenshot(self, path: str | os.PathLike, *, full_page: bool = False) -> Path:
        import base64

        params = {"format": "png"}
        if full_page:
            metrics = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"], "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", **params)["data"]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            if getattr(self, "_socket", None) is not None:
                self._socket.close()
        finally:
            stop(self._process, 30)
            self._profile.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
