"""The grid engine: Snakemake dry runs of the paper grid, the plan, and errors before any job."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cerepro.cli import main
from cerepro.fragments import ParamsError
from cerepro.grid import engine
from cerepro.grid.changed import changed_runs, set_aside_changed
from cerepro.grid.first_stage_jobs import first_stage_corpora, first_stage_inputs, first_stage_jobs, first_stage_sizes
from cerepro.grid.plan import PLAN_PEAK_TFLOPS, plan
from cerepro.grid.runner import RunnerError, declared_parameters, run_notebook
from cerepro.grid.workflow import snakemake_command
from cerepro.grids import evaluation_settings, load_grid
from cerepro.paths import project_root

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CEREPRO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("CEREPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)


def test_paper_grid_dry_run_with_slurm_profile_lists_162_training_jobs_and_their_resources():
    cmd = snakemake_command("paper", dry_run=True, slurm=True)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", text, flags=re.M))
    assert counts["train"] == "162" and counts["evaluate"] == "162"
    assert counts["first_stage"] == "1" and counts["compare"] == "1"
    # the SPLADE first stage: 22 test collections at top-1000 + 13 NanoBEIR sets at top-100, over
    # 33 passage sets (MS MARCO dev and TREC DL 2019/2020 share theirs): each passage set encoded
    # once (the only first-stage job with a GPU) and indexed once on a CPU, each run searched on CPUs
    assert counts["first_stage_run"] == "35"
    assert counts["first_stage_encode"] == "33" and counts["first_stage_index"] == "33"

    def jobs(rule):  # {output: resources} of a rule's jobs
        found = re.findall(
            rf"rule {rule}:\n(?:\s+input: [^\n]+\n)?\s+output: ([^\n]+)\n.*?resources: ([^\n]+)", text, flags=re.S
        )
        return {out: dict(kv.split("=", 1) for kv in res.split(", ")) for out, res in found}

    encode, index, search = jobs("first_stage_encode"), jobs("first_stage_index"), jobs("first_stage_run")
    assert (len(encode), len(index), len(search)) == (33, 33, 35)
    assert all(r["gpu"] == "1" for r in encode.values())
    assert all(r["gpu"] == "0" for r in [*index.values(), *search.values()])  # no GPU waits on a CPU
    marco = search["first-stage-runs/msmarco-passage~dev~small.splade-v3-distilbert-top1000/DONE"]
    nano = search["first-stage-runs/nano-beir~scifact.splade-v3-distilbert-top100/DONE"]
    assert int(marco["mem_mb"]) > 4 * int(nano["mem_mb"]) and int(marco["runtime"]) > int(nano["runtime"])
    assert int(marco["cpus_per_task"]) >= int(nano["cpus_per_task"]) == 1
    marco_index = index["first-stage-corpora/msmarco-passage.splade-v3-distilbert/DONE"]
    fever_index = index["first-stage-corpora/beir~fever.splade-v3-distilbert/DONE"]
    assert (
        int(marco_index["mem_mb"])
        > int(fever_index["mem_mb"])
        > int(index["first-stage-corpora/nano-beir~fever.splade-v3-distilbert/DONE"]["mem_mb"])
    )
    # FEVER and Climate-FEVER are two passage sets in ir_datasets: each is encoded
    assert "first-stage-corpora/beir~climate-fever.splade-v3-distilbert/encoded/DONE" in encode
    # every training job reads the data job's files and the 13 validation runs, never fetches them
    train_inputs = re.findall(r"rule train:\n\s+input: ([^\n]+)", text)
    assert len(train_inputs) == 162
    assert all("data/" in i and i.count("splade-v3-distilbert-top100/DONE") == 13 for i in train_inputs)
    train_jobs = re.findall(r"rule train:.*?resources: ([^\n]+)", text, flags=re.S)
    assert len(train_jobs) == 162
    for resources in train_jobs:
        assert "gpu=1" in resources and "cpus_per_task=16" in resources and "runtime=1200" in resources
        assert "mem_mb=65536" in resources and "slurm_partition=gpu" in resources


def test_plan_estimates_gpu_hours_for_every_run(capsys):
    assert main(["plan", "paper"]) == 0
    out = capsys.readouterr().out
    assert "162 training jobs" in out and "GPU-hours" in out
    p = plan("paper")
    assert len(p["runs"]) == 162 and p["total_gpu_h"] > 0
    small = next(r for r in p["runs"] if r["run_id"].startswith("ettin-17m.bce"))
    big = next(r for r in p["runs"] if r["run_id"].startswith("bert-base.bce"))
    assert big["eval_gpu_h"] > small["eval_gpu_h"]  # the same precision, a bigger backbone
    assert "first stage: 35 retrieval jobs over 33 passage sets" in out
    marco = next(f for f in p["first_stage"] if f["passages_of"] == "msmarco-passage")
    assert marco["passages"] == 8_841_823 and len(marco["runs"]) == 3 and marco["index_gb"] > 1
    # each figure says where it comes from, and the fit's held-out error is printed
    assert marco["basis"] == "fitted" and "(assumed rate)" in out and "largest size held out" in out
    dev = next(r for r in marco["searches"] if r["dataset"] == "msmarco-passage/dev/small")
    assert dev["queries"] == 6980 and dev["cpu_h"] > 0 and dev["request"].startswith("0 GPU")
    assert marco["encode"].startswith("1 GPU") and marco["index"].startswith("0 GPU")


def test_train_and_evaluate_jobs_wait_for_the_data_and_first_stage_jobs_they_read():
    grid = load_grid("paper")
    run_id = grid.runs[0].run_id
    train = first_stage_inputs(grid, run_id, "train")
    evaluate = first_stage_inputs(grid, run_id, "evaluate")
    assert len(train) == 13 and all(p.endswith(".splade-v3-distilbert-top100/DONE") for p in train)
    assert len(evaluate) == 22 and all(p.endswith(".splade-v3-distilbert-top1000/DONE") for p in evaluate)
    assert "first-stage-runs/msmarco-passage~trec-dl-2019~judged.splade-v3-distilbert-top1000/DONE" in evaluate
    jobs = first_stage_jobs(grid)
    assert jobs["nano-beir~scifact.splade-v3-distilbert-top100"] == ("nano-beir/scifact", "splade-v3-distilbert-top100")
    # a grid on BM25 or user-placed runs has no first-stage job
    assert first_stage_jobs(load_grid("demo")) == {}


def test_plan_prints_the_tables_settings_per_backbone_and_costs_full_fp32(capsys):
    p = plan("paper")
    # the table's runs trained in "32-true" with no TF32 (xpm-torch before 19 Feb 2026): full fp32,
    # planned at the fp32 peak; the DeBERTa rows (the authors' bf16 rerun) at the bf16 one
    for prefix, precision in (
        ("ettin-17m.bce", "fp32"),
        ("bert-base.bce", "fp32"),
        ("deberta-v3-base.bce", "bf16-mixed"),
    ):
        row = next(r for r in p["runs"] if r["run_id"].startswith(prefix))
        assert row["precision"] == precision and row["peak_tflops"] == PLAN_PEAK_TFLOPS[precision]
    # what full fp32 costs more than TF32: the ratio of the two peaks, run by run
    bert = next(r for r in p["runs"] if r["run_id"].startswith("bert-base.bce"))
    ratio = PLAN_PEAK_TFLOPS["tf32"] / PLAN_PEAK_TFLOPS["fp32"]
    assert bert["train_gpu_h"] + bert["eval_gpu_h"] == pytest.approx(bert["tf32_gpu_h"] * ratio, rel=1e-9)
    assert p["total_tf32_gpu_h"] * 5 < p["total_gpu_h"]
    settings = {row["backbone"]: row for row in p["settings"]}
    assert list(settings) == list(load_grid("paper").backbones)
    for backbone in ("ettin-17m", "minilm-l12", "bert-base", "roberta-base", "ettin-150m"):
        row = settings[backbone]
        assert (row["precision"], row["fp32 matmuls"], row["scoring"]) == ("fp32", "highest", "fp32")
        assert (row["query / passage max"], row["truncation"]) == ("32 / 256", "retokenize")
        assert (row["selection"], row["early stop"]) == ("RR@10 best-so-far @ top-100", "10000 steps")
        assert row["data"] == "file order, infonce per-positive"
    assert settings["minilm-l12"]["lower case"] == "yes" and settings["bert-base"]["lower case"] == "-"
    assert (settings["deberta-v3-base"]["precision"], settings["deberta-v3-base"]["selection"]) == (
        "bf16-mixed",
        "nDCG best-so-far @ top-100",
    )
    assert (settings["minilm-l12"]["lr"], settings["minilm-l12"]["batch_size"]) == (7e-6, 64)
    assert "infonce 4x8" in settings["bert-base"]["per step"]
    assert sum(row["GPU-h"] for row in p["settings"]) == pytest.approx(
        p["total_gpu_h"] - sum(f["encode_gpu_h"] for f in p["first_stage"]), abs=0.5
    )
    assert main(["plan", "paper"]) == 0
    out = capsys.readouterr().out
    assert "effective settings per backbone" in out and "66.9 TFLOP/s in fp32" in out
    assert re.search(r"bert-base\s+bert-base-uncased\s+fp32\s+highest\s+fp32\s+512\s+32 / 256\s+retokenize", out)
    assert f"the same runs with TF32 matmuls would cost {p['total_tf32_gpu_h']:,.0f}" in out
    assert "these are upper bounds" in out
    # the README and the book's Protocol page quote these two totals
    quoted = f"{p['total_gpu_h']:,.0f} GPU-hours", f"{p['total_tf32_gpu_h']:,.0f}"
    for doc in ("README.md", "book/setup/protocol.md"):
        text = " ".join((project_root() / doc).read_text(encoding="utf-8").split())
        assert all(q in text for q in quoted), doc
    # the authors' later code: whole query, passages to the model's positions, nDCG, TF32
    later = {row["backbone"]: row for row in plan("authors-head")["settings"]}
    assert (later["bert-base"]["precision"], later["bert-base"]["truncation"]) == ("tf32", "passage")
    assert (later["bert-base"]["query / passage max"], later["bert-base"]["selection"]) == (
        "- / -",
        "nDCG best-so-far @ top-100",
    )
    assert later["ettin-17m"]["early stop"] == "off"


def test_evaluation_jobs_score_at_the_run_precision_never_bf16():
    paper, demo = load_grid("paper"), load_grid("demo")
    for grid in (paper, demo):
        for run in grid.runs[:: max(1, len(grid.runs) // 10)]:
            job = engine.job_parameters(grid, "evaluate", run_id=run.run_id)
            assert job.settings.precision == {"tf32": "tf32", "fp32": "fp32", "bf16-mixed": "fp32"}[run.precision]
    assert engine.job_parameters(paper, "evaluate", run_id="first-stage").settings.precision == "fp32"


def test_an_evaluation_job_passes_the_runs_identity_and_the_notebook_reads_the_rest():
    """The evaluate notebook is given which run it evaluates, never copies of its config."""
    demo = load_grid("demo")
    run = demo.runs[5]
    job = engine.job_parameters(demo, "evaluate", run_id=run.run_id)
    assert job.parameters == {"grid": "demo", "run_name": run.run_id}
    assert set(job.parameters) <= set(declared_parameters("evaluate"))
    settings = evaluation_settings(demo, run.run_id)
    assert settings == job.settings
    assert settings.model.endswith(f"demo/{run.run_id}/train/model")
    assert (settings.datasets, settings.first_stage, settings.depth, settings.max_length, settings.truncation) == (
        run.eval_datasets,
        run.first_stage,
        run.candidate_depth,
        run.max_length,
        run.truncation,
    )
    first = evaluation_settings(demo, "first-stage")
    assert (first.model, first.precision, first.datasets) == ("", "fp32", run.eval_datasets)
    adhoc = evaluation_settings(
        demo,
        "mine",
        model="org/name",
        revision="abc",
        overrides={"candidate_depth": 10, "eval_datasets": ["demo:in-domain"]},
    )
    assert (adhoc.model, adhoc.revision, adhoc.depth, adhoc.datasets) == ("org/name", "abc", 10, ("demo:in-domain",))
    with pytest.raises(ParamsError, match="the evaluation's overrides: unknown key 'depth'"):
        evaluation_settings(demo, "first-stage", overrides={"depth": 10})


def test_an_ad_hoc_model_is_never_labelled_as_the_first_stage_or_a_grid_run():
    """`cerepro run evaluate -p model=...` keeps the notebook's default run_name `first-stage`:
    its results once carried that label, read in every table as the candidates' own scores."""
    demo = load_grid("demo")
    assert evaluation_settings(demo, "first-stage", model="org/name").run_id == "org/name"
    assert evaluation_settings(demo, "first-stage", model="my models/a").run_id == "my_models/a"
    assert evaluation_settings(demo, "mine", model="org/name").run_id == "mine"
    assert evaluation_settings(demo, "first-stage").run_id == "first-stage"
    with pytest.raises(
        ParamsError,
        match=rf"run_name: '{demo.runs[0].run_id}' names a run of grid 'demo', "
        r"but model='org/name' is scored ad hoc",
    ):
        evaluation_settings(demo, demo.runs[0].run_id, model="org/name")


