"""NkiTensor views: slicing, nl.ds, integer indexing rules, reshape/permute/broadcast, view(dtype), .ap()."""
import ml_dtypes
import numpy as np
import pytest

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.errors import NkiValidationError, OutOfBoundsError, ShapeError, TrnlabError
from test_nki_harness import rand


def copy_out(view_fn, a, out_shape, out_dtype=None):
    """DMA the view view_fn(hbm input) into a fresh HBM output."""
    @nki.jit
    def k(src):
        v = view_fn(src)
        out = nl.ndarray(out_shape, dtype=out_dtype or v.dtype, buffer=nl.shared_hbm)
        nisa.dma_copy(dst=out, src=v)
        return out
    return nki.simulate(k)(a)


def via_sbuf(view_fn, a, tile_shape, out_shape):
    """Load a into an SBUF tile, then DMA view_fn(tile) out."""
    @nki.jit
    def k(src):
        t = nl.ndarray(tile_shape, dtype=src.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=src)
        v = view_fn(t)
        out = nl.ndarray(out_shape, dtype=v.dtype, buffer=nl.shared_hbm)
        nisa.dma_copy(dst=out, src=v)
        return out
    return nki.simulate(k)(a)


def test_slicing_ds_and_nested_views_compose():
    a = rand(8, 64)
    np.testing.assert_array_equal(copy_out(lambda t: t[2:6, nl.ds(8, 16)], a, (4, 16)), a[2:6, 8:24])
    np.testing.assert_array_equal(copy_out(lambda t: t[:, 10:50][1:7, 5:20], a, (6, 15)), a[1:7, 15:30])
    np.testing.assert_array_equal(copy_out(lambda t: t[:, nl.ds(1, 8, step=4)], a, (8, 8)), a[:, 1:33:4])
    np.testing.assert_array_equal(copy_out(lambda t: t[:, ::2][:, 3:9:3], a, (8, 2)), a[:, ::2][:, 3:9:3])


def test_integer_index_rules():
    a = rand(4, 8, 16)
    np.testing.assert_array_equal(copy_out(lambda t: t[1], a, (8, 16)), a[1])          # HBM drops dims

    @nki.jit
    def shapes(src):
        t = nl.ndarray((8, 4, 16), dtype=nl.float32, buffer=nl.sbuf)
        return {"p_int": t[3].shape, "free_int": t[:, 2].shape, "both_free_ints": t[:, 1, 2].shape,
                "hbm": src[0, 1].shape}
    s = nki.simulate(shapes)(a)
    assert s["p_int"] == (1, 4, 16)           # an int on the partition dim keeps a size-1 dim
    assert s["free_int"] == (8, 16)           # an int on a free dim drops it ...
    assert s["both_free_ints"] == (8, 1)      # ... unless the tile would fall below 2-D
    assert s["hbm"] == (16,)


def test_out_of_bounds_slice():
    with pytest.raises(OutOfBoundsError, match="dimension size of 64"):
        copy_out(lambda t: t[:, 60:70], rand(8, 64), (8, 10))


def test_reshape_permute_broadcast_on_hbm_and_sbuf():
    a = rand(8, 4, 6)
    np.testing.assert_array_equal(copy_out(lambda t: t.reshape(8, 24), a, (8, 24)), a.reshape(8, 24))
    np.testing.assert_array_equal(copy_out(lambda t: t.permute(2, 0, 1), a, (6, 8, 4)), a.transpose(2, 0, 1))
    np.testing.assert_array_equal(via_sbuf(lambda t: t.permute(0, 2, 1), a, (8, 4, 6), (8, 6, 4)),
                                  a.transpose(0, 2, 1))
    np.testing.assert_array_equal(via_sbuf(lambda t: t.reshape(8, 2, 12), a, (8, 4, 6), (8, 2, 12)),
                                  a.reshape(8, 2, 12))
    row = rand(1, 6)
    np.testing.assert_array_equal(copy_out(lambda t: t.broadcast(0, 5), row, (5, 6)), np.repeat(row, 5, 0))


