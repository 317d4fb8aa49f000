"""Hardware rules checked in the ISA layer (shared by both front ends): each rule rejects what it
should, accepts what it should, and its message names the API, the tensor, the limit, the actual
value and the kernel's file:line."""
import warnings

import numpy as np
import pytest

import trnlab.isa as I
from trnlab.core import dtypes as dt
from trnlab.core.machine import Machine
from trnlab.errors import (AccumulateUninitializedWarning, BufferKindError, DtypeError, MatmulLimitError,
                           NkiValidationError, OutOfBoundsError, PartitionError, ShapeError)

LOC = "kernel.py:42"


def mk(target="trn2"):
    return Machine(target)


def tile(m, shape, dtype=dt.float32, kind="sbuf", name="t", fill=0.0, p0=0):
    return m.new_onchip(kind, shape, dtype, name, api="test", loc="alloc:1", fill=fill, p0=p0)


def assert_message(err, *parts):
    msg = str(err.value)
    for part in parts:
        assert str(part) in msg, f"{part!r} missing from: {msg}"
    assert LOC in msg, msg


# --- partition dimension -------------------------------------------------------------------------------

def test_partition_dim_above_128_rejected_for_engine_operands():
    m = mk()
    row = tile(m, (1, 64), name="row")
    wide = row.broadcast_to((256, 64))
    with pytest.raises(PartitionError) as err:
        m.issue(I.TensorCopy(api="nisa.tensor_copy", loc=LOC, dst=tile(m, (128, 64)), src=wide))
    assert_message(err, "nisa.tensor_copy", "row", "256", "128")


def test_partition_mismatch_message():
    m = mk()
    a, b = tile(m, (128, 512), name="data1"), tile(m, (1, 512), name="data2")
    with pytest.raises(PartitionError) as err:
        m.issue(I.TensorTensor(api="nisa.tensor_tensor", loc=LOC, dst=tile(m, (128, 512)), data1=a, data2=b,
                               op="add"))
    assert_message(err, "data1[128, 512]", "data2[1, 512]", "nisa.tensor_tensor", "mismatch")


def test_partition_striding_and_partition_not_first_are_rejected():
    m = mk()
    t = tile(m, (128, 64), name="x")
    with pytest.raises(PartitionError) as err:
        m.issue(I.TensorCopy(api="nisa.tensor_copy", loc=LOC, dst=tile(m, (64, 64)), src=t.index((slice(0, 128, 2),))))
    assert_message(err, "'x'", "no partition striding")
    with pytest.raises(PartitionError):
        m.issue(I.TensorCopy(api="nisa.tensor_copy", loc=LOC, dst=tile(m, (64, 128)),
                             src=t.index((slice(None), slice(0, 64))).permute(1, 0)))


@pytest.mark.parametrize("start,count,ok", [
    (0, 128, True), (32, 96, False), (0, 65, True), (64, 64, True), (32, 64, False), (64, 33, True),
    (96, 32, True), (32, 32, True), (16, 16, False), (1, 4, False), (64, 1, True), (100, 1, False),
])
def test_start_partition_rule(start, count, ok):
    m = mk()
    base = tile(m, (128, 16), name="base")
    values = np.arange(128 * 16, dtype=np.float32).reshape(128, 16)
    base.write(values)
    src = base.index((slice(start, start + count),))
    dst = tile(m, (count, 16), name="dst")
    ins = I.TensorCopy(api="nisa.tensor_copy", loc=LOC, dst=dst, src=src)
    if ok:
        m.issue(ins)
        np.testing.assert_array_equal(dst.numpy(), values[start:start + count])    # the accepted copy ran
        return
    with pytest.raises(PartitionError) as err:
        m.issue(ins)
    assert_message(err, "'base'", f"{count} partitions starting at partition {start}", "nisa.tensor_copy")


def test_start_partition_rule_applies_to_matmul_and_tiles_placed_at_an_offset():
    m = mk()
    s = tile(m, (32, 16), name="stat", p0=16)                 # 32 partitions starting at 16
    mv = tile(m, (32, 64), name="mov")
    with pytest.raises(PartitionError) as err:
        m.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=tile(m, (16, 64), kind="psum"), stationary=s, moving=mv))
    assert_message(err, "'stat'", "starting at partition 16")
    ok = tile(m, (32, 16), name="stat2", p0=32)
    m.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=tile(m, (16, 64), kind="psum"), stationary=ok, moving=mv))