def test_every_notebook_declares_the_parameters_the_engine_passes():
    for name in ("smoke", "demo", "paper"):
        engine.check_grid(name)
    assert set(declared_parameters("train")) >= {"backbone", "objective", "seed", "profile", "run_dir"}


def unread_parameters(source: str) -> set[str]:
    """The names a jupytext notebook's ``parameters`` cell declares that no later code cell reads."""
    import ast

    import jupytext

    cells = jupytext.reads(source, fmt="py:percent").cells
    at = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    declared = {t.id for node in ast.parse(cells[at].source).body for t in getattr(node, "targets", [])}
    code = "\n".join(c.source for c in cells[at + 1 :] if c.cell_type == "code")
    read = {n.id for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return declared - read


def test_every_notebook_reads_each_parameter_it_declares_and_jobs_pass_only_those():
    """A job passes a notebook the run's identity and nothing it ignores: every parameter a
    notebook declares is read by its code, and each job's parameters are declared ones."""
    from cerepro.grid.runner import NOTEBOOKS, notebook_path

    for name in NOTEBOOKS:
        assert unread_parameters(notebook_path(name).read_text(encoding="utf-8")) == set(), name
    # the check finds a parameter nothing reads
    assert unread_parameters('# %% tags=["parameters"]\ngrid = "demo"\nprofile = "x"\n\n# %%\nprint(grid)\n') == {
        "profile"
    }
    demo = load_grid("demo")
    run = demo.runs[0]
    jobs = {
        "train": engine.job_parameters(demo, "train", run_id=run.run_id),
        "evaluate": engine.job_parameters(demo, "evaluate", run_id=run.run_id),
        "data": engine.job_parameters(demo, "data", source=run.training_source),
        "compare": engine.job_parameters(demo, "compare"),
    }
    assert jobs["train"].parameters == {
        "profile": "demo",
        "backbone": run.backbone,
        "objective": run.objective,
        "seed": run.seed,
    }
    assert jobs["compare"].parameters == {"grid": "demo"}
    assert set(jobs["data"].parameters) == {"source", "train_data", "llm_list"}
    for notebook, job in jobs.items():
        assert set(job.parameters) <= set(declared_parameters(notebook)), notebook


def test_unknown_notebook_parameter_fails_before_running(tmp_path):
    with pytest.raises(RunnerError, match=r"notebook 'train' has no parameter\(s\) \['learning_rate'\]"):
        run_notebook("train", tmp_path / "x", {"learning_rate": 1})
    assert not (tmp_path / "x").exists()


def test_missing_notebook_fails_before_running(tmp_path, capsys):
    assert main(["run", "training", "--out", str(tmp_path / "x")]) == 2
    assert "unknown notebook 'training'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_unknown_grid_axis_value_fails_before_any_job(tmp_path, monkeypatch, capsys):
    params = tmp_path / "params"
    subprocess.run(["cp", "-r", str(ROOT / "params"), str(params)], check=True)
    (params / "grids" / "bad.yaml").write_text(
        "profile: smoke\nbackbones: [tiny-bert, tiny-gpt]\nobjectives: [bce]\nseeds: 1\n"
    )
    monkeypatch.setenv("CEREPRO_PARAMS", str(params))
    assert main(["grid", "bad"]) == 2
    assert "unknown backbone 'tiny-gpt'" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "bad").exists()


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "cerepro.cli", "--help"], capture_output=True, text=True)
    for command in ("run", "grid", "plan", "book", "report"):
        assert command in out.stdout


