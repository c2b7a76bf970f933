"""Params files read as plain data: what a file of ``params/`` may hold, and where each lives.

A params file holds plain data only (strings, numbers, booleans, null, lists, mappings), read by
:class:`PlainLoader`; a fragment (``params/<kind>/<slug>.yaml``) is a flat mapping, found by its
slug. Every refusal is a :class:`ParamsError` naming the file (and the line, where YAML gives one).
Also here: the known differences from the authors' code (``params/expected/differences.yaml``).

This module reads files; it knows nothing of what the keys mean (:mod:`cerepro.config` does).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import yaml

from cerepro.paths import params_dir


class ParamsError(ValueError):
    """A params file or override that cannot describe a run."""


# ---------------------------------------------------------------------------------------------
# Plain data: what a params file, a grid file or a `-p` value may hold


class PlainLoader(yaml.SafeLoader):
    """YAML limited to plain data: strings, numbers, booleans, null, lists and mappings with
    scalar keys. Every other tag (``!!binary``, ``!!set``, ``!!omap``, ``!!python/...``, any
    local ``!tag``) is refused: params reach notebooks and Snakemake, and a value that is not
    plain data could be rendered there as something other than itself. An unquoted date reads
    as its text. A key given twice in one mapping is refused (YAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key!r} appears twice (line {seen[key] + 1} and line "
                        f"{key_node.start_mark.line + 1}); YAML would keep the last one silently",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


PlainLoader.yaml_constructors = {
    tag: fn
    for tag, fn in yaml.SafeLoader.yaml_constructors.items()
    if tag and tag.rsplit(":", 1)[-1] in ("null", "bool", "int", "float", "str", "seq", "map")
}
PlainLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


def _refuse_tag(loader: PlainLoader, node: yaml.Node):
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    raise yaml.constructor.ConstructorError(None, None, f"tag {tag} is not plain data", node.start_mark)


PlainLoader.add_constructor(None, _refuse_tag)


def load_yaml(text: str) -> Any:
    """``text`` read by :class:`PlainLoader`; a ``yaml.YAMLError`` when it is not plain data."""
    data = yaml.load(text, Loader=PlainLoader)  # noqa: S506 (PlainLoader is a restricted SafeLoader)
    _check_keys(data)
    return data


def _check_keys(data: Any) -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is not a plain scalar", None)
            _check_keys(value)
    elif isinstance(data, list):
        for value in data:
            _check_keys(value)


# ---------------------------------------------------------------------------------------------
# Fragments


def read_fragment(path: str | Path) -> dict[str, Any]:
    """A flat YAML mapping; nested mappings are refused (layering is shallow). Parsed once per
    content of the file: a grid layers the same few fragments into every run."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    return dict(_parse_fragment(path, path.read_bytes()))


@functools.lru_cache(maxsize=256)
def _parse_fragment(path: Path, content: bytes) -> dict[str, Any]:
    try:
        data = load_yaml(content.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    for key, value in data.items():
        if isinstance(value, dict):
            raise ParamsError(f"{path}: key {key!r} holds a mapping; params fragments are flat")
    return data


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error as 'what (line L, column C)', the position 1-based as editors show it."""
    mark = getattr(exc, "problem_mark", None)
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    began = f" (from line {start.line + 1}, column {start.column + 1})" if start is not None else ""
    return f"{context + began + ': ' if context else ''}{what}{where}"


def available(kind: str, root: Path | None = None) -> list[str]:
    """Slugs with a fragment in ``params/<kind>/`` (kind: backbones, objectives, profiles, grids)."""
    folder = (root or params_dir()) / kind
    return sorted(p.stem for p in folder.glob("*.yaml"))


SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def fragment_path(kind: str, slug: str, root: Path | None = None) -> Path:
    root = root or params_dir()
    singular = kind.rstrip("s")
    if not isinstance(slug, str) or not SLUG.fullmatch(slug) or ".." in slug:
        known = ", ".join(available(kind, root)) or "none"
        raise ParamsError(
            f"{singular} {slug!r} is not a slug (a name of params/{kind}/: letters, digits, "
            f"'.', '_' and '-', no path); known: {known}"
        )
    path = root / kind / f"{slug}.yaml"
    if not path.is_file():
        known = ", ".join(available(kind, root)) or "none"
        raise ParamsError(f"unknown {singular} {slug!r}: no {path}; known: {known}")
    return path


# ---------------------------------------------------------------------------------------------
# Known differences from the authors' code (params/expected/differences.yaml)

DIFFERENCE_KEYS = ("point", "code", "authors", "source", "cerepro", "status", "effect")
DIFFERENCE_STATUSES = ("fixed", "variant", "unconfirmed")
# which version of the authors' code a row describes: the one that produced the paper's table
# (February 2026), their later code (March 2026 on, cerepro's profile authors-head), or both
DIFFERENCE_CODES = ("table", "later", "both")


def differences(root: Path | None = None) -> list[dict[str, str]]:
    """params/expected/differences.yaml: every known difference from the authors' code, checked."""
    path = (root or params_dir()) / "expected" / "differences.yaml"
    entries = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("differences") or []
    for i, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or set(entry) != set(DIFFERENCE_KEYS):
            raise ParamsError(f"{path}: entry {i} must have exactly the keys {DIFFERENCE_KEYS}")
        if entry["status"] not in DIFFERENCE_STATUSES:
            raise ParamsError(
                f"{path}: entry {i} ({entry['point']!r}): status {entry['status']!r} "
                f"is not one of {DIFFERENCE_STATUSES}"
            )
        if entry["code"] not in DIFFERENCE_CODES:
            raise ParamsError(
                f"{path}: entry {i} ({entry['point']!r}): code {entry['code']!r} is not one of {DIFFERENCE_CODES}"
            )
    return entries


def differences_markdown(root: Path | None = None) -> str:
    """The differences as a Markdown table (the README's and the book's)."""

    def cell(text: str) -> str:
        text = " ".join(str(text).split()).replace("|", "\\|")
        return text.replace("<", "&lt;").replace(">", "&gt;")  # <s> is RoBERTa's, not HTML

    header = ["What", "Their code", "The authors' code", "Read in", "cerepro", "Status", "Expected effect"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for d in differences(root):
        lines.append("| " + " | ".join(cell(d[k]) for k in DIFFERENCE_KEYS) + " |")
    return "\n".join(lines)
