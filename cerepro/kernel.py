"""The Jupyter kernel a notebook job runs in, started with that job's own environment.

Snakemake runs a grid's local jobs as threads of one process (``--force-use-threads``): a job
that set ``os.environ`` for its kernel (its thread count, the folders it resolved) would set it
for every job running beside it. Each kernel is given its variables when it starts instead.
"""

from __future__ import annotations

import os

from jupyter_client.manager import AsyncKernelManager
from traitlets import Dict


class JobKernelManager(AsyncKernelManager):
    """jupyter_client's kernel manager; its kernel's environment is this process's plus
    ``job_environment`` (set through the traitlets config papermill passes on)."""

    job_environment = Dict(config=True, help="variables added to the kernel's environment")

    async def start_kernel(self, **kw):
        kw["env"] = {**os.environ, **kw.get("env", {}), **self.job_environment}
        return await super().start_kernel(**kw)
