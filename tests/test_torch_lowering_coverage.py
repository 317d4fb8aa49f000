"""Every registered lowering runs in a test: one tiny function per aten op, compiled through
trnlab.torch.compile and compared with eager PyTorch (the oracle), plus a check that the set of
registered ops equals the set covered here (a new lowering without a case fails)."""
import operator

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
aten = torch.ops.aten

import trnlab.torch as tt  # noqa: E402
from trnlab.core import compiler  # noqa: E402
from trnlab.torch.lowering import LOWERINGS  # noqa: E402

g = torch.Generator().manual_seed(0)


def rnd(*shape):
    return torch.randn(*shape, generator=g)


def ints(*shape, lo=-20, hi=20, dtype=torch.int32):
    return torch.randint(lo, hi, shape, generator=g, dtype=dtype)


class Fn(torch.nn.Module):
    def __init__(self, fn, params):
        super().__init__()
        self.fn = fn
        for k, v in params.items():
            setattr(self, k, torch.nn.Parameter(v, requires_grad=False))

    def forward(self, *xs):
        return self.fn(self, *xs)


def _data_dependent(s, x):
    n = (x > 0).sum().item()
    torch._check(n <= x.numel())
    return x + 1


def _sdpa3(s, q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


# op -> (function of (module, *inputs), inputs, parameters, fallback): tiny shapes, each op on the device
CASES = {
    aten.view: (lambda s, x: x.view(8, 4) * 2, (rnd(4, 8),)),
    aten.view_copy: (lambda s, x: aten.view_copy(x, [16, 2]) + 1, (rnd(4, 8),)),
    aten.permute: (lambda s, x: x.permute(2, 0, 1) + 1, (rnd(2, 3, 4),)),
    aten.permute_copy: (lambda s, x: aten.permute_copy(x, [1, 0]) + 1, (rnd(3, 5),)),
    aten.expand: (lambda s, x: x.expand(4, 6) + 1, (rnd(4, 1),)),
    aten.unsqueeze: (lambda s, x: x.unsqueeze(1) * x.unsqueeze(0), (rnd(5),)),
    aten.squeeze: (lambda s, x: x.squeeze(1) + 1, (rnd(4, 1, 3),)),
    aten.alias: (lambda s, x: aten.alias(x) + 1, (rnd(4, 3),)),
    aten.slice: (lambda s, x: x[1:3, ::2] + 1, (rnd(4, 6),)),
    aten.select: (lambda s, x: x[:, 2] + 1, (rnd(4, 6),)),
    aten.split: (lambda s, x: [t + 1 for t in x.split(2, dim=1)], (rnd(3, 5),)),
    aten.split_with_sizes: (lambda s, x: [t + 1 for t in x.split([1, 4], dim=1)], (rnd(3, 5),)),
    aten.unbind: (lambda s, x: [t + 1 for t in x.unbind(0)], (rnd(3, 5),)),
    operator.getitem: (lambda s, x: x.max(dim=1)[0] + 1, (rnd(3, 6),)),
    aten.clone: (lambda s, x: x.clone(), (rnd(3, 4),)),
    aten._to_copy: (lambda s, x: x.to(torch.bfloat16), (rnd(3, 4),)),
    aten.type_as: (lambda s, x, y: x.type_as(y) + y, (ints(3, 4), rnd(3, 4))),
    aten.copy: (lambda s, x, y: aten.copy(x, y), (rnd(3, 4), rnd(4))),
    aten.cat: (lambda s, x, y: torch.cat([x, y], dim=1), (rnd(3, 2), rnd(3, 5))),
    aten.stack: (lambda s, x, y: torch.stack([x, y], dim=1), (rnd(3, 2), rnd(3, 2))),
    aten.embedding: (lambda s, i: F.embedding(i, s.w), (torch.tensor([[3, 0, 7], [1, 1, 9]]),), {"w": rnd(10, 4)}),
    aten.index_select: (lambda s, x, i, j: (x.index_select(1, i), x.index_select(0, j)),
                        (rnd(3, 6), torch.tensor([5, 0, 2]), torch.tensor(2))),         # 1-D and 0-d index
    aten.index_copy: (lambda s, x, i, y: x.index_copy(0, i, y), (rnd(5, 3), torch.tensor([4, 1]), rnd(2, 3))),
    aten.native_dropout: (lambda s, x: aten.native_dropout(x, 0.3, False)[0] + 1, (rnd(3, 4),)),
    # ops of training graphs (trnlab.torch.lowering_train)
    aten.detach: (lambda s, x: aten.detach(x) + 1, (rnd(3, 4),)),
    aten.full_like: (lambda s, x: torch.full_like(x, 3.0) + x, (rnd(3, 4),)),
    aten.slice_scatter: (lambda s, x, y: torch.slice_scatter(x, y, dim=1, start=1, end=5, step=2),
                         (rnd(3, 6), rnd(3, 2))),
    aten.constant_pad_nd: (lambda s, x: F.pad(x, (1, 2, 0, 1), value=-1.5), (rnd(3, 4),)),
    aten.index_put: (lambda s, x, i, v: torch.index_put(x, (i,), v, accumulate=True),
                     (rnd(5, 4), torch.tensor([1, 3, 1]), rnd(3, 4))),                   # a repeated row adds
    aten.gather: (lambda s, x, i: torch.gather(x, 1, i), (rnd(3, 5), torch.tensor([[0, 4], [2, 2], [1, 0]]))),
    aten.embedding_dense_backward: (lambda s, g, i: aten.embedding_dense_backward(g, i, 10, 1, False),
                                    (rnd(2, 3, 4), torch.tensor([[3, 1, 3], [1, 9, 0]]))),   # padding row 1
    aten.nll_loss_forward: (lambda s, x, t: aten.nll_loss_forward(F.log_softmax(x, -1), t, None, 1, -100),
                            (rnd(4, 7), torch.tensor([2, -100, 6, 2]))),
    aten.nll_loss_backward: (lambda s, g, x, t, w: aten.nll_loss_backward(g, x, t, None, 1, -100, w),
                             (torch.tensor(1.5), rnd(4, 7), torch.tensor([2, -100, 6, 2]), torch.tensor(3.0))),
    aten.any: (lambda s, x: torch.any(x > 0.5, dim=1), (rnd(3, 4),)),

    aten.linear: (lambda s, x: F.linear(x, s.w, s.b), (rnd(2, 3, 8),), {"w": rnd(5, 8), "b": rnd(5)}),
    aten.mm: (lambda s, a, b: torch.mm(a, b), (rnd(3, 8), rnd(8, 5))),
    aten.addmm: (lambda s, c, a, b: torch.addmm(c, a, b), (rnd(5), rnd(3, 8), rnd(8, 5))),
    aten.bmm: (lambda s, a, b: torch.bmm(a, b), (rnd(2, 3, 8), rnd(2, 8, 5))),
    aten.matmul: (lambda s, a, b: a @ b, (rnd(2, 2, 3, 8), rnd(2, 2, 8, 5))),
    aten.scaled_dot_product_attention: (_sdpa3, (rnd(2, 6, 8), rnd(2, 6, 8), rnd(2, 6, 8))),
    aten._scaled_dot_product_flash_attention_for_cpu: (
        lambda s, q, k, v: aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True),
        (rnd(1, 2, 6, 8), rnd(1, 2, 6, 8), rnd(1, 2, 6, 8))),
    aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        lambda s, d, q, k, v: aten._scaled_dot_product_flash_attention_for_cpu_backward(
            d, q, k, v, *aten._scaled_dot_product_flash_attention_for_cpu(q, k, v), 0.0, False),
        (rnd(1, 2, 6, 8), rnd(1, 2, 6, 8), rnd(1, 2, 6, 8), rnd(1, 2, 6, 8))),
    aten._softmax: (lambda s, x: aten._softmax(x, 1, False), (rnd(3, 7),)),
    aten.softmax: (lambda s, x: F.softmax(x, dim=0), (rnd(3, 7),)),
    aten._log_softmax: (lambda s, x: aten._log_softmax(x, 1, False), (rnd(3, 7),)),
    aten.log_softmax: (lambda s, x: F.log_softmax(x, dim=-1), (rnd(3, 7),)),
    aten.native_layer_norm: (lambda s, x: aten.native_layer_norm(x, [6], s.w, s.b, 1e-5)[0],
                             (rnd(3, 6),), {"w": rnd(6), "b": rnd(6)}),
    aten.layer_norm: (lambda s, x: F.layer_norm(x, (6,), s.w, s.b), (rnd(3, 6),), {"w": rnd(6), "b": rnd(6)}),
    aten.rms_norm: (lambda s, x: F.rms_norm(x, (6,), s.w, 1e-6), (rnd(3, 6),), {"w": rnd(6)}),
    aten.sum: (lambda s, x: x.sum(1), (rnd(3, 6),)),
    aten.mean: (lambda s, x: x.mean(0, keepdim=True), (rnd(3, 6),)),
    aten.amax: (lambda s, x: x.amax(-1), (rnd(3, 6),)),
    aten.amin: (lambda s, x: x.amin(0), (rnd(3, 6),)),
    aten.argmax: (lambda s, x: x.argmax(-1), (rnd(3, 6),)),
    aten.argmin: (lambda s, x: x.argmin(0), (rnd(3, 6),)),
    aten.max: (lambda s, x: x.max(dim=-1), (rnd(3, 6),)),
    aten.min: (lambda s, x: x.min(), (rnd(3, 6),)),
    aten.add: (lambda s, x, y: x + 2 * y, (rnd(3, 4), rnd(4))),
    aten.sub: (lambda s, x, y: x - y, (rnd(3, 4), rnd(3, 1))),
    aten.mul: (lambda s, x, y: x * y, (rnd(3, 4), rnd(3, 4))),
    aten.div: (lambda s, x, y: x / (y.abs() + 1), (rnd(3, 4), rnd(3, 4))),
    aten.maximum: (lambda s, x, y: torch.maximum(x, y), (rnd(3, 4), rnd(3, 4))),
    aten.minimum: (lambda s, x, y: torch.minimum(x, y), (rnd(3, 4), rnd(3, 4))),
    aten.eq: (lambda s, x, y: x == y, (ints(3, 4, lo=0, hi=3), ints(3, 4, lo=0, hi=3))),
    aten.ne: (lambda s, x, y: x != y, (ints(3, 4, lo=0, hi=3), ints(3, 4, lo=0, hi=3))),
    aten.lt: (lambda s, x, y: x < y, (rnd(3, 4), rnd(3, 4))),
    aten.le: (lambda s, x: x <= 0.25, (rnd(3, 4),)),
    aten.gt: (lambda s, x, y: x > y, (rnd(3, 4), rnd(3, 4))),
    aten.ge: (lambda s, x: x >= 0, (rnd(3, 4),)),
    aten.logical_and: (lambda s, x, y: torch.logical_and(x, y), (ints(3, 4, lo=0, hi=2), ints(3, 4, lo=0, hi=2))),
    aten.logical_or: (lambda s, x, y: torch.logical_or(x > 0, y > 0), (rnd(3, 4), rnd(3, 4))),
    aten.logical_xor: (lambda s, x, y: torch.logical_xor(x > 0, y > 0), (rnd(3, 4), rnd(3, 4))),
    aten.logical_not: (lambda s, x: torch.logical_not(x > 0), (rnd(3, 4),)),
    aten.bitwise_and: (lambda s, x, y: x & y, (torch.tensor([6, 12, 5, 3], dtype=torch.int32),
                                                torch.tensor([3, 10, 2, 1], dtype=torch.int32))),
    aten.bitwise_or: (lambda s, x, y: (x | y, (x > 0) | (y > 0)), (ints(3, 4), ints(3, 4))),
    aten.bitwise_xor: (lambda s, x: x ^ 5, (ints(3, 4),)),
    aten.bitwise_not: (lambda s, x: (~x, ~(x > 0)), (ints(3, 4),)),
    aten.relu: (lambda s, x: F.relu(x), (rnd(3, 4),)),
    aten.sigmoid: (lambda s, x: torch.sigmoid(x), (rnd(3, 4),)),
    aten.tanh: (lambda s, x: torch.tanh(x), (rnd(3, 4),)),
    aten.silu: (lambda s, x: F.silu(x), (rnd(3, 4),)),
    aten.exp: (lambda s, x: torch.exp(x), (rnd(3, 4),)),
    aten.log: (lambda s, x: torch.log(x.abs() + 0.1), (rnd(3, 4),)),
    aten.sqrt: (lambda s, x: torch.sqrt(x.abs()), (rnd(3, 4),)),
    aten.rsqrt: (lambda s, x: torch.rsqrt(x.abs() + 0.1), (rnd(3, 4),)),
    aten.neg: (lambda s, x: -x, (rnd(3, 4),)),
    aten.abs: (lambda s, x: x.abs(), (rnd(3, 4),)),
    aten.sin: (lambda s, x: torch.sin(x), (rnd(3, 4),)),
    aten.cos: (lambda s, x: torch.cos(x), (rnd(3, 4),)),
    aten.erf: (lambda s, x: torch.erf(x), (rnd(3, 4),)),
    aten.reciprocal: (lambda s, x: torch.reciprocal(x.abs() + 0.5), (rnd(3, 4),)),
    aten.sign: (lambda s, x: torch.sign(x), (rnd(3, 4),)),
    aten.floor: (lambda s, x: torch.floor(x * 3), (rnd(3, 4),)),
    aten.ceil: (lambda s, x: torch.ceil(x * 3), (rnd(3, 4),)),
    aten.trunc: (lambda s, x: torch.trunc(x * 3), (rnd(3, 4),)),
    aten.square: (lambda s, x: torch.square(x), (rnd(3, 4),)),
    aten.softplus: (lambda s, x: F.softplus(x), (rnd(3, 4),)),
    aten.mish: (lambda s, x: F.mish(x), (rnd(3, 4),)),
    aten.gelu: (lambda s, x: F.gelu(x, approximate="tanh"), (rnd(3, 4),)),
    aten.pow: (lambda s, x: x.abs().pow(1.5), (rnd(3, 4),)),
    aten.clamp: (lambda s, x: x.clamp(-0.5, 0.5), (rnd(3, 4),)),
    aten.clamp_min: (lambda s, x: x.clamp_min(0.1), (rnd(3, 4),)),
    aten.clamp_max: (lambda s, x: x.clamp_max(0.1), (rnd(3, 4),)),
    aten.hardtanh: (lambda s, x: F.hardtanh(x * 2), (rnd(3, 4),)),
    aten.where: (lambda s, x, y: torch.where(x > y, x, 0.5), (rnd(3, 4), rnd(3, 4))),
    aten.masked_fill: (lambda s, x: x.masked_fill(x > 0.5, -1.0), (rnd(3, 4),)),
    aten._assert_tensor_metadata: (lambda s, x: x.to(torch.float32) + 1, (ints(3, 4),)),
    aten._assert_scalar: (_data_dependent, (rnd(3, 4),), {}, "cpu"),      # .item() runs on the host
    # trnlab.plan's sequence-parallel stand-ins (trnlab.torch.sequence_parallel): zero-time collectives
    torch.ops.trnlab.sp_gather.default: (lambda s, x: torch.ops.trnlab.sp_gather(x, 3) + 1, (rnd(2, 4, 5),)),
    torch.ops.trnlab.sp_scatter.default: (lambda s, x: torch.ops.trnlab.sp_scatter(x + 1, 3), (rnd(2, 6, 5),)),
}


