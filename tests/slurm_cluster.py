"""Not a test: a real one-node SLURM cluster (munged, slurmctld, slurmd) for the SLURM tests.

``SlurmCluster(folder).start()`` writes a one-node ``slurm.conf`` into ``folder`` (at least four
CPUs announced, so that the rehearsal's 2-CPU jobs overlap where their waits allow; accounting
off, ``MinJobAge`` one day so that ``squeue`` still reports finished jobs to Snakemake's SLURM
plugin), starts the three daemons as root on free ports and waits until the node is idle;
``stop()`` cancels the cluster's jobs and stops exactly the daemons it started. Anything missing
(the Debian packages ``slurm-wlm`` and ``munge``, which ``make test`` installs; root) or a
daemon that does not come up raises ``ClusterError`` with the daemon's log: the caller fails,
never skips.

Sockets (munge's, slurmd's per job step) live in a short private folder under the system's
temporary folder, whatever ``folder`` is: a Unix socket path holds at most 108 bytes, and
pytest-xdist's temporary folders are deeper than that allows.

The configuration is also linked at ``/etc/slurm/slurm.conf``, where ``srun`` looks: the SLURM
plugin's job step removes ``SLURM_*`` variables, ``SLURM_CONF`` included, before calling ``srun``
inside a job. An existing configuration there that is not one of ours is never replaced.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "cerepro-test-cluster"  # in our slurm.conf, so a stale link of ours may be replaced
PARTITION = "rehearsal"  # not the shipped profile's "gpu": the test overrides it, as a site would


class ClusterError(RuntimeError):
    """The cluster cannot start here; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise ClusterError("cannot read MemTotal from /proc/meminfo")


class SlurmCluster:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.folder / "slurm.conf"
        self.started: list[tuple[str, Path]] = []  # (daemon, pid file)
        self.linked = False
        self.sockets: Path | None = None  # short private folder: munge's socket, slurmd's spool

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _log_tails(self) -> str:
        out = []
        for log in sorted(self.folder.glob("*.log")):
            out.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(out)

    def start(self) -> SlurmCluster:
        missing = [b for b in BINARIES if shutil.which(b) is None]
        if missing:
            raise ClusterError(
                f"SLURM is not installed ({', '.join(missing)} missing): install the Debian "
                "packages slurm-wlm and munge (`make test` does)"
            )
        if os.geteuid() != 0:
            raise ClusterError(
                "the test cluster runs munged, slurmctld and slurmd as root; run the tests as root (CI does)"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)  # munged refuses a key or socket in a folder others can write
        (self.folder / "state").mkdir(exist_ok=True)
        self.sockets = Path(tempfile.mkdtemp(prefix="cerepro-slurm-"))  # mode 0700, as munged wants
        (self.sockets / "spool").mkdir()
        key = self.folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._write_conf()
        self._link_conf()
        try:
            self._daemon(
                "munged",
                self.folder / "munged.pid",
                [
                    "munged",
                    "--force",
                    f"--key-file={key}",
                    f"--socket={self.sockets / 'munge.sock'}",
                    f"--pid-file={self.folder / 'munged.pid'}",
                    f"--log-file={self.folder / 'munged.log'}",
                    f"--seed-file={self.folder / 'munged.seed'}",
                ],
            )
            self._daemon("slurmctld", self.folder / "slurmctld.pid", ["slurmctld", "-f", str(self.conf)])
            self._daemon("slurmd", self.folder / "slurmd.pid", ["slurmd", "-f", str(self.conf), "-N", self.node])
            self._wait_idle()
        except BaseException:
            self.stop()
            raise
        return self

    def _write_conf(self) -> None:
        f = self.folder
        lines = {
            "ClusterName": "cerepro",
            "SlurmctldHost": self.node,
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "AuthInfo": f"socket={self.sockets / 'munge.sock'}",
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "SlurmctldPort": _free_port(),
            "SlurmdPort": _free_port(),
            "StateSaveLocation": f / "state",
            "SlurmdSpoolDir": self.sockets / "spool",
            "SlurmctldPidFile": f / "slurmctld.pid",
            "SlurmdPidFile": f / "slurmd.pid",
            "SlurmctldLogFile": f / "slurmctld.log",
            "SlurmdLogFile": f / "slurmd.log",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "MpiDefault": "none",
            "SchedulerType": "sched/backfill",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core_Memory",
            "AccountingStorageType": "accounting_storage/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "JobCompType": "jobcomp/none",
            "MinJobAge": 86400,
            "ReturnToService": 2,
            "KillWait": 5,
            # the node may announce more CPUs than it has (below), so that two jobs overlap
            "SlurmdParameters": "config_overrides",
        }
        text = f"# {MARKER}: written by tests/slurm_cluster.py\n"
        text += "".join(f"{k}={v}\n" for k, v in lines.items())
        memory = int(_memory_mb() * 0.9)
        cpus = max(4, os.cpu_count() or 1)  # two 2-CPU jobs at once even on a 2-core machine
        text += f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN\n"
        text += f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n"
        self.conf.write_text(text)

    def _link_conf(self) -> None:
        if SYSTEM_CONF.is_symlink() or SYSTEM_CONF.exists():
            ours = SYSTEM_CONF.is_symlink() and (not SYSTEM_CONF.exists() or MARKER in SYSTEM_CONF.read_text())
            if not ours:
                raise ClusterError(
                    f"{SYSTEM_CONF} exists and is not a test cluster's: this machine has a "
                    "SLURM configuration, which the test will not replace"
                )
            SYSTEM_CONF.unlink()
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.symlink_to(self.conf)
        self.linked = True

    def _daemon(self, name: str, pid_file: Path, command: list[str]) -> None:
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        deadline = time.time() + 20
        while time.time() < deadline and not pid_file.is_file():
            time.sleep(0.1)
        if done.returncode or not pid_file.is_file():
            raise ClusterError(
                f"{name} did not start (exit {done.returncode}): {done.stderr[-1500:]}\n{self._log_tails()}"
            )
        self.started.append((name, pid_file))

    def _wait_idle(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True)
            state = out.stdout.strip()
            if state == "idle":
                return
            time.sleep(0.5)
        raise ClusterError(f"the node is {state or 'unknown'!r}, not idle, after {timeout:.0f} s\n{self._log_tails()}")

    def jobs(self) -> list[dict[str, str]]:
        """Every job the controller remembers: id, name, state, comment (Snakemake's rule)."""
        out = subprocess.run(
            ["squeue", "-h", "-t", "all", "-o", "%i|%j|%T|%k"], env=self.env, capture_output=True, text=True, check=True
        )
        return [
            dict(zip(("id", "name", "state", "comment"), line.split("|", 3)))
            for line in out.stdout.splitlines()
            if line.strip()
        ]

    def stop(self) -> None:
        if any(name == "slurmctld" for name, _ in self.started):
            subprocess.run(["scancel", "--full", "--user", "root"], env=self.env, capture_output=True)
        for _name, pid_file in reversed(self.started):
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            _stop_pid(pid)
        self.started = []
        if self.linked and SYSTEM_CONF.is_symlink():
            SYSTEM_CONF.unlink()
        self.linked = False
        if self.sockets is not None:
            shutil.rmtree(self.sockets, ignore_errors=True)
            self.sockets = None


def _stop_pid(pid: int, grace: float = 15) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + grace
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
