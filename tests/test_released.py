"""Released checkpoints as runs: a hub id at a pinned revision (read from a Hugging Face cache laid
out as the hub serves it, offline), the `released` grid's jobs and plan, the checks that refuse a
model before any scoring, and the scoreboard labelling each cell by where its model came from."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from processes import cerepro_command, run_ok
from tolerance import assert_scores_close

from cerepro.config import load_config
from cerepro.fragments import ParamsError
from cerepro.grid import engine
from cerepro.grid.first_stage_jobs import first_stage_inputs, first_stage_jobs, produce_first_stage
from cerepro.grids import evaluation_settings, load_grid
from cerepro.model import models
from cerepro.report import provenance, tables, verdicts

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache_entry(cache: Path, hub_id: str, folder: Path, commit: str = COMMIT, ref: str = "main") -> Path:
    """Place ``folder`` in a Hugging Face hub cache as the hub serves a repository: the files
    under ``snapshots/<commit>/`` and ``refs/<ref>`` naming that commit."""
    repo = cache / f"models--{hub_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


def tiny_checkpoint(folder: Path, *, num_labels: int = 1, seed: int = 0) -> Path:
    model, tokenizer = models.build_cross_encoder("builtin:bert", max_length=64, seed=seed)
    if num_labels != 1:
        config = model.config
        config.num_labels = num_labels
        config.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        config.label2id = {v: k for k, v in config.id2label.items()}
        torch.manual_seed(seed)
        model = type(model)(config)
    with torch.no_grad():  # a head that spreads the scores of different passages apart
        torch.nn.init.normal_(model.classifier.weight, std=5.0, generator=torch.Generator().manual_seed(seed))
    card = models.model_card(base_model="builtin:bert", objective="bce", training_data="demo", steps=0)
    return models.save_cross_encoder(model, tokenizer, folder, card=card)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An offline Hugging Face cache for this test (the process's and its kernels')."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("CEREPRO_CACHE", str(tmp_path / "cache"))
    return cache


# --- resolving a hub id at a revision, offline ----------------------------------------------------


def test_hub_id_resolves_to_the_cached_commit_and_scores_like_the_folder(tmp_path, offline_hub):
    saved = tiny_checkpoint(tmp_path / "saved")
    hub_cache_entry(offline_hub, "xpmir/cross-encoder-tiny-BCE", saved)
    scorer, tokenizer, source = models.load_scorer("xpmir/cross-encoder-tiny-BCE", "main")
    assert source.describe() == {"model": "xpmir/cross-encoder-tiny-BCE", "revision": "main", "commit": COMMIT}
    by_commit = models.load_scorer("xpmir/cross-encoder-tiny-BCE", COMMIT)[2]
    assert by_commit.commit == COMMIT
    local, _, local_source = models.load_scorer(saved)
    assert local_source.describe() == {"model": str(saved)}
    batch = tokenizer(["river city"], ["the river runs"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(scorer(**batch).logits, local(**batch).logits)


def test_a_revision_missing_from_the_offline_cache_is_refused(tmp_path, offline_hub):
    hub_cache_entry(offline_hub, "xpmir/cross-encoder-tiny-BCE", tiny_checkpoint(tmp_path / "saved"))
    with pytest.raises(
        models.BackboneError,
        match=r"'xpmir/cross-encoder-tiny-BCE' at revision 'v2' is not "
        r"available in the local Hugging Face cache",
    ):
        models.resolve_scorer("xpmir/cross-encoder-tiny-BCE", "v2")
    with pytest.raises(models.BackboneError, match=r"'xpmir/never-released' at revision 'main' is not available"):
        models.resolve_scorer("xpmir/never-released", "main")
    with pytest.raises(models.BackboneError, match="no such folder, and not a hub id"):
        models.resolve_scorer(str(tmp_path / "missing" / "folder" / "x"))


def test_a_model_that_is_not_a_sequence_classifier_is_refused(tmp_path, offline_hub):
    from transformers import BertConfig, BertForMaskedLM

    _, tokenizer = models.build_cross_encoder("builtin:bert", max_length=64)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    folder = tmp_path / "mlm"
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    hub_cache_entry(offline_hub, "naver/some-mlm", folder)
    with pytest.raises(
        models.BackboneError,
        match=r"'naver/some-mlm' is not a sequence-classification model "
        r"\(architectures \['BertForMaskedLM'\]\)",
    ):
        models.load_scorer("naver/some-mlm", "main")


def test_heads_of_other_than_one_or_two_labels_and_pickled_weights_are_refused(tmp_path):
    three = tiny_checkpoint(tmp_path / "three", num_labels=3)
    with pytest.raises(models.BackboneError, match="has 3 output labels; a re-ranker has 1"):
        models.load_scorer(three)
    pickled = tiny_checkpoint(tmp_path / "pickled")
    model = models.load_scorer(pickled)[0]
    for weights in pickled.glob("*.safetensors"):
        weights.unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")  # how older hub repositories ship weights
    assert list(pickled.glob("*.bin")) and not list(pickled.glob("*.safetensors"))
    with pytest.raises(
        models.ModelFolderError, match="has no safetensors weights .*pytorch_model.bin, pickled weights"
    ):
        models.load_scorer(pickled)


def test_a_tokenizer_without_a_pair_template_is_refused(tmp_path):
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tk_models
    from transformers import PreTrainedTokenizerFast

    folder = tiny_checkpoint(tmp_path / "nopair")
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "river": 4}
    raw = Tokenizer(tk_models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()  # and no post-processor: no [SEP] between texts
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (folder / name).unlink(missing_ok=True)
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(folder)
    with pytest.raises(
        models.BackboneError,
        match=r"its tokenizer has no pair template \(a pair gets 0 special "
        r"tokens, a single text 0\)",
    ):
        models.load_scorer(folder)


def test_a_two_label_head_ranks_as_its_softmax_and_a_sigmoid_head_as_its_logit(tmp_path, monkeypatch):
    from cerepro.evaluation.rerank import rerank

    monkeypatch.setenv("CEREPRO_CACHE", str(tmp_path / "cache"))
    queries = {"q1": "river city"}
    words = "river city forest ocean alpha desert mountain kappa".split()
    texts = {f"d{i}": " ".join(words[i:] + words[:i][::-1]) for i in range(8)}
    run = pd.DataFrame({"query_id": "q1", "doc_id": list(texts), "score": 0.0})
    two, tokenizer, _ = models.load_scorer(tiny_checkpoint(tmp_path / "two", num_labels=2, seed=3))
    ranked = rerank(two, tokenizer, run, queries, texts, max_length=64, precision="fp32")
    batch = tokenizer(["river city"] * 8, list(texts.values()), return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = two(**batch).logits
    relevant = dict(zip(texts, logits.softmax(-1)[:, 1].tolist()))
    by_doc = ranked.set_index("doc_id")["score"]
    assert_scores_close(by_doc[list(texts)].to_numpy(), (logits[:, 1] - logits[:, 0]).numpy())
    assert_orders_as(ranked, relevant)
    one, tokenizer, _ = models.load_scorer(tiny_checkpoint(tmp_path / "one", seed=4))
    ranked = rerank(one, tokenizer, run, queries, texts, max_length=64, precision="fp32")
    with torch.no_grad():
        sigmoid = dict(zip(texts, one(**batch).logits[:, 0].sigmoid().tolist()))
    assert_orders_as(ranked, sigmoid)


def assert_orders_as(ranked: pd.DataFrame, reference: dict[str, float], gap: float = 1e-4) -> None:
    """Every two passages whose reference scores differ by more than ``gap`` (numerical noise
    between batchings) are ranked in the reference's order; at least one such pair exists."""
    rank = dict(zip(ranked["doc_id"], ranked["rank"]))
    pairs = [(a, b) for a in reference for b in reference if reference[a] > reference[b] + gap]
    assert pairs and all(rank[a] < rank[b] for a, b in pairs)


