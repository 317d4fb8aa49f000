"""The current machine is per thread/context: concurrent kernel runs each record only their own work."""
import threading

import numpy as np

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.core.machine import Machine, current, has_current, running


def _make(reps: int, barrier):
    @nki.jit
    def copy_rows(a):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        t = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=a)
        if barrier is not None:
            barrier.wait(timeout=30)          # all four runs are inside their kernels at once
        for _ in nl.affine_range(reps):
            nisa.tensor_copy(dst=t, src=t)
        nisa.dma_copy(dst=out, src=t)
        return out
    return copy_rows


def _count(run) -> int:
    return sum(run.machine.stats.instructions.values())


def test_four_threads_each_record_exactly_their_own_instructions():
    reps = [1, 5, 17, 40]
    a = np.arange(128 * 8, dtype=np.float32).reshape(128, 8)
    alone = [_count(_make(r, None).run((a,), {})) for r in reps]
    assert alone == [r + 2 for r in reps]             # two DMAs and r copies, counted independently

    barrier = threading.Barrier(len(reps))
    counts, outs, errors = [None] * 4, [None] * 4, []

    def body(i):
        try:
            run = _make(reps[i], barrier).run((a,), {})
            counts[i], outs[i] = _count(run), run.outputs
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert counts == alone
    for out in outs:
        np.testing.assert_array_equal(out, a)


def test_many_machines_in_one_thread_nest_and_unwind():
    outer, inner = Machine("trn1"), Machine("trn2")
    assert not has_current()
    with running(outer):
        with running(inner):
            assert current() is inner
        assert current() is outer
    assert not has_current()


def test_a_thread_does_not_see_another_threads_machine():
    seen = []
    with running(Machine("trn1")):
        t = threading.Thread(target=lambda: seen.append(has_current()))
        t.start()
        t.join()
    assert seen == [False]


def _make_beta1(reps: int, barrier):
    import trnlab.nki_beta1 as b1
    import trnlab.nki_beta1.language as bl

    @b1.jit
    def scaled_add(a):
        out = bl.ndarray(a.shape, dtype=a.dtype, buffer=bl.shared_hbm)
        t = bl.load(a)
        if barrier is not None:
            barrier.wait(timeout=30)
        for _ in bl.affine_range(reps):
            t = bl.add(t, 1.0)             # a pending result, issued on its first use
        bl.store(out, value=t)
        return out
    return scaled_add


def test_beta1_kernels_in_four_threads_keep_their_own_front_end_state():
    reps = [1, 3, 8, 20]
    a = np.zeros((128, 8), dtype=np.float32)
    alone = [_count(_make_beta1(r, None).run((a,), {})) for r in reps]
    barrier = threading.Barrier(len(reps))
    counts, outs, errors = [None] * 4, [None] * 4, []

    def body(i):
        try:
            run = _make_beta1(reps[i], barrier).run((a,), {})
            counts[i], outs[i] = _count(run), run.outputs
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert counts == alone
    for r, out in zip(reps, outs):
        np.testing.assert_array_equal(out, np.full_like(a, r))


def _make_beta1_grid(barrier):
    import trnlab.nki_beta1 as b1
    import trnlab.nki_beta1.language as bl

    @b1.jit
    def halves(a):
        out = bl.ndarray(a.shape, dtype=a.dtype, buffer=bl.shared_hbm)   # one tensor for both programs
        pid = bl.program_id(0)
        t = bl.load(a[pid * 64:(pid + 1) * 64, :])
        barrier.wait(timeout=30)
        bl.store(out[pid * 64:(pid + 1) * 64, :], value=bl.multiply(t, 2.0))
        return out
    return halves


def test_beta1_grid_launches_in_four_threads_share_hbm_per_launch():
    a = np.arange(128 * 8, dtype=np.float32).reshape(128, 8)
    barrier = threading.Barrier(4)
    outs, errors = [None] * 4, []

    def body(i):
        try:
            outs[i] = _make_beta1_grid(barrier)[2].run((a,), {}).outputs
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for out in outs:
        np.testing.assert_array_equal(out, 2 * a)
