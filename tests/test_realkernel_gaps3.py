"""Gaps found by running nki-library kernels (rope, interleave_copy, gen_mask_tkg) unmodified, each pinned
with our own small kernel against numpy:
- a tensor's `.buffer` compared with the buffer markers (`t.buffer == nl.sbuf`, `t.buffer in (nl.hbm, ...)`);
- an LNC2 launch of a kernel whose module imports `nki.tensor` (the sync-detection scan probed it);
- `.ap(scalar_offset=, indirect_dim=d)`: the offset moves by the stride of TENSOR dimension d, also when the
  pattern's entries are ordered differently (find_nonzero_indices: pattern dim 1 is a tile stride);
- `nki.dtype` as a signature annotation."""
import numpy as np

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
import trnlab.nki.ntensor as ntensor

rng = np.random.default_rng(11)


def test_buffer_markers_equal_the_tensor_buffer():
    assert nl.sbuf != nl.psum and nl.hbm != nl.sbuf      # markers stay distinct from each other
    assert nl.shared_hbm == "hbm" and nl.sbuf == "sbuf" and nl.sbuf != "psum"
    assert len({nl.sbuf, nl.psum, nl.hbm}) == 3           # still hashable


@nki.jit
def _double_if_hbm(x):
    p, f = x.shape
    t = nl.ndarray((p, f), dtype=x.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=t, src=x)
    r = nl.ndarray((p, f), dtype=x.dtype, buffer=nl.sbuf)
    # branch on buffer kinds the way library helpers do: input in HBM, scratch in SBUF -> double
    if x.buffer in (nl.hbm, nl.shared_hbm, nl.private_hbm) and t.buffer == nl.sbuf and t.buffer != nl.psum:
        nisa.tensor_scalar(dst=r, data=t, op0=nl.multiply, operand0=2.0)
    else:
        nisa.tensor_copy(dst=r, src=t)
    out = nl.ndarray((p, f), dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=out, src=r)
    return out


def test_kernel_branching_on_buffer_kind():
    x = rng.standard_normal((32, 16)).astype(np.float32)
    out = np.asarray(nki.simulate(_double_if_hbm)(x))
    np.testing.assert_array_equal(out, 2 * x)             # x * 2 is exact in fp32


@nki.jit
def _scale_rows_by_identity_lnc(x):
    # each program of an LNC2 launch handles half of the rows; ntensor (a module global) builds an identity
    p, f = x.shape
    half = p // 2
    pid = nl.program_id(0)
    eye = nl.shared_constant(ntensor.identity(f, nl.float32))
    e_sb = nl.ndarray((f, f), dtype=nl.float32, buffer=nl.sbuf)
    nisa.dma_copy(dst=e_sb, src=eye)
    x_sb = nl.ndarray((half, f), dtype=x.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=x_sb, src=x[pid * half:(pid + 1) * half, :])
    d = nl.ndarray((half, f), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_tensor(dst=d, data1=x_sb, data2=e_sb[0:half, :], op=nl.add)
    out = nl.ndarray((p, f), dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=out[pid * half:(pid + 1) * half, :], src=d)
    return out


def test_lnc2_launch_of_kernel_whose_module_uses_nki_tensor():
    x = rng.standard_normal((16, 16)).astype(np.float32)
    out = np.asarray(nki.simulate(_scale_rows_by_identity_lnc[2])(x))
    eye = np.eye(16, dtype=np.float32)
    ref = np.concatenate([x[:8] + eye[:8], x[8:] + eye[:8]])
    np.testing.assert_array_equal(out, ref)               # adding 0 or 1 once: exact


@nki.jit
def _window_from_column(x, col):
    # rows [0, P) of x[T, C] viewed as [P, 2 tiles, 3 columns], shifted right by a runtime column index
    T, C = x.shape
    P = T // 2
    c_sb = nl.ndarray((1, 1), dtype=nl.int32, buffer=nl.sbuf)
    nisa.dma_copy(dst=c_sb, src=col)
    w = nl.ndarray((P, 2, 3), dtype=x.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=w, src=x.ap(pattern=[[C, P], [C * P, 2], [1, 3]], offset=0, scalar_offset=c_sb,
                                  indirect_dim=1))
    out = nl.ndarray((P, 2, 3), dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=out, src=w)
    return out


def test_scalar_offset_moves_by_the_tensor_dimension_stride():
    x = rng.standard_normal((16, 10)).astype(np.float32)
    out = np.asarray(nki.simulate(_window_from_column)(x, np.array([[4]], np.int32)))
    ref = np.stack([x[:8, 4:7], x[8:, 4:7]], axis=1)      # column offset 4 (tensor dim 1 stride 1)
    np.testing.assert_array_equal(out, ref)               # a copy: exact


def test_scalar_offset_on_a_leading_dimension():
    @nki.jit
    def pick_row_block(x, r):
        r_sb = nl.ndarray((1, 1), dtype=nl.int32, buffer=nl.sbuf)
        nisa.dma_copy(dst=r_sb, src=r)
        t = nl.ndarray((4, 6), dtype=x.dtype, buffer=nl.sbuf)
        # x[E, 4, 6]: indirect_dim=0 selects expert r (stride 24), whatever the pattern looks like
        nisa.dma_copy(dst=t, src=x.ap(pattern=[[6, 4], [1, 6]], offset=0, scalar_offset=r_sb, indirect_dim=0))
        out = nl.ndarray((4, 6), dtype=x.dtype, buffer=nl.shared_hbm)
        nisa.dma_copy(dst=out, src=t)
        return out

    x = rng.standard_normal((3, 4, 6)).astype(np.float32)
    out = np.asarray(nki.simulate(pick_row_block)(x, np.array([[2]], np.int32)))
    np.testing.assert_array_equal(out, x[2])


def test_nki_dtype_is_the_type_of_the_language_dtypes():
    @nki.jit
    def cast_copy(x, out_dtype: nki.dtype = nl.int32):
        t = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=x)
        r = nl.ndarray(x.shape, dtype=out_dtype, buffer=nl.sbuf)
        nisa.tensor_copy(dst=r, src=t)
        out = nl.ndarray(x.shape, dtype=out_dtype, buffer=nl.shared_hbm)
        nisa.dma_copy(dst=out, src=r)
        return out

    assert isinstance(nl.float32, nki.dtype) and isinstance(nl.int32, nki.dtype)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = np.asarray(nki.simulate(cast_copy)(x))
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, x.astype(np.int32))   # small integers: exact
