"""`make parity`: build the authors' libraries in environments of their own, run parity/compare.py
in each, and write the result table (stdout, cache/parity/, and the book's book/parity-table.md).

Standard library only: it runs with the Python that creates the environments. Environments are
`.venv-parity-<name>` at the repository root (git-ignored), rebuilt when parity/pins.toml or the
torch spec changes; never the project's `.venv`. Nothing here is part of `make test`.

    python3 parity/run.py [--only february|latest]

Environment variables: TORCH_SPEC / TORCH_INDEX (as for `make install`); CEREPRO_PARITY_SOURCES,
a folder holding `<name>-<commit>.tar.gz` for each source of parity/pins.toml (GitHub is then not
contacted); CEREPRO_CACHE (downloads and results go to its `parity/`).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = ROOT / "parity" / "pins.toml"
TABLE = ROOT / "book" / "parity-table.md"
STAMP = ".parity-installed"
# the packages whose installed versions the table reports
REPORTED = (
    "experimaestro-ir",
    "xpm-torch",
    "experimaestro",
    "datamaestro",
    "datamaestro-text",
    "lightning",
    "torch",
    "transformers",
    "tokenizers",
)


class ParityError(RuntimeError):
    pass


def cache_folder() -> Path:
    folder = Path(os.environ.get("CEREPRO_CACHE") or ROOT / "cache") / "parity"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def source_archive(source: dict) -> Path:
    """The archive of one pinned commit: from CEREPRO_PARITY_SOURCES, else downloaded from GitHub
    (once, into the cache). Its single top folder must name the commit."""
    name = f"{source['name']}-{source['commit']}.tar.gz"
    local = os.environ.get("CEREPRO_PARITY_SOURCES")
    if local:
        path = Path(local) / name
        if not path.is_file():
            raise ParityError(
                f"CEREPRO_PARITY_SOURCES={local}: no {name} there "
                f"(make it with `git archive --prefix={source['name']}-{source['commit']}/ "
                f"-o {name} {source['commit']}` in a clone of {source['repo']})"
            )
    else:
        path = cache_folder() / name
        if not path.is_file():
            url = f"https://github.com/{source['repo']}/archive/{source['commit']}.tar.gz"
            print(f"downloading {url}", flush=True)
            tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
            try:
                with urllib.request.urlopen(url, timeout=120) as response, open(tmp, "wb") as out:
                    shutil.copyfileobj(response, out)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise ParityError(
                    f"could not download {url} ({exc}); set CEREPRO_PARITY_SOURCES to a folder holding {name}"
                ) from None
            os.replace(tmp, path)
    with tarfile.open(path) as archive:
        tops = {member.name.split("/")[0] for member in archive.getmembers()}
    # GitHub names the folder <repository>-<commit>; git archive --prefix gives <name>-<commit>
    if len(tops) != 1 or not next(iter(tops)).endswith(source["commit"]):
        raise ParityError(f"{path}: expected one top folder ending in {source['commit']}, found {sorted(tops)[:3]}")
    return path


def run(cmd: list[str], **kwargs) -> None:
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def build_environment(name: str, spec: dict, cerepro_packages: list[str]) -> Path:
    """``.venv-parity-<name>`` with torch, the cerepro subset and the environment's packages;
    reused while its stamp (pins, torch spec) is unchanged."""
    venv = ROOT / f".venv-parity-{name}"
    python = venv / "bin" / "python"
    torch_spec, torch_index = os.environ.get("TORCH_SPEC", "torch==2.13.0"), os.environ.get("TORCH_INDEX", "")
    key = hashlib.sha256(
        json.dumps([spec, cerepro_packages, torch_spec, torch_index], sort_keys=True).encode()
    ).hexdigest()
    stamp = venv / STAMP
    if stamp.is_file() and stamp.read_text().strip() == key and python.exists():
        print(f"{venv.name}: up to date", flush=True)
        return python
    if venv.exists():
        shutil.rmtree(venv)
    run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    run(pip + [torch_spec] + (["--index-url", torch_index] if torch_index else []))
    archives = [str(source_archive(s)) for s in spec.get("sources", [])]
    env = dict(os.environ)
    # hatch-vcs wants a git version; an archive has none (the commit is in this environment's name)
    env["SETUPTOOLS_SCM_PRETEND_VERSION"] = "0.0.0"
    run(pip + [torch_spec] + cerepro_packages + spec["packages"] + archives, env=env)
    write_atomic(stamp, key + "\n")
    return python


def installed_versions(python: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try: out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run([str(python), "-c", code, *REPORTED], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def compare(name: str, python: Path) -> list[dict]:
    out = cache_folder() / f"results-{name}.json"
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        CEREPRO_CACHE=str(cache_folder() / f"cerepro-{name}"),
    )
    done = subprocess.run(
        [str(python), str(ROOT / "parity" / "compare.py"), "--side", name, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
    )
    if not out.is_file():
        sys.stderr.write(done.stderr[-6000:])
        raise ParityError(f"parity/compare.py --side {name} wrote no result (exit {done.returncode})")
    # the project speaks of itself only: paths inside the repository are written relative to it
    return json.loads(out.read_text().replace(str(ROOT) + "/", ""))


def outcome(r: dict) -> str:
    if r["error"]:
        return f"not run: {r['error']}"
    if r["identical"] == r["cases"]:
        return "identical"
    return f"{r['cases'] - r['identical']} differ: {r['first_difference']}"


def table(results: dict, pins: dict) -> str:
    lines = ["<!-- written by `make parity` (parity/run.py); do not edit -->", ""]
    for name, (versions, rows, seconds) in results.items():
        spec = pins["environments"][name]
        lines.append(f"**{name}**: {spec['description']}.")
        lines.append("")
        for source in spec.get("sources", []):
            lines.append(f"- `{source['repo']}` at `{source['commit'][:12]}` ({source['date']}): {source['why']}")
        lines.append("- installed: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
        lines.append(f"- comparisons ran in {seconds:.0f} s")
        lines.append("")
        lines.append("| What | The authors' class | cerepro | Cases | Result | Expected | Note |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in rows:
            cells = [r["what"], r["authors"], r["cerepro"], str(r["cases"]), outcome(r), r["expected"], r["note"]]
            lines.append(
                "| " + " | ".join(c.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;") for c in cells) + " |"
            )
        lines.append("")
    return "\n".join(lines)


def failures(rows: list[dict]) -> list[str]:
    bad = []
    for r in rows:
        if r["error"] or r["cases"] == 0:
            bad.append(f"{r['what']}: {r['error'] or 'no case compared'}")
        elif (r["identical"] == r["cases"]) != (r["expected"] == "identical"):
            bad.append(f"{r['what']}: {r['identical']}/{r['cases']} identical, expected {r['expected']}")
    return bad


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["february", "latest"])
    args = parser.parse_args(argv)
    pins = tomllib.loads(PINS.read_text(encoding="utf-8"))
    names = [args.only] if args.only else list(pins["environments"])
    results, bad = {}, []
    try:
        for name in names:
            python = build_environment(name, pins["environments"][name], pins["cerepro"]["packages"])
            start = time.monotonic()
            rows = compare(name, python)
            results[name] = (installed_versions(python), rows, time.monotonic() - start)
            bad += [f"{name}: {b}" for b in failures(rows)]
    except (ParityError, subprocess.CalledProcessError) as exc:
        print(f"make parity: {exc}", file=sys.stderr)
        return 2
    text = table(results, pins)
    print(text)
    if args.only:
        print(f"(--only {args.only}: the book's table is written by a run of every environment)")
    else:
        write_atomic(TABLE, text + "\n")
        print(f"wrote {TABLE.relative_to(ROOT)}")
    if bad:
        print("make parity: outcomes other than expected:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
