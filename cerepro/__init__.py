"""cerepro: reproduce and compare training objectives for cross-encoder re-rankers.

A thin library for the notebooks in ``notebooks/``, one module per job (the README's module map
lists them and what each may import): names, data, models, training, re-ranking, evaluation,
statistics and the report. Experiments are described only in ``params/``.
"""

__version__ = "0.1.0"
