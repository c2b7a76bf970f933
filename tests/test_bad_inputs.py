"""Bad inputs as people have them, each refused with a message naming the file, line, key or
parameter, before any job runs; and files with a UTF-8 byte-order mark read as without one.

The book's table of bad inputs (book/appendix/bad-inputs.md) is these cases' inputs and the
messages they give, written by this module: ``CEREPRO_WRITE_BAD_INPUTS=1 pytest
tests/test_bad_inputs.py`` rewrites it, and ``test_the_books_table_is_this_modules`` fails when
the page and the messages drift apart.
"""

import base64
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import bad_inputs
from bad_inputs import ROOT, Refused, case, cerepro, plan_error

from cerepro.cli import parse_params
from cerepro.data.datasets import InputError, load_local
from cerepro.data.records import RecordFile
from cerepro.data.training_data import verify_training_file
from cerepro.data.trec import DataFormatError, read_qrels, read_run
from cerepro.fragments import ParamsError, read_fragment
from cerepro.grid.runner import RunnerError
from cerepro.grids import load_grid
from cerepro.model.models import ModelFolderError, check_model_folder
from cerepro.training.checkpoints import CheckpointError

TABLE = ROOT / "book" / "appendix" / "bad-inputs.md"


def model_folder(tmp_path: Path) -> Path:
    from cerepro.model import models

    model, tokenizer = models.build_cross_encoder("builtin:bert", max_length=16, texts=["a b c", "d e f"])
    folder = tmp_path / "model"
    models.save_cross_encoder(model, tokenizer, folder, card="a test model")
    return folder


# --- files as people have them ---------------------------------------------------------------------


@case(
    "qrels line with an implausible relevance grade (a score in the grade column)",
    DataFormatError,
    r"qrels.txt:2: relevance 7 for query 'q1' and doc 'd2' is outside -2..4",
)
def qrels_grade(tmp_path):
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\nq1 0 d2 7\n")
    read_qrels(tmp_path / "qrels.txt")


@case(
    "grid file with a YAML syntax error",
    ParamsError,
    r"broken.yaml: not valid YAML: while parsing a flow sequence \(from line 3, column 13\): expected "
    r"',' or '\]', but got ':' \(line 4, column 6\)",
)
def grid_yaml(tmp_path):
    (tmp_path / "broken.yaml").write_text("profile: smoke\nbackbones: [tiny-bert]\nobjectives: [bce\nseeds: 1\n")
    load_grid(tmp_path / "broken.yaml", root=ROOT / "params")


@case("params fragment with a YAML syntax error", ParamsError, r"fragment.yaml: not valid YAML: .*line 2")
def fragment_yaml(tmp_path):
    (tmp_path / "fragment.yaml").write_text("lr: 1e-5\nmax_steps: : 10\n")
    read_fragment(tmp_path / "fragment.yaml")


@case(
    "grid file whose `name:` differs from its file name",
    ParamsError,
    r"other.yaml: key 'name' = 'demo' differs from the file's name 'other'.*runs/other/",
)
def grid_name(tmp_path):
    (tmp_path / "other.yaml").write_text("name: demo\nprofile: smoke\nbackbones: [tiny-bert]\nobjectives: [bce]\n")
    load_grid(tmp_path / "other.yaml", root=ROOT / "params")


@case(
    "`-p` value that is not valid YAML: `-p 'overrides={max_steps: 3'`",
    RunnerError,
    r"--param overrides: value '\{max_steps: 3' is not valid YAML \(expected ',' or '\}'",
)
def param_yaml(tmp_path):
    parse_params(["overrides={max_steps: 3"])


@case("`-p` without `=`: `-p lr`", RunnerError, r"--param 'lr': expected KEY=VALUE")
def param_no_value(tmp_path):
    parse_params(["lr"])


@case(
    "model folder with pickled weights only (pytorch_model.bin, no safetensors)",
    ModelFolderError,
    r"model folder .*model has no safetensors weights .*pytorch_model.bin, pickled weights",
)
def model_pickle(tmp_path):
    folder = model_folder(tmp_path)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    check_model_folder(folder)


