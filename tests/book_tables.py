"""Every table of every page of two built books, compared cell by cell.

    python tests/book_tables.py BEFORE/_build/html AFTER/_build/html

A refactoring must not change what the book shows: this reads each HTML page of both builds, takes
its tables (the plain HTML tables and the interactive ones, whose rows itables embeds as JSON),
pairs the tables of a page by their columns, drops the columns that record when, where and how
long (timing and provenance), and prints every page, table and cell that differs, then the pages
and tables found in one build only. Exit status 1 when a paired table differs.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from lxml import html

# Columns whose values record the build, not the results: when, where, how long, which commit.
VOLATILE = re.compile(
    r"time|seconds|\bs\b|_s$|per_s|min\b|wall|date|started|finished|when|host|commit|version|duration|gpu-h|"
    r"cpu-h|elapsed|peak|rss|memory|path|folder|log",
    re.IGNORECASE,
)
# Pages that are provenance through and through (the environment, the reproduction log).
PROVENANCE_PAGES = ("appendix/environment", "appendix/log", "appendix/compute")


def _text(cell) -> str:
    return " ".join(cell.text_content().split())


def page_tables(path: Path) -> list[tuple[list[str], list[list[str]]]]:
    """``(header, rows)`` of each table of a page, in page order: HTML tables, then itables' data."""
    tree = html.fromstring(path.read_bytes())
    tables = []
    for table in tree.iter("table"):
        if (table.get("id") or "").startswith("itables_") or table.xpath("ancestor::div[contains(@id, '_fallback')]"):
            continue  # an interactive table: its loading note and static preview; its rows are below
        head = [_text(c) for c in table.xpath("./thead/tr[last()]/th")]
        rows = [[_text(c) for c in tr.xpath("./th|./td")] for tr in table.xpath("./tbody/tr")]
        if rows or head:
            tables.append((head, rows))
    headers = {
        div.get("id").removesuffix("_fallback"): [_text(c).lstrip("🔒ⓘ") for c in div.xpath(".//thead/tr[last()]/th")]
        for div in tree.xpath("//div[contains(@id, '_fallback')]")
    }
    for script in tree.iter("script"):
        code = script.text or ""
        for match in re.finditer(r'"data_json"\s*:\s*("(?:[^"\\]|\\.)*")', code):
            rows = json.loads(json.loads(match[1]))
            table_id = re.search(r"#(itables_\w+)", code)
            head = headers.get(table_id[1], []) if table_id else []
            tables.append((head, [[json.dumps(v) for v in row] for row in rows]))
    return tables


def kept_columns(header: list[str], width: int) -> list[int]:
    return [i for i in range(width) if not (i < len(header) and VOLATILE.search(header[i]))]


def compare(before: Path, after: Path) -> tuple[list[str], list[str]]:
    """``(differences, tables in one build only)``. Tables of a page are paired by their header,
    in page order, so that a table added or removed on a page leaves the others paired."""
    problems, unpaired = [], []
    pages_before = {p.relative_to(before).as_posix() for p in before.rglob("*.html")}
    pages_after = {p.relative_to(after).as_posix() for p in after.rglob("*.html")}
    for page in sorted(pages_before ^ pages_after):
        unpaired.append(f"{page}: a page of {'the first' if page in pages_before else 'the second'} build only")
    compared = 0
    for page in sorted(pages_before & pages_after):
        if page.startswith(("_", "genindex", "search")) or page.removesuffix(".html").endswith(PROVENANCE_PAGES):
            continue
        two = list(enumerate(page_tables(after / page), 1))
        for n, (head1, rows1) in enumerate(page_tables(before / page), 1):
            match = next((i for i, (_, (head2, _)) in enumerate(two) if head2 == head1), None)
            if match is None:
                unpaired.append(f"{page}: table {n} of the first build only (columns {head1})")
                continue
            m, (_, rows2) = two.pop(match)
            compared += 1
            if len(rows1) != len(rows2):
                problems.append(f"{page} table {n} (then {m}): {len(rows1)} rows -> {len(rows2)}")
                continue
            for r, (row1, row2) in enumerate(zip(rows1, rows2), 1):
                if len(head1) == 2 and row1 and VOLATILE.search(row1[0]):
                    continue  # a key-value table (a run's ledger): a timing row
                for c in kept_columns(head1, max(len(row1), len(row2))):
                    a = row1[c] if c < len(row1) else None
                    b = row2[c] if c < len(row2) else None
                    if a != b and not (str(a).startswith("/") and str(b).startswith("/")):  # where a build wrote
                        name = head1[c] if c < len(head1) else f"column {c + 1}"
                        problems.append(f"{page} table {n} row {r} {name!r}: {a!r} -> {b!r}")
        for m, (head2, _) in two:
            unpaired.append(f"{page}: table {m} of the second build only (columns {head2})")
    print(f"{len(pages_before & pages_after)} pages in both builds, {compared} tables paired and compared cell by cell")
    return problems, unpaired


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    problems, unpaired = compare(Path(argv[0]), Path(argv[1]))
    for line in unpaired + problems:
        print(line)
    print(
        f"{len(unpaired)} tables or pages in one build only; "
        + ("every paired table identical" if not problems else f"{len(problems)} differences in paired tables")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
