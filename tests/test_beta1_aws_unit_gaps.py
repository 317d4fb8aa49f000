"""Beta 1 gaps found running AWS's nki-samples unit suite: each test is our own small kernel exercising
one construct those public kernels use, checked against numpy (never against trnlab's own formulas)."""
import functools
import json
import os

import numpy as np
import pytest

import trnlab.nki_beta1 as nki
import trnlab.nki_beta1.compiler as ncc
import trnlab.nki_beta1.isa as nisa
import trnlab.nki_beta1.language as nl
from trnlab.errors import NkiValidationError, OutOfBoundsError, PsumCapacityError

rng = np.random.default_rng(7)


def rand(*shape):
    return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)


# --- nki.profile -----------------------------------------------------------------------------------
def test_profile_decorates_runs_and_writes_a_profile(tmp_path):
    @nki.profile(working_directory=str(tmp_path / "prof"), save_neff_name="k.neff", save_trace_name="k.ntff",
                 overwrite=False, num_execs=2, profile_nth=1)
    def add(a, b):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        nl.store(out, nl.load(a) + nl.load(b))
        return out
    a, b = rand(128, 64), rand(128, 64)
    np.testing.assert_allclose(add(a, b), a + b, rtol=1e-6)
    trace = json.loads((tmp_path / "prof" / "trace.json").read_text())
    assert trace["traceEvents"]                     # the timing model's events, one run's worth
    assert (tmp_path / "prof" / "summary.json").exists() and (tmp_path / "prof" / "report.html").exists()
    assert not (tmp_path / "prof" / "k.neff").exists()     # no device artifact is faked
    with pytest.raises(NkiValidationError, match="overwrite=False"):
        add(a, b)


def test_profile_needs_an_absolute_working_directory():
    with pytest.raises(NkiValidationError, match="absolute path"):
        nki.profile(working_directory="relative/dir")


# --- nl.loop_reduce into a subscripted target ---------------------------------------------------------
def test_loop_reduce_into_a_subscripted_target_accumulates():
    @nki.jit
    def k(a):
        out = nl.ndarray((128, 2, 32), dtype=nl.float32, buffer=nl.shared_hbm)
        acc = nl.zeros((128, 2, 32), dtype=nl.float32, buffer=nl.sbuf)
        for j in nl.affine_range(2):
            for i in nl.sequential_range(3):
                acc[:, j, :] = nl.loop_reduce(nl.load(a[i, j]), op=np.add, loop_indices=(i,), dtype=nl.float32)
        nl.store(out, acc)
        return out
    a = rand(3, 2, 128, 32)
    np.testing.assert_allclose(nki.simulate_kernel(k, a), a.sum(0).transpose(1, 0, 2), rtol=1e-5, atol=1e-6)


def test_loop_reduce_max_into_a_subscripted_target():
    @nki.jit
    def k(a):
        out = nl.ndarray((128, 16), dtype=nl.float32, buffer=nl.shared_hbm)
        acc = nl.full((128, 16), -1e30, dtype=nl.float32, buffer=nl.sbuf)
        for i in nl.sequential_range(4):
            acc[...] = nl.loop_reduce(nl.load(a[i]), op=np.maximum, loop_indices=(i,))
        nl.store(out, acc)
        return out
    a = rand(4, 128, 16)
    np.testing.assert_array_equal(nki.simulate_kernel(k, a), a.max(0))


