"""The rehearsal's inputs: synthetic files in the real formats, read by ir_datasets and cerepro
as the real ones are, with the md5 check on; and bad input on the paper path refused before any
job starts (`cerepro plan` lists it, `cerepro grid` will not start), each message naming the id
or the file.

ir_datasets fixes its paths at import, so each check runs in a subprocess with IR_DATASETS_HOME.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from cerepro.data import rehearsal

ROOT = Path(__file__).resolve().parents[1]

READ = """
import json
from cerepro.data import datasets, rehearsal, training_data
from cerepro.grid.plan import plan
from cerepro.retrieval import first_stage
out = {"plan": plan("rehearsal")["input_problems"]}  # before the grid's first stage ran
for d in rehearsal.EVAL_SETS + rehearsal.VALIDATION_SETS:
    # the grid's first stage over the collection as ir_datasets reads it
    first_stage.produce_run(d, "tiny-splade-top20", progress=False)
    c = datasets.load_collection(d)
    run = datasets.load_candidates(d, "run:tiny-splade-top20", 20)
    out[d] = [len(c.queries), len(c.qrels), len(run), c.doc_text(run["doc_id"][:1])[0]]
for kind in ("triples", "teacher-pairs", "hard-negatives", "llm-lists"):
    g = next(iter(training_data.training_source(kind, "msmarco-passage", seed=0,
             group_size=training_data.DEFAULT_GROUP_SIZE[kind])))
    out[kind] = [g.query, list(g.passages[:2]), g.teacher and list(g.teacher[:2])]
print(json.dumps(out))
"""

BAD = """
import json, gzip, sys
from pathlib import Path
from cerepro.data import downloads, train_files
from cerepro.grid import preflight
from cerepro.grid.plan import plan
from cerepro.grid.workflow import run_grid
from cerepro.grids import load_grid
from cerepro.grid.runner import RunnerError
home, cache = Path(sys.argv[1]), Path(sys.argv[2])
out = {}
# a teacher file that differs from its md5 (one byte changed)
teacher = cache / "downloads" / downloads.REGISTRY["hofstaetter-t2-teacher"].filename
teacher.write_bytes(teacher.read_bytes().replace(b"\\t", b" ", 1))
try:
    downloads.fetch("hofstaetter-t2-teacher", download=False)
except downloads.ChecksumError as exc:
    out["fetch"] = str(exc)
# a truncated triples gzip
gz = home / "msmarco-passage" / preflight.TRIPLES_GZ
gz.write_bytes(gz.read_bytes()[:-40])
try:
    train_files.msmarco_triples_path()
except Exception as exc:
    out["unpack"] = f"{type(exc).__name__}: {exc}"
out["plan"] = plan("bad")["input_problems"]
try:
    plan("unknown")
except Exception as exc:
    out["unknown"] = f"{type(exc).__name__}: {exc}"
try:
    run_grid("bad", cores=1)
except RunnerError as exc:
    out["grid"] = str(exc)
