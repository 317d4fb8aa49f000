"""The lowering registry's dtype policy and argument predicates (trnlab.torch.lowering docstring):
ops the device cannot compute exactly are refused before anything runs, all in one
UnsupportedOperatorError with the reason, and run on the host under fallback='cpu'. Eager PyTorch
is the oracle for every result."""
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
aten = torch.ops.aten

import trnlab.torch as tt  # noqa: E402
from trnlab.errors import OptionError, DeviceValueError, LoweringError, UnsupportedOperatorError  # noqa: E402
from trnlab.torch import lowering  # noqa: E402


class Fn(torch.nn.Module):
    def __init__(self, fn, **buffers):
        super().__init__()
        self.fn = fn
        for k, v in buffers.items():
            self.register_buffer(k, v)

    def forward(self, *xs):
        return self.fn(self, *xs)


def compiled_and_eager(fn, *inputs, fallback=None, **buffers):
    model = Fn(fn, **buffers)
    compiled = tt.compile(model, inputs, dtype=torch.float32, check=False, fallback=fallback)
    with torch.no_grad():
        return compiled, model(*inputs)


def refused(fn, *inputs, **buffers):
    with pytest.raises(UnsupportedOperatorError) as info:
        tt.compile(Fn(fn, **buffers), inputs, dtype=torch.float32, check=False)
    return info.value


# --- bitwise ops are bitwise -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.uint8])
def test_bitwise_ops_act_on_the_bits(dtype):
    a = torch.tensor([6, 12, 5, 3, 0, 255], dtype=dtype)
    b = torch.tensor([3, 10, 2, 1, 7, 15], dtype=dtype)
    compiled, ref = compiled_and_eager(lambda s, a, b: (a & b, a | b, a ^ b, ~a, a & 6), a, b)
    for o, r in zip(compiled.last_run.outputs, ref):
        assert o.dtype == r.dtype and torch.equal(o, r), (o, r)


def test_bitwise_on_bools():
    a, b = torch.tensor([True, True, False, False]), torch.tensor([True, False, True, False])
    compiled, ref = compiled_and_eager(lambda s, a, b: (a & b, a | b, a ^ b, ~a), a, b)
    for o, r in zip(compiled.last_run.outputs, ref):
        assert torch.equal(o, r), (o, r)


# --- int64 and float64 -------------------------------------------------------------------------------
def test_int64_arithmetic_is_refused_with_the_reason_and_exact_on_the_host():
    x = torch.tensor([2**40 + 5, 2**31 - 1, -7])
    err = refused(lambda s, x: x + 1, x)
    assert "aten.add.Tensor" in str(err) and "int64" in str(err) and "fallback='cpu'" in str(err)
    compiled, ref = compiled_and_eager(lambda s, x: x + 1, x, fallback="cpu")
    assert torch.equal(compiled.last_run.outputs, ref)        # 2**40 + 6 and 2**31: no wrap, no narrowing
    assert [f["op"] for f in compiled.report.fallbacks] == ["aten.add.Tensor"]


def test_int64_index_values_beyond_int32_are_a_typed_error_when_placed():
    ids = torch.tensor([[1, 2**40 + 5]])
    with pytest.raises(DeviceValueError) as info:
        tt.compile(Fn(lambda s, i: i[:, :1].clone()), (ids,), dtype=torch.float32, check=False)
    msg = str(info.value)
    assert "int64" in msg and str(2**40 + 5) in msg and "int32" in msg


def test_int64_token_ids_that_fit_still_run_on_the_device():
    w = torch.randn(50, 8)
    ids = torch.tensor([[3, 49, 0]])
    compiled, ref = compiled_and_eager(lambda s, i: F.embedding(i, s.w), ids, w=w)
    assert torch.equal(compiled.last_run.outputs, ref)
    assert all(r.where == "device" for r in compiled.report.ops)


def test_float64_ops_are_refused_all_at_once_and_run_on_the_host():
    x = torch.tensor([1.0 + 2**-40, 3.0])
    def fn(s, x):
        return (x.double() * s.b + 1).float() + x
    b = torch.tensor([1.0 + 2**-45, 2.0], dtype=torch.float64)
    err = refused(fn, x, b=b)
    msg = str(err)
    assert "float64 not supported on NeuronCore; use fallback='cpu' or cast" in msg
    ops = {op for op, _, _ in err.ops}
    assert {"aten._to_copy.default", "aten.mul.Tensor", "aten.add.Tensor"} <= ops
    compiled, ref = compiled_and_eager(fn, x, fallback="cpu", b=b)
    assert torch.equal(compiled.last_run.outputs, ref)


def test_float64_model_output_stays_float64():
    x = torch.tensor([1.0, 2.0])
    compiled, ref = compiled_and_eager(lambda s, x: x.double() / 3, x, fallback="cpu")
    out = compiled.last_run.outputs
    assert out.dtype == torch.float64 and torch.equal(out, ref)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex64, torch.int32])
def test_compile_dtype_the_device_cannot_compute_in_is_refused(dtype):
    with pytest.raises(OptionError) as info:         # refused as a compile option, before capture
        tt.compile(torch.nn.Linear(4, 4), (torch.randn(2, 4),), dtype=dtype)
    assert str(dtype).replace("torch.", "") in str(info.value)


