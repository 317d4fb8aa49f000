"""Tests of trnlab.core.dtypes."""
import numpy as np


def test_tf32_rounds_on_write():
    from trnlab.core import dtypes as dt
    x = np.array([1.0 + 2 ** -12], dtype=np.float32)       # below tf32's 10-bit mantissa
    assert dt.cast(x, dt.tfloat32)[0] == 1.0