print(json.dumps(out))
"""


def run(code: str, tmp_path: Path, *args: str, params: Path | None = None) -> dict:
    env = {
        **os.environ,
        "IR_DATASETS_HOME": str(tmp_path / "irds"),
        "CEREPRO_CACHE": str(tmp_path / "cache"),
        "CEREPRO_CHECKSUMS": str(tmp_path / "cache" / "downloads" / "CHECKSUMS"),
        "CEREPRO_RUNS": str(tmp_path / "runs"),
        "IR_DATASETS_SKIP_DISK_FREE": "true",
        "TQDM_DISABLE": "1",
        "PYTHONPATH": str(ROOT),
        **({"CEREPRO_PARAMS": str(params)} if params else {}),
    }
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_generated_inputs_are_read_through_ir_datasets_and_pass_their_md5(tmp_path):
    files = rehearsal.write_rehearsal_inputs(tmp_path / "irds", tmp_path / "cache")
    assert files["checksums"].read_text().count("  ") == 4  # md5sum format, one line per file
    out = run(READ, tmp_path)
    for dataset in ("msmarco-passage/dev/small", "beir/scifact/test", "lotte/writing/test/search", "nano-beir/scifact"):
        queries, qrels, candidates, text = out[dataset]
        assert queries == 8 and qrels == 16 and candidates == 8 * 20 and text
    assert out["msmarco-passage/trec-dl-2019/judged"][0] == 8  # the unjudged 9th query is filtered
    assert out["teacher-pairs"][2] is not None and out["llm-lists"][2] == [-1.0, -2.0]
    assert out["plan"] == []  # every id, run and md5 of the rehearsal grid checks out


def test_bad_inputs_on_the_paper_path_are_refused_naming_the_file_or_id(tmp_path):
    rehearsal.write_rehearsal_inputs(tmp_path / "irds", tmp_path / "cache")
    params = tmp_path / "params"
    subprocess.run(["cp", "-r", str(ROOT / "params"), str(params)], check=True)
    profile = (params / "profiles" / "rehearsal.yaml").read_text()
    # a NanoBEIR set validated on a run the user must place (the grid does not produce it)
    (params / "profiles" / "bad.yaml").write_text(
        profile.replace("validation_first_stage: run:tiny-splade-top20", "validation_first_stage: run:my-splade-top100")
    )
    (params / "profiles" / "unknown.yaml").write_text(
        profile.replace(
            "validation_datasets: [nano-beir/scifact]",
            "validation_datasets: [nano-beir/scifact, nano-beir/no-such-set]",
        )
    )
    for name in ("bad", "unknown"):
        (params / "grids" / f"{name}.yaml").write_text(
            f"name: {name}\nprofile: {name}\nbackbones: [tiny-bert]\nobjectives: [bce, margin-mse]\nseeds: 1\n"
        )
    out = run(BAD, tmp_path, str(tmp_path / "irds"), str(tmp_path / "cache"), params=params)
    assert "bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv: md5" in out["fetch"]
    assert "does not match the expected" in out["fetch"]
    assert out["unpack"].startswith("DataFormatError") and "qidpidtriples.train.full.2.tsv.gz" in out["unpack"]
    assert "not a complete gzip" in out["unpack"]
    assert (
        out["unknown"].startswith("InputError") and "'nano-beir/no-such-set' is not an ir_datasets id" in out["unknown"]
    )
    problems = "\n".join(out["plan"])
    assert "validation dataset 'nano-beir/scifact': first-stage run 'my-splade-top100' is missing" in problems
    assert "first-stage/nano-beir/scifact/my-splade-top100.trec" in problems
    assert "training file hofstaetter-t2-teacher" in problems and "does not match" in problems
    assert "qidpidtriples.train.full.2.tsv.gz is not a complete gzip" in problems
    assert "cannot start" in out["grid"] and "my-splade-top100" in out["grid"]
    assert not (tmp_path / "runs" / "bad").exists()  # refused before Snakemake made anything


def test_a_malformed_checksum_override_names_its_line(tmp_path, monkeypatch):
    import pytest

    from cerepro.data import downloads

    override = tmp_path / "CHECKSUMS"
    override.write_text("0123456789abcdef0123456789abcdef  no-such-file.tsv\n")
    monkeypatch.setenv("CEREPRO_CHECKSUMS", str(override))
    with pytest.raises(downloads.ChecksumError, match=r"CHECKSUMS:1: 'no-such-file.tsv' is not a registered"):
        downloads.checksum_overrides()
    override.write_text("nonsense\n")
    with pytest.raises(downloads.ChecksumError, match=r"CHECKSUMS:1: expected 'md5  filename'"):
        downloads.checksum_overrides()


RACE = """
import json, sys, time
from pathlib import Path
from cerepro.data import datasets
go = Path(sys.argv[1])
while not go.exists():  # every process opens the fresh collection at the same moment
    time.sleep(0.001)
docs = datasets.load_collection("msmarco-passage/dev/small").docs
ids = [doc_id for doc_id, _ in docs]
print(json.dumps([len(docs), len(ids), len(set(ids))]))
"""


def test_jobs_opening_a_fresh_collection_together_build_its_docs_store_once(tmp_path):
    """The first-stage jobs of MS MARCO dev and TREC DL open the same passages together; the
    docs store (built on first use) must hold each passage once, not once per job."""
    rehearsal.write_rehearsal_inputs(tmp_path / "irds", tmp_path / "cache")
    env = {
        **os.environ,
        "IR_DATASETS_HOME": str(tmp_path / "irds"),
        "CEREPRO_CACHE": str(tmp_path / "cache"),
        "IR_DATASETS_SKIP_DISK_FREE": "true",
        "TQDM_DISABLE": "1",
        "PYTHONPATH": str(ROOT),
    }
    go = tmp_path / "go"
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, str(go)],
            env=env,
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    import time

    time.sleep(8)  # all three imported and waiting
    go.touch()
    seen = []
    for job in jobs:
        out, err = job.communicate(timeout=300)
        assert job.returncode == 0, err[-3000:]
        seen.append(json.loads(out.strip().splitlines()[-1]))
    count = seen[0][2]
    assert count > 0 and all(s == [count, count, count] for s in seen), seen
