"""``fit(config, output_dir)``: train one cross-encoder, resumably, on one CPU, one GPU or many.

One readable loop in the order of karpathy/nanoGPT's ``train.py``: setup, data, model, optimiser,
resume, loop (forward, loss, backward, clip, step), validation, checkpoint. What it writes under
``output_dir``:

- ``model/``: the selected cross-encoder (best validation ``validation_measure``, as the paper
  selects; the final weights when no validation set is configured), a transformers folder with a
  model card that sentence-transformers' ``CrossEncoder`` also loads (``cerepro.model.models``);
- ``checkpoints/step-NNNNNNN/``: ``model.safetensors``, ``training_state.pt`` (optimiser,
  scheduler, RNG states, data position, best-so-far; loads with ``torch.load(weights_only=True)``)
  and ``manifest.json`` (sha256 of each file and the config fingerprint), written to a temporary
  folder and renamed into place; ``checkpoints/latest`` names the newest; two are kept;
- ``log.jsonl`` (step, loss, lr, grad norm, pairs/s, memory; validation results), ``ledger.json``
  (the compute ledger: wall time, device, steps, pairs/s, estimated FLOPs, MFU on GPU, the
  checkpoint steps it resumed at) and
  ``summary.json`` (returned by ``fit``).

Batches follow the objective: each optimiser step scores ``config.groups_per_step`` groups of
``config.group_size`` passages (triples, 1 + 7 groups, one 50-passage list), split evenly over
processes (DDP) and ``grad_accum`` micro-batches, so the effective batch is always the protocol's.
Training groups are tokenized in blocks ahead of the loop (``cerepro.data.tokenize``, cached on disk when
the source names itself: :mod:`cerepro.training.training_blocks`); the loop itself only slices arrays and pads each forward pass to its
longest pair. On one process, a step's pairs are sorted by length and scored in a few
length-homogeneous chunks before one loss and one backward: same loss, less padding.

Launch: call ``fit`` in-process (one CPU or GPU), or ``python -m cerepro.training.train`` under
``accelerate launch`` / ``torchrun`` for DDP; ``launch()`` does the latter from a notebook.

Checkpoints are :mod:`cerepro.training.checkpoints`'. This module trains; it never evaluates test collections.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cerepro.config import RunConfig, build_config, load_config, scoring_precision
from cerepro.data import training_data
from cerepro.data.tokenize import PairEncoding, encode_pairs, padded_batch
from cerepro.evaluation import rerank
from cerepro.model import backbones, models
from cerepro.paths import write_text_atomic
from cerepro.training import losses
from cerepro.training.checkpoints import (
    TrainingError,
    config_fingerprint,
    finished,
    latest_checkpoint,
    load_weights,
    resume_point,
    save_checkpoint,
    set_rng,
)
from cerepro.training.selection import Selection
from cerepro.training.training_blocks import TokenizedBlocks
from cerepro.vocab import SOURCE_PROVIDES, Precision


class DivergedError(TrainingError):
    """The loss became NaN or infinite."""


# ---------------------------------------------------------------------------------------------
# The training loop


def _with_matmul_precision(train):
    """Run ``train(config, ...)`` with fp32 matmuls at the run's precision (TF32 for ``tf32``
    runs, as the authors' learner sets), then restore the process's setting."""

    @functools.wraps(train)
    def wrapper(config: RunConfig, *args, **kwargs):
        with rerank.matmul_precision(Precision.parse(config.precision)):
            return train(config, *args, **kwargs)

    return wrapper


@_with_matmul_precision
def fit(
    config: RunConfig, output_dir: str | os.PathLike, *, resume: bool = True, data=None, tokenizer_texts=None
) -> dict[str, Any]:
    """Train ``config``'s cross-encoder into ``output_dir``; returns the run summary.

    ``resume``: continue from the newest checkpoint in ``output_dir`` (a finished run returns its
    summary at once). With ``resume=False`` an ``output_dir`` that holds checkpoints is refused.
    ``data``: a training source to use instead of ``config``'s (tests, benchmarks): an object
    whose ``groups(start)`` yields groups from position ``start`` (see :func:`cerepro.training.training_blocks.read_groups`).
    ``tokenizer_texts``: texts to train a ``builtin:`` backbone's tokenizer on (default: demo world).
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    # ---- setup: output folder, processes, precision, seeds --------------------------------
    output_dir = Path(output_dir)
    fingerprint = config_fingerprint(config)
    objective = losses.objective(config.objective)
    check_objective_source(config)
    if resume and finished(output_dir, fingerprint):
        return json.loads((output_dir / "summary.json").read_text())
    if data is None:  # every input checked before a GPU step: datasets, the training file's lines
        from cerepro.data.training_data import check_inputs

        check_inputs(config, verify=True)
    checkpoint = latest_checkpoint(output_dir)
    if checkpoint is not None and not resume:
        raise TrainingError(
            f"{output_dir} already holds checkpoints ({checkpoint.name}); resume "
            f"with resume=True or train into a new folder"
        )
    checkpoint, state, skipped = resume_point(output_dir, config)  # verified first

    # Precision is ours (torch.autocast), not accelerate's: its state is a process-wide singleton
    # that refuses a second precision, and a notebook may train runs of both in one kernel.
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    device, world, rank = accelerator.device, accelerator.num_processes, accelerator.process_index
    main = accelerator.is_main_process
    if device.type == "cpu":  # the CPUs the job was given, shared by its processes
        torch.set_num_threads(max(1, min(config.cpus, os.cpu_count() or 1) // world))
    groups_per_rank = _groups_per_micro_batch(config, world)
    seed = config.seed + 1000 * rank  # dropout differs across processes, as in any DDP run
    random.seed(seed), np.random.seed(seed % 2**32), torch.manual_seed(seed)
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output_dir / "config.json", json.dumps(config.to_dict(), indent=1))

    # ---- model and tokenizer --------------------------------------------------------------
    model, tokenizer = models.build_cross_encoder(
        config.hf_id,
        config.revision,
        max_length=config.max_length,
        seed=config.seed,
        texts=tokenizer_texts,
        lower_case=config.lower_case,
    )
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if state is not None:
        load_weights(model, checkpoint)
    model = accelerator.prepare_model(model)
    bare = accelerator.unwrap_model(model)
    forward = torch.compile(model, dynamic=True) if config.compile else model
    pad_id = tokenizer.pad_token_id
    bf16 = _autocasts(config, device)

    # ---- data: training blocks, validation candidates ---------------------------------------
    source = data if data is not None else training_data.open_source(config)
    blocks = TokenizedBlocks(source, tokenizer, config)
    validation = [ValidationSet.load(d, config, tokenizer) for d in config.validation_datasets]

    # ---- optimiser: AdamW (fused), linear warm-up then linear decay to 0 ---------------------
    optimizer = torch.optim.AdamW(
        bare.parameters(), lr=config.lr, eps=config.adam_eps, weight_decay=config.weight_decay, fused=True
    )  # one kernel per step, CPU too (6x foreach on MiniLM)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_linear_decay(config))

    # ---- resume -----------------------------------------------------------------------------
    step, totals = 0, _zero_totals()
    selection = Selection(config.validation_aggregate, config.early_stopping_steps)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        set_rng(state["rng"], rank)
        step, selection, totals = state["step"], Selection.from_state(state["best"]), state["totals"]
        totals["resumed_from"] = [*totals.get("resumed_from", []), step]  # in the ledger
        if main:
            _truncate_log(output_dir / "log.jsonl", step)
            note = {
                "step": step,
                "resumed_from": str(checkpoint.relative_to(output_dir)),
                "skipped": {p.name: why for p, why in skipped},
            }
            _append_jsonl(output_dir / "log.jsonl", note)
            print(
                f"resuming {config.run_id} at step {step} of {config.max_steps} from {note['resumed_from']}"
                + "".join(f"; skipped {p.name}: {why}" for p, why in skipped),
                flush=True,
            )
    kwargs = objective_kwargs(config, objective)
    accepts = losses.ACCEPTS[config.objective]

    # ---- the loop ---------------------------------------------------------------------------
    model.train()
    bar = tqdm(
        total=config.max_steps,
        initial=step,
        disable=not main,
        desc=config.run_id,
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0,
    )
    session_start, window_start, window = time.perf_counter(), time.perf_counter(), _zero_window()
    pending = None  # the previous step's loss, checked one step late so the GPU never waits
    # Length-homogeneous chunks need one forward per chunk: on one process only (DDP expects one
    # forward per backward).
    overhead = chunk_overhead_tokens(bare.config, device.type, bf16) if world == 1 else None
    # BERT-style heads read only the first token: the last layer computes only that position
    # (same loss and gradients; about 1/layers of the work saved). Checkpoints see the plain model.
    first_token = models.supports_first_token_last_layer(bare)
    # early stopping (the table's learner): no improvement of the aggregate for patience steps
    while step < config.max_steps and not selection.should_stop(step):
        block, rows = blocks.step_rows(step)  # rows: (groups_per_step,) into the block
        rows = rows.reshape(world, config.grad_accum, groups_per_rank)[rank]  # (accum, G)
        step_loss = torch.zeros((), device=device)
        for micro, micro_rows in enumerate(rows):
            mask = block.mask[micro_rows]  # (G, D)
            pairs = block.slots[micro_rows][mask]  # (P,) valid pairs, row-major
            lengths = block.encoding.lengths[pairs]
            sync = micro == config.grad_accum - 1
            with accelerator.no_sync(model) if not sync else contextlib.nullcontext():
                with (
                    rerank.autocast_to(Precision.parse(config.precision), device, enabled=bf16),
                    models.last_layer_first_token_only(bare) if first_token else contextlib.nullcontext(),
                ):
                    flat = score_pairs_train(
                        forward, block.encoding, pairs, lengths, pad_id, device, overhead_tokens=overhead
                    )  # (P,)
                    mask_t = torch.from_numpy(mask).to(device)
                    scores = torch.zeros(mask.shape, device=device).masked_scatter(mask_t, flat.float())
                    inputs = {
                        k: _tensor(getattr(block, k), micro_rows, device) for k in ("labels", "teacher") if k in accepts
                    }
                    loss = objective(scores, mask_t, **inputs, **kwargs) / config.grad_accum
                accelerator.backward(loss)
            step_loss += loss.detach()
            window["pairs"] += len(pairs)
            window["tokens"] += int(lengths.sum())
            window["flops"] += backbones.pair_flops(bare.config, lengths, training=True)
        grad_norm = torch.nn.utils.clip_grad_norm_(bare.parameters(), config.grad_clip, foreach=True)
        if pending is not None:
            _check_finite(*pending, output_dir)
        pending = (step + 1, *_to_host(step_loss, grad_norm), schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window["losses"].append(step_loss)
        window["grad_norms"].append(grad_norm)
        bar.update(1)

        # early stopping ends the run after this step's validation (if one is due), as the
        # authors' learner checked after its listeners; the step's checkpoint is then written
        last = step == config.max_steps
        if step % config.log_every == 0 or last or selection.should_stop(step):
            _check_finite(*pending, output_dir)
            record = _log_record(step, window, window_start, schedule, accelerator, device)
            _accumulate(totals, window, time.perf_counter() - window_start)
            if main:
                _append_jsonl(output_dir / "log.jsonl", record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", pairs_s=f"{record['pairs_per_s']:.0f}")
            window_start, window = time.perf_counter(), _zero_window()
        if validation and (step % config.validate_every == 0 or last):
            _check_finite(*pending, output_dir)
            started = time.perf_counter()
            if main:
                # fp32 scores even after bf16 training (TF32 matmuls for tf32 runs, as the
                # authors' validation inside their learner): a bf16 logit has 8 significant bits,
                # so close candidates would tie and the measure would follow the tie-break order.
                values = {v.dataset: v.score(bare, scoring_precision(config)) for v in validation}
                selected = selection.update(step, values)
                # "selection": the aggregate the model is kept on, whatever the measure
                _append_jsonl(
                    output_dir / "log.jsonl",
                    {
                        "step": step,
                        "validation": values,
                        config.validation_measure: selection.value,
                        "selection": selection.value,
                        "aggregate": config.validation_aggregate,
                        "selected": selected,
                    },
                )
                if selected:
                    _save_model(bare, tokenizer, output_dir / "model", config, step, selection)
            accelerator.wait_for_everyone()
            selection = Selection.from_state(_broadcast(selection.state(), accelerator))
            totals["validation_s"] += time.perf_counter() - started
            window_start = time.perf_counter()  # validation time is not training throughput
            window["cpu_start"] = time.process_time()
        if step % config.checkpoint_every == 0 or last or selection.should_stop(step):
            _check_finite(*pending, output_dir)
            totals["wall_s"] += time.perf_counter() - session_start
            session_start = time.perf_counter()
            save_checkpoint(output_dir, step, bare, optimizer, schedule, config, selection.state(), totals, accelerator)
    bar.close()

    # ---- finish: selected model, ledger, summary --------------------------------------------
    if main:
        if not validation:
            _save_model(bare, tokenizer, output_dir / "model", config, step, selection)
        ledger = run_ledger(config, totals, bare, device, world)
        write_text_atomic(output_dir / "ledger.json", json.dumps(ledger, indent=1))
        summary = {
            "run_id": config.run_id,
            "complete": True,
            "fingerprint": fingerprint,
            "steps": step,
            "model_dir": str(output_dir / "model"),
            "validation_measure": config.validation_measure,
            "validation_aggregate": config.validation_aggregate,
            "stopped_early": step < config.max_steps,
            "best_step": selection.best_step,
            "best_value": selection.best_value,
            "best_per_dataset": selection.best_per_dataset,
            "final_loss": _last_logged_loss(output_dir / "log.jsonl"),
            "compute": ledger,
        }
        write_text_atomic(output_dir / "summary.json", json.dumps(summary, indent=1))
    accelerator.wait_for_everyone()
    return json.loads((output_dir / "summary.json").read_text())


# ---------------------------------------------------------------------------------------------
# Pieces of the loop


def score_pairs_train(
    model,
    encoding: PairEncoding,
    pairs: np.ndarray,
    lengths: np.ndarray,
    pad_id: int,
    device,
    *,
    overhead_tokens: int | None,
) -> torch.Tensor:
    """Scores (P,) of ``pairs`` with gradients, in input order.

    With ``overhead_tokens`` (None: one forward), the pairs are sorted by length and scored in a
    few length-homogeneous forwards, each padded to its own longest pair, instead of one padded to
    the longest of all; the cuts minimise padded tokens plus ``overhead_tokens`` per forward
    (``chunk_overhead_tokens``), so short, uniform batches stay in one forward. The cuts depend
    on the data only, so a run stays deterministic.
    """
    if overhead_tokens is None or len(pairs) < 8:
        batch = padded_batch(encoding, pairs, pad_id)
        return model(**{k: v.to(device, non_blocking=True) for k, v in batch.items()}).logits[:, 0]
    order = np.argsort(lengths, kind="stable")
    batches = [
        padded_batch(encoding, pairs[idx], pad_id)
        for idx in np.split(order, length_cuts(lengths[order], overhead_tokens=overhead_tokens))
    ]
    # One word-embedding lookup for all chunks: its backward then builds the dense (vocab, hidden)
    # gradient once per step, not once per chunk (47 MB of zeros and adds per chunk for MiniLM).
    ids = torch.cat([b["input_ids"].reshape(-1) for b in batches]).to(device)
    vectors = model.get_input_embeddings()(ids)  # (tokens, hidden)
    pieces, start = [], 0
    for batch in batches:
        shape = batch["input_ids"].shape  # (B_chunk, L_chunk)
        embeds = vectors[start : start + shape.numel()].view(*shape, -1)
        start += shape.numel()
        rest = {k: v.to(device) for k, v in batch.items() if k != "input_ids"}
        pieces.append(model(inputs_embeds=embeds, **rest).logits[:, 0])
    inverse = torch.from_numpy(np.argsort(order, kind="stable")).to(device)
    return torch.cat(pieces)[inverse]


def chunk_overhead_tokens(model_config, device_type: str, bf16: bool) -> int:
    """The fixed cost of one more forward + backward (Python, kernel launches), in tokens of the
    model's own work: an assumed per-forward time (0.5-1 ms plus a little per layer) times an
    assumed sustained rate (50 GFLOP/s fp32 on CPU, twice that in bf16; 400 TFLOP/s on GPU) over
    the training FLOPs per token of a 128-token pair. Fixed numbers, not measured ones, so the
    cuts are reproducible; a 2-layer demo model gets about a hundred tokens, MiniLM a few,
    bert-base on a GPU about a thousand."""
    layers = model_config.num_hidden_layers
    if device_type == "cuda":
        seconds, rate = (0.5 + 0.1 * layers) * 1e-3, 4e14
    else:
        seconds, rate = (1.0 + 0.4 * layers) * 1e-3, (1e11 if bf16 else 5e10)
    per_token = backbones.pair_flops(model_config, [128], training=True) / 128
    return max(1, int(seconds * rate / per_token))


def length_cuts(sorted_lengths: np.ndarray, *, overhead_tokens: int = 512, max_chunks: int = 8) -> list[int]:
    """Where to cut ascending ``sorted_lengths`` into equal-count chunks: the number of chunks
    that minimises padded tokens + ``overhead_tokens`` per forward (vectorised over candidates)."""
    n = len(sorted_lengths)
    best_cost, best_cuts = None, []
    for k in range(1, min(max_chunks, n // 4) + 1):
        cuts = [round(n * i / k) for i in range(1, k)]
        ends = np.array(cuts + [n]) - 1
        sizes = np.diff(np.array([0] + cuts + [n]))
        cost = int((sorted_lengths[ends] * sizes).sum()) + overhead_tokens * k
        if best_cost is None or cost < best_cost:
            best_cost, best_cuts = cost, cuts
    return best_cuts


def warmup_then_linear_decay(config: RunConfig):
    """lr multiplier: 0 -> 1 linearly over ``warmup_steps``, then linearly to 0 at ``max_steps``
    (the paper's schedule; transformers' ``get_linear_schedule_with_warmup``)."""
    warmup, total = config.warmup_steps, config.max_steps

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def objective_kwargs(config: RunConfig, objective) -> dict[str, float]:
    """The config's hyperparameters (margin, temperature) that the objective takes."""
    params = inspect.signature(objective).parameters
    return {k: getattr(config, k) for k in ("margin", "temperature") if k in params}


def check_objective_source(config: RunConfig) -> None:
    """Refuse an objective whose required inputs the training source does not give."""
    missing = losses.REQUIRES[config.objective] - SOURCE_PROVIDES[config.training_source]
    if missing:
        givers = [s for s, gives in SOURCE_PROVIDES.items() if losses.REQUIRES[config.objective] <= gives]
        raise TrainingError(
            f"objective {config.objective!r} needs {', '.join(sorted(missing))} scores, but training "
            f"source {config.training_source!r} gives none; use a source that does "
            f"({', '.join(givers)}), as params/objectives/{config.objective}.yaml sets"
        )


def _groups_per_micro_batch(config: RunConfig, world: int) -> int:
    parts = world * config.grad_accum
    if config.groups_per_step % parts:
        raise TrainingError(
            f"{config.groups_per_step} groups per step cannot be split evenly over {world} "
            f"process(es) x grad_accum {config.grad_accum}; choose them so that they divide it"
        )
    return config.groups_per_step // parts


def _autocasts(config: RunConfig, device) -> bool:
    """Whether the run's forward passes autocast (bf16-mixed) here: only where the hardware
    computes in bf16 (a CUDA GPU that has it, a CPU with AVX512-BF16 or AMX)."""
    return Precision.parse(config.precision).autocast is not None and rerank.native_bf16(device)


def _tensor(array, rows, device):
    return None if array is None else torch.from_numpy(array[rows]).to(device)


def _to_host(loss: torch.Tensor, grad_norm: torch.Tensor):
    """(loss, grad norm) copied to the host without waiting: on CUDA an asynchronous copy and an
    event, so checking them a step later never stalls the queue of the current step."""
    values = torch.stack([loss.detach().float(), grad_norm.detach().float()])
    if values.device.type != "cuda":
        return values, None
    host = values.to("cpu", non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return host, event


def _check_finite(step: int, values: torch.Tensor, event, lr: float, output_dir: Path) -> None:
    if event is not None:
        event.synchronize()
    loss, grad_norm = values.tolist()
    if not math.isfinite(loss):
        last = latest_checkpoint(output_dir)
        kept = f"the last good checkpoint, {last}, is intact" if last else "no checkpoint was written yet"
        raise DivergedError(
            f"loss is {loss} at step {step} (lr {lr:.3g}, grad norm {grad_norm:.3g}); "
            f"training stopped and {kept}. Lower lr, raise warmup_steps, use precision fp32, or "
            f"check the training data for empty or degenerate groups"
        )


# ---------------------------------------------------------------------------------------------
# Validation: re-rank each validation collection's candidates, mean of validation_measure


@dataclass
class ValidationSet:
    dataset: str
    measure: str
    encoding: PairEncoding
    run: Any  # DataFrame[query_id, doc_id] in encoding order
    qrels: Any
    pad_id: int

    @classmethod
    def load(cls, dataset: str, config: RunConfig, tokenizer) -> ValidationSet:
        from cerepro.data import datasets

        run = datasets.load_candidates(dataset, config.validation_first_stage, config.validation_depth)
        run = validation_topics(run, config.validation_queries)
        collection = datasets.load_collection(dataset, config.document_text)
        queries = collection.queries
        texts = dict(zip(run["doc_id"].unique(), collection.doc_text(run["doc_id"].unique())))
        encoding = encode_pairs(
            tokenizer,
            run["query_id"].map(queries).tolist(),
            run["doc_id"].map(texts).tolist(),
            max_length=config.max_length,
            query_max_length=config.query_max_length,
            passage_max_length=config.passage_max_length,
            truncation=config.truncation,
        )
        return cls(
            dataset,
            config.validation_measure,
            encoding,
            run[["query_id", "doc_id"]].reset_index(drop=True),
            collection.qrels,
            tokenizer.pad_token_id,
        )

    def score(self, model, precision: str) -> float:
        from cerepro.evaluation import evaluate

        scores = rerank.score_pairs(model, self.encoding, pad_token_id=self.pad_id, precision=precision)
        result = evaluate.evaluate(
            self.run.assign(score=scores), self.qrels, [self.measure], dataset=self.dataset, run_name="validation"
        )
        return result.mean(self.measure)


def validation_topics(run, limit: int, seed: int = 123):
    """The candidates of at most ``limit`` topics: all of them when there are that few (NanoBEIR's
    sets hold 50), else a seeded sample (the authors draw 500 with xpmir's RandomFold, seed 123;
    its draw is not reproduced, only the size)."""
    topics = np.asarray(sorted(run["query_id"].unique()), dtype=object)
    if len(topics) <= limit:
        return run
    kept = set(np.random.RandomState(seed).choice(topics, size=limit, replace=False))
    return run[run["query_id"].isin(kept)]


# ---------------------------------------------------------------------------------------------
# The selected model, saved with its card


def _save_model(model, tokenizer, folder: Path, config: RunConfig, step: int, selection: Selection) -> None:
    metrics = {f"{d} {config.validation_measure}": v for d, v in selection.best_per_dataset.items()}
    card = models.model_card(
        base_model=config.hf_id,
        objective=config.objective,
        run_id=config.run_id,
        steps=step,
        training_data=f"{config.train_data} ({config.training_source}, group size {config.group_size})",
        metrics=metrics,
        extra=(
            f"\nSelected at step {step} of {config.max_steps} by the mean {config.validation_measure} "
            f"({config.validation_aggregate} per set) on {', '.join(config.validation_datasets)}.\n"
            if config.validation_datasets
            else f"\nFinal weights after {step} steps (no validation set configured).\n"
        )
        + f"\nMax length {config.max_length} (query {config.query_max_length}, passage "
        f"{config.passage_max_length}); lr {config.lr}; {config.pairs_per_step} pairs per step; "
        f"precision {config.precision}; seed {config.seed}.\n",
    )
    models.save_cross_encoder(model, tokenizer, folder, card=card)


# ---------------------------------------------------------------------------------------------
# Logs and the compute ledger


def _zero_window() -> dict:
    return {"pairs": 0, "tokens": 0, "flops": 0.0, "losses": [], "grad_norms": [], "cpu_start": time.process_time()}


def _zero_totals() -> dict:
    return {"steps": 0, "pairs": 0, "tokens": 0, "flops": 0.0, "train_s": 0.0, "validation_s": 0.0, "wall_s": 0.0}


def _accumulate(totals: dict, window: dict, seconds: float) -> None:
    totals["steps"] += len(window["losses"])
    for key in ("pairs", "tokens", "flops"):
        totals[key] += window[key]
    totals["train_s"] += seconds


def _log_record(step: int, window: dict, started: float, schedule, accelerator, device) -> dict:
    seconds = max(time.perf_counter() - started, 1e-9)
    loss = torch.stack(window["losses"]).mean()
    loss = accelerator.reduce(loss, reduction="mean") if accelerator.num_processes > 1 else loss
    record = {
        "step": step,
        "seconds": seconds,
        "cpu_seconds": time.process_time() - window["cpu_start"],
        "loss": float(loss),
        "lr": schedule.get_last_lr()[0],
        "grad_norm": float(torch.stack(window["grad_norms"]).mean()),
        "pairs_per_s": window["pairs"] * accelerator.num_processes / seconds,
        "tokens_per_s": window["tokens"] * accelerator.num_processes / seconds,
    }
    record.update(_memory(device))
    return record


def _memory(device) -> dict:
    import psutil

    out = {"rss_mb": psutil.Process().memory_info().rss / 2**20}
    if device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the resumed step (a killed run may have logged beyond its checkpoint)."""
    if path.is_file():
        kept = [
            line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        write_text_atomic(path, "".join(line + "\n" for line in kept))


def _last_logged_loss(path: Path) -> float | None:
    losses_ = (
        [
            json.loads(line)["loss"]
            for line in path.read_text().splitlines()
            if line.strip() and "loss" in json.loads(line)
        ]
        if path.is_file()
        else []
    )
    return losses_[-1] if losses_ else None


def _broadcast(obj, accelerator):
    if accelerator.num_processes == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj])[0]


def peak_flops(device, precision: str) -> float | None:
    """Dense peak FLOP/s of one GPU at the run's precision, or None if unknown (and on CPU)."""
    if device.type != "cuda":
        return None
    peak = Precision.parse(precision).peak_tflops(torch.cuda.get_device_name(device))
    return None if peak is None else peak * 1e12


def run_ledger(config: RunConfig, totals: dict, model, device, world: int) -> dict:
    """Wall time, device, steps, pairs/s, estimated FLOPs and MFU (GPU) of the whole run."""
    train_s = max(totals["train_s"], 1e-9)
    peak = peak_flops(device, config.precision)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    flops_per_s = totals["flops"] * world / train_s
    return {
        "run_id": config.run_id,
        "device": name,
        "device_type": device.type,
        "processes": world,
        "threads": torch.get_num_threads(),
        "precision": config.precision,
        "matmul_precision": torch.get_float32_matmul_precision(),
        "autocast_bf16": _autocasts(config, device),
        "params": backbones.count_params(model),
        "steps": totals["steps"],
        "pairs": totals["pairs"] * world,
        "tokens": totals["tokens"] * world,
        "wall_s": round(totals["wall_s"], 3),
        "train_s": round(totals["train_s"], 3),
        "validation_s": round(totals["validation_s"], 3),
        "pairs_per_s": totals["pairs"] * world / train_s,
        "tokens_per_s": totals["tokens"] * world / train_s,
        "flops": totals["flops"] * world,
        "flops_per_s": flops_per_s,
        "peak_flops_per_device": peak,
        "mfu": flops_per_s / (peak * world) if peak else None,
        "flops_method": "cerepro.model.backbones.pair_flops: 3 x forward matmul FLOPs on unpadded tokens",
        "resumed_from": list(totals.get("resumed_from", [])),  # checkpoint steps this run resumed at
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU {line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"CPU ({os.cpu_count()} cores)"


# ---------------------------------------------------------------------------------------------
# Entry point for accelerate launch / torchrun, and a launcher for notebooks


def training_processes(config: RunConfig) -> int:
    """How many processes train ``config``: ``processes`` when set, else one per GPU (one on CPU)."""
    return config.processes or max(1, config.gpus)


def launch(
    config: RunConfig,
    output_dir: str | os.PathLike,
    *,
    num_processes: int | None = None,
    resume: bool = True,
    extra_args: list[str] | None = None,
) -> dict[str, Any]:
    """Run ``fit`` in child processes under ``accelerate launch`` and return the run's summary.

    ``num_processes`` (default: ``training_processes(config)``, else all visible GPUs): DDP over
    that many GPUs, or, for a CPU run (``gpus: 0``), that many CPU processes over gloo with the
    GPUs hidden. Safe from a papermill-executed notebook: the kernel never initialises CUDA or
    forks workers itself.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    spec = output_dir / "launch-config.json"
    write_text_atomic(spec, json.dumps(config.to_dict(), indent=1))
    if num_processes is None:
        num_processes = training_processes(config) if config.gpus or config.processes else max(1, _visible_gpus())
    # `accelerate launch --cpu` always starts ONE process (its simple launcher); N processes come
    # from its torchrun path (--multi_gpu), which on a machine without visible GPUs gives gloo
    # CPU processes. Port 0: a free port, so jobs sharing a node do not race for 29500.
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        *(["--multi_gpu", "--main_process_port", "0"] if num_processes > 1 else []),
        *(extra_args or []),
        "-m",
        "cerepro.training.train",
        "--config-json",
        str(spec),
        "--output",
        str(output_dir),
    ]
    if not resume:
        command.append("--no-resume")
    env = dict(os.environ)
    if not config.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU run stays on CPU on a GPU node too
    try:  # a kernel's stdout may have no file descriptor (a notebook run by a SLURM job step)
        streams = {"stdout": sys.stdout.fileno(), "stderr": sys.stderr.fileno()}
    except (AttributeError, OSError, ValueError):
        streams = None
    if streams is not None:
        returncode = subprocess.run(command, env=env, **streams).returncode
    else:  # relay the children's output line by line
        with subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        ) as child:
            for line in child.stdout:
                sys.stdout.write(line)
        returncode = child.returncode
    if returncode:
        raise TrainingError(f"training process failed with exit code {returncode}: {' '.join(command)}")
    return json.loads((output_dir / "summary.json").read_text())


def check_launch_environment(environ=os.environ) -> None:
    """Refuse ``accelerate launch --cpu --num_processes N``: accelerate then starts one process
    (and sets MASTER_ADDR for N), so the run would silently train alone."""
    cpu = environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    world = any(k in environ for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))
    if cpu and "MASTER_ADDR" in environ and not world:
        raise TrainingError(
            "`accelerate launch --cpu --num_processes N` starts a single process; for N CPU "
            "processes use `accelerate launch --multi_gpu --num_processes N` on a machine without "
            "visible GPUs (CUDA_VISIBLE_DEVICES=), or set processes: N with gpus: 0 in params "
            "(cerepro.training.train.launch)"
        )


def _visible_gpus() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        return sum(line.startswith("GPU") for line in out.stdout.splitlines())
    except (OSError, subprocess.SubprocessError):
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cerepro.training.train",
        description=(
            "Train one cross-encoder. Under DDP: accelerate launch --num_processes N -m cerepro.training.train ... "
            "or torchrun --nproc_per_node N -m cerepro.training.train ..."
        ),
    )
    parser.add_argument("--backbone"), parser.add_argument("--objective")
    parser.add_argument("--seed", type=int, default=0), parser.add_argument("--profile", default="demo")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a params key (YAML value), e.g. --set max_steps=100",
    )
    parser.add_argument("--config-json", help="a RunConfig as JSON (written by launch())")
    parser.add_argument("--output", required=True, help="the run's output folder")
    parser.add_argument("--no-resume", action="store_true")
    args = parser.parse_args(argv)
    check_launch_environment()
    if args.config_json:
        config = build_config([(args.config_json, json.loads(Path(args.config_json).read_text()))])
    else:
        if not (args.backbone and args.objective):
            parser.error("give --backbone and --objective, or --config-json")
        from cerepro.config import load_yaml

        overrides = {}
        for item in args.set:
            key, _, value = item.partition("=")
            overrides[key] = load_yaml(value)  # plain data only
        config = load_config(args.backbone, args.objective, args.seed, args.profile, overrides)
    summary = fit(config, args.output, resume=not args.no_resume)
    print(json.dumps({k: summary[k] for k in ("run_id", "steps", "best_step", "best_value", "model_dir")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