# --- the released grid ------------------------------------------------------------------------------


def test_released_grid_has_one_evaluation_per_checkpoint_and_trains_nothing():
    grid = load_grid("released")
    assert grid.runs == ()
    ids = [job.run_id for job in grid.evaluations]
    # MarginMSE and ADR-MSE have no card for any backbone: listed, not scheduled
    assert len(ids) == 9 * 4 + 2 and len(set(ids)) == len(ids)
    assert not any(".margin-mse." in i or ".adr-mse." in i for i in ids)
    assert "ettin-150m.infonce.released" in ids and "baseline.ms-marco-minilm-l6-v2" in ids
    job = grid.evaluation("ettin-150m.infonce.released")
    assert job.model == "xpmir/cross-encoder-ettin-150m-infoNCE" and job.revision == "main"
    # scored with the 32 / 256 rule they were trained with (not the cards' default truncation)
    assert (job.config.truncation, job.config.query_max_length, job.config.passage_max_length) == (
        "retokenize",
        32,
        256,
    )
    settings = evaluation_settings(grid, "bert-base.infonce.released")
    assert settings.model == "xpmir/cross-encoder-bert-base-infoNCE"  # the card's spelling, lower-case i
    assert (settings.truncation, settings.query_max_length, settings.passage_max_length) == ("retokenize", 32, 256)
    # DeBERTa-v3: its profile follows the rerun (whole query); the released model is the first run's
    deberta = evaluation_settings(grid, "deberta-v3-base.distill-ranknet.released")
    assert (deberta.truncation, deberta.query_max_length, deberta.passage_max_length) == ("retokenize", 32, 256)
    assert load_config("deberta-v3-base", "distill-ranknet", 0, "paper").truncation != "retokenize"
    paper = load_config("ettin-150m", "infonce", 0, "paper")
    # scored exactly as the paper profile scores a trained run of the same backbone and objective
    for key in ("first_stage", "candidate_depth", "eval_datasets", "max_length", "precision"):
        assert getattr(job.config, key) == getattr(paper, key), key
    job = engine.job_parameters(grid, "evaluate", run_id="bert-base.bce.released")
    assert job.parameters == {"grid": "released", "run_name": "bert-base.bce.released"}
    settings = job.settings  # what the notebook reads from the run's identity
    assert settings.model == "xpmir/cross-encoder-bert-base-BCE" and settings.revision == "main"
    assert settings.first_stage == paper.first_stage and settings.depth == paper.candidate_depth


