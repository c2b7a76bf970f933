"""The module map of the README is the package's layering, and the imports keep to it.

The README's "Module map" has two tables. The wings: each folder of ``cerepro/`` (and each
module at its top level), its job and the wings it may import. The modules: every module by its
dotted name under ``cerepro`` (``data.trec``, ``vocab``), its job and the modules it may import.
Read with ``ast`` (nothing is imported), every ``import`` in the package, at module level or inside
a function, must be one both tables allow; neither the modules nor the wings form a circle; and the
report modules, which read results, never import torch: not themselves, and not through a cerepro
module that imports torch when it is imported.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cerepro"
# The modules the book and the compare notebook read results with, and params validation: they
# must load without torch.
TORCH_FREE = (
    "report.tables",
    "report.figures",
    "report.verdicts",
    "report.provenance",
    "report.protocol",
    "report.claims",
    "report.cells",
    "report.derived",
    "report.aggregates",
    "report.scoreboard",
    "evaluation.stats",
    "objectives",
    "fragments",
    "config",
    "grids",
)
TORCH = ("torch", "transformers", "sentence_transformers", "accelerate")
# Each module answers one question, and none is over this many lines (counted as `wc -l` counts).
MAX_LINES = 500


def map_table(heading: str, readme: Path = ROOT / "README.md") -> dict[str, set[str]]:
    """``name -> names it may import``, from the README table that follows ``### heading``
    under "## Module map"."""
    text = readme.read_text(encoding="utf-8")
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    table = section.split(f"### {heading}", 1)[1].split("\n### ", 1)[0]
    allowed = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([\w.]+)`", cells[0]) if len(cells) == 3 else None
        if match:
            allowed[match[1]] = set(re.findall(r"`([\w.]+)`", cells[2]))
    return allowed


def module_map(readme: Path = ROOT / "README.md") -> dict[str, set[str]]:
    return map_table("Modules", readme)


def wing_map(readme: Path = ROOT / "README.md") -> dict[str, set[str]]:
    return map_table("Wings", readme)


def wing(module: str) -> str:
    """A module's wing: its folder (``data`` for ``data.trec``), or itself at the top level."""
    return module.split(".")[0]


def dotted(path: Path) -> str:
    """``cerepro/data/trec.py`` -> ``data.trec``."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def imports(path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """``(imported module, line, at module level)`` for every import statement of a file;
    cerepro modules by their dotted name under ``cerepro`` (one of ``known``), others by their
    top-level package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != "cerepro":
                found.append((parts[0], node.lineno, id(node) in top))
                continue
            # the longest known module the name starts with: cerepro.data.trec.read_run -> data.trec
            inside = [".".join(parts[1:k]) for k in range(len(parts), 1, -1)]
            module = next((m for m in inside if m in known), None)
            if module is not None:
                found.append((module, node.lineno, id(node) in top))
    return found


def package_files() -> dict[str, Path]:
    return {dotted(p): p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "__init__.py"}


