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