def test_on_chip_views_keep_the_partition_dim():
    with pytest.raises(ShapeError, match="partition"):
        via_sbuf(lambda t: t.reshape(16, 12), rand(8, 24), (8, 24), (16, 12))
    with pytest.raises(ShapeError, match="partition"):
        via_sbuf(lambda t: t.permute(1, 0), rand(8, 24), (8, 24), (24, 8))


def test_select_slice_expand_squeeze_flatten():
    a = rand(4, 6, 8)
    np.testing.assert_array_equal(copy_out(lambda t: t.select(1, 2), a, (4, 8)), a[:, 2])
    np.testing.assert_array_equal(copy_out(lambda t: t.slice(2, 1, 7, 2), a, (4, 6, 3)), a[:, :, 1:7:2])
    np.testing.assert_array_equal(copy_out(lambda t: t.expand_dim(1).squeeze_dim(1), a, (4, 6, 8)), a)
    np.testing.assert_array_equal(copy_out(lambda t: t.flatten_dims(1, 2), a, (4, 48)), a.reshape(4, 48))
    np.testing.assert_array_equal(copy_out(lambda t: t.reshape_dim(2, (2, 4)), a, (4, 6, 2, 4)),
                                  a.reshape(4, 6, 2, 4))


def test_view_dtype_reinterprets_bytes():
    a = rand(4, 8)
    out = copy_out(lambda t: t.view(nl.int32), a, (4, 8))
    np.testing.assert_array_equal(out, a.view(np.int32))
    b = rand(4, 8, dtype=ml_dtypes.bfloat16)
    out = copy_out(lambda t: t.view(nl.uint16), b, (4, 8))
    np.testing.assert_array_equal(out, b.view(np.uint16))


def test_ap_on_sbuf_tile():
    a = rand(16, 16)
    # the AWS docs' example: t.ap([[16, 16], [1, 8]], offset=8) is t[0:16, 8:16]
    out = via_sbuf(lambda t: t.ap(pattern=[[16, 16], [1, 8]], offset=8), a, (16, 16), (16, 8))
    np.testing.assert_array_equal(out, a[:, 8:16])
    # ap ignores the current view and addresses the storage
    out = via_sbuf(lambda t: t[:, 4:8].ap([[16, 4], [4, 4]], offset=16), a, (16, 16), (4, 4))
    np.testing.assert_array_equal(out, a[1:5, 0:16:4])


def test_ap_dtype_counts_elements_of_the_new_dtype():
    a = np.arange(8 * 4, dtype=np.int32).reshape(8, 4)
    out = via_sbuf(lambda t: t.ap([[8, 8], [1, 8]], dtype=nl.uint16), a, (8, 4), (8, 8))
    np.testing.assert_array_equal(out, a.view(np.uint16))


def test_ap_rules():
    with pytest.raises(NkiValidationError, match="walks partitions"):
        via_sbuf(lambda t: t.ap([[64, 8], [1, 32]]), rand(16, 32), (16, 32), (8, 32))
    with pytest.raises(OutOfBoundsError):
        via_sbuf(lambda t: t.ap([[32, 16], [1, 32]], offset=8), rand(16, 32), (16, 32), (16, 32))


def test_pattern_attributes():
    @nki.jit
    def k(src):
        v = src[1:3, ::2]
        return v.shape, v.strides, v.offset, v.get_pattern(), v.is_contiguous(), src.is_contiguous()
    shape, strides, offset, pattern, contiguous, base_contiguous = nki.simulate(k)(rand(4, 8))
    assert shape == (2, 4) and strides == (8, 2) and offset == 8
    assert pattern == [[8, 2], [2, 4]] and not contiguous and base_contiguous


def test_scalar_assignment_into_hbm_is_refused():
    @nki.jit
    def k(src):
        src[0:1, 0:1] = 1.0          # a memset cannot target HBM
    with pytest.raises(TrnlabError, match="tensor assignment"):
        nki.simulate(k)(rand(2, 2))


