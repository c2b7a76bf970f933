"""Bad inputs as people have them, each refused with a message naming the file, line, key or
parameter, before any job runs; and files with a UTF-8 byte-order mark read as without one.

The book's table of bad inputs (book/appendix/bad-inputs.md) is these cases' inputs and the
messages they give, written by this module: ``CEREPRO_WRITE_BAD_INPUTS=1 pytest
tests/test_bad_inputs.py`` rewrites it, and ``test_the_books_table_is_this_modules`` fails when
the page and the messages drift apart.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

from cerepro.cli import main, parse_params
from cerepro.config import ParamsError, load_grid, read_fragment
from cerepro.datasets import InputError, load_local
from cerepro.trec import DataFormatError, read_qrels, read_run
from cerepro.models import ModelFolderError, check_model_folder
from cerepro.runner import RunnerError
from cerepro.training_data import RecordFile, verify_training_file

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "book" / "appendix" / "bad-inputs.md"
CASES = []


def case(what: str, error: type, match: str):
    """Register ``fn(tmp_path)`` as a bad input described by ``what`` that must raise ``error``
    with a message matching ``match``."""
    def register(fn):
        CASES.append((fn.__name__, what, error, match, fn))
        return fn
    return register


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
    from cerepro import engine

    engine.plan("bad")


def model_folder(tmp_path: Path) -> Path:
    from cerepro import models

    model, tokenizer = models.build_cross_encoder("builtin:bert", max_length=16, texts=["a b c", "d e f"])
    folder = tmp_path / "model"
    models.save_cross_encoder(model, tokenizer, folder, card="a test model")
    return folder


# --- files as people have them ---------------------------------------------------------------------


@case("qrels line with an implausible relevance grade (a score in the grade column)", DataFormatError,
      r"qrels.txt:2: relevance 7 for query 'q1' and doc 'd2' is outside -2..4")
def qrels_grade(tmp_path):
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\nq1 0 d2 7\n")
    read_qrels(tmp_path / "qrels.txt")


@case("grid file with a YAML syntax error", ParamsError,
      r"broken.yaml: not valid YAML: while parsing a flow sequence \(from line 3, column 13\): expected "
      r"',' or '\]', but got ':' \(line 4, column 6\)")
def grid_yaml(tmp_path):
    (tmp_path / "broken.yaml").write_text("profile: smoke\nbackbones: [tiny-bert]\nobjectives: [bce\nseeds: 1\n")
    load_grid(tmp_path / "broken.yaml", root=ROOT / "params")


@case("params fragment with a YAML syntax error", ParamsError, r"fragment.yaml: not valid YAML: .*line 2")
def fragment_yaml(tmp_path):
    (tmp_path / "fragment.yaml").write_text("lr: 1e-5\nmax_steps: : 10\n")
    read_fragment(tmp_path / "fragment.yaml")


@case("grid file whose `name:` differs from its file name", ParamsError,
      r"other.yaml: key 'name' = 'demo' differs from the file's name 'other'.*runs/other/")
def grid_name(tmp_path):
    (tmp_path / "other.yaml").write_text("name: demo\nprofile: smoke\nbackbones: [tiny-bert]\nobjectives: [bce]\n")
    load_grid(tmp_path / "other.yaml", root=ROOT / "params")


@case("`-p` value that is not valid YAML: `-p 'overrides={max_steps: 3'`", RunnerError,
      r"--param overrides: value '\{max_steps: 3' is not valid YAML \(expected ',' or '\}'")
def param_yaml(tmp_path):
    parse_params(["overrides={max_steps: 3"])


@case("`-p` without `=`: `-p lr`", RunnerError, r"--param 'lr': expected KEY=VALUE")
def param_no_value(tmp_path):
    parse_params(["lr"])


@case("model folder with pickled weights only (pytorch_model.bin, no safetensors)", ModelFolderError,
      r"model folder .*model has no safetensors weights .*pytorch_model.bin, pickled weights")
def model_pickle(tmp_path):
    folder = model_folder(tmp_path)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    check_model_folder(folder)


@case("truncated model file (an interrupted copy)", ModelFolderError,
      r"model file .*model/model.safetensors is truncated or damaged")
def model_truncated(tmp_path):
    folder = model_folder(tmp_path)
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    check_model_folder(folder)


# --- inputs checked by `cerepro plan`, at grid start and at job start --------------------------------


@case("evaluation dataset that is not an ir_datasets id: `nano-beir/scifactt`", InputError,
      r"eval_datasets: 'nano-beir/scifactt' is not an ir_datasets id; did you mean 'nano-beir/scifact'")
def unknown_nano_beir(tmp_path):
    plan_error(tmp_path, "profile: smoke\nbackbones: [tiny-bert]\nobjectives: [bce]\nseeds: 1\n"
                         "eval_datasets: [nano-beir/scifactt]\n")


@case("`local:` dataset whose folder does not exist", InputError,
      r"eval_datasets: 'local:.*missing': no folder .*missing")
def missing_local(tmp_path):
    plan_error(tmp_path, "profile: smoke\nbackbones: [tiny-bert]\nobjectives: [bce]\nseeds: 1\n"
                         f"eval_datasets: ['local:{tmp_path / 'missing'}']\n")


@case("`local:` training folder without the file the objective's source reads", InputError,
      r"train_data 'local:.*train': no teacher-pairs.tsv in .*train for training source 'teacher-pairs' "
      r"\(the folder holds: triples.tsv\)")
def missing_training_file(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "triples.tsv").write_text("q1\td1\td2\n")
    plan_error(tmp_path, "profile: bad\nbackbones: [tiny-bert]\nobjectives: [margin-mse]\nseeds: 1\n",
               profile=f"train_data: 'local:{tmp_path / 'train'}'\nmax_steps: 10\nwarmup_steps: 1\n"
                       "validation_datasets: []\neval_datasets: [demo:in-domain]\n")


@case("training file with a NaN teacher score (found by the data job's verification pass)", DataFormatError,
      r"teacher-pairs.tsv:3: negative score must be finite, found 'nan'")
def nan_teacher(tmp_path):
    (tmp_path / "teacher-pairs.tsv").write_text("9.1\t1.2\tq1\td1\td2\n8.0\t0.5\tq2\td3\td4\n7.5\tnan\tq3\td5\td6\n")
    verify_training_file("teacher-pairs", f"local:{tmp_path}")


@case("training file with a malformed row (a column missing)", DataFormatError,
      r"triples.tsv:2: expected 3 tab-separated columns \(query id, positive doc id, negative doc id\), found 2")
def malformed_triple(tmp_path):
    (tmp_path / "triples.tsv").write_text("q1\td1\td2\nq2\td3\n")
    verify_training_file("triples", f"local:{tmp_path}")


# --- the cases, and the book's table -----------------------------------------------------------------


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CEREPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CEREPRO_PARAMS", str(ROOT / "params"))
    monkeypatch.chdir(ROOT)
    return tmp_path


def message(fn, error, tmp_path) -> str:
    with pytest.raises(error) as info:
        fn(tmp_path)
    return str(info.value)


@pytest.mark.parametrize("name,what,error,match,fn", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_a_message_naming_it(isolated, name, what, error, match, fn):
    text = message(fn, error, isolated)
    assert re.search(match, text), text


def table(tmp_path_factory) -> str:
    rows = []
    for name, what, error, _, fn in CASES:
        folder = tmp_path_factory.mktemp(name)
        text = message(fn, error, folder).replace(str(folder), "<folder>").replace(str(ROOT), "<checkout>")
        cell = text.replace("|", "\\|").replace("`", "'")  # a code span: <folder> stays literal
        rows.append(f"| {what} | `{error.__name__}` | `{cell}` |")
    return (
        "# Bad inputs and their messages\n\n"
        "What cerepro answers to inputs that cannot describe a run, as a user meets them. Every row is a\n"
        "case of `tests/test_bad_inputs.py`, and this page is written by it (`CEREPRO_WRITE_BAD_INPUTS=1\n"
        "pytest tests/test_bad_inputs.py`); the test fails when a message and this page disagree.\n"
        "`<folder>` stands for the folder holding the file. Dataset names and training files are\n"
        "checked by `cerepro plan`, when `cerepro grid` starts and when each job starts; a training\n"
        "file's lines by the data job's verification pass (cached), before any training step.\n\n"
        "Not in the table, tested elsewhere: a second writer into a run folder or grid is refused\n"
        "naming the folder and the holder's process and host (`tests/test_resume.py`); a checkpoint\n"
        "that does not verify is skipped for the previous one, and when none verifies the run stops\n"
        "naming each (`tests/test_train.py`); files with a UTF-8 byte-order mark read as without it.\n\n"
        "| Input | Error | Message |\n|---|---|---|\n" + "\n".join(rows) + "\n")


def test_the_books_table_is_this_modules(isolated, tmp_path_factory, monkeypatch):
    text = table(tmp_path_factory)
    if os.environ.get("CEREPRO_WRITE_BAD_INPUTS"):
        TABLE.write_text(text, encoding="utf-8")
    assert TABLE.read_text(encoding="utf-8") == text, (
        f"{TABLE} is out of step with the messages: rewrite it with CEREPRO_WRITE_BAD_INPUTS=1 "
        "pytest tests/test_bad_inputs.py")


# --- a UTF-8 byte-order mark is not part of the first id ------------------------------------------


def test_files_with_a_byte_order_mark_read_as_without(tmp_path, monkeypatch):
    monkeypatch.setenv("CEREPRO_CACHE", str(tmp_path / "cache"))
    bom = "\ufeff"
    (tmp_path / "queries.tsv").write_text(bom + "q1\triver city\nq2\talpha beta\n", encoding="utf-8")
    (tmp_path / "docs.tsv").write_text(bom + "d1\tthe river city\nd2\talpha and beta\n", encoding="utf-8")
    (tmp_path / "qrels.txt").write_text(bom + "q1 0 d1 1\nq2 0 d2 2\n", encoding="utf-8")
    (tmp_path / "run.trec").write_text(bom + "q1 Q0 d1 1 2.0 bm25\nq2 Q0 d2 1 1.0 bm25\n", encoding="utf-8")
    (tmp_path / "triples.tsv").write_text(bom + "q1\td1\td2\nq2\td2\td1\n", encoding="utf-8")
    collection = load_local(tmp_path)
    assert list(collection.queries) == ["q1", "q2"]
    assert list(collection.qrels["query_id"]) == ["q1", "q2"]
    assert collection.docs.get_many(["d1"]) == {"d1": "the river city"}
    assert list(read_run(tmp_path / "run.trec")["query_id"]) == ["q1", "q2"]
    records = RecordFile(tmp_path / "triples.tsv")
    assert records.read(0) == [(1, "q1\td1\td2")] and records.first_column(0) == "q1"
    assert verify_training_file("triples", f"local:{tmp_path}")["lines"] == 2
