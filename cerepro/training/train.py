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

Launch: call ``fit`` in-process (one CPU or GPU), or ``python -m cerepro.training.launch`` under
``accelerate launch`` / ``torchrun`` for DDP; :func:`cerepro.training.launch.launch` does the latter
from a notebook. The pieces live beside the loop: chunked scoring (:mod:`~cerepro.training.chunks`),
validation sets (:mod:`~cerepro.training.validation`), the log and compute ledger
(:mod:`~cerepro.training.ledger`).

Checkpoints are :mod:`cerepro.training.checkpoints`'. This module trains; it never evaluates test collections.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cerepro import objectives
from cerepro.config import RunConfig, scoring_precision
from cerepro.data import training_data
from cerepro.evaluation import rerank
from cerepro.model import backbones, first_token, models
from cerepro.paths import write_text_atomic
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
from cerepro.training.chunks import chunk_overhead_tokens, score_pairs_train
from cerepro.training.ledger import (
    accumulate,
    append_jsonl,
    broadcast,
    last_logged_loss,
    log_record,
    run_ledger,
    truncate_log,
    zero_totals,
    zero_window,
)
from cerepro.training.selection import Selection
from cerepro.training.training_blocks import TokenizedBlocks
from cerepro.training.validation import ValidationSet
from cerepro.vocab import Precision


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
    record = objectives.get(config.objective)  # params validation checked it against the training source
    objective = record.function()
    if resume and finished(output_dir, fingerprint):
        return json.loads((output_dir / "summary.json").read_text())
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
    step, totals = 0, zero_totals()
    selection = Selection(config.validation_aggregate, config.early_stopping_steps)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        set_rng(state["rng"], rank)
        step, selection, totals = state["step"], Selection.from_state(state["best"]), state["totals"]
        totals["resumed_from"] = [*totals.get("resumed_from", []), step]  # in the ledger
        if main:
            truncate_log(output_dir / "log.jsonl", step)
            note = {
                "step": step,
                "resumed_from": str(checkpoint.relative_to(output_dir)),
                "skipped": {p.name: why for p, why in skipped},
            }
            append_jsonl(output_dir / "log.jsonl", note)
            print(
                f"resuming {config.run_id} at step {step} of {config.max_steps} from {note['resumed_from']}"
                + "".join(f"; skipped {p.name}: {why}" for p, why in skipped),
                flush=True,
            )
    kwargs, accepts = config.hyperparameters, record.accepts

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
    session_start, window_start, window = time.perf_counter(), time.perf_counter(), zero_window()
    pending = None  # the previous step's loss, checked one step late so the GPU never waits
    # Length-homogeneous chunks need one forward per chunk: on one process only (DDP expects one
    # forward per backward).
    overhead = chunk_overhead_tokens(bare.config, device.type, bf16) if world == 1 else None
    # BERT-style heads read only the first token: the last layer computes only that position
    # (same loss and gradients; about 1/layers of the work saved). Checkpoints see the plain model.
    first_token_only = first_token.supports_first_token_last_layer(bare)
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
                    first_token.last_layer_first_token_only(bare) if first_token_only else contextlib.nullcontext(),
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
            record = log_record(step, window, window_start, schedule, accelerator, device)
            accumulate(totals, window, time.perf_counter() - window_start)
            if main:
                append_jsonl(output_dir / "log.jsonl", record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", pairs_s=f"{record['pairs_per_s']:.0f}")
            window_start, window = time.perf_counter(), zero_window()
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
                append_jsonl(
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
            selection = Selection.from_state(broadcast(selection.state(), accelerator))
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
        ledger = run_ledger(config, totals, bare, device, world, bf16)
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
            "final_loss": last_logged_loss(output_dir / "log.jsonl"),
            "compute": ledger,
        }
        write_text_atomic(output_dir / "summary.json", json.dumps(summary, indent=1))
    accelerator.wait_for_everyone()
    return json.loads((output_dir / "summary.json").read_text())


# ---------------------------------------------------------------------------------------------
# Pieces of the loop


def warmup_then_linear_decay(config: RunConfig):
    """lr multiplier: 0 -> 1 linearly over ``warmup_steps``, then linearly to 0 at ``max_steps``
    (the paper's schedule; transformers' ``get_linear_schedule_with_warmup``)."""
    warmup, total = config.warmup_steps, config.max_steps

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


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
