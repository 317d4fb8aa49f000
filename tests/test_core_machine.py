"""Tests of trnlab.core.machine."""
import numpy as np
import pytest

from trnlab.core.machine import Machine
from trnlab.errors import HbmCapacityError, NkiValidationError
from trnlab.isa import TensorCopy


def _tile(m, shape, loc, name="t"):
    return m.new_onchip("sbuf", shape, np.float32, name, api="test", loc=loc)


def test_hbm_overflow_leaves_the_allocator_consistent_and_names_the_kernel_line():
    m = Machine("trn2")
    limit = m.chip.hbm_bytes_per_core
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=(limit + 64,), strides=(0,))
    with pytest.raises(HbmCapacityError, match=r"test_core_machine\.py:\d+"):
        m.hbm_tensor(huge, "huge")
    assert m.hbm_used == 0                    # the failed placement took no space
    m.hbm_tensor(np.ones(16, np.float32), "small")
    assert m.hbm_used == 64


def test_write_to_broadcast_view_names_api_and_kernel_line():
    m = Machine("trn2")
    src = _tile(m, (4, 8), "k.py:1", "src")
    src.write(np.ones((4, 8)))
    row = _tile(m, (1, 8), "k.py:2", "row")
    dst = row.broadcast_to((4, 8))
    with pytest.raises(NkiValidationError, match=r"nisa\.tensor_copy.*At kern\.py:42"):
        m.issue(TensorCopy(api="nisa.tensor_copy", loc="kern.py:42", dst=dst, src=src))


def test_nki_precise_fp_0_is_not_silently_ignored(monkeypatch):
    """NKI_PRECISE_FP=0 (AWS's fp32-everywhere mode) is not modelled: only tf32 honoured it before,
    bf16/fp8 kept rounding. A flag trnlab cannot honour must say so."""
    monkeypatch.setenv("NKI_PRECISE_FP", "0")
    with pytest.raises(NotImplementedError, match="NKI_PRECISE_FP"):
        Machine("trn2")


def test_instruction_with_a_broadcast_second_output_writes_nothing():
    """activation writes dst and reduce_res: a read-only reduce_res must not leave dst half-updated."""
    from trnlab.isa import Activation
    m = Machine("trn2")
    data = _tile(m, (4, 8), "k.py:1", "data")
    data.write(np.ones((4, 8)))
    dst = _tile(m, (4, 8), "k.py:2", "dst")
    dst.write(np.zeros((4, 8)))
    one = _tile(m, (1, 1), "k.py:3", "one")
    res = one.broadcast_to((4, 1))
    with pytest.raises(NkiValidationError, match=r"broadcast view .*At kern\.py:7"):
        m.issue(Activation(api="nisa.activation", loc="kern.py:7", dst=dst, func="exp", data=data,
                           reduce_op="add", reduce_res=res, reduce_cmd="reset_reduce"))
    np.testing.assert_array_equal(dst.array, 0.0)           # untouched
    np.testing.assert_array_equal(m.reduce_regs, 0.0)       # accumulator state untouched too
