"""Tests of trnlab.core.tensor."""
import numpy as np
import pytest

from trnlab.core.machine import Machine


def _tile(m, shape, loc, name="t"):
    return m.new_onchip("sbuf", shape, np.float32, name, api="test", loc=loc)


def test_writes_through_a_bitcast_view_count_as_initialisation():
    """A fp32 tile written through its bf16 bitcast view is initialised (no false uninitialised-read
    report); a bitcast view of never-written memory reports its reads."""
    import warnings
    from trnlab.core import dtypes as dt
    from trnlab.errors import UninitializedReadWarning
    m = Machine("trn2")
    t = _tile(m, (4, 8), "k.py:1")
    halves = t.bitcast(dt.bfloat16)
    assert halves.shape == (4, 16)
    halves.write(np.ones((4, 16), dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.read("test")
    fresh = _tile(m, (4, 8), "k.py:2", "fresh")
    with pytest.warns(UninitializedReadWarning, match="fresh"):
        fresh.bitcast(dt.bfloat16).read("test")
    part = fresh.bitcast(dt.bfloat16).index((slice(None), slice(0, 8)))
    part.write(np.zeros((4, 8), np.float32))
    assert fresh.index((slice(None), slice(0, 4))).is_initialized()
    assert not fresh.index((slice(None), slice(4, 8))).is_initialized()


def test_access_pattern_on_a_bitcast_view_counts_in_the_views_elements():
    from trnlab.core import dtypes as dt
    m = Machine("trn2")
    t = _tile(m, (4, 8), "k.py:1")
    t.write(np.arange(32, dtype=np.float32).reshape(4, 8))
    v = t.bitcast(dt.bfloat16)                       # [4, 16] bf16 halves of the fp32 words
    a = v.ap([[16, 4], [1, 16]])
    assert a.array.dtype == dt.bfloat16 and a.dtype == dt.bfloat16
    np.testing.assert_array_equal(a.array.view(np.uint16), v.array.view(np.uint16))


def test_view_errors_name_the_kernel_line():
    from trnlab.errors import OutOfBoundsError, ShapeError
    m = Machine("trn2")
    t = _tile(m, (4, 8), "k.py:1")
    with pytest.raises(ShapeError, match=r"reshape: .*At .*test_core_tensor\.py:\d+"):
        t.reshape(4, 9)
    with pytest.raises(OutOfBoundsError, match=r"ap: .*At .*test_core_tensor\.py:\d+"):
        t.ap([[8, 4], [1, 9]])
