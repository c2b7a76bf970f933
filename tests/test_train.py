"""fit(): determinism, exact resume after SIGKILL, NaN stop, bad inputs, outputs, validation.

Tiny 2-layer models on an in-test source of groups; a few steps each, one thread (CPU maths is
then deterministic, so "identical" means bit-identical).
"""

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tolerance import GRADIENT_REL, assert_float_close, assert_scores_close

from cerepro.config import load_config
from cerepro.fragments import ParamsError
from cerepro.training import losses
from cerepro.training.checkpoints import CheckpointError, TrainingError, latest_checkpoint
from cerepro.training.chunks import length_cuts, score_pairs_train
from cerepro.training.train import DivergedError, fit, warmup_then_linear_decay

WORDS = "river mountain city ocean forest desert alpha beta gamma delta kappa lambda".split()
TEXTS = [" ".join(np.random.default_rng(i).choice(WORDS, 10)) for i in range(120)]


class Source:
    """Group ``i`` is a query of three words; passage 0 holds them (the positive), the others are
    random words; teacher scores prefer the positive. Resumable from any position."""

    cache_key = None

    def __init__(self, group_size=2, teacher=True, labels=True, seed=0):
        self.group_size, self.teacher, self.labels, self.seed = group_size, teacher, labels, seed

    def groups(self, start):
        i = start
        while True:
            rng = np.random.default_rng([self.seed, i])
            query = list(rng.choice(WORDS, 3))
            passages = [" ".join(query + list(rng.choice(WORDS, rng.integers(2, 12))))]
            passages += [" ".join(rng.choice(WORDS, rng.integers(3, 15))) for _ in range(self.group_size - 1)]
            group = {"query": " ".join(query), "passages": passages}
            if self.labels:
                group["labels"] = [1.0] + [0.0] * (self.group_size - 1)
            if self.teacher:
                group["teacher"] = [3.0] + list(rng.normal(size=self.group_size - 1))
            yield group
            i += 1


def config(objective="bce", **overrides):
    base = {
        "max_steps": 8,
        "warmup_steps": 2,
        "log_every": 2,
        "checkpoint_every": 3,
        "cpus": 1,
        "validation_datasets": [],
        "batch_size": 4,
        "max_length": 32,
    }
    base.update(overrides)
    return load_config("tiny-bert", objective, 0, "smoke", base)


def train(cfg, folder, source=None, **kwargs):
    return fit(cfg, folder, data=source or Source(cfg.group_size), tokenizer_texts=TEXTS, **kwargs)


