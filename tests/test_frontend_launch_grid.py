"""Launch grids are checked; tiles belong to the kernel run that allocated them."""
import numpy as np
import pytest

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.errors import ForeignTileError, LaunchError, TrnlabError
from trnlab.nki_beta1 import jit as b1_jit


@nki.jit
def copy(a):
    out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
    t = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=t, src=a)
    nisa.dma_copy(dst=out, src=t)
    return out


A = np.arange(128 * 4, dtype=np.float32).reshape(128, 4)


@pytest.mark.parametrize("grid", [1, 2, (2, 1), np.int64(3)])
def test_valid_grids_return_the_output(grid):
    np.testing.assert_array_equal(copy[grid](A), A)


@pytest.mark.parametrize("grid", [0, -1, (0,), (2, 0), 2.5, "2", ()])
def test_bad_grids_raise_a_typed_error_naming_the_grid(grid):
    with pytest.raises(LaunchError) as info:
        copy[grid](A)
    assert "grid" in str(info.value)
    assert issubclass(LaunchError, TrnlabError)


def test_beta1_kernel_grid_is_checked_too():
    k = b1_jit(lambda a: None)
    with pytest.raises(LaunchError, match="got 0"):
        k[0]
    with pytest.raises(LaunchError, match="2.5"):
        k[2.5]


KEPT = {}


@nki.jit
def keep_tile(a):
    t = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf, name="kept")
    nisa.dma_copy(dst=t, src=a)
    KEPT["tile"] = t
    out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=out, src=t)
    return out


@nki.jit
def use_kept(a):
    out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=out, src=KEPT["tile"])
    return out


def test_a_tile_kept_from_an_earlier_run_is_refused_with_its_name_and_line():
    keep_tile(A)
    with pytest.raises(ForeignTileError) as info:
        use_kept(A * 2)
    msg = str(info.value)
    assert "'kept'" in msg and "another kernel run" in msg
    assert f"{__file__}:{use_kept.fn.__code__.co_firstlineno + 3}" in msg


def test_writing_a_kept_tile_is_refused_too():
    keep_tile(A)

    @nki.jit
    def write_kept(a):
        nisa.dma_copy(dst=KEPT["tile"], src=a)
        return a

    with pytest.raises(ForeignTileError):
        write_kept(A)
