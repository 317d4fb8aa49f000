"""Stack allocation (CompilerModel.stack_allocator): a kernel decorated with
nki.compiler.enable_stack_allocator gets SBUF addresses from a stack, so each loop-body tile takes the
address of its allocation site's previous instance and the next iteration's load waits for this
iteration's last read of those bytes; PSUM keeps its rotation. Switched off, the decorator is ignored.

Oracles: addresses by hand (tile bytes per partition); the order of the load of iteration i+1 and the
last read of iteration i's tile from the dependence a shared address implies (no cost formula used);
values against numpy."""
import ml_dtypes
import numpy as np

from trnlab import nki_beta1 as nki
from trnlab.core.compiler import CompilerModel, using
from trnlab.core.machine import Machine
from trnlab.nki_beta1 import isa as nisa
from trnlab.nki_beta1 import language as nl

ITERS, W, REPS = 3, 2048, 3


def _addresses(m, n, *, buffer="sbuf", shape=(128, 1024)):
    """b0 of n tiles of one allocation site, the previous one still held by the kernel (Python rebinds
    the name only after the new tile exists, as in a loop body)."""
    out, prev = [], None
    for _ in range(n):
        t = m.new_onchip(buffer, shape, np.float32, "t", api="test", loc="k.py:5")
        out.append(t.storage.alloc.b0)
        prev = t
    del prev
    return out


def test_stack_allocation_gives_each_site_its_previous_address():
    m = Machine("trn2", stack_alloc=True)
    assert _addresses(m, 4) == [0, 0, 0, 0]
    # the decorator ignored: the previous instance is live, so rotation / first fit move the tile
    m = Machine("trn2", stack_alloc=True, compiler=CompilerModel(stack_allocator=False))
    assert _addresses(m, 3) == [0, 4096, 0]
    m = Machine("trn2", compiler=CompilerModel(multibuffer=False))
    assert _addresses(m, 4) == [0, 4096, 0, 4096]