# --- finished work whose params changed ------------------------------------------------------


def finished_like(grid, run_id: str) -> Path:
    """What a finished training run leaves that the check reads: its config and DONE."""
    import json

    folder = engine.grid_dir(grid) / run_id / "train"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(next(r for r in grid.runs if r.run_id == run_id).to_dict()))
    (folder / "DONE").write_text("")
    (folder.parent / "evaluate").mkdir()
    (folder.parent / "evaluate" / "DONE").write_text("")
    return folder.parent


def mini_grid(tmp_path, monkeypatch, objectives: str):
    """A grid ``mini`` (the demo profile, tiny-bert, ``objectives``, one seed) in a copy of
    params/ that the test may edit: the copy and the grid."""
    import shutil

    params = tmp_path / "params"
    shutil.copytree(ROOT / "params", params)
    monkeypatch.setenv("CEREPRO_PARAMS", str(params))
    (params / "grids" / "mini.yaml").write_text(
        f"name: mini\nprofile: demo\nbackbones: [tiny-bert]\nobjectives: [{objectives}]\nseeds: 1\n"
    )
    return params, load_grid("mini")


def test_finished_runs_whose_profile_changed_are_named_and_rerun_on_request(tmp_path, monkeypatch, capsys):
    """A finished grid whose profile then changed (steps, learning rate) once said "Nothing to be
    done" while `cerepro plan` showed the new values. `cerepro plan` names each stale run and
    what changed; `--rerun-changed` sets the stale folders aside so the grid runs them again."""
    params, grid = mini_grid(tmp_path, monkeypatch, "bce, hinge")
    bce, hinge = (r.run_id for r in grid.runs)
    bce_folder, hinge_folder = finished_like(grid, bce), finished_like(grid, hinge)
    assert changed_runs(grid) == []

    profile = params / "profiles" / "demo.yaml"
    profile.write_text(
        profile.read_text().replace("max_steps: 300", "max_steps: 400").replace("log_every: 10", "log_every: 20")
    )  # logging alone changes nothing
    with (params / "profiles" / "demo.yaml").open("a") as f:
        f.write("lr: 0.0005\n")
    assert main(["plan", "mini"]) == 0
    out = capsys.readouterr().out
    assert (
        "finished runs whose params changed since they ran (2; kept as they are, "
        "`cerepro grid mini --rerun-changed` reruns them):" in out
    )
    assert re.search(
        rf"  {re.escape(bce)} \(retrain and evaluate\): lr: .* -> 0\.0005; "
        r"max_steps: 300 -> 400\n",
        out,
    )
    assert "log_every" not in out

    grid = load_grid("mini")
    moved = set_aside_changed(grid, changed_runs(grid))
    assert not bce_folder.exists() and not hinge_folder.exists()
    assert sorted(p.name for p in moved) == sorted([bce, hinge])
    assert all((p / "train" / "config.json").is_file() for p in moved)  # kept, not deleted
    assert changed_runs(grid) == []


