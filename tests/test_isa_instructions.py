"""Tests of trnlab.isa.instructions."""
import numpy as np
import pytest

from trnlab.core.machine import Machine


def _tile(m, shape, loc, name="t"):
    return m.new_onchip("sbuf", shape, np.float32, name, api="test", loc=loc)


def test_tensor_scalar_reduce_idle_reduces_without_touching_the_accumulators():
    """reduce_cmd=idle (the NKI 2.30/2.31 default of tensor_scalar_reduce): reduce_res gets this
    instruction's reduction, the Vector accumulator registers keep their value."""
    from trnlab.isa import TensorScalar
    m = Machine("trn2")
    data = _tile(m, (4, 8), "k.py:1", "data")
    x = np.arange(32, dtype=np.float32).reshape(4, 8)
    data.write(x)
    dst, res = _tile(m, (4, 8), "k.py:2", "dst"), _tile(m, (4, 1), "k.py:3", "res")
    m.vector_regs[:] = 7.0
    m.issue(TensorScalar(api="nisa.tensor_scalar_reduce", loc="k.py:4", dst=dst, data=data, op0="multiply",
                         operand0=2.0, accum_op="add", accum_dst=res, reduce_cmd="idle"))
    np.testing.assert_array_equal(res.array[:, 0], (2 * x).sum(axis=1))     # exact: small integers
    np.testing.assert_array_equal(m.vector_regs, 7.0)


def test_memset_rejects_a_value_the_integer_dst_cannot_hold():
    """memset(int8 tile, 300) used to store 300 wrapped to 44 silently."""
    from trnlab.errors import DtypeError
    from trnlab.isa import Memset
    m = Machine("trn2")
    t = m.new_onchip("sbuf", (4, 8), np.int8, "small", api="test", loc="k.py:1")
    with pytest.raises(DtypeError, match=r"nisa\.memset.*300.*8 bits.*'small'.*\[-128, 255\].*At k\.py:2"):
        m.issue(Memset(api="nisa.memset", loc="k.py:2", dst=t, value=300))
    m.issue(Memset(api="nisa.memset", loc="k.py:3", dst=t, value=-128))
    assert (t.array == -128).all()
    u = m.new_onchip("sbuf", (4, 8), np.uint32, "u", api="test", loc="k.py:4")
    m.issue(Memset(api="nisa.memset", loc="k.py:5", dst=u, value=-1))      # all-ones bit pattern stays legal
    assert (u.array == 0xFFFFFFFF).all()


def test_validation_remembered_per_layout_never_hides_a_failing_one():
    """Instructions of one class and shapes are checked once per distinct operand layout
    (isa.base.validate_once); the PSUM byte range stays part of it: a [128, 512] fp32 matmul result at
    bytes [1024, 3072) crosses the 2 KiB bank boundary and fails after the same shapes at [0, 2048) passed."""
    from trnlab.errors import MatmulLimitError
    from trnlab.isa import MatMul
    m = Machine("trn1", numerics=False)
    s = m.new_onchip("sbuf", (128, 128), np.float32, "s", api="test", loc="k.py:1")
    mv = m.new_onchip("sbuf", (128, 512), np.float32, "mv", api="test", loc="k.py:2")
    acc = m.new_onchip("psum", (128, 1024), np.float32, "acc", api="test", loc="k.py:3")
    for _ in range(2):
        m.issue(MatMul(api="nisa.nc_matmul", loc="k.py:4", dst=acc.index((slice(None), slice(0, 512))),
                       stationary=s, moving=mv))
        with pytest.raises(MatmulLimitError, match=r"crosses a 2048 B PSUM bank boundary.*At k\.py:5"):
            m.issue(MatMul(api="nisa.nc_matmul", loc="k.py:5", dst=acc.index((slice(None), slice(256, 768))),
                           stationary=s, moving=mv))
    with pytest.raises(MatmulLimitError, match=r"crosses"):        # a layout that failed is never remembered
        MatMul(api="nisa.nc_matmul", loc="k.py:6", dst=acc.index((slice(None), slice(256, 768))),
               stationary=s, moving=mv).validate(m.chip)


def test_constructor_functions_build_the_same_instruction_as_the_class():
    """isa.base.maker: every class fast_init gave a constructor function builds an object of exactly that
    class holding exactly the given field values (the front end builds its hot instructions with them)."""
    import dataclasses

    from trnlab.isa import base
    from trnlab.isa.instructions import MatMul
    assert base._makers and base.maker(MatMul) is not MatMul
    for cls, make in base._makers.items():
        names = [f.name for f in dataclasses.fields(cls)]
        values = {n: object() for n in names}
        positional = not any(f.kw_only for f in dataclasses.fields(cls))
        made = make(*values.values()) if positional else make(**values)
        assert type(made) is cls
        assert all(getattr(made, n) is values[n] for n in names), cls


def test_validation_key_tells_attribute_types_apart():
    """validate_once's key of the same values with another attribute type (accumulate=1 after accumulate=True:
    equal in Python) is another key: a pass is never reused for a differently typed instruction."""
    from trnlab.isa import MatMul, base
    m = Machine("trn2")
    st, mv = _tile(m, (128, 128), "k.py:1", "st"), _tile(m, (128, 512), "k.py:2", "mv")
    dst = m.new_onchip("psum", (128, 512), np.float32, "acc", api="test", loc="k.py:3")

    def key(accumulate):
        return base._facts(MatMul(api="nisa.nc_matmul", loc="k.py:4", dst=dst, stationary=st, moving=mv,
                                  accumulate=accumulate))
    first = key(True)
    assert key(True) == first and key(1) != first and key(True) == first