@case(
    "truncated model file (an interrupted copy)",
    ModelFolderError,
    r"model file .*model/model.safetensors is truncated or damaged",
)
def model_truncated(tmp_path):
    folder = model_folder(tmp_path)
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    check_model_folder(folder)


# --- inputs checked by `cerepro plan`, at grid start and at job start --------------------------------


@case(
    "evaluation dataset that is not an ir_datasets id: `nano-beir/scifactt`",
    InputError,
    r"eval_datasets: 'nano-beir/scifactt' is not an ir_datasets id; did you mean 'nano-beir/scifact'",
)
def unknown_nano_beir(tmp_path):
    plan_error(
        tmp_path,
        "profile: smoke\nbackbones: [tiny-bert]\nobjectives: [bce]\nseeds: 1\neval_datasets: [nano-beir/scifactt]\n",
    )


@case(
    "`local:` dataset whose folder does not exist", InputError, r"eval_datasets: 'local:.*missing': no folder .*missing"
)
def missing_local(tmp_path):
    plan_error(
        tmp_path,
        "profile: smoke\nbackbones: [tiny-bert]\nobjectives: [bce]\nseeds: 1\n"
        f"eval_datasets: ['local:{tmp_path / 'missing'}']\n",
    )


@case(
    "`local:` training folder without the file the objective's source reads",
    InputError,
    r"train_data 'local:.*train': no teacher-pairs.tsv in .*train for training source 'teacher-pairs' "
    r"\(the folder holds: triples.tsv\)",
)
def missing_training_file(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "triples.tsv").write_text("q1\td1\td2\n")
    plan_error(
        tmp_path,
        "profile: bad\nbackbones: [tiny-bert]\nobjectives: [margin-mse]\nseeds: 1\n",
        profile=f"train_data: 'local:{tmp_path / 'train'}'\nmax_steps: 10\nwarmup_steps: 1\n"
        "validation_datasets: []\neval_datasets: [demo:in-domain]\n",
    )


@case(
    "training file with a NaN teacher score (found by the data job's verification pass)",
    DataFormatError,
    r"teacher-pairs.tsv:3: negative score must be finite, found 'nan'",
)
def nan_teacher(tmp_path):
    (tmp_path / "teacher-pairs.tsv").write_text("9.1\t1.2\tq1\td1\td2\n8.0\t0.5\tq2\td3\td4\n7.5\tnan\tq3\td5\td6\n")
    verify_training_file("teacher-pairs", f"local:{tmp_path}")


@case(
    "training file with a malformed row (a column missing)",
    DataFormatError,
    r"triples.tsv:2: expected 3 tab-separated columns \(query id, positive doc id, negative doc id\), found 2",
)
def malformed_triple(tmp_path):
    (tmp_path / "triples.tsv").write_text("q1\td1\td2\nq2\td3\n")
    verify_training_file("triples", f"local:{tmp_path}")


# --- parameters are plain data, never code (issue: a parameter can run code) -------------------------

# base64 of bytes that, written unescaped into the parameters cell, close the string and call os.system
INJECTED = '" + str(__import__("os").system("touch {marker}")) + "'


@case(
    "`-p` value with a YAML tag whose bytes hold a quote and code: `-p 'backbone=!!binary <base64>'`",
    Refused,
    r"--param backbone: value '!!binary .*': tag !!binary is not plain data; a parameter is a string, number",
)
def param_binary(tmp_path):
    marker = tmp_path / "run" / "ran"  # the kernel runs in the run folder
    payload = base64.b64encode(INJECTED.format(marker="ran").encode()).decode()
    try:
        cerepro("run", "train", "-p", f"backbone=!!binary {payload}", "--out", str(tmp_path / "run"))
    finally:
        assert not marker.exists(), "the parameter ran code"


