"""trnlab.kernels.flash_attention_bwd (and the forward's logsumexp) against PyTorch autograd of
F.scaled_dot_product_attention; the SDPA flash aten ops through the torch path against eager; the
backward's predicted time and Tensor-engine work against the forward's and a hand count."""
import math

import ml_dtypes
import numpy as np
import pytest
import torch

import trnlab.torch as tt
from trnlab.errors import ShapeError, UnsupportedOperatorError
from trnlab.kernels.flash_attention import flash_attention
from trnlab.kernels.flash_attention_bwd import flash_attention_bwd

pytestmark = pytest.mark.filterwarnings("error::trnlab.errors.TrnlabWarning")   # no uninitialised reads

F = torch.nn.functional
aten = torch.ops.aten
BF16 = ml_dtypes.bfloat16


def inputs(b, hq, hkv, sq, sk, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, hq, sq, d, generator=g), torch.randn(b, hkv, sk, d, generator=g),
            torch.randn(b, hkv, sk, d, generator=g), torch.randn(b, hq, sq, d, generator=g))


def autograd(q, k, v, dout, mask, causal):
    """Oracle: eager SDPA's output, logsumexp (from the mask-free math) and autograd gradients."""
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    gqa = q.shape[1] != k.shape[1]
    out = F.scaled_dot_product_attention(*leaves, attn_mask=mask, is_causal=causal, enable_gqa=gqa)
    out.backward(dout)
    kk = k.repeat_interleave(q.shape[1] // k.shape[1], 1)
    s = q @ kk.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool).tril(), -math.inf)
    if mask is not None:
        s = s.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else s + mask
    return out.detach(), torch.logsumexp(s, -1), [t.grad for t in leaves]


def close(got, want, tol):
    got = torch.from_numpy(np.asarray(got, dtype=np.float32))
    assert got.shape == want.shape
    err = float((got - want).abs().max())
    assert err <= tol * float(want.abs().max()), f"max error {err:.3g} > {tol} * {float(want.abs().max()):.3g}"


CASES = [  # (B, Hq, Hkv, Sq, Sk, D, causal, mask)
    (1, 2, 2, 200, 200, 64, True, None),            # ragged last tile, causal
    (1, 4, 2, 130, 300, 128, False, None),          # grouped-query, cross attention, D = 128
    (1, 4, 2, 150, 400, 64, True, None),            # grouped-query, causal: keys past 150 get no gradient
    (2, 2, 2, 150, 150, 64, False, "bool"),         # bool mask
    (1, 1, 1, 256, 256, 128, True, "float"),        # additive mask (-inf and a bias) with causal
]


def make_mask(kind, b, sq, sk):
    g = torch.Generator().manual_seed(7)
    if kind == "bool":
        m = torch.rand(b, 1, sq, sk, generator=g) > 0.3
        m[..., 0] = True                            # every query sees a key
        return m
    if kind == "float":
        m = torch.randn(sq, sk, generator=g)
        m[:, 200:] = -math.inf                      # padding after 200 keys
        return m
    return None


@pytest.mark.parametrize("b,hq,hkv,sq,sk,d,causal,mask", CASES)
@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_backward_matches_autograd(b, hq, hkv, sq, sk, d, causal, mask, dtype):
    q, k, v, dout = inputs(b, hq, hkv, sq, sk, d)
    m = make_mask(mask, b, sq, sk)
    if dtype is BF16:                               # the oracle sees the same rounded inputs
        q, k, v, dout = (t.bfloat16().float() for t in (q, k, v, dout))
    out, lse, grads = autograd(q, k, v, dout, m, causal)
    cast = lambda t: t.numpy().astype(dtype)        # noqa: E731
    dq, dk, dv = flash_attention_bwd.run(
        (cast(q), cast(k), cast(v), cast(out), cast(dout), lse.numpy()),
        dict(mask=None if m is None else m.numpy(), causal=causal), timing=False).outputs
    tol = 1e-4 if dtype is np.float32 else 2e-2    # bf16: P, dS and the inputs of every product rounded
    for got, want in zip((dq, dk, dv), grads):
        assert got.dtype == np.dtype(dtype)
        close(got, want, tol)


@pytest.mark.parametrize("causal", [True, False])
def test_forward_returns_logsumexp(causal):
    q, k, v, _ = inputs(1, 4, 2, 200, 200, 64)
    m = make_mask("float", 1, 200, 200)
    out, lse = flash_attention.run((q.numpy(), k.numpy(), v.numpy()), dict(mask=m.numpy(), causal=causal,
                                                                            return_lse=True), timing=False).outputs
    want_out, want_lse, _ = autograd(q, k, v, torch.zeros_like(q), m, causal)
    assert lse.dtype == np.float32 and lse.shape == (1, 4, 200)
    close(lse, want_lse, 1e-5)
    close(out, want_out, 1e-5)
    plain = flash_attention.run((q.numpy(), k.numpy(), v.numpy()), dict(mask=m.numpy(), causal=causal),
                                timing=False).outputs
    assert np.array_equal(plain, out)              # the lse output changes nothing else