def test_tensor_assignment_copies_tiles_and_memsets_scalars():
    """NKI 0.6 kernels write loop-carried state with t[...] = u: a copy, checked like tensor_copy."""
    @nki.jit
    def k(a):
        out = nl.ndarray((128, 64), dtype=nl.float32, buffer=nl.shared_hbm)
        state = nl.ndarray((128, 64), dtype=nl.float32, buffer=nl.sbuf)
        x = nl.ndarray((128, 64), dtype=nl.float32, buffer=nl.sbuf)
        nisa.dma_copy(dst=x, src=a)
        state[...] = 0.0
        for _ in range(3):
            new = nl.ndarray((128, 64), dtype=nl.float32, buffer=nl.sbuf)
            nisa.tensor_tensor(dst=new, data1=state, data2=x, op=nl.add)
            state[...] = new
        state[:, 0:8] = -1.0
        out[...] = state
        return out
    a = rand(128, 64)
    want = 3 * a
    want[:, 0:8] = -1.0
    np.testing.assert_allclose(nki.simulate(k)(a), want, rtol=1e-6)   # fp32: rounding only


def test_repeated_tile_key_reuses_its_view_and_lookalike_keys_do_not():
    """A key of exact ints/slices seen before gives the same view; 1.0 and True compare equal to 1 but
    must still be checked as themselves (a float bound is refused even after the int one was cut)."""
    seen = {}

    @nki.jit
    def k(src):
        t = nl.ndarray((4, 8), dtype=src.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=src)
        seen["same"] = t[0:2, 1:5] is t[0:2, 1:5]
        seen["other"] = t[0:2, 1:5] is t[0:2, 1:6]
        with pytest.raises(TrnlabError):
            t[0:2, 1.0:5]
        out = nl.ndarray((2, 4), dtype=src.dtype, buffer=nl.shared_hbm)
        nisa.dma_copy(dst=out, src=t[0:2, 1:5])
        return out
    a = rand(4, 8)
    np.testing.assert_array_equal(nki.simulate(k)(a), a[0:2, 1:5])
    assert seen == {"same": True, "other": False}


def test_timing_only_tile_instances_reuse_cuts_with_their_own_addresses():
    """Timing-only tiles of one shape share the zero pages' array, and the second instance of a loop's tile
    reuses the first one's cut (NkiTensor templates): each view still has its own tile's box, byte offset
    and layout, as indexing from scratch (Tensor.index) finds them."""
    import trnlab
    seen = []

    @nki.jit
    def k(src):
        keep = []
        for i in range(3):
            t = nl.ndarray((128, 4, 256), dtype=nl.float32, buffer=nl.sbuf)
            keep.append(t)                                   # all live: three addresses
            for key in ((slice(None), 2, slice(128, 192)), (slice(0, 64), 1, slice(None))):
                v, ref = t[key], t.index(key)
                seen.append((t.array, v.array, v.region(), ref.region(), v.byte_offset(), ref.byte_offset(),
                             v.shape, ref.shape, v.array.strides, ref.array.strides, v.layout() is ref.layout()))
        out = nl.ndarray((128, 64), dtype=nl.float32, buffer=nl.shared_hbm)
        nisa.dma_copy(dst=out, src=keep[-1][:, 2, 128:192])
        return out
    trnlab.benchmark(k, target="trn2", numerics=False)(np.zeros((128, 64), np.float32))
    assert seen[0][0] is seen[2][0] is seen[4][0]            # one shared zero-page array
    assert seen[2][1] is seen[0][1]                          # the second instance reused the first cut
    assert len({s[2] for s in seen[::2]}) == 3               # three boxes
    for (_, _, region, ref_region, off, ref_off, shape, ref_shape, strides, ref_strides, same_layout) in seen:
        assert (region, off, shape, strides) == (ref_region, ref_off, ref_shape, ref_strides) and same_layout
