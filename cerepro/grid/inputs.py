"""One input a grid reads that can be downloaded (or must be provided), and how a list of them is told.

An :class:`Input` is a teacher file, an ir_datasets file, a hub model or a licensed input, with its
state (present, missing, broken, manual, failed), size, URL and the jobs that need it.
``format_inputs`` writes the lines ``cerepro fetch``, ``cerepro plan`` and ``cerepro grid`` print;
``download_volume`` sums what is left to download; ``licensed_steps`` says how to provide what
cannot be downloaded. ``cerepro.grid.fetch`` lists and fetches a grid's inputs.

This module describes inputs; it never looks at the disk or the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROBUST04 = "disks45/nocr/trec-robust-2004"


@dataclass
class Input:
    """One thing a grid reads that is (or must be) on disk before its jobs start."""

    kind: str  # "teacher file" | "ir_datasets" | "hub model" | "licensed"
    name: str
    where: str  # the final path (or Hugging Face cache folder)
    state: str  # "present" | "missing" | "broken" | "manual" | "failed" (a fetch that failed)
    size: int | None = None  # bytes: on disk when present, to download when missing
    estimated: bool = False  # size is an estimate (hub models not yet fetched)
    size_hint: str = ""  # a registered file's size in words, when its bytes are not known
    url: str = ""
    detail: str = ""  # md5, commit, why it is broken, or the steps to provide it
    needed_by: list[str] = field(default_factory=list)
    action: str = ""  # what `cerepro fetch` did
    handle: object = field(default=None, repr=False, compare=False)  # what fetches it

    def size_text(self) -> str:
        if self.size is None:
            return self.size_hint or "size unknown"
        return ("~" if self.estimated else "") + human_bytes(self.size)


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def licensed_steps(item: Input) -> str:
    """How to provide an input that cannot be downloaded, or run without it."""
    if any(user.startswith(ROBUST04) for user in item.needed_by):
        return (
            f"Robust04's documents are TREC disks 4 and 5, licensed by NIST: file the agreement "
            f"(https://trec.nist.gov/data/cd45/index.html; ir_datasets' steps: "
            f"https://ir-datasets.com/trec-robust04.html#DataAccess), then place the uncompressed "
            f"source at {item.where} (it holds NEWS_data/FBIS, NEWS_data/FR94, ...); or run without "
            f"Robust04: list the other evaluation datasets under `eval_datasets:` in the grid file "
            f"(the book's scoreboard then marks the robust04 cells 'not run')"
        )
    detail = " ".join(item.detail.split())
    return f"provide it at {item.where}" + (f" (ir_datasets: {detail})" if detail else "")


def download_volume(items: list[Input]) -> tuple[int, list[Input]]:
    """Bytes still to download (known or estimated) and the missing inputs whose size is unknown."""
    missing = [i for i in items if i.state == "missing"]
    return sum(i.size for i in missing if i.size), [i for i in missing if i.size is None]


def format_inputs(items: list[Input], *, done: bool = False, compact: bool = False) -> str:
    """One line per input: what it is, its state (or what fetch did), its size and where it is
    (``compact``: its size and URL only), then the volume to download."""
    lines = []
    for item in items:
        if compact:
            lines.append(f"  {item.kind:<12} {item.name:<56} {item.size_text():>22}  {item.url or item.where}")
            continue
        state = (
            item.action
            if done
            else {
                "missing": "to download",
                "present": "present",
                "broken": "BROKEN",
                "manual": "NOT DOWNLOADABLE",
                "failed": "FAILED",
            }[item.state]
        )
        lines.append(
            f"  {item.kind:<12} {item.name}: {state}, {item.size_text()}, {item.where}"
            + (f" [{item.detail}]" if item.detail and item.state not in ("manual", "broken") else "")
            + (f" from {item.url}" if item.state == "missing" and not done else "")
        )
    if done:
        got = [i for i in items if i.action == "downloaded"]
        failed = [i for i in items if i.state == "failed"]
        lines.append(
            f"downloaded {len(got)} input(s), {human_bytes(sum(i.size or 0 for i in got))}"
            + (f"; {len(failed)} failed: {', '.join(i.name for i in failed)}" if failed else "")
        )
    else:
        volume, unknown = download_volume(items)
        summary = f"to download: {human_bytes(volume)}"
        if unknown:
            summary += " plus " + ", ".join(f"{i.name} ({i.size_text()})" for i in unknown)
        if any(i.estimated and i.state == "missing" for i in items):
            summary += " (hub models estimated at 4 bytes per parameter)"
        lines.append(summary)
    for item in items:
        if item.state == "manual":
            lines.append(f"  {item.name} cannot be downloaded: {licensed_steps(item)}")
    return "\n".join(lines)
