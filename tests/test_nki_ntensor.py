"""Tests of trnlab.nki.ntensor."""
import numpy as np
import pytest

import trnlab.nki.language as nl
import trnlab.nki.ntensor as ntensor


def test_ntensor_constants_match_numpy():
    np.testing.assert_array_equal(ntensor.identity(5, dtype=nl.int8), np.eye(5, dtype=np.int8))
    np.testing.assert_array_equal(ntensor.arange(0, 32, 1, dtype=nl.int32), np.arange(32))
    ones = ntensor.zeros((4, 4), dtype=nl.int8) + 1
    assert isinstance(ones, ntensor.TraceTimeTensor) and ones.dtype == np.int8 and np.all(ones == 1)
    with pytest.raises(NotImplementedError, match="nki.tensor.linspace"):
        ntensor.linspace(0, 1, 5)