def test_dma_is_exempt_from_the_start_partition_rule():
    m = mk()
    base = tile(m, (128, 8), name="base")
    h = m.hbm_tensor(np.ones((5, 8), np.float32), "h")
    m.issue(I.DmaCopy(api="nisa.dma_copy", loc=LOC, dst=base.index((slice(3, 8),)), src=h))   # start 3: accepted
    got = base.numpy()
    np.testing.assert_array_equal(got[3:8], 1.0)
    np.testing.assert_array_equal(np.delete(got, np.s_[3:8], axis=0), 0.0)          # other partitions untouched


# --- matmul ----------------------------------------------------------------------------------------------

def test_matmul_m_and_n_limits():
    m = mk()
    k = tile(m, (128, 129), dt.bfloat16, name="w")
    with pytest.raises(MatmulLimitError) as err:
        m.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=tile(m, (128, 8), kind="psum"), stationary=k,
                         moving=tile(m, (128, 8), dt.bfloat16)))
    assert_message(err, "'w'", "M=129", "128")
    with pytest.raises(MatmulLimitError) as err:
        big = tile(m, (128, 1024), kind="psum", name="acc")
        m.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=big.index((slice(0, 8), slice(0, 513))),
                         stationary=tile(m, (128, 8), dt.bfloat16), moving=tile(m, (128, 513), dt.bfloat16, name="x")))
    assert_message(err, "'x'", "N=513", "512")


def test_matmul_moving_limit_is_all_of_psum_on_trn3():
    m = mk("trn3")
    s, mv = tile(m, (64, 8), dt.bfloat16), tile(m, (64, 4096), dt.bfloat16, name="x")
    m.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=tile(m, (8, 4096), kind="psum"), stationary=s, moving=mv))
    m3 = mk("trn3")
    m3.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=tile(m3, (8, 8192), dt.bfloat16, kind="psum"),
                      stationary=tile(m3, (64, 8), dt.bfloat16), moving=tile(m3, (64, 8192), dt.bfloat16)))
    m2 = mk("trn2")
    with pytest.raises(MatmulLimitError):
        m2.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=tile(m2, (8, 1024), kind="psum"),
                          stationary=tile(m2, (64, 8), dt.bfloat16), moving=tile(m2, (64, 1024), dt.bfloat16)))


def test_matmul_result_must_not_cross_a_psum_bank():
    m = mk()
    acc = tile(m, (128, 1024), kind="psum", name="acc")            # two banks
    s, mv = tile(m, (64, 128), dt.bfloat16), tile(m, (64, 512), dt.bfloat16)
    with pytest.raises(MatmulLimitError) as err:
        m.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=acc.index((slice(None), slice(256, 768))), stationary=s,
                         moving=mv))
    assert_message(err, "'acc'", "bank boundary")
    m.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=acc.index((slice(None), slice(512, 1024))), stationary=s,
                     moving=mv))


def test_matmul_operand_buffers():
    m = mk()
    s, mv = tile(m, (64, 32), dt.bfloat16), tile(m, (64, 32), dt.bfloat16)
    with pytest.raises(BufferKindError) as err:
        m.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=tile(m, (32, 32), name="out"), stationary=s, moving=mv))
    assert_message(err, "'dst'", "psum", "sbuf", "'out'")
    with pytest.raises(BufferKindError):
        m.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=tile(m, (32, 32), kind="psum"),
                         stationary=tile(m, (64, 32), kind="psum"), moving=mv))


@pytest.mark.parametrize("sdt,mdt,target,ok", [
    (dt.float32, dt.float8_e4m3, "trn2", False), (dt.float32, dt.bfloat16, "trn2", False),
    (dt.tfloat32, dt.float32, "trn2", True), (dt.float8_e4m3, dt.float8_e5m2, "trn2", True),
    (dt.float8_e4m3, dt.float8_e4m3fn, "trn3", False), (dt.float8_e4m3fn, dt.float8_e4m3fn, "trn2", False),
    (dt.float8_e4m3fn, dt.bfloat16, "trn3", True), (dt.int8, dt.int8, "trn2", False),
])
def test_matmul_dtype_rules(sdt, mdt, target, ok):
    m = mk(target)
    ins = I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=tile(m, (16, 16), kind="psum"),
                   stationary=tile(m, (32, 16), sdt, name="stat"), moving=tile(m, (32, 16), mdt, name="mov"))
    if ok:
        m.issue(ins)
        return
    with pytest.raises(DtypeError) as err:
        m.issue(ins)
    assert_message(err, dt.name_of(sdt) if sdt != dt.int8 else "int8")


