"""cerepro: reproduce and compare training objectives for cross-encoder re-rankers.

A thin library for the notebooks in ``notebooks/``: losses, data, models, training, re-ranking,
evaluation and statistics. Experiments are described only in ``params/``.
"""

__version__ = "0.1.0"