# --- casts follow PyTorch ------------------------------------------------------------------------------
def test_float_to_int_casts_truncate_and_to_bool_tests_nonzero():
    x = torch.tensor([[-2.7, -0.5, 0.3, 1.5, 2.5, 3.9]])
    compiled, ref = compiled_and_eager(lambda s, x: (x.int(), x.to(torch.int16), x.bool(), x.abs().to(torch.uint8)),
                                       x)
    for o, r in zip(compiled.last_run.outputs, ref):
        assert o.dtype == r.dtype and torch.equal(o, r), (o, r)


def test_uint8_to_bool_cast_is_zero_or_one():
    x = torch.tensor([0, 2, 255, 1], dtype=torch.uint8)
    compiled, ref = compiled_and_eager(lambda s, x: (x.bool().float(), x.bool()), x)
    for o, r in zip(compiled.last_run.outputs, ref):
        assert o.dtype == r.dtype and torch.equal(o, r), (o, r)


def test_float_to_int64_cast_is_refused():
    err = refused(lambda s, x: x.long(), torch.tensor([1.5, 3e12]))
    assert "aten._to_copy.default" in str(err) and "int32" in str(err)


# --- ops that lower only some of their arguments ---------------------------------------------------------
def _partial(s, a, b, c, q2):
    return (a // b,                                            # floor division
            torch.div(a, b, rounding_mode="trunc"),
            torch.addmm(c, a, b.t(), beta=2.0),                 # beta != 1
            torch.addmm(c.unsqueeze(0).expand(3, 3), a, b.t()),   # 2-D input
            F.scaled_dot_product_attention(q2, q2, q2),         # unbatched [L, E]
            a.clamp(min=b))                                     # tensor bounds


def test_partial_lowerings_are_refused_up_front_and_rescued_by_the_host():
    args = (torch.randn(3, 4) * 5, torch.randn(3, 4).abs() + 0.5, torch.randn(3), torch.randn(5, 8))
    err = refused(_partial, *args)
    msg = str(err)
    for reason in ("rounding_mode='floor'", "rounding_mode='trunc'", "beta=2.0", "2-D input",
                   "rank-2/2/2", "tensor bounds"):
        assert reason in msg, reason
    assert "nothing was run" in msg
    compiled, ref = compiled_and_eager(_partial, *args, fallback="cpu")
    for o, r in zip(compiled.last_run.outputs, ref):
        assert torch.allclose(o, r, rtol=1e-5, atol=1e-5)


def test_integer_floor_division_is_refused_and_exact_on_the_host():
    a, b = torch.tensor([7, -7, 9], dtype=torch.int32), torch.tensor([2, 2, -4], dtype=torch.int32)
    assert "rounding_mode='floor'" in str(refused(lambda s, a, b: a // b, a, b))
    compiled, ref = compiled_and_eager(lambda s, a, b: a // b, a, b, fallback="cpu")
    assert torch.equal(compiled.last_run.outputs, ref)


def test_sdpa_dropout_is_refused():
    q = torch.randn(1, 2, 4, 8)
    err = refused(lambda s, q: F.scaled_dot_product_attention(q, q, q, dropout_p=0.5), q)
    assert "dropout_p=0.5" in str(err)


# --- lowering results are checked against the captured graph -------------------------------------------
def test_a_lowering_with_the_wrong_shape_or_dtype_is_an_internal_error(monkeypatch):
    def wrong_shape(ctx, node, x):
        out = ctx.alloc((x.size,), x.dtype)
        return lowering.ew.unary(out, x.reshape(x.size), "negative")

    monkeypatch.setitem(lowering.LOWERINGS, aten.neg, lowering.Lowering(wrong_shape))
    with pytest.raises(LoweringError) as info:
        tt.compile(Fn(lambda s, x: -x), (torch.randn(3, 4),), dtype=torch.float32, check=False)
    msg = str(info.value)
    assert "aten.neg.default" in msg and "(12,)" in msg and "(3, 4)" in msg

    def wrong_dtype(ctx, node, x):
        return lowering.ew.unary(ctx.alloc(x.shape, lowering.dt.bfloat16), x, "negative")

    monkeypatch.setitem(lowering.LOWERINGS, aten.neg, lowering.Lowering(wrong_dtype))
    with pytest.raises(LoweringError, match="bfloat16"):
        tt.compile(Fn(lambda s, x: -x), (torch.randn(3, 4),), dtype=torch.float32, check=False)


def test_arguments_a_lowering_does_not_take_are_refused_not_crashed(monkeypatch):
    reg = lowering.LOWERINGS[aten.addmm]
    monkeypatch.setitem(lowering.LOWERINGS, aten.addmm,
                        lowering.Lowering(reg.fn, reg.dtypes, lambda node, bias, a, b: None))   # takes no beta
    err = refused(lambda s, c, a, b: torch.addmm(c, a, b, beta=0.5), torch.randn(3), torch.randn(2, 4),
                  torch.randn(4, 3))
    assert "arguments not handled by the lowering" in str(err)