def test_backward_time_and_tensor_engine_work():
    h, s, d = 4, 512, 128
    q, k, v, dout = (t.numpy().astype(BF16) for t in inputs(1, h, h, s, s, d))
    fwd = flash_attention.run((q, k, v), dict(causal=False, return_lse=True))
    out, lse = fwd.outputs
    bwd = flash_attention_bwd.run((q, k, v, out, dout, lse), dict(causal=False))
    # 2.5x the forward's matmul FLOPs (and more exp / elementwise work), overlapped at least as well
    ratio = bwd.machine.scheduler.end / fwd.machine.scheduler.end
    assert 2.0 <= ratio <= 4.0, f"backward / forward time {ratio:.2f}"
    # hand count: S = q k^T, dP = dO v^T, dV = P^T dO, dK = dS^T q, dQ = dS k, each 2 * S * S * D per
    # head; plus one 128 x 128 PE transpose of dS per (query tile, key tile): 2 * 128 * 128 * 128 each
    work = bwd.machine.scheduler.work
    assert work.flops == h * 5 * 2 * s * s * d
    assert work.pe_flops - work.flops == h * (s // 128) ** 2 * 2 * 128 ** 3


def test_shape_errors():
    q, k, v, dout = (t.numpy() for t in inputs(1, 2, 2, 16, 16, 32))
    with pytest.raises(ShapeError, match="lse"):
        flash_attention_bwd.run((q, k, v, q, dout, np.zeros((1, 2, 15), np.float32)), {}, timing=False)
    big = np.zeros((1, 1, 8, 640), np.float32)
    with pytest.raises(ShapeError, match="exceed 512"):
        flash_attention_bwd.run((big, big, big, big, big, np.zeros((1, 1, 8), np.float32)), {}, timing=False)


# --- the aten ops through trnlab.torch ---------------------------------------------------------------
class Forward(torch.nn.Module):
    def __init__(self, causal):
        super().__init__()
        self.causal = causal

    def forward(self, q, k, v, mask):
        return aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, self.causal, attn_mask=mask)


class Backward(torch.nn.Module):
    def __init__(self, causal):
        super().__init__()
        self.causal = causal

    def forward(self, dout, q, k, v, out, lse, mask):
        return aten._scaled_dot_product_flash_attention_for_cpu_backward(dout, q, k, v, out, lse, 0.0, self.causal,
                                                                         attn_mask=mask, scale=0.2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lowered_forward_and_backward_match_eager(dtype):
    q, k, v, dout = (t.to(dtype) for t in inputs(1, 4, 2, 150, 150, 64))
    mask = make_mask("float", 1, 150, 150)[None, None].to(dtype)    # as F.sdpa hands a bool mask on: 0 / -inf
    # bf16: eager's CPU kernels round P, dS and the products at other points than the device
    tol, grad_tol = (1e-5, 1e-4) if dtype == torch.float32 else (2e-2, 3e-2)
    fwd = tt.compile(Forward(True), (q, k, v, mask), dtype=dtype, check=False)
    want = Forward(True)(q, k, v, mask)
    for got, ref in zip(fwd.last_run.outputs, want):
        assert got.dtype == ref.dtype
        close(got.float(), ref.float(), tol)
    bwd = tt.compile(Backward(True), (dout, q, k, v, *want, mask), dtype=dtype, check=False)
    for got, ref in zip(bwd.last_run.outputs, Backward(True)(dout, q, k, v, *want, mask)):
        assert got.dtype == ref.dtype
        close(got.float(), ref.float(), grad_tol)
    # model FLOPs: the forward's 4 * B * H * (causal pairs) * D, the backward 2.5 times that
    pairs = 150 * 151 // 2
    assert fwd.report.ops[0].model_flops == 4 * 4 * pairs * 64
    assert bwd.report.ops[0].model_flops == 10 * 4 * pairs * 64


def test_lowered_forward_writes_logsumexp_only_when_used():
    q, k, v, _ = inputs(1, 2, 2, 64, 64, 32)

    class OutOnly(torch.nn.Module):
        def forward(self, q, k, v):
            return aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)[0]

    both = tt.compile(Forward(False), (q, k, v, None), dtype=torch.float32, check=False).report.ops[0]
    one = tt.compile(OutOnly(), (q, k, v), dtype=torch.float32, check=False).report.ops[0]
    assert both.dma_bytes - one.dma_bytes == 2 * 64 * 4        # the fp32 lse, one value per query row