@case(
    "`-p` value with a Python tag: `-p 'seed=!!python/object/apply:os.system [\"true\"]'`",
    Refused,
    r"--param seed: .*tag !!python/object/apply:os.system is not plain data",
)
def param_python_tag(tmp_path):
    cerepro("run", "train", "-p", 'seed=!!python/object/apply:os.system ["true"]')


@case(
    "params fragment with a YAML tag (`lr: !!binary ...`)",
    ParamsError,
    r"fragment.yaml: not valid YAML: tag !!binary is not plain data \(line 1, column 5\)",
)
def fragment_tag(tmp_path):
    (tmp_path / "fragment.yaml").write_text("lr: !!binary MWUtNQ==\n")
    read_fragment(tmp_path / "fragment.yaml")


@case(
    "params fragment with a duplicated key (YAML would keep the last silently)",
    ParamsError,
    r"profiles/bad\.yaml: not valid YAML: key 'max_steps' appears twice \(line 1 and line 3\)",
)
def duplicated_key(tmp_path):
    params = bad_inputs.params_copy(tmp_path)
    (params / "profiles" / "bad.yaml").write_text("max_steps: 10\nlr: 1e-5\nmax_steps: 20\n")
    read_fragment(params / "profiles" / "bad.yaml")


def slurm_dry_run_runs_no_code(tmp_path: Path, what: str, *args: str) -> None:
    """`cerepro grid smoke --slurm --dry-run ARGS...`, each ``{marker}`` in ARGS a file the code
    given would create: whatever the command says, that code never ran."""
    marker = tmp_path / "ran"
    try:
        cerepro("grid", "smoke", "--slurm", "--dry-run", *(arg.replace("{marker}", str(marker)) for arg in args))
    finally:
        assert not marker.exists(), f"the {what} ran code"


@case(
    "SLURM partition that Snakemake would evaluate as Python: `cerepro grid smoke --slurm --partition "
    '\'__import__("os").system(...) or "gpu"\'`',
    Refused,
    r"--partition '__import__.*': not a SLURM name .*nothing was submitted",
)
def partition_code(tmp_path):
    slurm_dry_run_runs_no_code(
        tmp_path, "partition", "--partition", '__import__("os").system("touch {marker}") or "gpu"'
    )


@case('SLURM account with a quote: `--account "lab\'; x"`', Refused, r"--account \"lab'; x\": not a SLURM name")
def account_quote(tmp_path):
    cerepro("grid", "smoke", "--slurm", "--dry-run", "--account", "lab'; x")


@case(
    "Snakemake option after `--` whose values it evaluates as Python: `-- --default-resources 'x=...'`",
    Refused,
    r"-- --default-resources: Snakemake evaluates its values as Python; cerepro does not pass it",
)
def evaluated_snakemake_option(tmp_path):
    slurm_dry_run_runs_no_code(
        tmp_path, "resource", "--", "--default-resources", 'x=__import__("os").system("touch {marker}")'
    )


# --- a command that would do nothing, or the wrong thing, refuses instead (issue: do nothing, say done) --

FINISHED: dict[str, Path] = {}


def finished_data_run(tmp_path: Path) -> Path:
    """A real finished folder of `cerepro run data -p groups=2` (run once per session, copied)."""
    if "data" not in FINISHED:
        base = Path(tempfile.mkdtemp(prefix="cerepro-finished-"))
        from cerepro.grid.runner import run_notebook

        FINISHED["data"] = run_notebook("data", base / "data", {"groups": 2})
    folder = tmp_path / "finished" / "data"
    shutil.copytree(FINISHED["data"], folder)
    return folder


@case(
    "`--out` naming a finished run folder whose params differ: `cerepro run data -p groups=3 --out <groups=2 folder>`",
    Refused,
    r"finished/data holds a finished data run with other parameters \(groups: the folder ran with 2, this "
    r"run asks 3\): nothing was run",
)
def finished_other_params(tmp_path):
    cerepro("run", "data", "-p", "groups=3", "--out", str(finished_data_run(tmp_path)))


