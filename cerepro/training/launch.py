"""How a training run is started: ``launch()`` runs :func:`cerepro.training.train.fit` in child
processes under ``accelerate launch`` (DDP over GPUs, or CPU processes over gloo), and
``python -m cerepro.training.launch`` is the command those processes (or ``torchrun``) run.

This module starts processes; the loop itself is :mod:`cerepro.training.train`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cerepro.config import RunConfig, build_config, load_config
from cerepro.paths import write_text_atomic
from cerepro.training.checkpoints import TrainingError
from cerepro.training.train import fit


def training_processes(config: RunConfig) -> int:
    """How many processes train ``config``: ``processes`` when set, else one per GPU (one on CPU)."""
    return config.processes or max(1, config.gpus)


def accelerate_command(num_processes: int) -> list[str]:
    """``accelerate launch`` of ``num_processes`` processes on this machine, up to the script it
    runs. ``accelerate launch --cpu`` always starts ONE process (its simple launcher); N processes
    come from its torchrun path (--multi_gpu), which on a machine without visible GPUs gives gloo
    CPU processes. Port 0: a free port, so jobs sharing a node do not race for 29500."""
    return [
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
    ]


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
    command = [
        *accelerate_command(num_processes),
        *(extra_args or []),
        "-m",
        "cerepro.training.launch",
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
            "(cerepro.training.launch.launch)"
        )


def _visible_gpus() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        return sum(line.startswith("GPU") for line in out.stdout.splitlines())
    except (OSError, subprocess.SubprocessError):
        return 0


def add_set_option(parser: argparse.ArgumentParser, help: str) -> None:
    """A repeatable ``--set KEY=VALUE`` option on ``parser``: a params key overridden; read back
    with :func:`set_overrides`."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def set_overrides(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as params overrides, each value read as YAML (plain data only)."""
    from cerepro.fragments import load_yaml

    return {key: load_yaml(value) for key, _, value in (item.partition("=") for item in items)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cerepro.training.launch",
        description=(
            "Train one cross-encoder. Under DDP: accelerate launch --num_processes N -m cerepro.training.launch ... "
            "or torchrun --nproc_per_node N -m cerepro.training.launch ..."
        ),
    )
    parser.add_argument("--backbone"), parser.add_argument("--objective")
    parser.add_argument("--seed", type=int, default=0), parser.add_argument("--profile", default="demo")
    add_set_option(parser, "override a params key (YAML value), e.g. --set max_steps=100")
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
        config = load_config(args.backbone, args.objective, args.seed, args.profile, set_overrides(args.set))
    summary = fit(config, args.output, resume=not args.no_resume)
    print(json.dumps({k: summary[k] for k in ("run_id", "steps", "best_step", "best_value", "model_dir")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