def test_a_changed_evaluation_setting_reruns_only_the_evaluation(tmp_path, monkeypatch):
    params, grid = mini_grid(tmp_path, monkeypatch, "bce")
    folder = finished_like(grid, grid.runs[0].run_id)
    profile = params / "profiles" / "demo.yaml"
    profile.write_text(profile.read_text().replace("candidate_depth: 30", "candidate_depth: 20"))
    grid = load_grid("mini")
    [changed] = changed_runs(grid)
    assert changed["redo"] == "evaluate" and changed["changes"] == ["candidate_depth: 30 -> 20"]
    set_aside_changed(grid, [changed])
    assert (folder / "train" / "DONE").is_file() and not (folder / "evaluate").exists()


def test_a_cpu_grid_asks_at_most_its_profile_for_its_first_stage_jobs():
    """The rehearsal's ir_datasets ids announce MS MARCO's 8.8M passages while its files are small
    stand-ins: its jobs stay within the profile (2 GB, 15 min, 2 CPUs), none asks for a GPU, so a
    one-node test cluster can run them; the paper grid's are sized from the collections."""
    grid = load_grid("rehearsal")
    sizes = first_stage_sizes(grid)
    corpora, runs = first_stage_corpora(grid), first_stage_jobs(grid)
    jobs = [sizes[c][s] for c in corpora for s in ("encode", "index")] + [sizes[k]["search"] for k in runs]
    assert len(jobs) == 2 * len(corpora) + len(runs) and "msmarco-passage.tiny-splade" in corpora
    assert all(j["gpus"] == 0 for j in jobs)  # the encode jobs too: this grid trains on the CPU
    assert all(j["mem_mb"] <= 2048 and j["runtime_min"] <= 15 and j.get("threads", j["cpus"]) <= 2 for j in jobs)
    assert all("capped by the profile" in j["basis"] for j in jobs)
    paper = first_stage_sizes(load_grid("paper"))
    assert paper["msmarco-passage.splade-v3-distilbert"]["index"]["mem_mb"] > 4 * 1024