# --- scalar HBM element into a [1, 1] tile -------------------------------------------------------------
def test_scalar_element_of_an_hbm_tensor_loads_as_a_1x1_tile():
    @nki.jit
    def k(s, a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        t = nl.ndarray((1, 1), dtype=s.dtype, buffer=nl.sbuf)
        t[...] = nl.load(s[1])
        nl.store(out, nl.load(a) * nl.load(s[0]) + t)
        return out
    s, a = np.array([3.0, -2.0], np.float32), rand(1, 64)
    np.testing.assert_allclose(nki.simulate_kernel(k, s, a), a * 3.0 - 2.0, rtol=1e-6)


def test_store_into_a_scalar_element_writes_the_tensor():
    @nki.jit
    def k(a):
        out = nl.ndarray((4,), dtype=a.dtype, buffer=nl.shared_hbm)
        for i in nl.static_range(4):
            nl.store(out[i], nl.load(a[i]))
        return out
    a = np.array([1.5, 2.5, -3.0, 4.0], np.float32)
    np.testing.assert_array_equal(nki.simulate_kernel(k, a), a)


# --- activation_reduce(mask=) -------------------------------------------------------------------------
def test_activation_reduce_with_a_mask_computes_and_reduces_only_the_masked_in_elements():
    @nki.jit
    def k(a, n_valid):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        sums = nl.ndarray((a.shape[0], 1), dtype=nl.float32, buffer=nl.shared_hbm)
        rs = nl.full((a.shape[0], 1), -1.0, dtype=nl.float32, buffer=nl.sbuf)
        y = nl.full(a.shape, 7.0, dtype=nl.float32, buffer=nl.sbuf)
        i_p, i_f = nl.mgrid[0:a.shape[0], 0:a.shape[1]]
        y[...] = nisa.activation_reduce(op=nl.square, data=nl.load(a), reduce_op=np.add, reduce_res=rs,
                                        mask=(i_f < n_valid) & (i_p >= 32))
        nl.store(out, y)
        nl.store(sums, rs)
        return out, sums
    a = rand(128, 64)
    y, s = nki.simulate_kernel(k, a, 40)
    want_y = np.full_like(a, 7.0)
    want_y[32:, :40] = a[32:, :40] ** 2
    want_s = np.full((128, 1), -1.0, np.float32)
    want_s[32:, 0] = (a[32:, :40] ** 2).sum(1)
    np.testing.assert_allclose(y, want_y, rtol=1e-6)
    np.testing.assert_allclose(s, want_s, rtol=1e-5)


def test_activation_reduce_result_discarded_still_writes_reduce_res():
    @nki.jit
    def k(a):
        sums = nl.ndarray((a.shape[0], 1), dtype=nl.float32, buffer=nl.shared_hbm)
        rs = nl.ndarray((a.shape[0], 1), dtype=nl.float32, buffer=nl.sbuf)
        nisa.activation_reduce(op=nl.exp, data=nl.load(a), reduce_op=np.add, reduce_res=rs)
        nl.store(sums, rs)
        return sums
    a = rand(128, 32)
    np.testing.assert_allclose(nki.simulate_kernel(k, a)[:, 0], np.exp(a).sum(1), rtol=1e-5)


# --- PSUM modular allocation ------------------------------------------------------------------------
def test_psum_mod_alloc_counts_the_reused_banks_only():
    @nki.jit
    def k(a):
        out = nl.ndarray((2, 8, 128, 512), dtype=nl.float32, buffer=nl.shared_hbm)
        # 16 one-bank tiles cycling through 2x4 banks from bank 0; a second tensor on the same banks
        acc = nl.ndarray((2, 8, nl.par_dim(128), 512), dtype=nl.float32,
                         buffer=ncc.psum.mod_alloc(base_bank=0, num_bank_tiles=(2, 4)))
        tmp = nl.ndarray((2, 8, nl.par_dim(128), 512), dtype=nl.float32,
                         buffer=ncc.psum.mod_alloc(base_bank=0, num_bank_tiles=(2, 4)))
        x = nl.load(a)
        for i in nl.affine_range(2):
            for j in nl.affine_range(8):
                tmp[i, j] = nl.multiply(x, float(i * 8 + j))
                acc[i, j] = nl.add(tmp[i, j], 1.0)
                nl.store(out[i, j], acc[i, j])
        return out
    a = rand(128, 512)
    got = nki.simulate_kernel(k, a)
    want = a[None, None] * np.arange(16, dtype=np.float32).reshape(2, 8, 1, 1) + 1.0
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_psum_mod_alloc_banks_are_live_for_other_tiles():
    @nki.jit
    def k(a):
        t = nl.ndarray((2, 8, nl.par_dim(128), 512), dtype=nl.float32,
                       buffer=ncc.psum.mod_alloc(base_bank=0, num_bank_tiles=(2, 4)))
        extra = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.psum)     # a ninth bank
        out = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.shared_hbm)
        x = nl.load(a)
        t[1, 7] = nl.multiply(x, 2.0)
        extra[...] = nl.multiply(x, 3.0)
        nl.store(out, nl.add(t[1, 7], extra))
        return out
    with pytest.raises(PsumCapacityError, match="required 9"):
        nki.simulate_kernel(k, rand(128, 512))


def test_psum_mod_alloc_past_the_last_bank_is_refused():
    @nki.jit
    def k(a):
        t = nl.ndarray((3, nl.par_dim(128), 512), dtype=nl.float32,
                       buffer=ncc.psum.mod_alloc(base_bank=6, num_bank_tiles=(3,)))
        return a if t is None else a
    with pytest.raises(NkiValidationError, match="address 12288"):
        nki.simulate_kernel(k, rand(2, 2))


