"""The registry of bad inputs that the book's page `book/appendix/bad-inputs.md` lists.

Each file `tests/test_bad_*.py` registers its cases with :func:`case` and ends with
``test_bad_input_is_refused_with_a_message_naming_it = cases_test(__name__)``, which makes each
case a test; `tests/test_bad_inputs.py` imports every such file and writes the page, one section
per file. A case is a function ``fn(tmp_path)`` that must raise ``error`` with a message matching
``match``; it runs with the cache in ``tmp_path``, the checkout's params and the checkout as the
working directory.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    error: type
    match: str
    fn: Callable[[Path], object]
    module: str


CASES: dict[tuple[str, str], Case] = {}


def case(what: str, error: type, match: str):
    """Register ``fn(tmp_path)`` as a bad input described by ``what`` that must raise ``error``
    with a message matching ``match``."""

    def register(fn):
        CASES[fn.__module__, fn.__name__] = Case(fn.__name__, what, error, match, fn, fn.__module__)
        return fn

    return register


def cases_of(module: str) -> list[Case]:
    return [c for c in CASES.values() if c.module == module]


class Refused(Exception):
    """`cerepro ...` exited with status 2; the message is what it printed after 'cerepro: error: '."""


def cerepro(*argv: str) -> None:
    """Run the ``cerepro`` command in this process, as a user types it; raise :class:`Refused`
    with its message when it refuses (exit 2)."""
    from cerepro.cli import main

    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = main(list(argv))
    text = err.getvalue().strip()
    if code == 2:
        raise Refused(text.split("cerepro: error: ", 1)[-1])
    raise AssertionError(f"`cerepro {' '.join(argv)}` exited {code}, not refused: {text[-2000:]}")


def params_copy(tmp_path: Path) -> Path:
    params = tmp_path / "params"
    shutil.copytree(ROOT / "params", params)
    return params


def plan_error(tmp_path: Path, grid_text: str, profile: str | None = None) -> None:
    """`cerepro plan bad` on a copy of params/ with ``grid_text`` as params/grids/bad.yaml."""
    params = params_copy(tmp_path)
    (params / "grids" / "bad.yaml").write_text(grid_text)
    if profile:
        (params / "profiles" / "bad.yaml").write_text(profile)
    os.environ["CEREPRO_PARAMS"] = str(params)
    from cerepro.grid.plan import plan

    plan("bad")


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CEREPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CEREPRO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("CEREPRO_PARAMS", str(ROOT / "params"))
    monkeypatch.delenv("CEREPRO_BOOK_GRID", raising=False)
    monkeypatch.chdir(ROOT)


def message(c: Case, tmp_path: Path) -> str:
    with pytest.raises(c.error) as info:
        c.fn(tmp_path)
    return str(info.value)


# (module, case) -> (message, the folder it ran in): the page reuses what this session's tests saw
SEEN: dict[tuple[str, str], tuple[str, Path]] = {}


def cases_test(module: str):
    """The test that runs every case registered by ``module``."""
    mine = cases_of(module)

    @pytest.mark.parametrize("c", mine, ids=[c.name for c in mine])
    def test(c, tmp_path, monkeypatch):
        isolate(monkeypatch, tmp_path)
        text = message(c, tmp_path)
        assert re.search(c.match, text), text
        SEEN[c.module, c.name] = (text, tmp_path)

    return test
