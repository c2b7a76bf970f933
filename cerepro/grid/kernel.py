"""The Jupyter kernel a notebook job runs in, started in that job's folder with its environment.

Snakemake runs a grid's local jobs as threads of one process (``--force-use-threads``): a job
that set ``os.environ`` for its kernel (its thread count, the folders it resolved) would set it
for every job running beside it, and one that changed the working directory (as papermill's
``cwd`` does, with ``os.chdir``) would move Snakemake itself, whose paths are relative to it.
Each kernel is given its folder and its variables when it starts instead.
"""

from __future__ import annotations

import os

from jupyter_client.manager import AsyncKernelManager
from traitlets import Dict, Unicode


class JobKernelManager(AsyncKernelManager):
    """jupyter_client's kernel manager; its kernel starts in ``job_cwd`` with this process's
    environment plus ``job_environment`` (both set through the traitlets config papermill passes on)."""

    job_environment = Dict(config=True, help="variables added to the kernel's environment")
    job_cwd = Unicode("", config=True, help="the kernel's working directory (empty: this process's)")

    async def start_kernel(self, **kw):
        kw["env"] = {**os.environ, **kw.get("env", {}), **self.job_environment}
        if self.job_cwd:
            kw["cwd"] = self.job_cwd
        return await super().start_kernel(**kw)