def test_matmul_dst_dtype():
    m2, m3 = mk("trn2"), mk("trn3")
    for m, ok in ((m2, False), (m3, True)):
        ins = I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=tile(m, (16, 16), dt.bfloat16, kind="psum", name="o"),
                       stationary=tile(m, (32, 16), dt.bfloat16), moving=tile(m, (32, 16), dt.bfloat16))
        if ok:
            m.issue(ins)
        else:
            with pytest.raises(DtypeError, match="'o'.*float32"):
                m.issue(ins)


def test_double_row_needs_trn2_and_fp8():
    s_shape, mv_shape = (128, 2, 16), (128, 2, 64)
    m1 = mk("trn1")
    with pytest.raises(NkiValidationError, match="trn2"):
        m1.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=tile(m1, (16, 64), kind="psum"),
                          stationary=tile(m1, s_shape, dt.float8_e4m3), moving=tile(m1, mv_shape, dt.float8_e4m3),
                          perf_mode="double_row"))
    m = mk("trn2")
    with pytest.raises(DtypeError, match="fp8"):
        m.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=tile(m, (16, 64), kind="psum"),
                         stationary=tile(m, s_shape, dt.bfloat16), moving=tile(m, mv_shape, dt.bfloat16),
                         perf_mode="double_row"))


def test_tiling_mode_rules():
    m = mk("trn2")
    s, mv = tile(m, (32, 32), dt.bfloat16), tile(m, (32, 64), dt.bfloat16)
    m.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=tile(m, (32, 64), kind="psum"), stationary=s, moving=mv,
                     tile_position=(32, 0), tile_size=(32, 128)))
    with pytest.raises(MatmulLimitError, match="multiple of 32"):
        m.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=tile(m, (32, 64), kind="psum"), stationary=s, moving=mv,
                         tile_position=(16, 0), tile_size=(32, 128)))
    m1 = mk("trn1")
    with pytest.raises(MatmulLimitError, match=r"\[64, 128\]"):
        m1.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=tile(m1, (32, 64), kind="psum"),
                          stationary=tile(m1, (32, 32), dt.bfloat16), moving=tile(m1, (32, 64), dt.bfloat16),
                          tile_position=(0, 0), tile_size=(32, 128)))


def test_accumulate_into_uninitialised_psum_warns():
    m = mk()
    s, mv = tile(m, (32, 16), dt.bfloat16), tile(m, (32, 16), dt.bfloat16)
    fresh = m.new_onchip("psum", (16, 16), dt.float32, "acc", api="test", loc="alloc:1")
    with pytest.warns(AccumulateUninitializedWarning, match="acc"):
        m.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=fresh, stationary=s, moving=mv, accumulate=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.issue(I.MatMul(api="nisa.nc_matmul", loc=LOC, dst=fresh, stationary=s, moving=mv, accumulate=True))


def test_transpose_limits():
    m = mk()
    with pytest.raises(ShapeError) as err:
        m.issue(I.Transpose(api="nisa.nc_transpose", loc=LOC, dst=tile(m, (64, 33)), src=tile(m, (33, 64), name="x"),
                            engine=I.Engine.VECTOR))
    assert_message(err, "'x[33, 64]'", "32")
    m.issue(I.Transpose(api="nisa.nc_transpose", loc=LOC, dst=tile(m, (32, 32)), src=tile(m, (32, 32)),
                        engine=I.Engine.VECTOR))
    with pytest.raises(BufferKindError):
        m.issue(I.Transpose(api="nisa.nc_transpose", loc=LOC, dst=tile(m, (64, 128)), src=tile(m, (128, 64)),
                            engine=I.Engine.TENSOR))