def _name(op):
    return getattr(op, "__name__", str(op))


def _close(out, ref):
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    refs = list(ref) if isinstance(ref, (list, tuple)) else [ref]
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        assert o.shape == r.shape and o.dtype == r.dtype, (o.shape, o.dtype, r.shape, r.dtype)
        if not r.is_floating_point():
            assert torch.equal(o, r), (o, r)
            continue
        tol = 1e-5 if r.dtype == torch.float32 else 1e-2           # bf16/fp16 outputs: rounding of the result
        err = float((o.float() - r.float()).abs().max()) if r.numel() else 0.0
        assert err <= tol * max(1.0, float(r.float().abs().max())), err


@pytest.mark.parametrize("op", list(CASES), ids=_name)
def test_lowering_matches_eager(op):
    case = tuple(CASES[op])
    fn, inputs, params, fallback = case + ({}, None)[len(case) - 2:]
    model = Fn(fn, params)
    with compiler.using(compiler.CompilerModel(elementwise_fusion=False)):     # each op's own lowering
        compiled = tt.compile(model, inputs, dtype=torch.float32, check=False, fallback=fallback)
    program = compiled.program
    ran = [n for n in program.device_nodes() if n not in program.fallback_nodes and n not in program.fused]
    assert any(LOWERINGS.get(n.target, LOWERINGS.get(getattr(n.target, "overloadpacket", None)))
               is LOWERINGS[op] for n in ran), f"{_name(op)} not lowered: {[str(n.target) for n in ran]}"
    with torch.no_grad():
        ref = model(*inputs)
    _close(compiled.last_run.outputs, ref)


def test_every_registered_lowering_has_a_case():
    # Collective nodes exist only in graphs trnlab.torch.shard rewrote for one rank; their values come
    # from the ranks together (shard.run_ranks), checked against eager in tests/test_torch_shard.py.
    from trnlab.torch.shard import COLLECTIVES
    assert set(LOWERINGS) - set(COLLECTIVES) == set(CASES)
