"""How close two float results must be when they were computed in another order.

float32 sums taken in another order (other batches, other padding, a shortcut through the last
layer, another CPU's kernels) differ by a relative 1e-6 to 1e-5 of the magnitudes summed, not of
each result: a score of 0.01 out of a forward pass whose scores reach 4 carries the error of 4.
So the allowed difference scales with the largest magnitude compared (``scale``, by default the
largest of ``got`` and ``want``; for a model's outputs at least its activations' magnitude, 1;
for gradients all of a model's gradients), never a fixed absolute number; exactness is asserted
only where the computation is the same (a rerun, a resumed job), with ``==``.
"""

from __future__ import annotations

import numpy as np

FLOAT32_REL = 1e-5  # float32 in another order: relative 1e-6..1e-5 of the magnitudes summed
TF32_REL = 2e-3  # TF32 matmuls keep 10 mantissa bits
FLOAT64_REL = 1e-12  # float64 in another order (hand values, padded against unpadded losses)
# A backward pass sums over every token of every pair, twice per layer: its float32 error is a
# larger share of the largest gradient (2e-5 seen with a last layer computing only the first token).
GRADIENT_REL = 1e-4
# A transformer's hidden states are layer-normed, of magnitude ~1, whatever its output: a score of
# 0.1 carries the rounding of those sums (2e-6 seen), so scores are compared on a scale of at least 1.
ACTIVATIONS = 1.0


def _array(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def float_tolerance(*values, rel: float = FLOAT32_REL) -> float:
    """``rel`` times the largest magnitude among ``values`` (arrays, tensors or numbers)."""
    return rel * max(float(np.abs(_array(v)).max(initial=0.0)) for v in values)


def assert_float_close(got, want, *, rel: float = FLOAT32_REL, scale=None, msg: str = "") -> None:
    """``|got - want| <= rel * max|scale|`` elementwise; ``scale`` defaults to ``(got, want)``
    (pass a larger set, e.g. every gradient of a model, when some entries are zero by symmetry
    and hold only the rounding of the others)."""
    got, want = _array(got), _array(want)
    assert got.shape == want.shape, f"{msg} shapes {got.shape} != {want.shape}"
    atol = float_tolerance(*(scale if scale is not None else (got, want)), rel=rel)
    np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=msg)


def assert_scores_close(got, want, *, rel: float = FLOAT32_REL, msg: str = "") -> None:
    """Model outputs (scores, SPLADE weights, losses) computed in another order: within ``rel``
    of the largest of ``got``, ``want`` and the network's activations (:data:`ACTIVATIONS`)."""
    assert_float_close(got, want, rel=rel, scale=(got, want, ACTIVATIONS), msg=msg)
