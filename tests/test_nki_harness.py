"""Shared helpers for the current-NKI front-end tests: run nl.* tile functions on the simulator."""
import numpy as np

import trnlab.nki as nki
import trnlab.nki.language as nl


def run_tiles(fn, *arrays, target=None):
    """Load each array into SBUF, apply fn to the tiles, store the result; returns (numpy result, machine)."""

    def kernel(*ins):
        tiles = [nl.load(t) for t in ins]
        r = fn(*tiles)
        if r.buffer == "psum":
            r = nl.copy(r)
        out = nl.ndarray(r.shape, dtype=r.dtype, buffer=nl.shared_hbm)
        nl.store(out, r)
        return out

    k = nki.jit(kernel)
    out = nki.simulate(k, target=target)(*arrays)
    return out, k.last_run.machine


def rand(*shape, lo=-2.0, hi=2.0, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).uniform(lo, hi, size=shape).astype(dtype)


def test_harness_round_trip():
    a = rand(16, 8)
    out, m = run_tiles(lambda t: t, a)
    np.testing.assert_array_equal(out, a)
    assert m.stats.instructions["dma_copy"] == 2
