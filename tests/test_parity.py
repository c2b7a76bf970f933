"""make parity's pins, driver and committed table (the comparisons themselves run in the parity
environments, never in make test: the authors' libraries are not cerepro dependencies)."""

import importlib.util
import io
import re
import tarfile
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PINS = tomllib.loads((ROOT / "parity" / "pins.toml").read_text())


def _run_module():
    spec = importlib.util.spec_from_file_location("parity_run", ROOT / "parity" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pin(spec: str) -> tuple[str, str]:
    name, _, version = spec.partition("==")
    return name.lower().replace("_", "-"), version


def test_pins_name_full_commits_and_dates_and_cerepros_packages_at_pyprojects_versions():
    sources = PINS["environments"]["february"]["sources"]
    assert {s["name"] for s in sources} == {"experimaestro-ir", "xpm-torch"}
    for source in sources:
        assert re.fullmatch(r"[0-9a-f]{40}", source["commit"]), source
        assert re.fullmatch(r"2026-02-\d\d", source["date"]) and source["why"]
    assert {_pin(p)[0] for p in PINS["environments"]["latest"]["packages"]} == {"experimaestro-ir", "xpm-torch"}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pinned = dict(
        _pin(p) for p in pyproject["project"]["dependencies"] + pyproject["project"]["optional-dependencies"]["dev"]
    )
    for name, version in map(_pin, PINS["cerepro"]["packages"]):
        assert pinned.get(name) == version, f"parity/pins.toml {name}=={version}, pyproject.toml {pinned.get(name)}"


def test_make_parity_is_its_own_target_outside_make_test():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^parity:\n\t.*parity/run.py", makefile, re.M)
    test_target = re.search(r"^test: (.*)$", makefile, re.M).group(1)
    assert "parity" not in test_target
    assert ".venv-parity-*/" in (ROOT / ".gitignore").read_text()


def test_the_committed_table_was_written_for_these_pins_and_every_outcome_is_the_expected_one():
    table = (ROOT / "book" / "parity-table.md").read_text()
    assert table.startswith("<!-- written by `make parity`")
    assert not re.search(r"(^|[\s(])/(home|root|tmp|work|Users)/", table)  # no machine paths in the book
    for name, spec in PINS["environments"].items():
        assert f"**{name}**" in table
        for source in spec.get("sources", []):
            assert f"`{source['commit'][:12]}`" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| What")]
    assert len(rows) >= 30
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        cases, result, expected = int(cells[3]), cells[4], cells[5]
        assert cases > 0 and not result.startswith("not run"), line
        assert (result == "identical") == (expected == "identical"), line
    # the page that shows it includes it, and the table of contents has the page
    assert "{include} ../parity-table.md" in (ROOT / "book" / "appendix" / "parity.md").read_text()
    assert "file: appendix/parity" in (ROOT / "book" / "_toc.yml").read_text()


def test_failures_name_errors_empty_comparisons_and_unexpected_outcomes():
    run = _run_module()

    def row(what, cases, identical, expected="identical", error=""):
        return {
            "what": what,
            "cases": cases,
            "identical": identical,
            "expected": expected,
            "error": error,
            "first_difference": "",
            "authors": "a",
            "cerepro": "c",
            "note": "",
        }

    assert run.failures([row("ok", 3, 3), row("control", 3, 1, "differs")]) == []
    bad = run.failures(
        [
            row("broken", 0, 0, error="ImportError: x"),
            row("empty", 0, 0),
            row("drift", 3, 2),
            row("control", 3, 3, "differs"),
        ]
    )
    assert bad == [
        "broken: ImportError: x",
        "empty: no case compared",
        "drift: 2/3 identical, expected identical",
        "control: 3/3 identical, expected differs",
    ]
    assert run.outcome(row("drift", 3, 2)) == "1 differ: "


def _archive(folder: Path, name: str, top: str) -> Path:
    path = folder / name
    with tarfile.open(path, "w:gz") as archive:
        data = b"x"
        info = tarfile.TarInfo(f"{top}/pyproject.toml")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


def test_a_local_source_folder_is_checked_for_the_pinned_commit(tmp_path, monkeypatch):
    run = _run_module()
    source = PINS["environments"]["february"]["sources"][0]
    name = f"{source['name']}-{source['commit']}"
    monkeypatch.setenv("CEREPRO_PARITY_SOURCES", str(tmp_path))
    with pytest.raises(run.ParityError, match=rf"no {name}\.tar\.gz there .*git archive --prefix={name}/"):
        run.source_archive(source)
    _archive(tmp_path, f"{name}.tar.gz", f"{source['name']}-0000000")
    with pytest.raises(run.ParityError, match=f"expected one top folder ending in {source['commit']}"):
        run.source_archive(source)
    good = _archive(tmp_path, f"{name}.tar.gz", name)
    assert run.source_archive(source) == good