def test_trn1_pe_transpose_spreads_nan_over_its_output_row():
    m = mk("trn1")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    x[1, 2] = np.nan
    src, d = tile(m, (3, 4)), tile(m, (4, 3), kind="psum")
    src.write(x)
    m.issue(I.Transpose(api="nisa.nc_transpose", loc=LOC, dst=d, src=src))
    got = d.numpy()
    assert np.isnan(got[2]).all() and np.isfinite(np.delete(got, 2, axis=0)).all()
    m2 = mk("trn2")
    s2, d2 = tile(m2, (3, 4)), tile(m2, (4, 3), kind="psum")
    s2.write(x)
    m2.issue(I.Transpose(api="nisa.nc_transpose", loc=LOC, dst=d2, src=s2))
    np.testing.assert_array_equal(d2.numpy(), x.T)           # bit-exact on NeuronCore-v3


# --- free size, rank, buffers -----------------------------------------------------------------------------

def test_free_size_limits_per_buffer():
    m = mk()
    ok = tile(m, (128, 4096), kind="psum")
    m.issue(I.TensorCopy(api="nisa.tensor_copy", loc=LOC, dst=tile(m, (128, 4096)), src=ok))
    del ok                                                          # frees all 8 PSUM banks
    too_big = m.new_onchip("psum", (128, 8192), dt.bfloat16, "big", api="t", loc="a:1", fill=0.0)
    with pytest.raises(ShapeError) as err:
        m.issue(I.TensorCopy(api="nisa.tensor_copy", loc=LOC, dst=tile(m, (128, 8192), dt.bfloat16), src=too_big))
    assert_message(err, "'big'", "8192", "4096")


def test_rank_one_operand_rejected():
    m = mk()
    t = tile(m, (128, 4), name="v")
    with pytest.raises(ShapeError) as err:
        m.issue(I.TensorCopy(api="nisa.tensor_copy", loc=LOC, dst=tile(m, (128, 1)), src=t.index((slice(None), 0))))
    assert_message(err, "Insufficient rank", "'v'")


def test_gpsimd_cannot_touch_psum():
    m = mk()
    with pytest.raises(BufferKindError) as err:
        m.issue(I.TensorTensor(api="nisa.tensor_tensor", loc=LOC, dst=tile(m, (8, 8)), data1=tile(m, (8, 8), kind="psum",
                               name="p"), data2=tile(m, (8, 8)), op="add", engine=I.Engine.GPSIMD))
    assert_message(err, "GpSimd", "'p'")
    with pytest.raises(BufferKindError):
        m.issue(I.Iota(api="nisa.iota", loc=LOC, dst=tile(m, (8, 8), kind="psum"), pattern=((1, 8),)))


def test_tensor_tensor_inputs_not_both_in_psum():
    m = mk()
    with pytest.raises(BufferKindError, match="both be in PSUM"):
        m.issue(I.TensorTensor(api="nisa.tensor_tensor", loc=LOC, dst=tile(m, (8, 8)), data1=tile(m, (8, 8), kind="psum"),
                               data2=tile(m, (8, 8), kind="psum"), op="add"))


def test_dma_copy_cannot_read_psum():
    m = mk()
    with pytest.raises(BufferKindError) as err:
        m.issue(I.DmaCopy(api="nisa.dma_copy", loc=LOC, dst=tile(m, (8, 8)), src=tile(m, (8, 8), kind="psum", name="ps")))
    assert_message(err, "'src'", "hbm|sbuf", "psum")


def test_static_out_of_bounds_indexing():
    m = mk()
    t = tile(m, (128, 64), name="x")
    with pytest.raises(OutOfBoundsError, match=r"`x` on dimension 1.*\[0, 64\].*64"):
        t.index((slice(None), slice(0, 65)))


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_dynamic_out_of_bounds_indirect_dma(mode):
    m = mk()
    h = m.hbm_tensor(np.arange(40, dtype=np.float32).reshape(10, 4), "table")
    idx = tile(m, (3, 1), dt.int32, name="idx")
    idx.write(np.array([[1], [10], [2]]))
    d = tile(m, (3, 4), fill=-1.0)
    ins = I.DmaIndirect(api="nisa.dma_copy", loc=LOC, dst=d, src=I.IndirectAccess(h, ((4, 3), (1, 4)), 0, idx, 0),
                        oob_mode=mode)
    if mode == "error":
        with pytest.raises(OutOfBoundsError) as err:
            m.issue(ins)
        assert_message(err, "10", "'table'", "40 elements", "oob_mode=error")
        return
    m.issue(ins)
    np.testing.assert_array_equal(d.numpy(), [[4, 5, 6, 7], [-1, -1, -1, -1], [8, 9, 10, 11]])


