"""Each aten lowering against eager PyTorch, on small random shapes (fp32 on the device: tight bounds;
bf16 where the dtype path matters)."""
import math

import pytest
import torch

import trnlab.torch as tt

F = torch.nn.functional


class Fn(torch.nn.Module):
    def __init__(self, fn, **params):
        super().__init__()
        self.fn = fn
        for k, v in params.items():
            setattr(self, k, torch.nn.Parameter(v, requires_grad=False))

    def forward(self, *xs):
        return self.fn(self, *xs)


def run(fn, *inputs, dtype=torch.float32, **params):
    """Compile fn on the simulator, return (device outputs, eager outputs)."""
    model = Fn(fn, **params)
    compiled = tt.compile(model, inputs, dtype=dtype, check=False)
    with torch.no_grad():
        ref = model(*inputs)
    return compiled.last_run.outputs, ref


def close(out, ref, tol):
    outs = out if isinstance(out, (list, tuple)) else [out]
    refs = ref if isinstance(ref, (list, tuple)) else [ref]
    for o, r in zip(outs, refs):
        assert o.shape == r.shape
        if not r.is_floating_point():
            assert torch.equal(o.to(r.dtype), r)
            continue
        scale = max(1.0, float(r.abs().max()))
        err = float((o.float() - r.float()).abs().max())
        assert err <= tol * scale, f"max abs err {err} > {tol} * {scale}"


g = torch.Generator().manual_seed(0)


def rnd(*shape):
    return torch.randn(*shape, generator=g)


FP32 = 2e-5     # fp32 engines with fp32 PSUM: only summation-order differences


@pytest.mark.parametrize("m,k,n,bias", [(5, 33, 17, True), (130, 200, 600, False), (1, 256, 64, True)])
def test_linear(m, k, n, bias):
    w, b = rnd(n, k), rnd(n)
    out, ref = run(lambda s, x: F.linear(x, s.w, s.b if bias else None), rnd(m, k), w=w, b=b)
    close(out, ref, FP32 * math.sqrt(k))


def test_linear_bf16_accumulates_in_fp32():
    # K = 1024 ones-like products: a bf16 accumulator would lose ~3 digits; PSUM keeps fp32
    w = torch.full((8, 1024), 0.01)
    out, ref = run(lambda s, x: F.linear(x, s.w), torch.ones(4, 1024), dtype=torch.bfloat16, w=w)
    close(out, ref, 1e-2)


@pytest.mark.parametrize("op", ["matmul", "bmm", "addmm"])
def test_matmuls(op):
    if op == "matmul":
        out, ref = run(lambda s, a, b: a @ b, rnd(2, 3, 20, 40), rnd(2, 3, 40, 30))
    elif op == "bmm":
        out, ref = run(lambda s, a, b: torch.bmm(a, b), rnd(3, 70, 50), rnd(3, 50, 20))
    else:
        out, ref = run(lambda s, c, a, b: torch.addmm(c, a, b), rnd(30), rnd(10, 20), rnd(20, 30))
    close(out, ref, 1e-4)


@pytest.mark.parametrize("fn", [
    lambda s, a, b: a + b, lambda s, a, b: a - b, lambda s, a, b: a * b, lambda s, a, b: a / (b.abs() + 1),
    lambda s, a, b: torch.maximum(a, b), lambda s, a, b: torch.minimum(a, b),
    lambda s, a, b: (a > b).float(), lambda s, a, b: (a <= b).float() + (a == a).float(),
    lambda s, a, b: torch.where(a > 0, a, b), lambda s, a, b: a.masked_fill(b > 0.5, -1e4),
    lambda s, a, b: 2.0 * a - 1.5, lambda s, a, b: 3.0 - a, lambda s, a, b: a.pow(3.0) + a.pow(2),
    lambda s, a, b: a.clamp(-0.5, 0.5) + torch.rsqrt(b.abs() + 1) + torch.sqrt(b.abs()),
    lambda s, a, b: torch.exp(a) + torch.log(b.abs() + 1) + torch.reciprocal(b.abs() + 1) - a.neg(),
])
@pytest.mark.parametrize("shapes", [((4, 33, 65), (4, 33, 65)), ((2, 130, 7), (7,)), ((3, 1, 300), (3, 5, 1))])
def test_elementwise_broadcast(fn, shapes):
    out, ref = run(fn, rnd(*shapes[0]), rnd(*shapes[1]))
    close(out, ref, 1e-5)


@pytest.mark.parametrize("fn", [F.relu, F.gelu, lambda x: F.gelu(x, approximate="tanh"), F.silu, torch.sigmoid,
                                torch.tanh, torch.sin, torch.cos])
def test_activations(fn):
    out, ref = run(lambda s, x: fn(x), rnd(3, 140, 96))
    close(out, ref, 1e-5)


@pytest.mark.parametrize("dim", [-1, 1])
def test_softmax(dim):
    out, ref = run(lambda s, x: (F.softmax(x, dim=dim), F.log_softmax(x, dim=dim)), rnd(2, 130, 77) * 4)
    close(out, ref, 1e-5)


