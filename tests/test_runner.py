"""The notebook runner's kernels: IPC sockets in a private folder, so parallel jobs cannot race
for TCP ports (the cause of "Kernel died before replying to kernel_info" in a CI run)."""

import json
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor

import nbformat
import pytest
from probe_notebook import write_probe

from cerepro.grid.runner import execute

PROBE = """from ipykernel.kernelapp import IPKernelApp
import json, os
app = IPKernelApp.instance()
print(json.dumps({"transport": app.transport, "ip": app.ip, "x": x, "cwd": os.getcwd()}))"""


def probe_notebook(folder):
    return write_probe(folder / "probe.ipynb", "x = 0", PROBE)


def run_probe(folder, x):
    folder.mkdir(parents=True, exist_ok=True)
    execute(probe_notebook(folder), folder / "out.ipynb", {"x": x}, cwd=folder)
    out = nbformat.read(folder / "out.ipynb", as_version=4)
    return json.loads(out.cells[-1].outputs[0]["text"])


@pytest.mark.skipif(os.name != "posix", reason="Unix sockets")
def test_kernel_listens_on_unix_sockets_in_a_private_folder_that_is_removed(tmp_path):
    seen = run_probe(tmp_path / "run", 5)
    assert seen["transport"] == "ipc"
    assert seen["x"] == 5 and seen["cwd"] == str(tmp_path / "run")
    sockets = os.path.dirname(seen["ip"])
    assert os.path.basename(sockets).startswith("cerepro-kernel-")
    assert not os.path.exists(sockets)


def test_parallel_kernels_all_start(tmp_path):
    with ProcessPoolExecutor(4) as pool:
        seen = list(pool.map(run_probe, [tmp_path / f"run{i}" for i in range(4)], range(4)))
    assert [s["x"] for s in seen] == [0, 1, 2, 3]
    assert len({s["ip"] for s in seen}) == 4


def test_too_long_a_socket_path_falls_back_to_tcp(tmp_path, monkeypatch):
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    assert run_probe(tmp_path / "run", 1)["transport"] == "tcp"


ENV_PROBE = """import json, os
print(json.dumps({"cwd": os.getcwd(),
                  **{k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "CEREPRO_TEST_JOB", "CEREPRO_RUNS")}}))"""


def run_env_probe(folder, job):
    folder.mkdir(parents=True, exist_ok=True)
    path = probe_notebook(folder)
    nb = nbformat.read(path, as_version=4)
    nb.cells[-1].source = ENV_PROBE
    nbformat.write(nb, path)
    execute(
        path,
        folder / "out.ipynb",
        {},
        cwd=folder,
        kernel_env={"OMP_NUM_THREADS": str(job), "CEREPRO_TEST_JOB": f"job {job}"},
    )
    return json.loads(nbformat.read(folder / "out.ipynb", as_version=4).cells[-1].outputs[0]["text"])


def test_jobs_running_as_threads_of_one_process_give_each_kernel_its_own_environment(tmp_path):
    """Snakemake runs local jobs as threads (--force-use-threads): each kernel gets its job's
    folder and variables, and the process's own environment and working directory (Snakemake's
    paths are relative to it) stay as they were, while the jobs run and after."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    before, here = dict(os.environ), os.getcwd()
    moved, running = [], True

    def watch():
        while running:
            if os.getcwd() != here:
                moved.append(os.getcwd())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(3) as pool:
            seen = list(pool.map(run_env_probe, [tmp_path / f"run{i}" for i in range(3)], [1, 2, 3]))
    finally:
        running = False
        watcher.join()
    assert not moved, f"the process's working directory moved to {moved[0]}"
    assert [s["cwd"] for s in seen] == [str(tmp_path / f"run{i}") for i in range(3)]
    assert [(s["OMP_NUM_THREADS"], s["CEREPRO_TEST_JOB"]) for s in seen] == [
        ("1", "job 1"),
        ("2", "job 2"),
        ("3", "job 3"),
    ]
    assert all(s["CEREPRO_RUNS"] for s in seen)  # the folders this process resolved
    assert dict(os.environ) == before