# --- engine-specific dtype / operator rules ---------------------------------------------------------------

def test_bitvec_ops_need_integer_tiles():
    m = mk()
    with pytest.raises(DtypeError, match="bitvec.*'data1'"):
        m.issue(I.TensorTensor(api="nisa.tensor_tensor", loc=LOC, dst=tile(m, (8, 8), dt.int32),
                               data1=tile(m, (8, 8), name="data1"), data2=tile(m, (8, 8), dt.int32), op="bitwise_and"))
    with pytest.raises(NkiValidationError, match="same type"):
        m.issue(I.TensorScalar(api="nisa.tensor_scalar", loc=LOC, dst=tile(m, (8, 8), dt.int32),
                               data=tile(m, (8, 8), dt.int32), op0="bitwise_and", operand0=3, op1="add", operand1=1))


def test_scalar_engine_tensor_scalar_combinations_on_trn2():
    m = mk("trn2")
    data = tile(m, (8, 8))
    m.issue(I.TensorScalar(api="nisa.tensor_scalar", loc=LOC, dst=tile(m, (8, 8)), data=data, op0="multiply",
                           operand0=2.0, op1="add", operand1=1.0, engine=I.Engine.SCALAR))
    with pytest.raises(NkiValidationError, match="Scalar Engine"):
        m.issue(I.TensorScalar(api="nisa.tensor_scalar", loc=LOC, dst=tile(m, (8, 8)), data=data, op0="subtract",
                               operand0=2.0, engine=I.Engine.SCALAR))
    m3 = mk("trn3")
    m3.issue(I.TensorScalar(api="nisa.tensor_scalar", loc=LOC, dst=tile(m3, (8, 8)), data=tile(m3, (8, 8)),
                            op0="subtract", operand0=2.0, engine=I.Engine.SCALAR))


def test_tensor_reduce_axes_must_be_trailing():
    m = mk()
    with pytest.raises(ShapeError, match="last contiguous"):
        m.issue(I.TensorReduce(api="nisa.tensor_reduce", loc=LOC, dst=tile(m, (8, 4)), data=tile(m, (8, 3, 4)),
                               op="add", axes=(1,)))
    with pytest.raises(ShapeError, match="partition"):
        m.issue(I.TensorReduce(api="nisa.tensor_reduce", loc=LOC, dst=tile(m, (1, 4)), data=tile(m, (8, 4)),
                               op="add", axes=(0,)))


def test_memset_value_must_match_integer_dst():
    m = mk()
    with pytest.raises(DtypeError, match="1.5"):
        m.issue(I.Memset(api="nisa.memset", loc=LOC, dst=tile(m, (8, 8), dt.int32), value=1.5))
    m.issue(I.Memset(api="nisa.memset", loc=LOC, dst=tile(m, (8, 8), dt.int32), value=7))


def test_activation_scalar_bias_needs_trn2_and_prelu_is_accepted():
    m1 = mk("trn1")
    with pytest.raises(NkiValidationError, match="scalar bias"):
        m1.issue(I.Activation(api="nisa.activation", loc=LOC, dst=tile(m1, (8, 8)), func="exp", data=tile(m1, (8, 8)),
                              bias=1.0))
    m = mk("trn2")
    x = tile(m, (8, 8))
    x.write(np.linspace(-2, 2, 64).reshape(8, 8))
    d = tile(m, (8, 8))
    m.issue(I.Activation(api="nisa.activation", loc=LOC, dst=d, func="prelu", data=x, alpha=0.1))
    v = x.numpy()
    np.testing.assert_allclose(d.numpy(), np.where(v >= 0, v, 0.1 * v), rtol=1e-6)


def test_tensor_copy_on_scalar_engine_needs_trn2():
    m1 = mk("trn1")
    with pytest.raises(NkiValidationError, match="Scalar Engine"):
        m1.issue(I.TensorCopy(api="nisa.tensor_copy", loc=LOC, dst=tile(m1, (8, 8)), src=tile(m1, (8, 8)),
                              engine=I.Engine.SCALAR))