def test_plan_and_dry_run_of_the_released_grid_list_every_checkpoint():
    plan = subprocess.run(
        [sys.executable, "-m", "cerepro.cli", "plan", "released"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert plan.returncode == 0, plan.stderr
    assert "0 training jobs, 38 evaluation jobs over 22 datasets" in plan.stdout
    assert "xpmir/cross-encoder-deberta-v3-base" not in plan.stdout  # hub ids, not slugs
    assert "xpmir/cross-encoder-DeBERTav3-DistillRankNET@main" in plan.stdout
    assert "ADR-MSE" not in plan.stdout and "MarginMSE" not in plan.stdout  # no card found: not scheduled
    rows = [line for line in plan.stdout.splitlines() if ".released " in line or line.startswith("baseline.")]
    assert len(rows) == 38 and all(" 0.00 " in row for row in rows)  # no training GPU-hours
    dry = subprocess.run(
        [sys.executable, "-m", "cerepro.cli", "grid", "released", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
    counts = {}
    for line in dry.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert counts.get("evaluate") == 38 and counts.get("first_stage") == 1 and "train" not in counts, dry.stdout


def test_a_checkpoints_file_with_bad_entries_is_refused_naming_the_entry(tmp_path):
    params = tmp_path / "params"
    shutil.copytree(ROOT / "params", params)
    bad = params / "checkpoints" / "released.yaml"
    bad.write_text("checkpoints:\n  - {backbone: bert-base, objective: bce}\n")
    with pytest.raises(ParamsError, match=r"released.yaml: checkpoints\[0\]: key 'hub_id' is required"):
        load_grid("released", root=params)
    bad.write_text("checkpoints:\n  - {backbone: bert-base, hub_id: a/b}\n")
    with pytest.raises(ParamsError, match=r"checkpoints\[0\]: give either 'objective'"):
        load_grid("released", root=params)
    bad.write_text("checkpoints:\n  - {backbone: bert-base, objective: bce, hub_id: a/b, card: maybe}\n")
    with pytest.raises(ParamsError, match=r"checkpoints\[0\]: key 'card' = 'maybe'"):
        load_grid("released", root=params)
    bad.write_text(
        "checkpoints:\n  - {backbone: bert-base, objective: bce, hub_id: a/b, card: seen, "
        "settings: {truncate: retokenize}}\n"
    )
    with pytest.raises(ParamsError, match=r"checkpoints\[0\]: .*truncate"):
        load_grid("released", root=params)
    bad.write_text("checkpoints:\n  - {backbone: bert-huge, objective: bce, hub_id: a/b, card: derived}\n")
    with pytest.raises(ParamsError, match=r"checkpoints\[0\]: unknown backbone 'bert-huge'"):
        load_grid("released", root=params)
    (params / "grids" / "released.yaml").write_text("profile: paper\ncheckpoints: released\nbackbones: [bert-base]\n")
    with pytest.raises(ParamsError, match="a grid of 'checkpoints' trains nothing"):
        load_grid("released", root=params)


@pytest.mark.slow
def test_a_hub_checkpoint_through_the_released_grid_lands_on_the_scoreboard_as_released(
    tmp_path, offline_hub, monkeypatch
):
    """The released grid's evaluation job, as Snakemake runs it, on the demo world: a checkpoint
    served from the (offline) hub cache is scored, its contract names the commit, and the
    scoreboard shows its cells as `released` beside a trained run's."""
    saved = tiny_checkpoint(tmp_path / "saved", seed=5)
    hub_cache_entry(offline_hub, "xpmir/cross-encoder-tiny-bert-BCE", saved)
    params = tmp_path / "params"
    shutil.copytree(ROOT / "params", params)
    (params / "checkpoints" / "released-demo.yaml").write_text(
        "checkpoints:\n  - {backbone: tiny-bert, objective: bce, hub_id: xpmir/cross-encoder-tiny-bert-BCE, "
        "revision: main, card: seen, verified: test}\n"
    )
    (params / "grids" / "released-demo.yaml").write_text(
        "name: released-demo\nprofile: smoke\ncheckpoints: released-demo\n"
    )
    monkeypatch.setenv("CEREPRO_PARAMS", str(params))
    monkeypatch.setenv("CEREPRO_RUNS", str(tmp_path / "runs"))
    grid = load_grid("released-demo", root=params)

    for key in first_stage_jobs(grid):  # the first stage the evaluation waits for, as the grid runs it
        first = engine.grid_dir(grid) / "first-stage-runs" / key
        produce_first_stage(grid, key, str(first / "DONE"), str(first / "log"))
    assert first_stage_inputs(grid, "tiny-bert.bce.released", "evaluate")
    done = engine.grid_dir(grid) / "tiny-bert.bce.released" / "evaluate" / "DONE"
    engine.job_parameters(grid, "evaluate", run_id="tiny-bert.bce.released").execute(str(done), threads=1)
    assert done.is_file()
    contract = json.loads(next(done.parent.glob("results/*/contract.json")).read_text())
    assert contract["model"] == "xpmir/cross-encoder-tiny-bert-BCE" and contract["commit"] == COMMIT

    index = provenance.run_index("released-demo")
    assert list(index["model"]) == [f"xpmir/cross-encoder-tiny-bert-BCE@{COMMIT}"]
    released = tables.grid_results("released-demo")
    assert set(released["run"]) == {"tiny-bert.bce.released"} and released["seed"].isna().all()
    trained = released.assign(run="tiny-bert.bce.s1", seed=1, value=released["value"] * 0.5)
    table = verdicts.scoreboard_table(pd.concat([trained, released]), extra_columns=True)
    assert ("tiny-bert", "bce", "released") in table.index and ("tiny-bert", "bce", "trained") in table.index
    assert "best of 3 seeds on the mean test nDCG@10" in table.columns.name  # not to be read as a seed mean
    assert "best of 3" not in verdicts.scoreboard_table(trained).columns.name
    assert table.loc[("bert-base", "bce", "released"), "trec-dl-2019"].endswith(
        "/ not run"
    )  # the paper's cells, per source
    cells = table.loc[("tiny-bert", "bce", "released")]
    ours = released[released["measure"] == "nDCG@10"].groupby("dataset")["value"].mean()
    for dataset, value in ours.items():
        assert cells[dataset] == f"— / {value:.4f} (no paper value)"


@pytest.mark.slow
def test_cerepro_run_evaluate_takes_a_hub_id_at_a_revision(tmp_path, offline_hub):
    """What a user types: `cerepro run evaluate -p model=<hub id> -p revision=<rev>`, offline."""
    hub_cache_entry(offline_hub, "xpmir/cross-encoder-tiny-bert-BCE", tiny_checkpoint(tmp_path / "saved"))
    out = tmp_path / "out"
    env = {**os.environ, "CEREPRO_RUNS": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    command = cerepro_command(
        "run",
        "evaluate",
        "-p",
        "model=xpmir/cross-encoder-tiny-bert-BCE",
        "-p",
        "revision=main",
        "-p",
        "overrides={eval_datasets: [demo:in-domain], candidate_depth: 10}",
        "--out",
        str(out),
    )
    run_ok(command, env=env)
    contract = json.loads(next(out.glob("results/*/contract.json")).read_text())
    assert (contract["model"], contract["revision"], contract["commit"]) == (
        "xpmir/cross-encoder-tiny-bert-BCE",
        "main",
        COMMIT,
    )
    # labelled with the model, never as the first stage (the notebook's default run_name)
    assert contract["run"] == "xpmir/cross-encoder-tiny-bert-BCE"