def test_psum_keeps_rotating_under_the_stack_allocator():
    m = Machine("trn2", stack_alloc=True)                 # default depth 2; [128, 512] fp32 = one bank
    assert [b0 // 2048 for b0 in _addresses(m, 4, buffer="psum", shape=(128, 512))] == [0, 1, 0, 1]


@nki.compiler.enable_stack_allocator
@nki.compiler.skip_middle_end_transformations
@nki.jit
def stacked(a):
    out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
    for i in range(ITERS):
        t = nl.ndarray((128, W), dtype=a.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=a[:, i * W:(i + 1) * W])
        r = nl.ndarray((128, W), dtype=a.dtype, buffer=nl.sbuf)
        ip, jf = nl.mgrid[0:128, 0:W]
        for _ in range(REPS):                  # REPS reads of t: the last one frees its bytes
            r[ip, jf] = nisa.activation(op=nl.exp, data=t[ip, jf])
        nisa.dma_copy(dst=out[:, i * W:(i + 1) * W], src=r)
    return out


def _loads_and_exps(run):
    """[(start, end)] of each iteration's load (the whole DMA) and of its last exp, in program order."""
    loads, exps = {}, []
    for e in run.machine.scheduler.records:
        if e.name == "dma_copy" and e.operands[0].buffer == "sbuf":
            s, t = loads.get(e.index, (e.start, e.end))
            loads[e.index] = (min(s, e.start), max(t, e.end))
        elif e.name == "activation":
            exps.append((e.start, e.end))
    return [loads[i] for i in sorted(loads)], exps[REPS - 1::REPS]


def test_the_next_load_waits_for_the_last_read_of_the_stacked_tile():
    a = (np.arange(128 * ITERS * W) % 7 / 8).reshape(128, ITERS * W).astype(ml_dtypes.bfloat16)
    run = stacked.run((a,), {}, target="trn2", trace=True)
    np.testing.assert_allclose(run.outputs.astype(np.float32), np.exp(a.astype(np.float32)), rtol=1e-2)
    loads, exps = _loads_and_exps(run)
    assert len(loads) == len(exps) == ITERS
    assert all(loads[i + 1][0] >= exps[i][1] for i in range(ITERS - 1))
    with using(CompilerModel(stack_allocator=False)):    # what-if: rotation lets the load run ahead
        off = stacked.run((a,), {}, target="trn2", numerics=False, trace=True)
    loads, exps = _loads_and_exps(off)
    assert loads[1][0] < exps[0][1]
    assert off.machine.scheduler.end < run.machine.scheduler.end


def test_the_decorator_marks_the_kernel_above_or_below_jit():
    def body(a):
        return a
    assert nki.compiler.enable_stack_allocator(nki.jit(body)).options["stack_allocator"]
    assert nki.jit(nki.compiler.enable_stack_allocator(log_level=20)(body)).options["stack_allocator"]
    assert "stack_allocator" not in nki.jit(lambda a: a).options
    assert stacked[2].options["stack_allocator"]         # a launch grid keeps it


def _copy_through_sbuf():
    """A fresh kernel function (the decorator marks the function object it is given)."""
    def copy(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        t = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=a)
        nisa.dma_copy(dst=out, src=t)
        return out
    return copy


def test_the_decorator_reaches_the_kernel_inside_benchmark_and_profile_wrappers(tmp_path):
    """Above @nki.jit(mode="benchmark") / @nki.benchmark / @nki.profile, or on a function those wrappers
    (or nki.baremetal) take later: the run allocates SBUF as a stack."""
    a = np.ones((128, 64), dtype=np.float32)
    stack = nki.compiler.enable_stack_allocator
    wrapped = [stack(nki.jit(_copy_through_sbuf(), mode="benchmark")), stack(nki.benchmark(_copy_through_sbuf())),
               nki.benchmark(stack(_copy_through_sbuf()))]
    for k in wrapped:
        k(a)
        assert k.benchmark_result.run.machine.sbuf.stack
    unmarked = nki.benchmark(_copy_through_sbuf())
    unmarked(a)
    assert not unmarked.benchmark_result.run.machine.sbuf.stack
    profiled = stack(nki.profile(working_directory=str(tmp_path))(_copy_through_sbuf()))
    assert profiled.kernel.options["stack_allocator"]
    assert nki.baremetal(stack(_copy_through_sbuf())).options["stack_allocator"]
    assert "stack_allocator" not in nki.baremetal(_copy_through_sbuf()).options


_LIST_B0S: list = []


@nki.compiler.enable_stack_allocator
@nki.jit
def stacked_list(a):
    """Three tiles of one allocation site held in a list (a Python loop unrolled at trace time), all
    live until the second loop: not a loop body whose previous tile is dead when the site runs again."""
    out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
    tiles = [nl.ndarray((128, 64), dtype=a.dtype, buffer=nl.sbuf) for _ in range(3)]
    _LIST_B0S[:] = [t.storage.alloc.b0 for t in tiles]     # (the last attempt's: a retry runs it again)
    for i, t in enumerate(tiles):
        nisa.dma_copy(dst=t, src=a[:, i * 64:(i + 1) * 64])
    for i, t in enumerate(tiles):
        nisa.dma_copy(dst=out[:, i * 64:(i + 1) * 64], src=t)
    return out


def test_a_list_of_one_sites_tiles_runs_under_the_stack_allocator():
    """3 x 256 B per partition of 224 KiB: it fits; it used to raise SbufCapacityError (the second tile
    retired the first, still held and used), also on the retry with tiles freed at their last use."""
    a = np.arange(128 * 192, dtype=np.float32).reshape(128, 192)
    run = stacked_list.run((a,), {}, target="trn2")
    np.testing.assert_array_equal(run.outputs, a)
    assert run.machine.sbuf.stack
    assert sorted(_LIST_B0S) == [0, 256, 512]      # three live tiles side by side (hand count: 256 B each)


@nki.jit
def absmax_rows(x):
    ab = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    mx = nl.ndarray((x.shape[0], 1), dtype=nl.float32, buffer=nl.shared_hbm)
    xt = nl.load(x)
    m = nl.ndarray((x.shape[0], 1), dtype=nl.float32, buffer=nl.sbuf)
    a = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
    ip, jf = nl.mgrid[0:x.shape[0], 0:x.shape[1]]
    a[ip, jf] = nisa.tensor_scalar_reduce(data=xt[ip, jf], op0=nl.abs, operand0=0.0, reduce_op=nl.max,
                                          reduce_res=m)
    nl.store(ab, a)
    nl.store(mx, m)
    return ab, mx


def test_tensor_scalar_reduce_assigned_to_a_tile_is_one_instruction():
    """The result is written into the assigned tile, as neuronx-cc does: no Vector copy behind it."""
    x = (np.arange(128 * 256) % 11 - 5.0).reshape(128, 256).astype(np.float32)
    run = absmax_rows.run((x,), {}, target="trn2", trace=True)
    ab, mx = run.outputs
    np.testing.assert_array_equal(ab, np.abs(x))
    np.testing.assert_array_equal(mx[:, 0], np.abs(x).max(axis=1))
    compute = [e.name for e in run.machine.scheduler.records if not e.track.startswith("dma")]
    assert compute == ["tensor_scalar"]
