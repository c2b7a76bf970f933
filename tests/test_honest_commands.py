"""Parameters stay plain data on their way into a notebook, and a command that cannot do what it
was asked says so: hostile `-p` values reach the kernel as themselves, `cerepro run` without
`--out` gives each run its own folder, a grid named like a number stays a string, and a truncated
first-stage shard is named and encoded again. (A read-only runs folder and a file size limit hit
while a checkpoint is written are cases of the book's bad-input page, tests/test_bad_inputs.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bad_inputs import ROOT, isolate
from probe_notebook import write_probe

HOSTILE = [
    'a "quoted" value',
    "it's",
    "line one\nline two\r\n",
    '"""; import os; os.system("touch ran") ; """',
    "'''\nimport os\n'''",
    '\\" + str(__import__("os").system("touch ran")) + \\"',
    "ends with a backslash \\",
    "{max_steps: 3}",
    "#!/bin/sh\n$(touch ran)`touch ran`",
]


def test_hostile_values_reach_the_kernel_as_themselves(tmp_path):
    from cerepro.cli import parse_params
    from cerepro.grid.runner import execute, plain_parameters

    # as typed: -p value=<each>, quoted for YAML (a user's quoting), read back as the same strings
    typed = parse_params([f"value={json.dumps(HOSTILE)}"])
    assert typed == {"value": HOSTILE}
    write_probe(
        tmp_path / "probe.ipynb",
        "value = None",
        "import json, pathlib\npathlib.Path('seen.json').write_text(json.dumps(value))",
    )
    execute(tmp_path / "probe.ipynb", tmp_path / "out.ipynb", plain_parameters(typed), cwd=tmp_path)
    assert json.loads((tmp_path / "seen.json").read_text()) == HOSTILE
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    "value",
    [b'" + str(__import__("os").system("touch ran")) + "', {1, 2}, (1, b"x"), {"key": [b"x"]}, {1: "a"}, float("nan")],
)
def test_values_that_are_not_plain_data_never_reach_a_notebook(tmp_path, value):
    from cerepro.grid.runner import RunnerError, run_notebook

    with pytest.raises(RunnerError, match=r"parameter source.*(not plain data|not a string|not a finite number)"):
        run_notebook("data", tmp_path / "run", {"source": value})
    assert not (tmp_path / "run").exists()


def test_cerepro_run_without_out_gives_each_run_its_own_folder(tmp_path, monkeypatch, capsys):
    isolate(monkeypatch, tmp_path)
    from cerepro.cli import main

    assert main(["run", "data", "-p", "groups=2"]) == 0
    first = capsys.readouterr().out
    assert main(["run", "data", "-p", "groups=3"]) == 0
    second = capsys.readouterr().out
    assert main(["run", "data", "-p", "groups=2"]) == 0
    third = capsys.readouterr().out
    folders = sorted((tmp_path / "runs" / "adhoc").glob("*/data"))
    assert len(folders) == 2, folders
    assert first.startswith("executed data -> ") and second.startswith("executed data -> ")
    assert first.split(" -> ")[1] != second.split(" -> ")[1]
    assert third.startswith("data already finished in ") and first.split(" -> ")[1].strip() in third
    groups = {json.loads((f / "meta.json").read_text())["parameters"]["groups"] for f in folders}
    assert groups == {2, 3}


def test_a_grid_named_like_a_number_stays_a_string(tmp_path, monkeypatch):
    params = tmp_path / "params"
    shutil.copytree(ROOT / "params", params)
    smoke = (params / "grids" / "smoke.yaml").read_text().splitlines()
    (params / "grids" / "007.yaml").write_text("\n".join(line for line in smoke if not line.startswith("name:")) + "\n")
    env = {
        **os.environ,
        "CEREPRO_PARAMS": str(params),
        "CEREPRO_RUNS": str(tmp_path / "runs"),
        "CEREPRO_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-m", "cerepro.cli", "grid", "007", "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "train" in done.stdout and "compare" in done.stdout
    assert (tmp_path / "runs" / "007").is_dir()


def test_a_truncated_first_stage_shard_is_named_and_encoded_again(tmp_path, monkeypatch, capsys):
    from cerepro.retrieval import first_stage as fs

    monkeypatch.setenv("CEREPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CEREPRO_PARAMS", str(ROOT / "params"))
    texts = tmp_path / "real-text"
    shutil.copytree(ROOT / "tests" / "fixtures" / "real-text", texts)
    dataset = f"local:{texts}"
    command = [dataset, "tiny-splade-top5", "--shard-size", "7"]
    assert fs.main(command) == 0
    run = Path(capsys.readouterr().out.split(": ", 1)[1].strip())
    expected = run.read_text()
    splade = tmp_path / "cache" / "splade"
    shard = sorted(splade.glob("*/shards/passages-00001.npz"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # an interrupted copy
    shutil.rmtree(shard.parent.parent / "index")
    run.unlink()
    fs.run_manifest_path(run).unlink()
    assert fs.main(command) == 0, capsys.readouterr().err[-3000:]
    assert f"{shard}: unreadable passage shard" in capsys.readouterr().err
    assert run.read_text() == expected
