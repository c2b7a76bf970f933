"""The suite's float tolerances scale with the values compared (tests/tolerance.py), and no test
compares float results of another order with a fixed absolute tolerance."""

import re
from pathlib import Path

import numpy as np
import pytest
from tolerance import FLOAT32_REL, assert_float_close, assert_scores_close, float_tolerance

TESTS = Path(__file__).parent


def test_scores_of_magnitude_4_differing_as_another_cpus_kernels_do_pass():
    """The case a fresh machine hit: float32 scores up to 4 whose shortcut differs by 1.2e-5
    (relative 3.4e-6): refused by atol=1e-5 rtol=0, accepted here; a real error still fails."""
    rng = np.random.default_rng(0)
    want = rng.uniform(-4.0, 4.0, 64).astype(np.float32)
    want[0] = 3.5
    got = want.copy()
    got[0] += np.float32(1.2e-5)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert_float_close(got, want)
    assert float_tolerance(got, want) == pytest.approx(FLOAT32_REL * float(np.abs(want).max()), rel=1e-6)
    got[5] += np.float32(1e-3)  # a shortcut that changed a score
    with pytest.raises(AssertionError):
        assert_float_close(got, want)


def test_small_scores_carry_the_rounding_of_activations_of_magnitude_1():
    """A two-label head's scores of 0.11 moved by 2e-6 (relative 2e-5 of themselves) when
    scored in other batches: compared on the activations' scale, 1, they pass; 1e-4 fails."""
    want = np.array([0.10904789, 0.10961699, 0.105243], dtype=np.float32)
    got = want + np.array([-1.4e-6, 2.1e-6, 0.0], dtype=np.float32)
    with pytest.raises(AssertionError):
        assert_float_close(got, want)
    assert_scores_close(got, want)
    with pytest.raises(AssertionError):
        assert_scores_close(got + np.float32(1e-4), want)


def test_a_zero_entry_takes_the_tolerance_of_its_scale():
    """A gradient zero by symmetry holds the rounding of the others: its scale is theirs."""
    grads = [np.array([2.0, -1.5]), np.array([0.0])]
    assert_float_close(np.array([3e-6]), grads[1], scale=grads)
    with pytest.raises(AssertionError):
        assert_float_close(np.array([3e-6]), grads[1])


def test_no_test_compares_floats_with_a_fixed_absolute_tolerance():
    """numpy's and torch's allclose with a fixed atol are what failed on another CPU: every such
    comparison goes through assert_float_close (float64 hand values may use pytest.approx)."""
    offenders = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name in ("tolerance.py", "test_tolerance.py"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if re.search(r"assert_allclose\(|testing\.assert_close\(", line):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
