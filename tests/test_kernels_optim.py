"""trnlab.kernels.optim: flat tiling, AdamW / SGD / sum of squares / accumulation kernels against float64
numpy written from the published update rules (torch.optim docs). The step's time is tested in
tests/test_torch_optim.py."""
import ml_dtypes
import numpy as np
import pytest

from trnlab.kernels import optim as ko

BF16 = ml_dtypes.bfloat16
SIZES = [1, 127, 128, 129, 2100, 128 * ko.COLS + 128 * 3 + 5]


def run(kernel, *args, **kwargs):
    return kernel.run(args, kwargs, timing=False).outputs


@pytest.mark.parametrize("n", [1, 5, 127, 128, 129, 128 * 7 + 3, 128 * 1000, 128 * 2048 * 3 + 77])
@pytest.mark.parametrize("cols", [16, 2048])
def test_flat_tiles_cover_each_element_once(n, cols):
    seen = np.zeros(n, np.int32)
    for start, rows, c in ko.flat_tiles(n, cols):
        assert (rows == 128 and 1 <= c <= cols) or (rows == 1 and 1 <= c < 128)
        seen[start:start + rows * c] += 1
    np.testing.assert_array_equal(seen, 1)


def adamw_numpy(p, g, m, v, lr, b1, b2, eps, wd, t):
    """AdamW, torch.optim.AdamW docs (https://pytorch.org/docs/stable/generated/torch.optim.AdamW.html)."""
    p, g, m, v = (np.asarray(a, np.float64) for a in (p, g, m, v))
    p = p - lr * wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    return p - lr * mhat / (np.sqrt(vhat) + eps), m, v


@pytest.mark.parametrize("n", SIZES)
def test_adamw_kernel_vs_float64(n):
    rng = np.random.default_rng(n)
    p, g, m = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    v = np.abs(rng.standard_normal(n)).astype(np.float32)
    hp = dict(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1, step=4)
    po, mo, vo = run(ko.adamw, p, g, m, v, **hp)
    pe, me, ve = adamw_numpy(p, g, m, v, 1e-2, 0.9, 0.99, 1e-8, 0.1, 4)
    # a few fp32 roundings per element: relative 2^-20 of the terms (the update is ~lr)
    np.testing.assert_allclose(mo, me, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(vo, ve, rtol=2e-6, atol=1e-8)
    np.testing.assert_allclose(po, pe, rtol=2e-6, atol=1e-7)


def test_adamw_kernel_bf16_gradients():
    rng = np.random.default_rng(5)
    n = 1000
    p, m = rng.standard_normal(n).astype(np.float32), np.zeros(n, np.float32)
    g = rng.standard_normal(n).astype(BF16)
    v = np.zeros(n, np.float32)
    po, _, _ = run(ko.adamw, p, g, m, v, lr=1e-3, step=1)
    pe, _, _ = adamw_numpy(p, g.astype(np.float32), m, v, 1e-3, 0.9, 0.999, 1e-8, 1e-2, 1)
    np.testing.assert_allclose(po, pe, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_kernel_vs_float64(nesterov):
    rng = np.random.default_rng(7)
    n = 128 * 5 + 9
    p, g, buf = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    po, bo = run(ko.sgd, p, g, buf, lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=nesterov, first=False)
    g64 = g.astype(np.float64) + 0.01 * p
    b64 = 0.9 * buf + g64
    d = g64 + 0.9 * b64 if nesterov else b64
    np.testing.assert_allclose(bo, b64, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(po, p - 0.05 * d, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("n", SIZES)
def test_sum_squares_and_accumulate(n):
    rng = np.random.default_rng(n + 1)
    g = rng.standard_normal(n).astype(np.float32)
    ss = run(ko.sum_squares, g)
    exact = float(np.sum(g.astype(np.float64) ** 2))
    assert abs(float(ss[0]) - exact) <= 1e-6 * exact + 1e-30
    acc = rng.standard_normal(n).astype(np.float32)
    gb = g.astype(BF16)
    np.testing.assert_array_equal(run(ko.grad_accumulate, acc, gb), acc + gb.astype(np.float32))
