"""``normalize``: the one L2 normalisation, for single vectors and matrices of rows."""

from __future__ import annotations

import numpy as np
import pytest

from bookrec.client import normalize


def test_rows_become_float32_unit_rows() -> None:
    rows = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float64)
    unit = normalize(rows)
    assert unit.dtype == np.float32
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 1.0]], rtol=1e-6)
    assert rows[0, 0] == 3.0  # the input is left alone


def test_a_single_vector() -> None:
    np.testing.assert_allclose(normalize([0.0, 3.0, 4.0]), [0.0, 0.6, 0.8], rtol=1e-6)


def test_all_zero_rows_stay_zero() -> None:
    unit = normalize(np.array([[0.0, 0.0], [1.0, 1.0]], dtype=np.float32))
    np.testing.assert_array_equal(unit[0], [0.0, 0.0])
    np.testing.assert_array_equal(normalize(np.zeros(3)), np.zeros(3))


def test_bf16_rounded_rows_become_unit_to_float32_precision() -> None:
    rows = np.random.default_rng(0).standard_normal((8, 1024)).astype(np.float32) * 1.001
    norms = np.linalg.norm(normalize(rows), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-6)


def test_other_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        normalize(np.ones((2, 2, 2)))
