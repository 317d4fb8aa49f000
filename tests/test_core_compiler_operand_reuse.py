"""CompilerModel.operand_reuse: once tiles are freed at their last use (core.machine.Liveness: a kernel that
exceeds SBUF as written), an element-wise result takes the bytes of an operand tile read for the last time by
the instruction that produces it (neuronx-cc allocates by graph colouring, nki.compiler.Allocation COLORING:
a result interferes only with the tiles live after its instruction).

Oracles: numpy for the values; SBUF bytes by hand: a [128, 12288] fp32 tile is 48 KiB per partition and trn1's
SBUF holds exactly four of them (192 KiB), so a kernel with four live tiles and a fifth result fits only when
the result reuses a dying operand's bytes; otherwise it spills (or raises with sbuf_spill off).
"""
import warnings

import numpy as np
import pytest

import trnlab.nki_beta1 as nki
import trnlab.nki_beta1.isa as nisa
import trnlab.nki_beta1.language as nl
from trnlab.core.compiler import CompilerModel, using
from trnlab.errors import SbufCapacityError, SbufSpillWarning

F = 12288
TILE = F * 4                    # bytes per partition
SBUF_TRN1 = 192 * 1024


@nki.jit
def product_of_four(x):
    """Four loads fill SBUF; each product's operands die at it (the Python names keep them, as kernels do)."""
    out = nl.ndarray((128, F), dtype=x.dtype, buffer=nl.shared_hbm)
    a, b, c, d = (nl.load(x[i]) for i in range(4))
    ab = nisa.tensor_tensor(a, b, op=nl.multiply)
    abc = nisa.tensor_tensor(ab, c, op=nl.multiply)
    abcd = nisa.tensor_tensor(abc, d, op=nl.multiply)
    nl.store(out, abcd)
    return out


@nki.jit
def product_reusing_ab(x):
    """As product_of_four, but `a` and `b` are read again later: neither dies at a * b, which needs a fifth tile."""
    out = nl.ndarray((128, F), dtype=x.dtype, buffer=nl.shared_hbm)
    a, b, c, d = (nl.load(x[i]) for i in range(4))
    ab = nisa.tensor_tensor(a, b, op=nl.multiply)
    abc = nisa.tensor_tensor(ab, c, op=nl.multiply)
    abcd = nisa.tensor_tensor(abc, d, op=nl.multiply)
    nl.store(out, nisa.tensor_tensor(nisa.tensor_tensor(abcd, a, op=nl.add), b, op=nl.add))
    return out


def _x():
    return np.random.default_rng(5).random((4, 128, F), dtype=np.float32)


def _run(kernel, x, **switches):
    with warnings.catch_warnings(record=True) as caught, using(CompilerModel(**switches)):
        warnings.simplefilter("always")
        run = kernel.run((x,), {}, target="trn1")
    return run, [w for w in caught if issubclass(w.category, SbufSpillWarning)]


def test_results_take_the_bytes_of_operands_that_die_at_them():
    x = _x()
    run, spills = _run(product_of_four, x)
    np.testing.assert_array_equal(run.outputs, x[0] * x[1] * x[2] * x[3])
    assert run.machine.liveness is not None              # the kernel as written holds 7 tiles: retried
    assert spills == [] and run.machine.stats.spill_bytes == 0
    assert run.machine.sbuf.peak_bytes == 4 * TILE == SBUF_TRN1


def test_switch_off_needs_a_fifth_tile():
    x = _x()
    run, spills = _run(product_of_four, x, operand_reuse=False)
    np.testing.assert_array_equal(run.outputs, x[0] * x[1] * x[2] * x[3])
    assert len(spills) == 1 and run.machine.stats.spill_bytes > 0
    with pytest.raises(SbufCapacityError):
        _run(product_of_four, x, operand_reuse=False, sbuf_spill=False)


def test_operands_read_later_are_not_reused():
    x = _x()
    with pytest.raises(SbufCapacityError):
        _run(product_reusing_ab, x, sbuf_spill=False)
    run, spills = _run(product_reusing_ab, x)
    np.testing.assert_array_equal(run.outputs, x[0] * x[1] * x[2] * x[3] + x[0] + x[1])
    assert len(spills) == 1


def test_a_tile_placed_over_an_operand_is_a_recent_span_of_its_site():
    """Multi-buffering (depth 2) keeps a new tile off the bytes of every site's latest instance; the tile
    placed over a dying operand is its site's latest instance too. Addresses by hand (1 KiB tiles)."""
    from trnlab.core.memory import OnChipMemory
    mem = OnChipMemory(partitions=128, bytes_per_partition=4096, target="test", rotate=2)

    def alloc(loc, share=None):
        return mem.allocate(name=loc, shape=(128, 256), dtype_name="float32", p0=0, nparts=128, nbytes=1024,
                            loc=loc, api="test", share=share)

    a = alloc("k.py:1")
    b = alloc("k.py:2", share=a)            # the result written over `a`
    assert (a.b0, b.b0) == (0, 0) and mem.used_in(0, 128) == 1024
    d = alloc("k.py:1")                     # site 1 moves on: its latest instance is now at 1024
    assert d.b0 == 1024
    mem.free(b.uid)
    mem.free(d.uid)
    assert alloc("k.py:3").b0 == 2048       # off site 2's latest bytes (0) and site 1's (1024)