# --- HBM slices past the end, masked ------------------------------------------------------------------
def test_dma_whose_masked_off_rows_run_past_the_tensor_copies_the_rest():
    @nki.jit
    def k(a):
        n = a.shape[0]
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        for t in nl.affine_range((n + 127) // 128):
            i_p = nl.arange(128)[:, None]
            tile = nl.ndarray((128, a.shape[1]), dtype=a.dtype, buffer=nl.sbuf)
            nisa.dma_copy(dst=tile, src=a[t * 128:(t + 1) * 128, :], mask=(t * 128 + i_p < n))
            nl.store(out[t * 128:(t + 1) * 128, :], tile, mask=(t * 128 + i_p < n))
        return out
    a = rand(160, 16)
    np.testing.assert_array_equal(nki.simulate_kernel(k, a), a)


def test_unmasked_slice_past_the_end_is_still_out_of_bounds():
    @nki.jit
    def k(a):
        out = nl.ndarray((128, 16), dtype=a.dtype, buffer=nl.shared_hbm)
        nl.store(out, nl.load(a[32:160, :]))
        return out
    with pytest.raises(OutOfBoundsError, match="dimension 0"):
        nki.simulate_kernel(k, rand(140, 16))


# --- indirect gather after leading integer indices ---------------------------------------------------
def test_gather_with_the_index_tile_after_a_batch_index():
    @nki.jit
    def k(x, idx):
        out = nl.ndarray((x.shape[0], 128, x.shape[2]), dtype=x.dtype, buffer=nl.shared_hbm)
        i_f = nl.arange(x.shape[2])[None, :]
        rows = nl.load(idx)
        for b in nl.affine_range(x.shape[0]):
            nl.store(out[b], nl.load(x[b, rows, i_f]))
        return out
    x = rand(2, 300, 24)
    idx = rng.integers(0, 300, size=(128, 1)).astype(np.int32)
    np.testing.assert_array_equal(nki.simulate_kernel(k, x, idx), x[:, idx[:, 0], :])


# --- unary ALU operators in tensor_scalar -----------------------------------------------------------
@pytest.mark.parametrize("name,ref", [("rsqrt", lambda x: 1 / np.sqrt(x)), ("reciprocal", lambda x: 1 / x),
                                      ("abs", np.abs), ("logical_not", lambda x: (x == 0).astype(np.float32))])
def test_unary_alu_operator_as_tensor_scalar_op0(name, ref):
    @nki.jit
    def k(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        nl.store(out, nisa.tensor_scalar(nl.load(a), op0=getattr(nl, name), operand0=0.0, reverse0=True,
                                         op1=nl.multiply, operand1=2.0))
        return out
    a = np.abs(rand(128, 16)) + 0.25
    a[0, :4] = 0.0 if name == "logical_not" else a[0, :4]
    np.testing.assert_allclose(nki.simulate_kernel(k, a), ref(a) * 2.0, rtol=1e-6)


def test_invert_is_a_bitvec_tensor_scalar_operator():
    @nki.jit
    def k(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        nl.store(out, nisa.tensor_scalar(nl.load(a), op0=nl.invert, operand0=0, engine=nisa.vector_engine))
        return out
    a = rng.integers(-1000, 1000, size=(128, 8)).astype(np.int32)
    np.testing.assert_array_equal(nki.simulate_kernel(k, a), np.invert(a))


def test_binary_only_operator_stays_refused_as_unary():
    @nki.jit
    def k(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        nl.store(out, nisa.tensor_scalar(nl.load(a), op0=nl.square, operand0=0.0))
        return out
    with pytest.raises(NkiValidationError, match="unsupported ALU operator 'square'"):
        nki.simulate_kernel(k, rand(128, 4))


def test_profile_result_lists_the_kernel_instructions(tmp_path):
    @nki.profile(working_directory=str(tmp_path))
    def k(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        nl.store(out, nl.exp(nl.load(a)))
        return out
    k(rand(128, 8))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert os.path.exists(tmp_path / "trace.json") and summary


def test_psum_alloc_callback_places_tiles_on_banks_already_in_use():
    def banks(idx, pdim_size, fdim_size, table):
        return (table[idx], 0, 0)

    @nki.jit
    def k(a):
        out = nl.ndarray((2, 128, 512), dtype=nl.float32, buffer=nl.shared_hbm)
        big = nl.ndarray((8, nl.par_dim(128), 512), dtype=nl.float32,
                         buffer=ncc.psum.mod_alloc(base_bank=0, num_bank_tiles=(8,)))
        # two more tiles on banks 3 and 6, which `big` already covers: still 8 banks in all
        pair = nl.ndarray((2, nl.par_dim(128), 512), dtype=nl.float32,
                          buffer=ncc.psum.alloc(functools.partial(banks, table={(0,): 3, (1,): 6})))
        x = nl.load(a)
        big[0] = nl.multiply(x, 2.0)
        for i in nl.affine_range(2):
            pair[i] = nl.add(big[0], float(i))
            nl.store(out[i], pair[i])
        return out
    a = rand(128, 512)
    np.testing.assert_allclose(nki.simulate_kernel(k, a), np.stack([a * 2.0, a * 2.0 + 1.0]), rtol=1e-6)