def test_dropout_is_refused():
    class Dropout(torch.nn.Module):
        def forward(self, q):
            return aten._scaled_dot_product_flash_attention_for_cpu(q, q, q, 0.1)[0]

    with pytest.raises(UnsupportedOperatorError, match="dropout_p=0.1"):
        tt.compile(Dropout(), (torch.randn(1, 2, 16, 8),), dtype=torch.float32, check=False)


def test_training_graphs_of_sdpa_run_on_the_chip():
    # AOTAutograd's forward and backward graphs of F.sdpa (grouped-query, bool mask), each run through
    # trnlab.torch.compile: the device's logsumexp feeds the device's backward; gradients vs autograd.
    from functorch.compile import make_boxed_func
    from torch._decomp import core_aten_decompositions
    from torch._dynamo.backends.common import aot_autograd

    graphs = {}

    def keep(kind):
        def compiler(gm, _):
            graphs[kind] = gm
            return make_boxed_func(gm.forward)
        return compiler

    class Grads(torch.nn.Module):          # the backward graph also returns None for the mask
        def __init__(self, gm):
            super().__init__()
            self.gm = gm

        def forward(self, *xs):
            return tuple(o for o in self.gm(*xs) if o is not None)

    q, k, v, dout = inputs(1, 4, 2, 150, 150, 64)
    mask = make_mask("bool", 1, 150, 150)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    table = {op: fn for op, fn in core_aten_decompositions().items()
             if op is not aten._scaled_dot_product_flash_attention_for_cpu.default}
    sdpa = torch.compile(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m, enable_gqa=True),
                         backend=aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw"), decompositions=table))
    sdpa(*leaves, mask).backward(dout)
    fw = tt.compile(graphs["fw"], (q, k, v, mask), dtype=torch.float32, check=False)
    saved = fw.last_run.outputs[1:]           # q, k, v, the float mask, lse, out
    bw = tt.compile(Grads(graphs["bw"]), (*saved, dout), dtype=torch.float32, check=False)
    ran = {str(r.op) for r in fw.report.ops + bw.report.ops if r.where == "device"}
    assert {str(op.default) for op in (aten._scaled_dot_product_flash_attention_for_cpu,
                                             aten._scaled_dot_product_flash_attention_for_cpu_backward)} <= ran
    for got, leaf in zip(bw.last_run.outputs, leaves):
        close(got, leaf.grad, 1e-5)


def test_decode_step_writes_logsumexp():
    # Sq = 1, not causal: the query heads of a kv group are processed together as rows
    q, k, v, _ = inputs(2, 8, 2, 1, 300, 64)
    out, lse = flash_attention.run((q.numpy(), k.numpy(), v.numpy()), dict(causal=False, return_lse=True),
                                   timing=False).outputs
    want_out, want_lse, _ = autograd(q, k, v, torch.zeros_like(q), None, False)
    close(lse, want_lse, 1e-5)
    close(out, want_out, 1e-5)


@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_example_inputs_match_the_numpy_reference(dtype):
    from trnlab.kernels.flash_attention_bwd import example_inputs, reference
    args = example_inputs(0.5, dtype, 1)
    got = flash_attention_bwd.run(args, {}, timing=False).outputs
    for g, want in zip(got, reference(*args)):
        close(g, torch.from_numpy(want.astype(np.float32)), 1e-4 if dtype is np.float32 else 2e-2)


def test_rows_the_mask_hides_entirely_match_pytorch():
    # PyTorch's CPU flash kernels give such a row out = 0, lse = 0 and no gradient
    q, k, v, dout = inputs(1, 2, 2, 140, 140, 64)
    keep = torch.rand(1, 1, 140, 140, generator=torch.Generator().manual_seed(3)) > 0.3
    keep[..., 0] = True
    keep[0, 0, 5] = keep[0, 0, 133] = False                    # query rows 5 and 133 see nothing
    additive = torch.zeros(keep.shape).masked_fill(~keep, -math.inf)
    out, lse = aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=additive)
    grads = aten._scaled_dot_product_flash_attention_for_cpu_backward(dout, q, k, v, out, lse, 0.0, False,
                                                                      attn_mask=additive)
    got_out, got_lse = flash_attention.run((q.numpy(), k.numpy(), v.numpy()),
                                           dict(mask=keep.numpy(), causal=False, return_lse=True), timing=False).outputs
    assert not got_out[0, :, [5, 133]].any() and not got_lse[0, :, [5, 133]].any()
    close(got_out, out, 1e-5)
    close(got_lse, lse, 1e-5)
    got = flash_attention_bwd.run((q.numpy(), k.numpy(), v.numpy(), got_out, dout.numpy(), got_lse),
                                  dict(mask=keep.numpy(), causal=False), timing=False).outputs
    for g, want in zip(got, grads):
        close(g, want, 1e-4)


def test_lowered_ops_take_strided_views():
    # as in models: q/k/v are transposes (and slices) of [B, S, H, D] activations, not contiguous
    class Strided(torch.nn.Module):
        def forward(self, x, kv, dout):
            q, k, v = x.transpose(1, 2), kv[..., :64].transpose(1, 2), kv[..., 64:].transpose(1, 2)
            out, lse = aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True)
            return aten._scaled_dot_product_flash_attention_for_cpu_backward(dout.transpose(1, 2), q, k, v, out, lse,
                                                                             0.0, True)

    g = torch.Generator().manual_seed(0)
    args = (torch.randn(1, 150, 4, 64, generator=g), torch.randn(1, 150, 2, 128, generator=g),
            torch.randn(1, 150, 4, 64, generator=g))
    compiled = tt.compile(Strided(), args, dtype=torch.float32, check=False)
    for got, want in zip(compiled.last_run.outputs, Strided()(*args)):
        close(got, want, 1e-5)


# --- long sequences: key blocks (FlashAttention-2's outer loop) --------------------------------------
BLOCKED = [  # (B, Hq, Hkv, Sq, Sk, D, causal, mask, (keys, query rows) per block)
    (1, 4, 2, 600, 600, 64, True, None, (256, 256)),      # grouped-query, causal, ragged last blocks
    (1, 2, 1, 300, 700, 64, True, None, (256, 256)),      # keys past 300: key blocks no query sees
    (2, 2, 2, 400, 520, 128, False, "bool", (256, 256)),  # cross attention with a bool mask
    (1, 1, 1, 600, 600, 64, True, None, (1024, 256)),     # all keys at once, query blocks
    (1, 1, 1, 512, 512, 64, True, None, (128, 512)),      # later key blocks start nearer their diagonal
]


@pytest.mark.parametrize("b,hq,hkv,sq,sk,d,causal,mask,block", BLOCKED)
@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_blocks_match_autograd(monkeypatch, b, hq, hkv, sq, sk, d, causal, mask, block, dtype):
    import trnlab.kernels.flash_attention_bwd as module
    monkeypatch.setattr(module, "BLOCK", block)
    q, k, v, dout = inputs(b, hq, hkv, sq, sk, d)
    m = make_mask(mask, b, sq, sk)
    if dtype is BF16:
        q, k, v, dout = (t.bfloat16().float() for t in (q, k, v, dout))
    out, lse, grads = autograd(q, k, v, dout, m, causal)
    cast = lambda t: t.numpy().astype(dtype)        # noqa: E731
    run = flash_attention_bwd.run((cast(q), cast(k), cast(v), cast(out), cast(dout), lse.numpy()),
                                  dict(mask=None if m is None else m.numpy(), causal=causal), timing=False)
    for got, want in zip(run.outputs, grads):
        close(got, want, 1e-4 if dtype is np.float32 else 2e-2)
    # hand count of DMA transposes: K^T, V^T once per (kv head, key block); q^T, dO^T once per
    # (query head, key block, query block with a row that sees the block's first key)
    kblocks, qblocks = range(0, sk, block[0]), range(0, sq, block[1])
    seen = sum(1 for k0 in kblocks for r0 in qblocks if not causal or min(sq, r0 + block[1]) - 1 >= k0)
    assert run.machine.stats.instructions["dma_transpose"] == b * hkv * 2 * len(kblocks) + b * hq * 2 * seen


def test_long_sequence_fits_sbuf_without_spilling():
    # Llama-3.1-70B at TP 32: 2 query heads on 1 kv head, D = 128, 8192 tokens (timing only). The
    # whole-sequence tiles (K^T, V^T, K, fp32 dK/dV sums, q^T, dO^T, q, dO, dQ of two heads) need
    # ~300 KiB per partition of the 192 KiB; blocks must make it fit as written (no compiler spill).
    from trnlab.core.compiler import CompilerModel, using
    s, d = 8192, 128
    z = lambda h: np.zeros((1, h, s, d), BF16)      # noqa: E731
    with using(CompilerModel(sbuf_spill=False)):
        run = flash_attention_bwd.run((z(2), z(1), z(1), z(2), z(2), np.zeros((1, 2, s), np.float32)),
                                      dict(causal=True), target="trn1", numerics=False)
    m = run.machine
    assert m.liveness is None and m.stats.spill_bytes == 0          # the first, strict run fitted
    assert m.sbuf.peak_bytes <= m.sbuf.capacity
    # causal: 5 matmuls per (query tile, key tile) on or below the diagonal, 2 heads
    tiles = s // 128
    assert m.stats.instructions["nc_matmul"] == 2 * 5 * tiles * (tiles + 1) // 2