def package_modules() -> dict[str, list[tuple[str, int, bool]]]:
    files = package_files()
    found = {m: imports(p, set(files)) for m, p in files.items()}
    return {
        m: [(name, line, top) for name, line, top in imported if name in files or name in TORCH]
        for m, imported in found.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary circle's node list, found once (depth-first from each node in order)."""
    found, seen = [], set()

    def walk(node, path):
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                key = frozenset(path)
                if key not in seen:
                    seen.add(key)
                    found.append(path + [nxt])
            elif nxt not in path and nxt > path[0]:
                walk(nxt, path + [nxt])

    for start in sorted(graph):
        walk(start, [start])
    return found


def test_the_module_map_names_every_module_and_wing_once():
    assert set(module_map()) == set(package_modules()), "README module map vs cerepro/**/*.py"
    assert set(wing_map()) == {wing(m) for m in package_modules()}, "README wings vs cerepro's folders"


def test_every_package_folder_says_what_it_is_for():
    for folder in sorted({p.parent for p in PACKAGE.rglob("*.py")} - {PACKAGE}):
        assert (folder / "__init__.py").is_file(), f"{folder.relative_to(ROOT)} has no __init__.py"
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8")))
        assert doc, f"{folder.relative_to(ROOT)}/__init__.py has no docstring saying what the wing is for"


def modules_over(limit: int = MAX_LINES, package: Path = PACKAGE) -> dict[str, int]:
    """``{path: lines}`` of every module of ``package`` over ``limit`` lines, counting newlines as
    ``wc -l`` does."""
    lines = {p: p.read_bytes().count(b"\n") for p in sorted(package.rglob("*.py"))}
    return {str(p.relative_to(package.parent)): n for p, n in lines.items() if n > limit}


def test_no_module_is_over_the_line_limit():
    over = modules_over()
    assert not over, f"modules over {MAX_LINES} lines (split each into modules that answer one question): " + ", ".join(
        f"{path} ({n} lines)" for path, n in over.items()
    )


def test_every_import_is_one_the_module_map_allows():
    allowed = module_map()
    broken = [
        f"{package_files()[m].relative_to(ROOT)}:{line} imports {name} (the README's module map "
        f"allows: {', '.join(sorted(allowed.get(m, ()))) or 'none: not in the map'})"
        for m, found in package_modules().items()
        for name, line, _ in found
        if name not in TORCH and name != m and name not in allowed.get(m, set())
    ]
    assert not broken, "\n".join(broken)


def test_every_import_between_wings_is_one_the_wing_map_allows():
    allowed = wing_map()
    broken = [
        f"{package_files()[m].relative_to(ROOT)}:{line} imports {name}: wing {wing(m)} may import "
        f"{', '.join(sorted(allowed.get(wing(m), ()))) or 'no other wing'}, not {wing(name)}"
        for m, found in package_modules().items()
        for name, line, _ in found
        if name not in TORCH and wing(name) != wing(m) and wing(name) not in allowed.get(wing(m), set())
    ]
    assert not broken, "\n".join(broken)


def test_the_maps_allow_nothing_the_code_does_not_import():
    """The map is the code's own picture: an allowance no import uses is stale and is named."""
    found = package_modules()
    graph = {m: {name for name, _, _ in imported if name not in TORCH and name != m} for m, imported in found.items()}
    stale = [
        f"{m} may import {name}"
        for m, allowed in module_map().items()
        for name in sorted(allowed - graph.get(m, set()))
    ]
    wings: dict[str, set[str]] = {}
    for m, names in graph.items():
        wings.setdefault(wing(m), set()).update(wing(n) for n in names if wing(n) != wing(m))
    stale += [
        f"wing {w} may import {name}"
        for w, allowed in wing_map().items()
        for name in sorted(allowed - wings.get(w, set()))
    ]
    assert not stale, "README module map allowances no import uses:\n" + "\n".join(stale)


def test_the_maps_themselves_have_no_circle():
    assert cycles(module_map()) == []
    assert cycles(wing_map()) == []


def test_the_imports_form_no_circle_between_modules_or_wings():
    found = package_modules()
    graph = {m: {name for name, _, _ in imported if name not in TORCH and name != m} for m, imported in found.items()}
    assert cycles(graph) == []
    wings: dict[str, set[str]] = {}
    for m, names in graph.items():
        wings.setdefault(wing(m), set()).update(wing(n) for n in names if wing(n) != wing(m))
    assert cycles(wings) == []


def torch_at_import(modules=None) -> dict[str, list[str]]:
    """Module -> the chain through which importing it imports torch (module-level imports only)."""
    modules = package_modules() if modules is None else modules
    chains: dict[str, list[str]] = {}

    def chain(m, seen=()):
        if m in chains:
            return chains[m]
        for name, _, top in modules[m]:
            if not top:
                continue
            if name in TORCH:
                chains[m] = [m, name]
                return chains[m]
            if name in modules and name not in seen:
                sub = chain(name, (*seen, m))
                if sub:
                    chains[m] = [m, *sub]
                    return chains[m]
        chains[m] = []
        return []

    return {m: chain(m) for m in modules}


@pytest.mark.parametrize("module", TORCH_FREE)
def test_report_modules_and_params_validation_never_import_torch(module):
    modules = package_modules()
    direct = [f"line {line}: {name}" for name, line, _ in modules[module] if name in TORCH]
    assert not direct, f"cerepro.{module} imports {direct}"
    through = [
        f"{name} (line {line}): {' -> '.join(torch_at_import(modules)[name])}"
        for name, line, _ in modules[module]
        if name in modules and torch_at_import(modules)[name]
    ]
    assert not through, f"cerepro.{module} imports torch through {through}"


def test_every_grid_validates_and_the_book_reads_it_without_torch():
    """What the imports promise, run: every grid of params/ expanded and validated
    (``grids.load_grid``: the objectives' records included) and read as the book reads it
    (``report.tables.grid_info``, the claims' families) in a fresh interpreter that never
    imports torch."""
    code = (
        "import sys\n"
        "from cerepro.fragments import available\nfrom cerepro.grids import load_grid\n"
        "from cerepro.report import claims, tables\n"
        "for name in available('grids'):\n"
        "    load_grid(name), tables.grid_info(name)\n"
        "assert claims.RELATIVE and claims.LLM_DISTILLATION\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {TORCH!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]", f"imported: {done.stdout}"


def test_the_checks_catch_a_circle_and_a_torch_import(tmp_path):
    """The checks can fail: a circle is found, and torch reached through a module is named."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    fake = {"tables": [("models", 3, True)], "models": [("torch", 1, True)], "vocab": []}
    assert torch_at_import(fake)["tables"] == ["tables", "models", "torch"]
    assert torch_at_import(fake)["vocab"] == []
    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n\n## Module map\n\n### Wings\n\n| wing | job | may import |\n|---|---|---|\n"
        "| `data` | data | `vocab` |\n| `vocab` | names | — |\n\n"
        "### Modules\n\n| module | job | may import |\n|---|---|---|\n"
        "| `data.trec` | files | `paths`, `vocab` |\n| `paths` | where | — |\n\n## Next\n",
        encoding="utf-8",
    )
    assert module_map(readme) == {"data.trec": {"paths", "vocab"}, "paths": set()}
    assert wing_map(readme) == {"data": {"vocab"}, "vocab": set()}
    assert wing("data.trec") == "data" and wing("vocab") == "vocab"


def test_the_line_limit_names_each_module_over_it(tmp_path):
    """The limit can fail: a module one line over is named with its count, one at the limit is not."""
    package = tmp_path / "cerepro"
    (package / "data").mkdir(parents=True)
    (package / "data" / "long.py").write_text("x = 1\n" * 501, encoding="utf-8")
    (package / "data" / "full.py").write_text("x = 1\n" * 500, encoding="utf-8")
    (package / "top.py").write_text("x = 1\n" * 600 + "y = 2", encoding="utf-8")  # no final newline: 600
    assert modules_over(500, package) == {"cerepro/data/long.py": 501, "cerepro/top.py": 600}
