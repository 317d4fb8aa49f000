"""Tests of trnlab.isa.indirection."""
import numpy as np
import pytest

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.errors import NkiValidationError, OutOfBoundsError, PartitionError, ShapeError


rng = np.random.default_rng(7)


def _snake_index(offsets_per_group, p):
    """[p, K] index tile: offset i of every 16-partition group at [start + i % 16, i // 16] (AWS's layout)."""
    n = len(offsets_per_group)
    k = -(-n // 16)
    grid = np.zeros((16, k), np.uint16)
    for i, o in enumerate(offsets_per_group):
        grid[i % 16, i // 16] = o
    return np.tile(grid, (p // 16, 1))


@nki.jit
def _ti_gather(data, index, n):
    p, f = data.shape
    d = nl.ndarray((p, f), dtype=data.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=d, src=data)
    ix = nl.ndarray(index.shape, dtype=index.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=ix, src=index)
    res = nl.ndarray((p, n), dtype=data.dtype, buffer=nl.sbuf)
    nisa.tensor_copy(dst=res, src=d.indirect(ix, num_elem=n))
    out = nl.ndarray((p, n), dtype=data.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=out, src=res)
    return out


@nki.jit
def _ti_scatter(values, index, f):
    p, n = values.shape
    v = nl.ndarray((p, n), dtype=values.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=v, src=values)
    ix = nl.ndarray(index.shape, dtype=index.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=ix, src=index)
    d = nl.ndarray((p, f), dtype=values.dtype, buffer=nl.sbuf)
    nisa.memset(dst=d, value=-1.0)
    nisa.tensor_copy(dst=d.indirect(ix, num_elem=n), src=v)
    out = nl.ndarray((p, f), dtype=values.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=out, src=d)
    return out


def test_indirect_gather_matches_numpy_column_gather():
    p, f, n = 32, 90, 40
    data = rng.standard_normal((p, f)).astype(np.float32)
    cols = rng.integers(0, f, n)
    out = nki.simulate(_ti_gather, target="trn3")(data, _snake_index(cols, p), n)
    np.testing.assert_array_equal(out, data[:, cols])          # a gather moves values: exact


def test_indirect_groups_use_their_own_offsets():
    p, f, n = 32, 50, 16
    data = rng.standard_normal((p, f)).astype(np.float32)
    a, b = rng.integers(0, f, n), rng.integers(0, f, n)
    index = np.concatenate([_snake_index(a, 16), _snake_index(b, 16)])   # group 0 uses a, group 1 uses b
    out = nki.simulate(_ti_gather, target="trn3")(data, index, n)
    np.testing.assert_array_equal(out[:16], data[:16, a])
    np.testing.assert_array_equal(out[16:], data[16:, b])


def test_indirect_scatter_writes_only_the_indexed_columns():
    p, f, n = 16, 64, 20
    cols = rng.choice(f, n, replace=False)
    values = rng.standard_normal((p, n)).astype(np.float32)
    out = nki.simulate(_ti_scatter, target="trn3")(values, _snake_index(cols, p), f)
    ref = np.full((p, f), -1.0, np.float32)
    ref[:, cols] = values
    np.testing.assert_array_equal(out, ref)


def test_indirect_gather_casts_on_write():
    p, f, n = 16, 30, 16
    data = rng.standard_normal((p, f)).astype(np.float32)
    cols = rng.integers(0, f, n)

    @nki.jit
    def k(data, index):
        d = nl.ndarray((p, f), dtype=data.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=d, src=data)
        ix = nl.ndarray(index.shape, dtype=index.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=ix, src=index)
        res = nl.ndarray((p, n), dtype=nl.bfloat16, buffer=nl.sbuf)
        nisa.tensor_copy(dst=res, src=d.indirect(ix, num_elem=n))
        r32 = nl.ndarray((p, n), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_copy(dst=r32, src=res)
        out = nl.ndarray((p, n), dtype=nl.float32, buffer=nl.shared_hbm)
        nisa.dma_copy(dst=out, src=r32)
        return out
    import ml_dtypes
    out = nki.simulate(k, target="trn3")(data, _snake_index(cols, p))
    np.testing.assert_array_equal(out, data[:, cols].astype(ml_dtypes.bfloat16).astype(np.float32))


def test_indirect_needs_trn3():
    data = np.zeros((16, 8), np.float32)
    with pytest.raises(NkiValidationError, match="NeuronCore-v4"):
        nki.simulate(_ti_gather, target="trn2")(data, _snake_index([1] * 16, 16), 16)


def test_indirect_offset_out_of_range_raises():
    data = np.zeros((16, 8), np.float32)
    with pytest.raises(OutOfBoundsError, match="offset 8"):
        nki.simulate(_ti_gather, target="trn3")(data, _snake_index([8] * 16, 16), 16)


def test_indirect_num_elem_beyond_index_capacity_raises():
    data = np.zeros((16, 8), np.float32)     # index [16, 1] holds 16 offsets per group
    with pytest.raises(ShapeError, match="num_elem 17"):
        nki.simulate(_ti_gather, target="trn3")(data, _snake_index([0] * 16, 16), 17)


def test_indirect_partial_partition_group_raises():
    data = np.zeros((24, 8), np.float32)
    index = np.zeros((24, 1), np.uint16)     # the second group (partitions 16..31) would need rows 16..31
    with pytest.raises(PartitionError, match="multiple of 16"):
        nki.simulate(_ti_gather, target="trn3")(data, index, 16)


def test_indirect_on_other_instructions_is_not_modelled():
    @nki.jit
    def k(data, index):
        d = nl.ndarray((16, 8), dtype=data.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=d, src=data)
        ix = nl.ndarray(index.shape, dtype=index.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=ix, src=index)
        res = nl.ndarray((16, 16), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_scalar(dst=res, data=d.indirect(ix, num_elem=16), op0=nl.multiply, operand0=2.0)
        return res
    with pytest.raises(NotImplementedError, match="tensor_copy only"):
        nki.simulate(k, target="trn3")(np.zeros((16, 8), np.float32), np.zeros((16, 1), np.uint16))
