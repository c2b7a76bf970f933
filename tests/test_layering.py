"""The module map of the README is the package's layering, and the imports keep to it.

The README's "Module map" table names every module of ``cerepro/``, its job and the cerepro
modules it may import. Read with ``ast`` (nothing is imported), every ``import`` in the package,
at module level or inside a function, must be one the map allows; the imports form no circle;
and the report modules, which read results, never import torch: not themselves, and not through
a cerepro module that imports torch when it is imported.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cerepro"
# The modules the book and the compare notebook read results with: they must load without torch.
REPORT_MODULES = ("tables", "figures", "verdicts", "provenance", "protocol", "claims", "scoreboard", "stats")
TORCH = ("torch", "transformers", "sentence_transformers", "accelerate")


def module_map(readme: Path = ROOT / "README.md") -> dict[str, set[str]]:
    """``module -> cerepro modules it may import``, from the README's module map table."""
    text = readme.read_text(encoding="utf-8")
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    allowed = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`(\w+)`", cells[0]) if len(cells) == 3 else None
        if match:
            allowed[match[1]] = set(re.findall(r"`(\w+)`", cells[2]))
    return allowed


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(imported module, line, at module level)`` for every import statement of a file;
    cerepro modules by their short name, others by their top-level package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" if node.module == "cerepro" else node.module for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            short = parts[1] if parts[0] == "cerepro" and len(parts) > 1 else parts[0]
            found.append((short, node.lineno, id(node) in top))
    return found


def package_modules() -> dict[str, list[tuple[str, int, bool]]]:
    modules = {p.stem: imports(p) for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"}
    return {m: [(name, line, top) for name, line, top in found if name in modules or name in TORCH]
            for m, found in modules.items()}


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


def test_the_module_map_names_every_module_once():
    assert set(module_map()) == set(package_modules()), "README module map vs cerepro/*.py"


def test_every_import_is_one_the_module_map_allows():
    allowed = module_map()
    broken = [f"cerepro/{m}.py:{line} imports {name} (the README's module map allows: "
              f"{', '.join(sorted(allowed.get(m, ()))) or 'none: not in the map'})"
              for m, found in package_modules().items() for name, line, _ in found
              if name not in TORCH and name != m and name not in allowed.get(m, set())]
    assert not broken, "\n".join(broken)


def test_the_module_map_itself_has_no_circle():
    assert cycles(module_map()) == []


def test_the_imports_form_no_circle():
    graph = {m: {name for name, _, _ in found if name not in TORCH and name != m}
             for m, found in package_modules().items()}
    assert cycles(graph) == []


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


@pytest.mark.parametrize("module", REPORT_MODULES)
def test_report_modules_never_import_torch(module):
    modules = package_modules()
    direct = [f"line {line}: {name}" for name, line, _ in modules[module] if name in TORCH]
    assert not direct, f"cerepro.{module} imports {direct}"
    through = [f"{name} (line {line}): {' -> '.join(torch_at_import(modules)[name])}"
               for name, line, _ in modules[module] if name in modules and torch_at_import(modules)[name]]
    assert not through, f"cerepro.{module} imports torch through {through}"


def test_the_checks_catch_a_circle_and_a_torch_import(tmp_path):
    """The checks can fail: a circle is found, and torch reached through a module is named."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    fake = {"tables": [("models", 3, True)], "models": [("torch", 1, True)], "vocab": []}
    assert torch_at_import(fake)["tables"] == ["tables", "models", "torch"]
    assert torch_at_import(fake)["vocab"] == []
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Module map\n\n| module | job | may import |\n|---|---|---|\n"
                      "| `vocab` | names | `paths` |\n| `paths` | where | — |\n\n## Next\n", encoding="utf-8")
    assert module_map(readme) == {"vocab": {"paths"}, "paths": set()}
