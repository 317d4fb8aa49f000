"""CompilerModel.pe_broadcast: Beta 1 `tile.broadcast_to((M, F))` of an on-chip [1, F] row is a Tensor-engine
matmul with a ones row (NC-v2 architecture guide, TensorE "Alternative Use Case": "NKI invokes such matmul
under the hood when broadcast_input.broadcast_to(...) is called").

Oracles: numpy for values; durations written out from the ISA cost formulas at the trn1 clocks (ARCH v2
datapath table: PE 2.8 GHz, Vector 1.12 GHz, Scalar 1.4 GHz): nc_matmul fp32 4 x max(min(64, N_stat), N_mov)
PE cycles, halved by is_stationary_onezero (the hint the guide's broadcast matmul sets: "2x" for fp32); tensor_tensor N Vector cycles with one PSUM input, else 2N for fp32; tensor_copy N on the engine
the compiler picks (PSUM source: Vector or Scalar).
"""
import ml_dtypes
import numpy as np
import pytest

import trnlab.nki_beta1 as nki
import trnlab.nki_beta1.isa as nisa
import trnlab.nki_beta1.language as nl
from trnlab.core.compiler import CompilerModel, using

PE, VEC, ACT = 2.8e9, 1.12e9, 1.4e9


@nki.jit
def scale_rows(x, row):
    """out = x * row broadcast over the 128 partitions, the fused-Mamba tutorial's B_i.broadcast_to step."""
    p, f = x.shape
    out = nl.ndarray((p, f), dtype=x.dtype, buffer=nl.shared_hbm)
    xt = nl.load(x)
    r = nl.load(row)
    nl.store(out, nisa.tensor_tensor(xt, r.broadcast_to((p, f)), op=nl.multiply))
    return out


@nki.jit
def scale_rows_4x(x, rows):
    """Four broadcasts of different rows in a loop: the ones row is a compiler constant, set once."""
    p, f = x.shape
    out = nl.ndarray((4, p, f), dtype=x.dtype, buffer=nl.shared_hbm)
    xt = nl.load(x)
    for i in nl.affine_range(4):
        r = nl.load(rows[i:i + 1, :])
        nl.store(out[i], nisa.tensor_tensor(xt, r.broadcast_to((p, f)), op=nl.multiply))
    return out


def _inputs(f, dtype=np.float32, rows=1):
    rng = np.random.default_rng(3)
    return rng.standard_normal((128, f)).astype(dtype), rng.standard_normal((rows, f)).astype(dtype)


def _run(kernel, args, pe_broadcast=True):
    with using(CompilerModel(pe_broadcast=pe_broadcast)):
        return kernel.run(args, {}, target="trn1", trace=True)


def _events(run, name):
    return [e for e in run.machine.scheduler.records if e.name == name]


def test_fp32_row_of_one_bank_is_one_matmul_into_psum_and_the_consumer_pays_n():
    x, row = _inputs(512)
    run = _run(scale_rows, (x, row))
    np.testing.assert_array_equal(run.outputs, x * row)        # ones x row is exact in fp32
    mm = _events(run, "nc_matmul")
    assert len(mm) == 1 and mm[0].track == "tensor"
    assert mm[0].end - mm[0].start == pytest.approx(2 * 512 / PE, rel=1e-9)       # fp32 4x, halved: onezero
    (tt,) = _events(run, "tensor_tensor")
    assert "psum" in tt.detail and tt.end - tt.start == pytest.approx(512 / VEC, rel=1e-9)
    assert _events(run, "tensor_copy") == []


def test_wider_row_is_assembled_in_sbuf_one_bank_at_a_time():
    x, row = _inputs(1024)
    run = _run(scale_rows, (x, row))
    np.testing.assert_array_equal(run.outputs, x * row)
    mm, cp = _events(run, "nc_matmul"), _events(run, "tensor_copy")
    assert len(mm) == 2 and all(e.end - e.start == pytest.approx(2 * 512 / PE, rel=1e-9) for e in mm)
    assert len(cp) == 2 and {e.track for e in cp} <= {"vector", "scalar"}
    assert all(e.end - e.start == pytest.approx(512 / (VEC if e.track == "vector" else ACT), rel=1e-9) for e in cp)
    (tt,) = _events(run, "tensor_tensor")
    assert "psum" not in tt.detail and tt.end - tt.start == pytest.approx(2 * 1024 / VEC, rel=1e-9)


def test_bf16_row_keeps_its_dtype_through_an_sbuf_copy():
    x, row = _inputs(256, ml_dtypes.bfloat16)
    run = _run(scale_rows, (x, row))
    assert run.outputs.dtype == x.dtype
    want = (x.astype(np.float32) * row.astype(np.float32)).astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(run.outputs, want)
    assert len(_events(run, "nc_matmul")) == 1 and len(_events(run, "tensor_copy")) == 1


def test_switch_off_is_a_free_view_and_the_consumer_pays_2n():
    x, row = _inputs(512)
    run = _run(scale_rows, (x, row), pe_broadcast=False)
    np.testing.assert_array_equal(run.outputs, x * row)
    assert _events(run, "nc_matmul") == []
    (tt,) = _events(run, "tensor_tensor")
    assert tt.end - tt.start == pytest.approx(2 * 512 / VEC, rel=1e-9)
    assert CompilerModel.parse("none").pe_broadcast is False
    assert CompilerModel.parse("pe_broadcast=0").pe_broadcast is False


def test_ones_row_is_set_once_per_kernel():
    x, rows = _inputs(512, rows=4)
    run = _run(scale_rows_4x, (x, rows))
    np.testing.assert_array_equal(run.outputs, x[None] * rows[:, None, :])
    assert len(_events(run, "nc_matmul")) == 4
    ones = [e for e in _events(run, "memset") if "[1,128]" in e.detail]
    assert len(ones) == 1
