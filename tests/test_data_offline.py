"""Helpers (no tests): tiny msmarco-passage files at the paths ir_datasets 0.6.3 reads, and a
subprocess that imports ir_datasets with IR_DATASETS_HOME pointing at them (ir_datasets fixes its
paths at import time, so an in-process test could not redirect it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

MSMARCO_COLLECTION = "".join(
    f"{i}\tpassage number {i} about {'paris flights' if i % 2 else 'boiling water'}\n" for i in range(10)
)


def place_msmarco(home: Path) -> Path:
    """The files of msmarco-passage and its trec-dl-2019 subset, at ir_datasets' cache paths."""
    base = home / "msmarco-passage"
    files = {
        "irds_version.txt": "v2",  # the current collection encoding: ir_datasets migrates nothing
        "collection.tsv": MSMARCO_COLLECTION,
        "trec-dl-2019/queries.tsv": "100\tparis flights\n200\tboiling water\n300\tunjudged query\n",
        "trec-dl-2019/qrels": "100 0 1 3\n100 0 2 0\n200 0 4 2\n200 0 11 1\n",
        "trec-dl-2019/ms.run": "100\t1\n100\t3\n100\t2\n200\t4\n200\t6\n300\t5\n",
    }
    for name, text in files.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(text, encoding="utf-8")
    return base


def run_offline(code: str, home: Path, cache: Path) -> dict:
    env = {
        **os.environ,
        "IR_DATASETS_HOME": str(home),
        "CEREPRO_CACHE": str(cache),
        "IR_DATASETS_SKIP_DISK_FREE": "true",
        "TQDM_DISABLE": "1",
    }
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