@pytest.mark.parametrize("make,target", [
    (lambda m: I.RangeSelect(api="nisa.range_select", loc=LOC, dst=tile(m, (8, 8)), on_true=tile(m, (8, 8)),
                             comp_op0="less", comp_op1="less", bound0=tile(m, (8, 1)), bound1=tile(m, (8, 1))), "trn1"),
    (lambda m: I.Exponential(api="nisa.exponential", loc=LOC, dst=tile(m, (8, 8)), src=tile(m, (8, 8))), "trn2"),
    (lambda m: I.Rand(api="nisa.rand2", loc=LOC, dst=tile(m, (8, 8)), mode="uniform"), "trn2"),
    (lambda m: I.NonzeroWithCount(api="nisa.nonzero_with_count", loc=LOC, dst=tile(m, (8, 9), dt.int32),
                                  src=tile(m, (8, 8), dt.int32)), "trn1"),
])
def test_version_gated_instructions(make, target):
    m = mk(target)
    with pytest.raises(NkiValidationError, match="or newer; target is " + target):
        m.issue(make(m))


def test_bn_stats_free_size_limit_and_aggr_triples():
    m = mk()
    with pytest.raises(ShapeError) as err:
        m.issue(I.BnStats(api="nisa.bn_stats", loc=LOC, dst=tile(m, (8, 6)), data=tile(m, (8, 513), name="x")))
    assert_message(err, "'x'", "513", "512")
    with pytest.raises(ShapeError, match="multiple of 3"):
        m.issue(I.BnAggr(api="nisa.bn_aggr", loc=LOC, dst=tile(m, (8, 2)), data=tile(m, (8, 7))))


def test_max8_input_size_and_range_select_fill_value():
    m = mk()
    with pytest.raises(ShapeError, match="between 8 and 16384"):
        m.issue(I.Max8(api="nisa.max8", loc=LOC, dst=tile(m, (8, 8)), src=tile(m, (8, 7))))
    with pytest.raises(NkiValidationError, match="FP32_MIN"):
        m.issue(I.RangeSelect(api="nisa.range_select", loc=LOC, dst=tile(m, (8, 8)), on_true=tile(m, (8, 8)),
                              comp_op0="less", comp_op1="less", bound0=tile(m, (8, 1)), bound1=tile(m, (8, 1)),
                              on_false_value=0.0))


def test_predicate_and_dropout_dtype_rules():
    m = mk()
    with pytest.raises(DtypeError, match="predicate"):
        m.issue(I.TensorCopyPredicated(api="nisa.tensor_copy_predicated", loc=LOC, dst=tile(m, (8, 8)),
                                       src=tile(m, (8, 8)), predicate=tile(m, (8, 8))))
    with pytest.raises(DtypeError, match="dtypes must match"):
        m.issue(I.Dropout(api="nisa.dropout", loc=LOC, dst=tile(m, (8, 8), dt.bfloat16), data=tile(m, (8, 8)),
                          prob=0.5))


def test_nc_stream_shuffle_start_partition_rule():
    m = mk()
    base = tile(m, (128, 4))
    src = base.index((slice(32, 64),))          # 32 partitions at 32: legal on its own
    m.issue(I.NcStreamShuffle(api="nisa.nc_stream_shuffle", loc=LOC, dst=tile(m, (32, 4)), src=src,
                              shuffle_mask=tuple(range(32))))
    with pytest.raises(NkiValidationError, match="64 active partitions"):
        m.issue(I.NcStreamShuffle(api="nisa.nc_stream_shuffle", loc=LOC, dst=tile(m, (64, 4)), src=src,
                                  shuffle_mask=tuple([0] * 32)))


def test_hwdge_rules():
    m1 = mk("trn1")
    h = m1.hbm_tensor(np.ones((8, 8), np.float32), "h")
    with pytest.raises(NkiValidationError, match="hwdge.*trn1"):
        m1.issue(I.DmaCopy(api="nisa.dma_copy", loc=LOC, dst=tile(m1, (8, 8)), src=h, raw_bytes=True))
    m = mk("trn2")
    h2 = m.hbm_tensor(np.ones((8, 8), np.float32), "h")
    with pytest.raises(DtypeError, match="raw bytes"):
        m.issue(I.DmaCopy(api="nisa.dma_copy", loc=LOC, dst=tile(m, (8, 8), dt.bfloat16), src=h2, raw_bytes=True))
    m.issue(I.DmaCopy(api="nisa.dma_copy", loc=LOC, dst=tile(m, (8, 8)), src=h2, raw_bytes=True))
