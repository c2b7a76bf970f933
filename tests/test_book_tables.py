"""The tool that compares two books' tables cell by cell finds what changed and what moved."""

import json

from book_tables import compare


def page(folder, name, tables, interactive=None):
    body = ""
    for head, rows in tables:
        body += "<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
        body += "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in rows) + "</tbody></table>"
    if interactive:
        head, rows = interactive
        body += (
            '<table id="itables_1" hidden="hidden"><tbody><tr><td>Loading</td></tr></tbody></table>'
            '<div id="itables_1_fallback"><table><thead><tr>'
            + "".join(f"<th>{h}</th>" for h in head)
            + "</tr></thead><tbody></tbody></table></div>"
            + '<script type="module">document.querySelectorAll("#itables_1:not(.dataTable)"); let dt_args = {"data_json": '
            + json.dumps(json.dumps(rows))
            + "};</script>"
        )
    (folder / name).write_text(f"<html><body>{body}</body></html>", encoding="utf-8")


def test_identical_books_differ_nowhere_and_a_changed_cell_is_named(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    tables = [(["run", "nDCG@10", "seconds"], [["a", "0.500", "12"], ["b", "0.400", "30"]])]
    page(one, "rq1.html", tables, interactive=(["run", "RR@10"], [["a", 0.25]]))
    page(two, "rq1.html", tables, interactive=(["run", "RR@10"], [["a", 0.25]]))
    assert compare(one, two) == ([], [])
    changed = [(["run", "nDCG@10", "seconds"], [["a", "0.500", "99"], ["b", "0.401", "30"]])]  # timing aside
    page(two, "rq1.html", changed, interactive=(["run", "RR@10"], [["a", 0.5]]))
    problems, unpaired = compare(one, two)
    assert problems == [
        "rq1.html table 1 row 2 'nDCG@10': '0.400' -> '0.401'",
        "rq1.html table 2 row 1 'RR@10': '0.25' -> '0.5'",
    ]
    assert unpaired == []


def test_a_table_removed_from_a_page_leaves_the_others_paired(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    summary = (["run", "backbone"], [["a", "tiny-bert"]])
    own = (["objective", "gain"], [["hinge", "+0.010"]])
    page(one, "rq2.html", [summary, own])
    page(two, "rq2.html", [own])
    page(two, "runs.html", [summary])
    problems, unpaired = compare(one, two)
    assert problems == []
    assert unpaired == [
        "runs.html: a page of the second build only",
        "rq2.html: table 1 of the first build only (columns ['run', 'backbone'])",
    ]
