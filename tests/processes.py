"""The subprocesses tests start: the `cerepro` command (a smoke training run among them), a command
run to success with its stderr shown when it fails, a process stopped politely then killed.

Tests run the real command in a child process (what a user types); these helpers only spell it
once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cerepro_command(*args: str) -> list[str]:
    """`cerepro ARGS...` as this interpreter runs it from a checkout."""
    return [sys.executable, "-m", "cerepro.cli", *args]


def smoke_train_command(out: Path, objective: str, *params: str, extra: tuple[str, ...] = ()) -> list[str]:
    """`cerepro run train` of the smoke profile's tiny-bert run of ``objective`` into ``out``;
    ``params`` are more notebook parameters (``KEY=VALUE``, each after its ``-p``), ``extra``
    more options (``--force``)."""
    given = [
        arg
        for param in ("profile=smoke", "backbone=tiny-bert", f"objective={objective}", *params)
        for arg in ("-p", param)
    ]
    return cerepro_command("run", "train", *given, "--out", str(out), *extra)


def run_ok(
    command: list[str], *, env: dict[str, str], cwd: Path = ROOT, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``command`` run to its end (text output captured); fails the test, showing the end of its
    stderr, unless it exits 0."""
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def stop(process: subprocess.Popen, timeout: float) -> None:
    """Stop ``process``: SIGTERM, then SIGKILL when it has not ended within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