def test_layer_norm_and_rms_norm():
    c = 96
    out, ref = run(lambda s, x: (F.layer_norm(x, (c,), s.w, s.b, 1e-5), F.rms_norm(x, (c,), s.w, 1e-6)),
                   rnd(3, 50, c) * 3 + 1, w=rnd(c), b=rnd(c))
    close(out, ref, 1e-5)


def test_rms_norm_as_written_by_model_code_is_fused():
    from trnlab.torch.models import RMSNorm
    norm = RMSNorm(64, 1e-5)
    torch.nn.init.normal_(norm.weight)
    x = rnd(2, 40, 64)
    compiled = tt.compile(norm, (x,), dtype=torch.float32)
    assert [o.op for o in compiled.report.ops] == ["rms_norm (fused)"]
    close(compiled.last_run.outputs, norm(x).detach(), 1e-5)


def test_embedding_gather():
    ids = torch.randint(0, 300, (3, 70), generator=g)
    out, ref = run(lambda s, i: F.embedding(i, s.w), ids, w=rnd(300, 48))
    close(out, ref, 0.0)


def test_rotary_embedding():
    from trnlab.torch.models import CONFIGS, apply_rope, rope_tables
    cos, sin = rope_tables(CONFIGS["llama-tiny"], torch.arange(33))
    out, ref = run(lambda s, q, c, si: apply_rope(q, c, si), rnd(2, 4, 33, 64), cos, sin)
    close(out, ref, 1e-5)


@pytest.mark.parametrize("case", ["causal", "mask_bool", "mask_float", "gqa_causal", "long_kv"])
def test_sdpa_flash_attention(case):
    b, h, s, d = 1, 4, 150, 32
    q = rnd(b, h, s, d)
    if case == "causal":
        fn, args = (lambda m, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)), (q, rnd(b, h, s, d),
                                                                                                rnd(b, h, s, d))
    elif case == "mask_bool":
        mask = torch.rand(s, s, generator=g) > 0.3
        mask[:, 0] = True
        fn, args = (lambda m, q, k, v, mk: F.scaled_dot_product_attention(q, k, v, attn_mask=mk)), \
            (q, rnd(b, h, s, d), rnd(b, h, s, d), mask)
    elif case == "mask_float":
        fn, args = (lambda m, q, k, v, mk: F.scaled_dot_product_attention(q, k, v, attn_mask=mk)), \
            (q, rnd(b, h, s, d), rnd(b, h, s, d), rnd(b, 1, s, s))
    elif case == "gqa_causal":
        fn, args = (lambda m, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)), \
            (q, rnd(b, 2, s, d), rnd(b, 2, s, d))
    else:
        fn, args = (lambda m, q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.3)), \
            (rnd(b, h, 5, d), rnd(b, h, 1100, d), rnd(b, h, 1100, d))
    out, ref = run(fn, *args)
    close(out, ref, 1e-5)


@pytest.mark.parametrize("fn", [lambda s, x: x.sum(-1), lambda s, x: x.mean(dim=(0, 2), keepdim=True),
                                lambda s, x: x.amax(1), lambda s, x: x.max(dim=-1), lambda s, x: x.argmax(-1),
                                lambda s, x: x.sum()])
def test_reductions(fn):
    out, ref = run(fn, rnd(3, 140, 9000))
    close(out, ref, 1e-5)


@pytest.mark.parametrize("fn, shape", [(lambda s, x: x.sum(2, keepdim=True), (1, 3, 2, 512, 128)),
                                       (lambda s, x: x.mean(dim=(1, 2)), (2, 3, 2, 256, 128)),
                                       (lambda s, x: x.amax(1), (2, 4, 768))])
def test_reductions_over_a_few_middle_dims(fn, shape):
    """GQA's backward sums dK, dV over the query heads of a KV head ([.., group, S, D] -> [.., 1, S, D]): the
    group's slices are added element-wise, each element read once (before: permuted last, `group` strided
    elements per row, 6.6 ms for a Llama-2-70B TP32 shard's 2 MiB)."""
    x = rnd(*shape)
    model = Fn(fn)
    compiled = tt.compile(model, (x,), dtype=torch.float32, check=False)
    with torch.no_grad():
        ref = model(x)
    close(compiled.last_run.outputs, ref, FP32)
    (op,) = compiled.last_run.ops
    assert op.dma_bytes == 4 * (x.numel() + ref.numel())                     # x read once, out written once
    assert op.time_s < 4 * (x.numel() + ref.numel()) / 30e9 + 10e-6          # at >= 30 GB/s


def test_views_and_data_movement():
    def fn(s, x, y):
        a, b = x.split([3, 5], dim=-1)
        c = torch.cat([b, a, y.transpose(1, 2)], dim=-1)
        d = c.permute(2, 0, 1).reshape(-1, c.shape[1])[::2]
        e = torch.stack([x[:, 1:4, :2], x[:, 0:3, 2:4]]).flatten(0, 1)
        return F.dropout(d, 0.5, training=False), e.unsqueeze(1).squeeze(1), x[..., 1].contiguous()
    out, ref = run(fn, rnd(4, 6, 8), rnd(4, 5, 6))
    close(out, ref, 0.0)


def test_bf16_dtype_path():
    out, ref = run(lambda s, x: F.silu(F.linear(x, s.w)) * 2, rnd(40, 64), dtype=torch.bfloat16, w=rnd(32, 64))
    close(out, ref, 2e-2)
