"""GPU check: training and scoring throughput and MFU of paper-sized cross-encoders, no hub access.

Builds randomly initialised ``bert-base``- and ``ettin-150m``-shaped cross-encoders from the configs
shipped in ``cerepro/model/backbone_configs/`` and, on synthetic token ids (every pair ``--length``
tokens, no padding), measures:

- training: ``--steps`` optimiser steps of cerepro's training step (bf16 autocast, fp32 master
  weights, fused AdamW, gradient clipping at 1.0, InfoNCE over groups of 8: the paper's
  listwise objective) at ``--batch`` pairs per step; steps/s, pairs/s and MFU;
- scoring (re-ranking): forward passes under ``torch.inference_mode`` at ``--score-batch`` pairs,
  with bf16 autocast (as ``cerepro.evaluation.rerank``) and with bf16 weights; pairs/s and MFU.

MFU = model FLOPs (``cerepro.model.backbones.pair_flops``: 6 x / 2 x the weight and attention matmul FLOPs
of the real tokens) per second over the GPU's dense bf16 peak (``cerepro.vocab.GPU_PEAK_TFLOPS``).
Goals on an H100: >= 45% training MFU and >= 55% scoring MFU on the bert-base shape.

    python benchmarks/gpu_check.py                  # about 2-4 minutes on one H100
    python benchmarks/gpu_check.py --compile        # also torch.compile'd variants (+1-2 min each)
    python benchmarks/gpu_check.py --device cpu --tiny --steps 3   # a dry run of the script itself
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import torch  # noqa: E402

from cerepro.model import backbones, models  # noqa: E402
from cerepro.training import losses
from cerepro.training.ledger import peak_flops  # noqa: E402

GROUP = 8  # passages per InfoNCE group


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batch(config, pairs: int, length: int, device, generator):
    """Random token ids between the special tokens: [CLS] ids [SEP] ids [SEP], no padding."""
    low = 1000 if config.vocab_size > 2000 else 5
    ids = torch.randint(low, config.vocab_size, (pairs, length), generator=generator)
    cls_id = getattr(config, "cls_token_id", None) or 101 % config.vocab_size
    sep_id = getattr(config, "sep_token_id", None) or 102 % config.vocab_size
    ids[:, 0], ids[:, length // 4], ids[:, -1] = cls_id, sep_id, sep_id
    batch = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}
    if getattr(config, "type_vocab_size", 0) > 1:
        types = torch.zeros_like(ids)
        types[:, length // 4 + 1 :] = 1
        batch["token_type_ids"] = types.to(device)
    return batch


TINY = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "vocab_size": 1000,
    "pad_token_id": 0,
    "cls_token_id": 1,
    "sep_token_id": 2,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def build(slug: str, args, device):
    return models.random_cross_encoder(slug, seed=0, **(TINY if args.tiny else {})).to(device)


def train_throughput(slug: str, args, device) -> dict:
    model = build(slug, args, device)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    forward = torch.compile(model) if args.compile_variant else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, eps=1e-8, weight_decay=0.0, fused=True)
    generator = torch.Generator().manual_seed(0)
    batches = [synthetic_batch(model.config, args.batch, args.length, device, generator) for _ in range(4)]
    groups = args.batch // GROUP

    def step(batch):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            scores = forward(**batch).logits.view(groups, GROUP)  # (Q, D)
            loss = losses.infonce(scores)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    started = time.perf_counter()
    for i in range(args.warmup):
        step(batches[i % len(batches)])
    synchronize(device)
    warm = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for i in range(args.steps):
        loss = step(batches[i % len(batches)])
    synchronize(device)
    seconds = time.perf_counter() - started
    if not torch.isfinite(loss):
        raise RuntimeError(f"{slug}: loss is {float(loss)}")
    flops = backbones.pair_flops(model.config, [args.length] * args.batch, training=True) * args.steps
    return _result(
        "train", slug, args, device, seconds, args.steps, args.batch, flops, warm, params=backbones.count_params(model)
    )


@torch.inference_mode()
def score_throughput(slug: str, args, device, bf16_weights: bool) -> dict:
    model = build(slug, args, device).eval()
    if bf16_weights:
        model = model.to(torch.bfloat16)
    forward = torch.compile(model) if args.compile_variant else model
    generator = torch.Generator().manual_seed(1)
    batches = [synthetic_batch(model.config, args.score_batch, args.length, device, generator) for _ in range(2)]
    rounds = max(1, args.steps // 2)

    def run(batch):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=not bf16_weights):
            return forward(**batch).logits

    started = time.perf_counter()
    for i in range(args.warmup):
        run(batches[i % 2])
    synchronize(device)
    warm = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(rounds):
        out = run(batches[i % 2])
    synchronize(device)
    seconds = time.perf_counter() - started
    assert torch.isfinite(out.float()).all()
    flops = backbones.pair_flops(model.config, [args.length] * args.score_batch) * rounds
    kind = "score (bf16 weights)" if bf16_weights else "score (bf16 autocast)"
    return _result(
        kind, slug, args, device, seconds, rounds, args.score_batch, flops, warm, params=backbones.count_params(model)
    )


def _result(kind, slug, args, device, seconds, steps, pairs, flops, warm, params) -> dict:
    peak = peak_flops(device, "bf16-mixed")
    out = {
        "what": kind,
        "model": slug + (" (tiny)" if args.tiny else ""),
        "params": params,
        "compiled": args.compile_variant,
        "length": args.length,
        "pairs_per_step": pairs,
        "steps": steps,
        "seconds": round(seconds, 3),
        "warmup_s": round(warm, 1),
        "steps_per_s": steps / seconds,
        "pairs_per_s": steps * pairs / seconds,
        "tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / peak if peak else None,
    }
    if device.type == "cuda":
        out["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["bert-base", "ettin-150m"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=300, help="timed training steps (scoring: half)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128, help="training pairs per step (groups of 8)")
    parser.add_argument("--score-batch", type=int, default=512)
    parser.add_argument("--length", type=int, default=256, help="tokens per pair")
    parser.add_argument("--compile", action="store_true", help="also run torch.compile'd variants")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="2-layer shapes: a dry run on any device")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run with --device cpu --tiny for a dry run")
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (norms, optimizer) on tensor cores
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or "cpu"
    if args.batch % GROUP:
        sys.exit(f"--batch must be a multiple of {GROUP}")

    results = []
    for compiled in [False, True] if args.compile else [False]:
        args.compile_variant = compiled
        for slug in args.models:
            for run in (
                lambda: train_throughput(slug, args, device),
                lambda: score_throughput(slug, args, device, bf16_weights=False),
                lambda: score_throughput(slug, args, device, bf16_weights=True),
            ):
                results.append(run())
                print(json.dumps(results[-1]), flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()

    peak = peak_flops(device, "bf16-mixed")
    print(
        f"\n{name}; torch {torch.__version__}, CUDA {torch.version.cuda}; bf16 dense peak "
        f"{peak / 1e12 if peak else float('nan'):.0f} TFLOP/s; {args.length} tokens per pair\n"
    )
    print("| what | model | compiled | pairs/step | steps/s | pairs/s | TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(
            f"| {r['what']} | {r['model']} | {r['compiled']} | {r['pairs_per_step']} | {r['steps_per_s']:.2f} | "
            f"{r['pairs_per_s']:.0f} | {r['tflops_per_s']:.1f} | {mfu} |"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"device": name, "torch": torch.__version__, "results": results}, indent=1)
        )


if __name__ == "__main__":
    main()
