"""A kernel run makes the cyclic garbage collector's young generation rarer (runtime._rarer_collections)
and restores the caller's thresholds afterwards, also when the kernel raises; tiles are still freed
by reference counting at their last use, so a loop of tiles reuses their space."""
import gc

import numpy as np
import pytest

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab import runtime
from trnlab.runtime import run_kernel

A = np.ones((128, 64), np.float32)
SEEN = []


@nki.jit
def copy_and_look(a):
    SEEN.append(gc.get_threshold())
    out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
    for _ in nl.affine_range(3):
        t = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=a)
        nisa.dma_copy(dst=out, src=t)
    return out


@nki.jit
def fails(a):
    SEEN.append(gc.get_threshold())
    raise ValueError("kernel bug")


@pytest.fixture
def thresholds():
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    SEEN.clear()
    yield
    gc.set_threshold(*saved)


def test_run_raises_young_threshold_and_restores_it(thresholds):
    run = run_kernel(copy_and_look, (A,), {}, numerics=True)
    assert SEEN == [(20_000, 10, 10)]
    assert gc.get_threshold() == (700, 10, 10)
    np.testing.assert_array_equal(run.outputs, A)


def test_restored_when_the_kernel_raises(thresholds):
    with pytest.raises(ValueError, match="kernel bug"):
        run_kernel(fails, (A,), {}, numerics=False)
    assert SEEN == [(20_000, 10, 10)]
    assert gc.get_threshold() == (700, 10, 10)


def test_a_higher_caller_threshold_is_kept(thresholds):
    gc.set_threshold(50_000, 5, 5)
    run_kernel(copy_and_look, (A,), {}, numerics=False)
    assert SEEN == [(50_000, 5, 5)]
    assert gc.get_threshold() == (50_000, 5, 5)


def test_nested_runs_restore_once_at_the_outermost(thresholds):
    with runtime._rarer_collections():
        run_kernel(copy_and_look, (A,), {}, numerics=False)
        assert gc.get_threshold() == (20_000, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_tiles_freed_without_collections(thresholds):
    gc.disable()                       # no cyclic collection at all: reference counting frees each tile
    try:
        run = run_kernel(copy_and_look, (A,), {}, numerics=False)
    finally:
        gc.enable()
    # per partition: the next tile is allocated before `t` lets go of the previous one, so two tiles
    # are live at the peak; never all three
    assert run.machine.sbuf.peak_bytes == 2 * (A.nbytes // 128)