@case(
    "`--out` naming another notebook's finished folder: `cerepro run compare --out <a data run>`",
    Refused,
    r"finished/data holds a run of the 'data' notebook, not 'compare'",
)
def finished_other_notebook(tmp_path):
    cerepro("run", "compare", "--out", str(finished_data_run(tmp_path)))


@case(
    "`--force` on a folder that is not this notebook's run folder (a grid's): `cerepro run evaluate --out runs/demo --force`",
    Refused,
    r"runs/demo is not a run folder of the 'evaluate' notebook .*it holds \.snakemake/, compare/, logs/, "
    r"tiny-bert.bce.s1/: nothing was run or removed",
)
def force_on_a_grid(tmp_path):
    grid = tmp_path / "runs" / "demo"
    for sub in ("tiny-bert.bce.s1/train", "compare", "logs", ".snakemake"):
        (grid / sub).mkdir(parents=True)
    (grid / "tiny-bert.bce.s1" / "train" / "DONE").write_text("")
    try:
        cerepro("run", "evaluate", "-p", "grid=demo", "--out", str(grid), "--force")
    finally:
        assert (grid / "tiny-bert.bce.s1" / "train" / "DONE").is_file(), "--force removed the grid"


# --- errors that say what to fix ---------------------------------------------------------------------


@case(
    "docs file that is not UTF-8 (a Latin-1 byte)",
    DataFormatError,
    r"docs.tsv:2: not UTF-8 text \(byte 0xe9 at column 10: .*\); convert the file to UTF-8",
)
def docs_latin1(tmp_path):
    (tmp_path / "queries.tsv").write_text("q1\tcaf\n")
    (tmp_path / "docs.tsv").write_bytes(b"d1\tplain\nd2\tun caf\xe9 noir\n")
    load_local(tmp_path).docs.get_many(["d1"])


@case(
    "`local:` evaluation folder without qrels (found before anything is scored)",
    InputError,
    r"eval_datasets: 'local:.*nojudge': .*nojudge has none of qrels.txt \(TREC qrels",
)
def local_without_qrels(tmp_path):
    folder = tmp_path / "nojudge"
    folder.mkdir()
    (folder / "queries.tsv").write_text("q1\triver\n")
    (folder / "docs.tsv").write_text("d1\tthe river\n")
    plan_error(
        tmp_path,
        f"profile: smoke\nbackbones: [tiny-bert]\nobjectives: [bce]\nseeds: 1\neval_datasets: ['local:{folder}']\n",
    )


@case(
    "seed beyond 2^32: `cerepro run train -p seed=4294967296`",
    Refused,
    r"overrides: key 'seed' = 4294967296: must be below 2\*\*32",
)
def seed_too_large(tmp_path):
    cerepro("run", "train", "-p", "seed=4294967296")


@case(
    "backbone slug holding a path: `cerepro run train -p backbone=../backbones/tiny-bert`",
    Refused,
    r"backbone '../backbones/tiny-bert' is not a slug \(a name of params/backbones/.*no path\); known: .*tiny-bert",
)
def slug_path(tmp_path):
    cerepro("run", "train", "-p", "backbone=../backbones/tiny-bert")


@case(
    "typo in a backbone slug: `cerepro run train -p backbone=tiny-bertt` (refused before a kernel starts, no "
    "folder made)",
    Refused,
    r"unknown backbone 'tiny-bertt': no .*tiny-bertt.yaml; known: ",
)
def backbone_typo(tmp_path):
    try:
        cerepro("run", "train", "-p", "backbone=tiny-bertt")
    finally:
        assert not (tmp_path / "runs").exists(), "a run folder was made"


@case(
    "book grid name with `..`: `CEREPRO_BOOK_GRID=../profiles/demo cerepro book`",
    Refused,
    r"grid '../profiles/demo' is not a slug",
)
def book_grid_path(tmp_path):
    os.environ["CEREPRO_BOOK_GRID"] = "../profiles/demo"
    try:
        cerepro("book")
    finally:  # never left to the next test of this process (its book would read this name)
        del os.environ["CEREPRO_BOOK_GRID"]


