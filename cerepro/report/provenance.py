"""Where a grid's numbers come from: the run index, the compute ledger, the environment and the
reproduction log, read from the ``meta.json``, ``ledger.json`` and ``DONE`` files of its runs.

This module reads run folders; it never imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cerepro.paths import runs_dir
from cerepro.report.tables import done_folders, placeholder

# The ledger entries the book shows (each run's ledger.json has more), and how to print them.
LEDGER_COLUMNS = (
    "device",
    "precision",
    "params",
    "steps",
    "wall_s",
    "train_s",
    "validation_s",
    "pairs_per_s",
    "tokens_per_s",
    "flops",
    "mfu",
)
LEDGER_FORMATS = {
    "params": "{:,.0f}",
    "steps": "{:,.0f}",
    "wall_s": "{:,.1f}",
    "train_s": "{:,.1f}",
    "validation_s": "{:,.1f}",
    "pairs_per_s": "{:,.0f}",
    "tokens_per_s": "{:,.0f}",
    "flops": "{:.3g}",
    "mfu": "{:.1%}",
}


def ledger_table(grid: str) -> pd.DataFrame:
    """One row per finished training run from its ``ledger.json``: wall time, device, steps,
    pairs per second, FLOPs and MFU."""
    rows = []
    for folder in done_folders(grid, "train"):
        path = folder / "ledger.json"
        if path.is_file():
            rows.append({"run": folder.parent.name, **json.loads(path.read_text(encoding="utf-8"))})
    if not rows:
        return placeholder("no finished training run with a ledger")
    table = pd.DataFrame(rows).set_index("run")
    table = table[[c for c in LEDGER_COLUMNS if c in table.columns]]
    if "wall_s" in table:
        total = table["wall_s"].sum()
        table.loc["total", "wall_s"] = total
    return table


NOTEBOOK_KINDS = ("data", "train", "evaluate", "compare")


def run_index(grid: str) -> pd.DataFrame:
    """Every executed notebook of the grid (folders with DONE): kind, run, notebook path relative
    to ``runs/<grid>/``, seconds and git commit from ``meta.json``."""
    rows = []
    for kind in NOTEBOOK_KINDS:
        for folder in done_folders(grid, kind):
            notebook = folder / f"{kind}.ipynb"
            if not notebook.is_file():
                continue
            meta = _meta(folder)
            run = {"data": f"data/{folder.name}", "compare": "compare"}.get(kind, folder.parent.name)
            rows.append(
                {
                    "kind": kind,
                    "run": run,
                    "notebook": notebook.relative_to(runs_dir() / grid).as_posix(),
                    "seconds": meta.get("seconds"),
                    "git_commit": meta.get("git_commit"),
                    "model": _loaded_model(folder) if kind == "evaluate" else "",
                    "finished": pd.Timestamp((folder / "DONE").stat().st_mtime, unit="s").floor("s"),
                }
            )
    return pd.DataFrame(rows, columns=["kind", "run", "notebook", "seconds", "git_commit", "model", "finished"])


def _loaded_model(folder: Path) -> str:
    """``hub_id@commit`` of the model an evaluation loaded from the hub (its metric contract),
    empty for a model trained in the grid."""
    for contract in sorted(folder.glob("results/*/contract.json")):
        facts = json.loads(contract.read_text(encoding="utf-8"))
        if facts.get("commit"):
            return f"{facts['model']}@{facts['commit']}"
    return ""


def _meta(folder: Path) -> dict:
    path = folder / "meta.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def environment_table(grid: str) -> pd.DataFrame:
    """Package versions that produced the grid's results (every distinct value over its
    meta.json files), next to the versions that build this book."""
    from cerepro.grid.runner import PACKAGES, environment

    seen: dict[str, set] = {}
    for kind in NOTEBOOK_KINDS:
        for folder in done_folders(grid, kind):
            meta = _meta(folder)
            for package, version in {**meta.get("versions", {}), "python": meta.get("python")}.items():
                seen.setdefault(package, set()).add(str(version))
    here = environment()
    now = {**here["versions"], "python": here["python"]}
    for package in ("jupyter-book", "myst-nb", "sphinx", "seaborn", "matplotlib"):
        now[package] = _version(package)
    rows = [
        {"package": p, "runs": ", ".join(sorted(seen.get(p, []))) or "not yet run", "book build": now.get(p)}
        for p in ("python", *PACKAGES, *[p for p in now if p not in PACKAGES and p != "python"])
    ]
    return pd.DataFrame(rows).set_index("package")


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def reproduction_log(grid: str) -> pd.DataFrame:
    """When each job of the grid finished, how long it ran, on which commit and hardware."""
    rows = []
    for kind in NOTEBOOK_KINDS:
        for folder in done_folders(grid, kind):
            meta = _meta(folder)
            hardware = meta.get("hardware", {})
            device = ", ".join(hardware.get("gpus", [])) or f"CPU x{hardware.get('cpus', '?')}"
            rows.append(
                {
                    "finished": pd.Timestamp((folder / "DONE").stat().st_mtime, unit="s").floor("s"),
                    "job": f"{kind} {folder.name if kind == 'data' else folder.parent.name}",
                    "seconds": meta.get("seconds"),
                    "git_commit": meta.get("git_commit"),
                    "device": device,
                }
            )
    if not rows:
        return placeholder("no finished job in this grid")
    return pd.DataFrame(rows).sort_values("finished").set_index("finished")
