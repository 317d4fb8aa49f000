"""Machine(stochastic_rounding=...): fp32 -> bf16 engine writes rounded stochastically, deterministic per
seed, unbiased; off by default (round to nearest even, bit-identical to ml_dtypes).
Oracles: ml_dtypes (RNE), the bf16 neighbours of a value computed with numpy nextafter, binomial
statistics."""
import ml_dtypes
import numpy as np
import pytest

from trnlab.core.machine import Machine, running
from trnlab.errors import LaunchError
from trnlab.nki import isa as nisa
from trnlab.nki import language as nl
from trnlab.nki.tensor import NkiTensor

BF16 = ml_dtypes.bfloat16


def to_bf16_on_chip(x: np.ndarray, stochastic_rounding=None) -> np.ndarray:
    """x [128, F] fp32 -> bf16 by one Vector tensor_copy (an engine write) on a fresh machine."""
    m = Machine("trn2", tensor_class=NkiTensor, stochastic_rounding=stochastic_rounding)
    with running(m):
        src = m.hbm_tensor(x.astype(np.float32), "x")
        t = nl.ndarray(x.shape, dtype=nl.float32, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=src)
        o = nl.ndarray(x.shape, dtype=nl.bfloat16, buffer=nl.sbuf)
        nisa.tensor_copy(dst=o, src=t)
        return o.numpy()


def neighbours(x: float):
    """The bf16 values just below and above |x| (x not representable), by magnitude."""
    lo = np.float32(x).astype(BF16)
    if abs(float(lo)) > abs(x):
        lo = np.nextafter(lo, BF16(0))
    hi = np.nextafter(lo, BF16(np.sign(x) * np.inf))
    return float(lo), float(hi)


def test_off_by_default_is_round_to_nearest_even():
    x = np.random.default_rng(0).standard_normal((128, 64)).astype(np.float32)
    x[0, :4] = [np.nan, np.inf, -np.inf, 1.0 + 2.0 ** -8]            # a tie rounds to even
    np.testing.assert_array_equal(to_bf16_on_chip(x).view(np.uint16), x.astype(BF16).view(np.uint16))


def test_deterministic_per_seed_and_differs_across_seeds():
    x = np.random.default_rng(1).standard_normal((128, 32)).astype(np.float32)
    a, b, c = (to_bf16_on_chip(x, s) for s in (7, 7, 8))
    np.testing.assert_array_equal(a.view(np.uint16), b.view(np.uint16))
    assert (a.view(np.uint16) != c.view(np.uint16)).any()
    # a Generator works too and gives the seed's stream
    g = to_bf16_on_chip(x, np.random.default_rng(7))
    np.testing.assert_array_equal(a.view(np.uint16), g.view(np.uint16))


@pytest.mark.parametrize("value", [1.0 + 0.3 * 2.0 ** -7, -(3.0 + 0.8 * 2.0 ** -6), 1e-30 * 1.37])
def test_unbiased_between_neighbours_and_differs_from_rne(value):
    """65,536 SR roundings of one value: each is one of its two bf16 neighbours, and their mean is the
    value within 5 standard deviations of a binomial mean (failure odds ~6e-7 for a random seed)."""
    x32 = float(np.float32(value))
    lo, hi = neighbours(x32)
    out = to_bf16_on_chip(np.full((128, 512), x32, np.float32), stochastic_rounding=3).astype(np.float64)
    assert set(np.unique(out)) <= {lo, hi}
    p = (x32 - lo) / (hi - lo)                      # probability of rounding away from zero
    n = out.size
    bound = 5 * abs(hi - lo) * np.sqrt(p * (1 - p) / n)
    assert abs(out.mean() - x32) < bound
    rne = float(np.float32(x32).astype(BF16))
    assert abs(rne - x32) > 20 * bound              # RNE is off by a fixed fraction of the gap


def test_exact_values_nan_inf_unchanged():
    x = np.array([1.0, -2.5, 0.0, -0.0, np.inf, -np.inf, np.nan, 3.0e38], np.float32)
    x = np.resize(x, (128, 8)).astype(np.float32)
    out = to_bf16_on_chip(x, stochastic_rounding=11)
    exact = x.astype(BF16)
    finite = np.isfinite(x) & (x != np.float32(3.0e38))
    np.testing.assert_array_equal(out[finite].view(np.uint16), exact[finite].view(np.uint16))
    assert np.isnan(out[np.isnan(x)].astype(np.float32)).all()
    np.testing.assert_array_equal(out[np.isinf(x)].astype(np.float32), x[np.isinf(x)])
    big = out[x == np.float32(3.0e38)].astype(np.float64)
    assert set(np.unique(big)) <= set(neighbours(3.0e38))


def test_bad_seed_is_refused():
    with pytest.raises(LaunchError, match="stochastic_rounding"):
        Machine("trn2", stochastic_rounding=-1)
    with pytest.raises(LaunchError, match="stochastic_rounding"):
        Machine("trn2", stochastic_rounding=True)
