"""Which files ir_datasets reads for a dataset's handlers, and whether they are on disk.

``ir_datasets_files(needs)`` walks the handlers of each ir_datasets id (docs, queries, qrels, the
training triples) down to ir_datasets' own download objects, with ir_datasets' URL, md5 and size
hint; a file counts as present when ir_datasets' copy, or what it unpacks from it, is on disk. The
walk reads the attributes of ir_datasets 0.6.3's source objects (``Cache``, ``Download``, ...; the
version pyproject pins); the tests of the rehearsal and paper grids fail if they change.

This module finds files without network access; it never downloads (``cerepro.grid.fetch`` does,
through ir_datasets' own ``Download``).
"""

from __future__ import annotations

from pathlib import Path

from cerepro.grid.inputs import Input


def ir_datasets_files(needs: dict[str, set[str]]):
    """``(input, user)`` for every source below the handlers of ``{ir_datasets id: handlers}``."""
    if not needs:
        return
    import ir_datasets

    for dataset, handlers in needs.items():
        loaded = ir_datasets.load(dataset)
        for handler in sorted(handlers):
            if not getattr(loaded, f"has_{handler}")():
                continue
            for item in _sources(getattr(loaded, f"{handler}_handler")(), set()):
                yield item, f"{dataset} ({handler})"


def target_path(node) -> Path | None:
    """The file or folder an ir_datasets source object materialises, if it has one."""
    from ir_datasets.util import Cache, Download, TarExtractAll, ZipExtractCache

    if isinstance(node, Cache):
        return Path(node._path)
    if isinstance(node, TarExtractAll):
        return Path(node._extract_path)
    if isinstance(node, ZipExtractCache):
        return Path(node.extract_path)
    if isinstance(node, Download) and node._cache_path:
        return Path(node._cache_path)
    return None


def _children(node) -> list:
    if isinstance(node, dict):
        return list(node.values())
    if isinstance(node, (list, tuple, set, frozenset)):
        return list(node)
    if isinstance(node, (str, bytes, int, float, bool, Path)) or node is None:
        return []
    return list(vars(node).values()) if hasattr(node, "__dict__") else []


def _downloads_below(node, seen: set[int]) -> list:
    """ir_datasets ``Download`` objects reachable from ``node`` whose data is not on disk."""
    from ir_datasets.util import Download

    if id(node) in seen:
        return []
    seen.add(id(node))
    target = target_path(node)
    if target is not None and target.exists():
        return []
    if isinstance(node, Download):
        local = [m for m in node.mirrors if type(m).__name__ == "LocalDownload"]
        if any(Path(m._path).exists() for m in local):  # a copy in <home>/downloads/<md5>
            return []
        return [node]
    return [d for child in _children(node) for d in _downloads_below(child, seen)]


def _sources(node, seen: set[int]) -> list[Input]:
    """The outermost ir_datasets sources below a handler: present when their file is on disk,
    else missing (what ir_datasets would download for them) or licensed (no URL)."""
    if id(node) in seen:
        return []
    seen.add(id(node))
    target = target_path(node)
    if target is None:
        return [item for child in _children(node) for item in _sources(child, seen)]
    if target.exists():
        return [Input("ir_datasets", _irds_name(target), str(target), "present", size=disk_size(target))]
    missing = _downloads_below(node, set())
    out = []
    for download in missing:  # none: what it unpacks from is on disk, ir_datasets builds it offline
        urls = [m.url for m in download.mirrors if hasattr(m, "url")]
        where = Path(download._cache_path or target)
        if not urls:  # a licensed source ir_datasets asks the user to provide
            message = next((m._message for m in download.mirrors if getattr(m, "_message", None)), "")
            out.append(Input("licensed", _irds_name(where), str(where), "manual", detail=message.strip()))
            continue
        out.append(
            Input(
                "ir_datasets",
                _irds_name(where),
                str(where),
                "missing",
                size=download._size_hint or None,
                url=urls[0],
                handle=[node],
                detail=f"md5 {download.expected_md5}" if download.expected_md5 else "",
            )
        )
    return out


def _irds_name(path: Path) -> str:
    home = _irds_home()
    return str(path.relative_to(home)) if path.is_relative_to(home) else str(path)


def _irds_home() -> Path:
    import ir_datasets

    return Path(ir_datasets.util.home_path())


def disk_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
