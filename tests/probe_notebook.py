"""A two-cell notebook for the tests of notebook execution: a cell tagged ``parameters`` and one
code cell, on the ``python3`` kernel, written where a test runs it."""

from __future__ import annotations

from pathlib import Path

import nbformat


def write_probe(path: Path, parameters: str, code: str) -> Path:
    """Write the notebook ``parameters`` (the tagged cell, papermill's defaults) then ``code`` to
    ``path`` and return ``path``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(code),
    ]
    nbformat.write(nb, path)
    return path
