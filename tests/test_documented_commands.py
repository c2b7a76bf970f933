"""Every documented command works after the README's set-up: each third-party module that the
package, the notebooks and benchmarks/ import comes from a distribution pyproject.toml pins (in
the dependencies or an extra the README names), and each benchmark script answers --help."""

import ast
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[=<>!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def declared(*extras: str) -> set[str]:
    project = PYPROJECT["project"]
    names = {_name(r) for r in project["dependencies"]}
    for extra in extras:
        names |= {_name(r) for r in project["optional-dependencies"][extra]}
    return names


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def undeclared(paths, allowed: set[str]) -> dict[str, set[str]]:
    """Third-party modules imported by ``paths`` whose distributions are not in ``allowed``."""
    providers = metadata.packages_distributions()
    missing = {}
    for path in paths:
        for module in imported_modules(path):
            if module in sys.stdlib_module_names or module in ("cerepro", "__future__"):
                continue
            dists = {d.lower().replace("_", "-") for d in providers.get(module, [module])}
            if not dists & allowed:
                missing.setdefault(module, set()).add(path.relative_to(ROOT).as_posix())
    return missing


def test_the_package_and_notebooks_import_only_pinned_dependencies():
    # sentence-transformers and its model ship in dev only: cerepro.model.models imports them lazily
    # for the optional CrossEncoder check, which tests run
    paths = sorted((ROOT / "cerepro").glob("*.py")) + sorted((ROOT / "notebooks").glob("*.py"))
    assert undeclared(paths, declared("dev")) == {}


def test_benchmarks_import_only_what_the_dev_and_benchmarks_extras_install():
    assert undeclared(sorted((ROOT / "benchmarks").glob("*.py")), declared("dev", "benchmarks")) == {}
    readme = (ROOT / "benchmarks" / "README.md").read_text()
    assert 'pip install -e ".[dev,benchmarks]"' in readme  # the README says how to get them


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")))
def test_each_benchmark_answers_help(script):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout
