"""trnlab.kernels.flash_attention against float64 numpy attention: multi-head, grouped-query,
causal and additive masks, ragged sequence lengths, fp32 and bf16."""
import importlib
import math

import ml_dtypes
import numpy as np
import pytest

from trnlab.errors import ShapeError
from trnlab.kernels import flash_attention

pytestmark = pytest.mark.filterwarnings("error::trnlab.errors.TrnlabWarning")   # no uninitialised reads

BF16 = ml_dtypes.bfloat16
BF16_EPS = 2.0 ** -8      # bf16 unit roundoff: 8 significand bits


def run(*args, **kwargs):
    return flash_attention.run(args, kwargs, timing=False)


def randn(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32).astype(dtype)


def attention64(q, k, v, mask=None, causal=True, scale=None):
    """Exact attention; also returns P @ |v| (the scale of the rounding error of P @ v)."""
    shape = q.shape
    q, k, v = (t.astype(np.float64).reshape((1,) * (4 - t.ndim) + t.shape) for t in (q, k, v))
    group = q.shape[1] // k.shape[1]                    # query head h reads kv head h // group
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    s = q @ np.swapaxes(k, -1, -2) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], dtype=bool)), s, -np.inf)
    if mask is not None:
        s = s + mask.astype(np.float64)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ v).reshape(shape), (p @ np.abs(v)).reshape(shape)


def check(out, q, k, v, **kw):
    exact, scale = attention64(q, k, v, **kw)
    d, sk = q.shape[-1], k.shape[-2]
    # fp32: scores are D-term dot products (D * 2^-24 relative to |q||k|, ~1e-5 absolute after exp),
    # the online softmax rescales a few times per key block, P @ v sums Sk terms: within
    # (D + Sk + 64) * 2^-24 * (P @ |v|) + 1e-6.
    bound = (d + sk + 64) * 2.0 ** -24 * scale + 1e-6
    if q.dtype == BF16:
        # p is rounded to bf16 before the PE (2^-8 relative per term -> 2^-8 * P @ |v|) and the
        # output is rounded once (2^-8 * |o|).
        bound = bound + BF16_EPS * (scale + np.abs(exact))
    err = np.abs(out.astype(np.float64) - exact)
    assert np.all(err <= bound), f"max error {err.max():.3g}, worst excess {(err - bound).max():.3g}"


CASES = [  # (B, Hq, Hkv, Sq, Sk, D, causal)
    (1, 2, 2, 256, 256, 64, True),      # multi-head, tile-aligned
    (2, 4, 2, 200, 200, 32, True),      # grouped-query, ragged last tile
    (1, 2, 1, 130, 130, 128, True),     # multi-query, D = 128
    (1, 1, 1, 300, 700, 64, False),     # cross attention, two key blocks, ragged
    (1, 1, 1, 1, 1, 8, True),           # single token
]


@pytest.mark.parametrize("b,hq,hkv,sq,sk,d,causal", CASES)
@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_flash_attention(b, hq, hkv, sq, sk, d, causal, dtype):
    q, k, v = randn((b, hq, sq, d), dtype, 0), randn((b, hkv, sk, d), dtype, 1), randn((b, hkv, sk, d), dtype, 2)
    out = run(q, k, v, causal=causal).outputs
    assert out.dtype == np.dtype(dtype) and out.shape == q.shape
    check(out, q, k, v, causal=causal)


@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_flash_attention_additive_mask(dtype):
    b, h, s, d = 2, 2, 150, 64
    q, k, v = randn((b, h, s, d), dtype, 0), randn((b, h, s, d), dtype, 1), randn((b, h, s, d), dtype, 2)
    mask = np.zeros((b, 1, s, s), dtype=np.float32)
    mask[0, :, :, 100:] = -np.inf                    # padding of batch 0 after 100 tokens
    mask[1] = randn((1, s, s), np.float32, 3)        # an arbitrary bias for batch 1
    for causal in (True, False):
        check(run(q, k, v, mask=mask, causal=causal).outputs, q, k, v, mask=mask, causal=causal)


@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_flash_attention_decode_step_with_bool_mask(dtype):
    # one new token per head (Sq = 1, not causal) over a 300-entry KV cache with grouped-query heads:
    # the query heads of a kv group are processed together as rows.
    q, k, v = randn((2, 8, 1, 64), dtype, 0), randn((2, 2, 300, 64), dtype, 1), randn((2, 2, 300, 64), dtype, 2)
    valid = np.ones((2, 1, 1, 300), dtype=bool)
    valid[1, :, :, 250:] = False                      # batch 1 has only 250 cached tokens
    out = run(q, k, v, mask=valid, causal=False).outputs
    assert out.shape == q.shape
    check(out, q, k, v, mask=np.where(valid, 0.0, -np.inf), causal=False)


def test_flash_attention_single_head_layout_and_scale():
    q, k, v = (randn((140, 64), np.float32, i) for i in range(3))
    mask = randn((140, 140), np.float32, 4)
    out = run(q, k, v, mask=mask, causal=False, scale=0.3).outputs
    assert out.shape == (140, 64)
    check(out, q, k, v, mask=mask, causal=False, scale=0.3)


@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_flash_attention_streams_keys_when_they_do_not_fit(monkeypatch, dtype):
    module = importlib.import_module("trnlab.kernels.flash_attention")
    monkeypatch.setattr(module, "KV_BUDGET", 0)
    q, k, v = randn((1, 4, 300, 64), dtype, 0), randn((1, 2, 300, 64), dtype, 1), randn((1, 2, 300, 64), dtype, 2)
    result = run(q, k, v)
    # 2 kv heads x 2 query heads x 3 query tiles (12), each streaming its one 512-key block of k^T
    # (12 DMA transposes) plus one q^T DMA transpose per query head (4); one PE transpose of p per
    # 128-key chunk the tile sees: 2*2*(1+2+3) = 24.
    ops = result.machine.stats.instructions
    assert ops["dma_transpose"] == 12 + 4
    assert ops["nc_transpose"] == 24
    check(result.outputs, q, k, v)


def test_causal_blocks_above_the_diagonal_are_skipped():
    q, k, v = (randn((1, 1, 1024, 64), BF16, i) for i in range(3))
    ops = run(q, k, v).machine.stats.instructions
    # 8 query tiles of 128; tile i sees keys [0, 128(i+1)): ceil(128(i+1)/512) score blocks each.
    score_matmuls = sum(math.ceil(128 * (i + 1) / 512) for i in range(8))
    pv_matmuls = sum(i + 1 for i in range(8))                    # one per 128 keys
    assert ops["nc_matmul"] == score_matmuls + pv_matmuls
    assert ops["affine_select"] == 8                             # only diagonal blocks are masked


def test_head_dim_above_128_contracts_in_chunks():
    q, k, v = (randn((1, 2, 130, 256), np.float32, i) for i in range(3))
    result = run(q, k, v)
    # 2 heads x 2 query tiles x 2 chunks of 128 head dims: one accumulating score matmul per chunk
    assert result.machine.stats.instructions["dma_transpose"] == 2 * (2 + 2)   # q^T and k^T per head
    check(result.outputs, q, k, v)


def test_kv_heads_must_divide_query_heads():
    q, k = randn((1, 3, 16, 32), np.float32, 0), randn((1, 2, 16, 32), np.float32, 1)
    with pytest.raises(ShapeError, match="Hq % Hkv"):
        run(q, k, k)


def test_no_sbuf_tile_outlives_the_kernel():
    """The model path runs kernel after kernel on one machine: attention's last tiles (kept so the next
    stream's addresses differ) must be freed when it returns, or the next op finds its SBUF short
    (Llama-3-8B TP32 prefill at seq 4096: the MLP GEMM after attention overflowed trn1 SBUF)."""
    import gc
    import trnlab
    import trnlab.nki as nki
    from trnlab.core.machine import current
    from trnlab.kernels.flash_attention import flash_attention_into
    from trnlab.nki import language as nl

    left = []

    @nki.jit
    def attend(q, k, v):
        out = nl.ndarray(q.shape, dtype=q.dtype, buffer=nl.shared_hbm)
        flash_attention_into(out, q, k, v, scale=0.1, causal=True)
        gc.collect()
        left.append(current().sbuf.used_in(0, 128))
        return out

    z = np.zeros((1, 1, 1024, 128), ml_dtypes.bfloat16)
    trnlab.benchmark(attend, target="trn1", numerics=False)(z, z, z)
    assert left == [0]


def _cache_load_s(k, v, target):
    """The time to move K and V into SBUF and nothing else: each as one DMA of 128 partitions x
    S/128 whole rows (the longest contiguous runs, the fastest the queues move these bytes)."""
    import trnlab.nki as nki
    from trnlab.nki import isa as nisa
    from trnlab.nki import language as nl

    @nki.jit
    def load_only(k, v):
        out = nl.ndarray((1,), dtype=nl.float32, buffer=nl.shared_hbm)
        for src in (k, v):
            t = nl.ndarray((128, src.size // 128), dtype=src.dtype, buffer=nl.sbuf)
            nisa.dma_copy(dst=t, src=src.reshape((128, src.size // 128)))
        return out

    return load_only.run((k, v), {}, target=target, numerics=False).machine.scheduler.end


def test_long_cache_decode_streams_the_cache():
    # one decode step, 2 query heads over one kv head with a 4096-entry bf16 cache (2 MiB of K and V):
    # scoring starts while the cache streams in, so the step takes little more than moving the cache
    # (plus the last tile's softmax and P @ V). Loading the whole cache before the first score tile
    # (short V descriptors, q^T queued behind the cache) took 40.3 us on trn1, 2.1x. trn1: its DMA is
    # the slower part (on trn2 the per-tile softmax chain is, about 2 us per 512 keys).
    target = "trn1"
    q, k, v = randn((1, 2, 1, 128), BF16, 0), randn((1, 1, 4096, 128), BF16, 1), randn((1, 1, 4096, 128), BF16, 2)
    result = flash_attention.run((q, k, v), dict(causal=False), target=target)
    check(result.outputs, q, k, v, causal=False)
    load = _cache_load_s(k[0, 0], v[0, 0], target)
    assert result.machine.scheduler.end <= 1.5 * load, (result.machine.scheduler.end, load)


def test_decode_split_over_the_cache_with_a_mask_and_lse():
    # 1100 keys: three K/V tiles (the last ragged) split into even and odd halves; batch 1 sees only
    # its first 400 keys, so its odd half is hidden entirely and must weigh nothing.
    q, k, v = randn((2, 4, 1, 64), BF16, 0), randn((2, 2, 1100, 64), BF16, 1), randn((2, 2, 1100, 64), BF16, 2)
    valid = np.ones((2, 1, 1, 1100), dtype=bool)
    valid[1, :, :, 400:] = False
    out, lse = run(q, k, v, mask=valid, causal=False, return_lse=True).outputs
    additive = np.where(valid, 0.0, -np.inf)
    check(out, q, k, v, mask=additive, causal=False)
    s = np.einsum("bhd,bhkd->bhk", q[:, :, 0].astype(np.float64), np.repeat(k, 2, axis=1).astype(np.float64))
    s = s / 8.0 + additive[:, :, 0]
    top = s.max(-1, keepdims=True)
    want = (top + np.log(np.exp(s - top).sum(-1, keepdims=True)))[..., 0]
    np.testing.assert_allclose(lse[:, :, 0], want, rtol=1e-4, atol=1e-4)