@case(
    "smoke profile run alone before its first-stage run exists: `cerepro run train -p profile=smoke`",
    Refused,
    r"profile 'smoke' validates on the first-stage run 'tiny-splade-top20' of 'demo:validation', which does "
    r"not exist yet: produce it with `python -m cerepro.retrieval.first_stage demo:validation tiny-splade-top20`",
)
def smoke_alone(tmp_path):
    cerepro("run", "train", "-p", "profile=smoke")


@case(
    "typo in a training source: `cerepro run data -p source=tripels` (refused before a kernel starts)",
    Refused,
    r"source 'tripels' is not a training source; known: triples, teacher-pairs, hard-negatives, llm-lists",
)
def data_source_typo(tmp_path):
    cerepro("run", "data", "-p", "source=tripels", "--out", str(tmp_path / "data"))


def without_root_override(command: list[str]) -> list[str]:
    """``command`` as a process that folder permissions bind: root writes anywhere, unless it
    drops the capabilities that override them (setpriv, util-linux)."""
    if os.getuid() != 0:
        return command
    assert shutil.which("setpriv"), "running as root, this case needs setpriv (util-linux) to drop DAC override"
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", "--bounding-set", caps, "--inh-caps", caps, *command]


def read_only_runs(tmp_path: Path, *command: str) -> None:
    """`cerepro <command>` with a read-only runs folder (and grid folder), in a child process."""
    runs = tmp_path / "runs"
    (runs / "smoke").mkdir(parents=True)
    for folder in (runs / "smoke", runs):
        os.chmod(folder, 0o555)
    env = {**os.environ, "CEREPRO_RUNS": str(runs), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        without_root_override([sys.executable, "-m", "cerepro.cli", *command]),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == 2, done.stderr[-3000:]
    raise Refused(done.stderr.strip().split("cerepro: error: ", 1)[-1])


@case(
    "read-only runs folder: `cerepro grid smoke`",
    Refused,
    r"runs/smoke: cannot write there \(Permission denied\); `cerepro grid` writes its lock and Snakemake its "
    r"records in .*runs/smoke, even when every job is done: make it writable, or set CEREPRO_RUNS",
)
def read_only_grid(tmp_path):
    read_only_runs(tmp_path, "grid", "smoke")


@case(
    "read-only runs folder: `cerepro run data`",
    Refused,
    r"runs/adhoc: Permission denied; nothing was changed there: make it writable .*CEREPRO_RUNS",
)
def read_only_run(tmp_path):
    read_only_runs(tmp_path, "run", "data", "-p", "groups=2")


CHECKPOINT_UNDER_LIMIT = r"""
import resource, signal, sys
from pathlib import Path
import torch
from accelerate import Accelerator
from cerepro.model import models
from cerepro.training.checkpoints import CheckpointError, save_checkpoint
from cerepro.config import load_config

out = Path(sys.argv[1])
config = load_config("tiny-bert", "bce", 1, "demo")
model, _ = models.build_cross_encoder("builtin:bert", max_length=16, texts=["a b c", "d e f"])
optimizer = torch.optim.AdamW(model.parameters())
schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # as a batch system or shell may: writes then fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    save_checkpoint(out, 3, model, optimizer, schedule, config, {}, {}, Accelerator(cpu=True))
except CheckpointError as exc:
    print(exc)
    sys.exit(3)
"""


@case(
    "file size limit (`ulimit -f`, 64 KiB) hit while a training checkpoint is written",
    CheckpointError,
    r"checkpoints/\.step-0000003\.tmp/model\.safetensors: writing the checkpoint failed \(.*File too large.*\); "
    r"the process's file size limit \(ulimit -f\) is 65,536 bytes: raise it",
)
def checkpoint_size_limit(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", CHECKPOINT_UNDER_LIMIT, str(tmp_path / "run"), str(64 * 1024)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-3000:]
    assert not list((tmp_path / "run" / "checkpoints").glob("*step-0000003*"))  # nothing half-written kept
    raise CheckpointError(done.stdout.strip())


# --- the cases, and the book's table -----------------------------------------------------------------

test_bad_input_is_refused_with_a_message_naming_it = bad_inputs.cases_test(__name__)

# Every file of cases: this one first, then the others (tests/test_bad_*.py), a section each.
CASE_FILES = [__name__] + sorted(p.stem for p in Path(__file__).parent.glob("test_bad_*.py") if p.stem != __name__)


def table(tmp_path_factory, monkeypatch) -> str:
    sections = []
    for module in CASE_FILES:
        importlib.import_module(module)
        rows = []
        for c in bad_inputs.cases_of(module):
            if (c.module, c.name) in bad_inputs.SEEN:  # this session's test of the case ran it
                text, folder = bad_inputs.SEEN[c.module, c.name]
            else:
                folder = tmp_path_factory.mktemp(c.name)
                with monkeypatch.context() as mp:
                    bad_inputs.isolate(mp, folder)
                    text = bad_inputs.message(c, folder)
            text = text.replace(str(folder), "<folder>").replace(str(ROOT), "<checkout>")
            cell = text.replace("|", "\\|").replace("`", "'").replace("\n", " ")  # a code span: <folder> stays literal
            error = "exit 2" if c.error is Refused else c.error.__name__
            rows.append(f"| {c.what} | `{error}` | `{cell}` |")
        doc = (importlib.import_module(module).__doc__ or module).strip().split("\n\n")[0].replace("\n", " ")
        title = "" if module == __name__ else f"## {doc}\n\nThe cases of `tests/{module}.py`.\n\n"
        sections.append(title + "| Input | Error | Message |\n|---|---|---|\n" + "\n".join(rows) + "\n")
    return (
        "# Bad inputs and their messages\n\n"
        "What cerepro answers to inputs that cannot describe a run, as a user meets them. Every row is a\n"
        "case of `tests/test_bad_inputs.py` or of another `tests/test_bad_*.py`, and this page is written by\n"
        "them (`CEREPRO_WRITE_BAD_INPUTS=1 pytest tests/test_bad_inputs.py`); the test fails when a message\n"
        "and this page disagree. `<folder>` stands for the folder holding the file. Dataset names and\n"
        "training files are checked by `cerepro plan`, when `cerepro grid` starts and when each job starts;\n"
        "a training file's lines by the data job's verification pass (cached), before any training step;\n"
        "the parameters of `cerepro run` before a kernel starts or a folder is made. An error `exit 2` is\n"
        "the `cerepro` command refusing, with the message it prints after `cerepro: error:`.\n\n"
        "Not in the table, tested elsewhere: a second writer into a run folder or grid is refused\n"
        "naming the folder and the holder's process and host (`tests/test_resume.py`); a checkpoint\n"
        "that does not verify is skipped for the previous one, and when none verifies the run stops\n"
        "naming each (`tests/test_train.py`); files with a UTF-8 byte-order mark read as without it;\n"
        "hostile `-p` values (quotes, newlines, triple quotes) reach the notebook as themselves, a grid\n"
        "named like a number (`007`) runs as that grid, a truncated first-stage shard is named and\n"
        "encoded again (`tests/test_honest_commands.py`), a grid rerun redoes a deleted run\n"
        "(`tests/test_grid_smoke.py`) and a book not built in this checkout (`tests/test_book.py`).\n\n"
        + "\n".join(sections)
    )


def test_the_books_table_is_this_modules(tmp_path_factory, monkeypatch):
    text = table(tmp_path_factory, monkeypatch)
    if os.environ.get("CEREPRO_WRITE_BAD_INPUTS"):
        TABLE.write_text(text, encoding="utf-8")
    assert TABLE.read_text(encoding="utf-8") == text, (
        f"{TABLE} is out of step with the messages: rewrite it with CEREPRO_WRITE_BAD_INPUTS=1 "
        "pytest tests/test_bad_inputs.py"
    )


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