def weights(path):
    return load_file(str(path))


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def tree_digest(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CEREPRO_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# --- determinism and exact resume --------------------------------------------------------------


def test_same_seed_twice_gives_identical_weights(tmp_path):
    cfg = config("infonce", batch_size=16)  # infonce's batch counts passages: 2 groups of 8
    a = train(cfg, tmp_path / "a", Source(cfg.group_size))
    b = train(cfg, tmp_path / "b", Source(cfg.group_size))
    assert a["steps"] == b["steps"] == 8
    assert same(weights(tmp_path / "a/model/model.safetensors"), weights(tmp_path / "b/model/model.safetensors"))
    other = train(config("infonce", batch_size=16, seed=1), tmp_path / "c", Source(cfg.group_size))
    assert other["steps"] == 8
    assert not same(weights(tmp_path / "a/model/model.safetensors"), weights(tmp_path / "c/model/model.safetensors"))


SLOW_CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
import test_train
from cerepro.training import losses
slow = losses.margin_mse
def delayed(*args, **kwargs):
    time.sleep(0.15)
    return slow(*args, **kwargs)
losses.margin_mse = delayed  # the record names losses.margin_mse: resolved when the run starts
cfg = test_train.config("margin-mse", max_steps=24)
test_train.train(cfg, {folder!r})
"""


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    cfg = config("margin-mse", max_steps=24)
    train(cfg, tmp_path / "straight")

    folder = tmp_path / "killed"
    code = SLOW_CHILD.format(tests=str(Path(__file__).parent), folder=str(folder))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        done = latest_checkpoint(folder)
        if done is not None and done.name >= "step-0000006":
            break
        time.sleep(0.05)
    assert child.poll() is None, child.stderr.read().decode()[-2000:]
    child.send_signal(signal.SIGKILL)
    child.wait()
    killed_at = latest_checkpoint(folder)
    assert "step-00000" in killed_at.name and not (folder / "summary.json").exists()

    summary = train(cfg, folder)  # resumes from the checkpoint the killed run left
    assert summary["steps"] == 24
    final = "checkpoints/step-0000024/model.safetensors"
    assert same(weights(tmp_path / "straight" / final), weights(folder / final))
    assert same(weights(tmp_path / "straight/model/model.safetensors"), weights(folder / "model/model.safetensors"))
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 24  # no duplicated lines from the killed run
    (note,) = [r for r in log if "resumed_from" in r]
    assert note == {"step": int(killed_at.name[5:]), "resumed_from": f"checkpoints/{killed_at.name}", "skipped": {}}


# --- outputs -------------------------------------------------------------------------------------


def test_outputs_log_ledger_checkpoint_and_finished_run(tmp_path):
    cfg = config("hinge")
    summary = train(cfg, tmp_path)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 6, 8]
    assert {"loss", "lr", "grad_norm", "pairs_per_s", "tokens_per_s", "rss_mb"} <= set(log[0])
    assert log[-1]["lr"] == 0.0 and all(np.isfinite(r["loss"]) for r in log)
    ledger = json.loads((tmp_path / "ledger.json").read_text())
    assert ledger["steps"] == 8 and ledger["pairs"] == 8 * 4 * 2 and ledger["flops"] > 0
    assert ledger["device_type"] == "cpu" and ledger["mfu"] is None and ledger["wall_s"] > 0
    assert summary["compute"] == ledger and summary["best_step"] is None

    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert checkpoints == ["step-0000006", "step-0000008"]  # the newest two
    state = torch.load(tmp_path / "checkpoints/step-0000008/training_state.pt", weights_only=True)
    assert state["step"] == 8 and state["data_position"] == 8 * 4
    assert state["scheduler"]["last_epoch"] == 8 and "state" in state["optimizer"]
    assert (
        torch.load(tmp_path / "checkpoints/step-0000008/rng-rank0.pt", weights_only=True)["torch"].dtype == torch.uint8
    )

    before = tree_digest(tmp_path)
    again = train(cfg, tmp_path)  # finished: returns the summary, trains nothing
    assert again == summary and tree_digest(tmp_path) == before
    with pytest.raises(TrainingError, match="already holds checkpoints.*resume=True"):
        train(cfg, tmp_path, resume=False)


def test_training_blocks_are_rebuilt_when_an_input_setting_changes(tmp_path):
    """The tokenized training blocks' cache is keyed by the source (file order, InfoNCE groups),
    the tokenizer (lower-casing), the side limits and the truncation rule."""
    from transformers import BertTokenizerFast

    from cerepro.training.training_blocks import TokenizedBlocks

    class Named(Source):
        cache_key = "demo-source"

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    cased, folded = BertTokenizerFast(vocab=vocab, do_lower_case=False), BertTokenizerFast(vocab=vocab)
    table = config("bce", max_length=32, truncation="retokenize", query_max_length=2, passage_max_length=8)
    variants = [
        table,
        config("bce", max_length=32, truncation="passage", query_max_length=None, passage_max_length=None),
        config("bce", max_length=32, truncation="retokenize", query_max_length=2, passage_max_length=4),
        config("bce", max_length=32, truncation="retokenize", query_max_length=3, passage_max_length=8),
    ]
    keys = {TokenizedBlocks(Named(), folded, c).cache_key for c in variants}
    keys.add(TokenizedBlocks(Named(), cased, table).cache_key)

    class Reordered(Named):
        cache_key = "demo-source|order=shuffled"

    keys.add(TokenizedBlocks(Reordered(), folded, table).cache_key)
    assert len(keys) == 6
    # and a block built under one setting is never read under another
    lengths = [TokenizedBlocks(Named(), folded, c).step_rows(0)[0].encoding.lengths.max() for c in variants[:3]]
    assert lengths[0] <= 2 + 8 + 3 and lengths[2] <= 2 + 4 + 3 < lengths[1]
    assert len(list((tmp_path / "cache" / "train-blocks").iterdir())) == 3


def test_schedule_warmup_then_linear_decay_to_zero():
    factor = warmup_then_linear_decay(config(max_steps=10, warmup_steps=4))
    assert [factor(s) for s in range(11)] == [0, 0.25, 0.5, 0.75, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0]


def test_validation_selects_the_best_checkpoint(tmp_path):
    folder = tmp_path / "val"
    (folder / "runs").mkdir(parents=True)
    docs = {f"d{i}": " ".join(np.random.default_rng(100 + i).choice(WORDS, 8)) for i in range(6)}
    (folder / "queries.tsv").write_text("q1\triver city ocean\nq2\talpha beta gamma\n")
    (folder / "docs.tsv").write_text("".join(f"{d}\t{t}\n" for d, t in docs.items()))
    (folder / "qrels.txt").write_text("q1 0 d0 1\nq2 0 d3 2\n")
    (folder / "runs/first.trec").write_text(
        "".join(f"{q} Q0 d{i} {r + 1} {10 - r} first\n" for q in ("q1", "q2") for r, i in enumerate(range(6)))
    )
    cfg = config(
        "bce",
        validation_datasets=[f"local:{folder}"],
        validation_first_stage="run:first",
        validation_depth=6,
        validate_every=4,
    )
    summary = train(cfg, tmp_path / "run")
    log = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    validated = [r for r in log if "validation" in r]
    assert [r["step"] for r in validated] == [4, 8]
    values = [r["RR@10"] for r in validated]  # the table's measure: RR@10 over the re-ranked candidates
    assert summary["best_value"] == max(values)
    assert summary["best_step"] == [4, 8][values.index(max(values))]
    card = (tmp_path / "run/model/README.md").read_text()
    assert f"Selected at step {summary['best_step']} of 8" in card


def validation_folder(tmp_path, name, seed):
    folder = tmp_path / name
    (folder / "runs").mkdir(parents=True)
    docs = {f"d{i}": " ".join(np.random.default_rng(seed + i).choice(WORDS, 8)) for i in range(6)}
    (folder / "queries.tsv").write_text("q1\triver city ocean\nq2\talpha beta gamma\n")
    (folder / "docs.tsv").write_text("".join(f"{d}\t{t}\n" for d, t in docs.items()))
    (folder / "qrels.txt").write_text("q1 0 d0 1\nq2 0 d3 2\n")
    (folder / "runs/first.trec").write_text(
        "".join(f"{q} Q0 d{i} {r + 1} {10 - r} first\n" for q in ("q1", "q2") for r, i in enumerate(range(6)))
    )
    return f"local:{folder}"


def test_table_selection_keeps_each_sets_best_so_far_and_stops_early(tmp_path):
    from cerepro.training.selection import Selection

    sets = [validation_folder(tmp_path, "va", 100), validation_folder(tmp_path, "vb", 200)]
    selecting = dict(
        validation_datasets=sets,
        validation_first_stage="run:first",
        validation_depth=6,
        validate_every=2,
        validation_measure="RR@10",
        validation_aggregate="best-so-far",
        max_steps=12,
        checkpoint_every=100,
    )
    cfg = config("bce", **selecting)
    summary = train(cfg, tmp_path / "run")
    log = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    validated = [r for r in log if "validation" in r]
    replay = Selection("best-so-far")
    for record in validated:  # the loop's choices are the rule's on the values it logged
        assert record["selected"] == replay.update(record["step"], record["validation"])
        assert record["RR@10"] == pytest.approx(replay.value, rel=1e-12)
    assert summary["best_step"] == replay.best_step and summary["best_value"] == replay.best_value
    assert summary["validation_aggregate"] == "best-so-far" and not summary["stopped_early"]

    # a model that cannot move (lr 1e-30): the aggregate never rises after the first validation,
    # so with a patience of one validation the run stops at the second, its checkpoint written
    still = config("bce", **selecting, early_stopping_steps=2, lr=1e-30)
    stopped = train(still, tmp_path / "still")
    assert (stopped["steps"], stopped["best_step"], stopped["stopped_early"]) == (4, 2, True)
    assert (tmp_path / "still/checkpoints/step-0000004").is_dir()
    assert train(still, tmp_path / "still")["steps"] == 4  # a finished early-stopped run is done


def test_selection_measure_is_rr10_by_default_ndcg_over_the_whole_top_100_as_an_option(monkeypatch):
    import pandas as pd

    from cerepro.evaluation import rerank
    from cerepro.training.validation import ValidationSet, validation_topics

    assert config().validation_measure == "RR@10" and config().validation_queries == 500  # the table's
    assert config(validation_measure="nDCG@10").validation_measure == "nDCG@10"
    # one query, 20 candidates, the only relevant one ranked 12th: nDCG@10 sees nothing, nDCG does
    run = pd.DataFrame({"query_id": ["q"] * 20, "doc_id": [f"d{i}" for i in range(20)]})
    qrels = pd.DataFrame({"query_id": ["q"], "doc_id": ["d11"], "relevance": [1]})
    monkeypatch.setattr(rerank, "score_pairs", lambda *a, **k: np.arange(20, 0, -1, dtype=np.float32))
    assert ValidationSet("local:x", "nDCG@10", None, run, qrels, 0).score(None, "fp32") == 0.0
    assert ValidationSet("local:x", "nDCG", None, run, qrels, 0).score(None, "fp32") == pytest.approx(1 / np.log2(13))
    # at most validation_queries topics per set: all of a small set, a seeded sample of a big one
    many = pd.DataFrame({"query_id": [f"q{i}" for i in range(900) for _ in range(2)], "doc_id": ["a", "b"] * 900})
    kept = validation_topics(many, 500)
    assert kept["query_id"].nunique() == 500 and len(kept) == 1000
    assert kept.equals(validation_topics(many, 500))
    assert validation_topics(many.head(100), 500).equals(many.head(100))


def test_a_tf32_run_trains_with_tf32_matmuls_and_restores_the_setting(tmp_path, monkeypatch):
    from cerepro.training.ledger import peak_flops

    assert torch.get_float32_matmul_precision() == "highest"
    train(config(precision="tf32", max_steps=2, warmup_steps=1), tmp_path / "run")
    ledger = json.loads((tmp_path / "run/ledger.json").read_text())
    assert ledger["precision"] == "tf32" and ledger["matmul_precision"] == "high"
    assert torch.get_float32_matmul_precision() == "highest"
    # MFU is taken against the TF32 peak for tf32 runs, not the bf16 one
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    cuda = torch.device("cuda")
    assert peak_flops(cuda, "tf32") == pytest.approx(494.7e12)
    assert peak_flops(cuda, "bf16-mixed") == pytest.approx(989e12)
    assert peak_flops(cuda, "fp32") == pytest.approx(66.9e12)


def test_unknown_validation_measure_is_refused_before_training():
    from cerepro.fragments import ParamsError

    with pytest.raises(ParamsError, match=r"key 'validation_measure' = 'nDCG@ten'.*unknown measure"):
        config(validation_measure="nDCG@ten")


# --- speed pieces --------------------------------------------------------------------------------


def test_length_cuts_by_hand():
    assert length_cuts(np.array([10] * 16)) == []  # uniform: one forward
    lengths = np.array([5] * 16 + [100] * 16)
    assert length_cuts(lengths, overhead_tokens=0, max_chunks=2) == [16]
    assert length_cuts(lengths, overhead_tokens=10**6) == []  # forwards too costly to split


@pytest.mark.parametrize("arch", ["bert", "electra", "roberta", "deberta-v2", "modernbert"])
def test_chunked_scores_equal_one_padded_forward(arch):
    from cerepro.data.tokenize import encode_pairs
    from cerepro.model import models

    model, tokenizer = models.build_cross_encoder(f"builtin:{arch}", max_length=32, texts=TEXTS)
    model.eval()
    rng = np.random.default_rng(0)
    queries = [" ".join(rng.choice(WORDS, 2)) for _ in range(40)]
    passages = [" ".join(rng.choice(WORDS, rng.integers(1, 25))) for _ in range(40)]
    encoding = encode_pairs(tokenizer, queries, passages, max_length=32)
    pairs = rng.permutation(40)
    lengths = encoding.lengths[pairs]
    with torch.no_grad():
        pad = tokenizer.pad_token_id
        one = score_pairs_train(model, encoding, pairs, lengths, pad, "cpu", overhead_tokens=None)
        chunked = score_pairs_train(model, encoding, pairs, lengths, pad, "cpu", overhead_tokens=0)
    assert_scores_close(chunked, one)


@pytest.mark.parametrize("arch", ["bert", "electra", "roberta"])
def test_first_token_last_layer_gives_the_same_loss_and_gradients(arch):
    """fit() scores BERT-style models with a last layer that computes only the first token: the
    loss and every parameter's gradient equal the plain forward's, and the state dict is kept."""
    from cerepro.data.tokenize import encode_pairs
    from cerepro.model import models
    from cerepro.model.first_token import last_layer_first_token_only, supports_first_token_last_layer

    model, tokenizer = models.build_cross_encoder(f"builtin:{arch}", max_length=32, texts=TEXTS)
    model.eval()  # no dropout, gradients still on
    assert supports_first_token_last_layer(model)
    keys = list(model.state_dict())
    rng = np.random.default_rng(1)
    queries = [" ".join(rng.choice(WORDS, 2)) for _ in range(24)]
    passages = [" ".join(rng.choice(WORDS, rng.integers(1, 25))) for _ in range(24)]
    encoding = encode_pairs(tokenizer, queries, passages, max_length=32)
    pairs, pad = np.arange(24), tokenizer.pad_token_id

    def loss_and_grads(shortcut: bool):
        model.zero_grad(set_to_none=True)
        with last_layer_first_token_only(model) if shortcut else contextlib.nullcontext():
            scores = score_pairs_train(model, encoding, pairs, encoding.lengths, pad, "cpu", overhead_tokens=0)
        loss = losses.infonce(scores.view(3, 8), torch.ones(3, 8, dtype=torch.bool))
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_loss, plain = loss_and_grads(False)
    short_loss, short = loss_and_grads(True)
    assert_scores_close(short_loss, plain_loss)
    assert short.keys() == plain.keys()
    # the scale is every gradient: the classifier bias's is zero by symmetry (infonce sees only
    # score differences) and holds the rounding of the others
    every = list(plain.values())
    for name in plain:
        assert_float_close(short[name], plain[name], rel=GRADIENT_REL, scale=every, msg=name)
    assert list(model.state_dict()) == keys


# --- failures: clear messages, checkpoints untouched ---------------------------------------------


BCE = losses.bce  # the real loss, whatever a test has put in its place


def nan_from_call(n):
    """bce whose loss turns NaN from its n-th call on (one call per step here)."""
    real, calls = BCE, []

    def broken(scores, mask, **kwargs):
        calls.append(1)
        loss = real(scores, mask, **kwargs)
        return loss * float("nan") if len(calls) >= n else loss

    return broken


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(losses, "bce", nan_from_call(5))
    cfg = config("bce", max_steps=12)
    with pytest.raises(DivergedError, match=r"loss is nan at step 5.*step-0000003, is intact"):
        train(cfg, tmp_path)
    assert latest_checkpoint(tmp_path).name == "step-0000003"
    before = tree_digest(tmp_path / "checkpoints")
    monkeypatch.setattr(losses, "bce", nan_from_call(3))  # at the checkpoint step 6
    with pytest.raises(DivergedError, match=r"loss is nan at step 6"):
        train(cfg, tmp_path)
    assert tree_digest(tmp_path / "checkpoints") == before
    monkeypatch.setattr(losses, "bce", BCE)
    assert train(cfg, tmp_path)["steps"] == 12  # and the run resumes from it


def test_objective_without_the_inputs_it_needs_fails_before_writing(tmp_path):
    # the params are refused (config: the one check of objective against source) ...
    with pytest.raises(
        ParamsError,
        match="key 'training_source' = 'triples': objective 'margin-mse' needs teacher scores, which this source "
        r"does not give; use one that does \(teacher-pairs, llm-lists\)",
    ):
        config("margin-mse", training_source="triples")
    # ... and data handed to train() directly that lacks them is refused by the loss, at the first step
    with pytest.raises(ValueError, match=r"margin-mse needs teacher \(Q, D\); got teacher=None"):
        train(config("margin-mse"), tmp_path / "data", Source(teacher=False))


def test_uneven_batch_split_fails_clearly(tmp_path):
    with pytest.raises(TrainingError, match="4 groups per step cannot be split evenly.*grad_accum 3"):
        train(config("bce", grad_accum=3), tmp_path)


def test_resume_with_another_config_fails_and_leaves_checkpoints(tmp_path):
    train(config("bce", max_steps=6), tmp_path)
    before = tree_digest(tmp_path / "checkpoints")
    with pytest.raises(CheckpointError, match=r"another configuration \(lr: 0.001 in the checkpoint, 0.002 now"):
        train(config("bce", max_steps=6, lr=2e-3), tmp_path)
    assert tree_digest(tmp_path / "checkpoints") == before
    train(config("bce", max_steps=6, log_every=3), tmp_path)  # logging is not the configuration


def damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def stop_at_step_4(cfg, folder):
    with pytest.MonkeyPatch.context() as mp, pytest.raises(DivergedError):  # stop mid-run
        mp.setattr(losses, "bce", nan_from_call(4))
        train(cfg, folder)


@pytest.mark.parametrize("damaged", ["model.safetensors", "manifest.json", "training_state.pt"])
def test_corrupted_newest_checkpoint_falls_back_to_the_previous_one_bit_identically(tmp_path, damaged, capsys):
    cfg = config("bce", max_steps=12, checkpoint_every=1)
    train(cfg, tmp_path / "straight")
    folder = tmp_path / "run"
    stop_at_step_4(cfg, folder)
    assert latest_checkpoint(folder).name == "step-0000003"
    damage(folder / "checkpoints/step-0000003" / damaged)

    assert train(cfg, folder)["steps"] == 12
    assert (
        "resuming tiny-bert.bce.s0 at step 2 of 12 from checkpoints/step-0000002; skipped step-0000003"
        in capsys.readouterr().out
    )
    final = "checkpoints/step-0000012/model.safetensors"
    assert same(weights(tmp_path / "straight" / final), weights(folder / final))
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    (note,) = [r for r in log if "resumed_from" in r]
    assert note["step"] == 2 and damaged in note["skipped"]["step-0000003"]
    assert [r["step"] for r in log if "loss" in r] == [2, 4, 6, 8, 10, 12]


def test_no_checkpoint_that_verifies_fails_clearly_and_leaves_them_alone(tmp_path):
    cfg = config("bce", max_steps=12, checkpoint_every=1)
    stop_at_step_4(cfg, tmp_path)
    for step in ("step-0000002", "step-0000003"):
        damage(tmp_path / "checkpoints" / step / "model.safetensors")
    before = tree_digest(tmp_path / "checkpoints")
    with pytest.raises(
        CheckpointError,
        match=r"no checkpoint in .* can be resumed from: checkpoint "
        r".*step-0000003 is corrupted: model.safetensors does not match its sha256.*"
        r"step-0000002 is corrupted.*--force",
    ):
        train(cfg, tmp_path)
    assert tree_digest(tmp_path / "checkpoints") == before
