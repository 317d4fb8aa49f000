"""The machine is given its scheduler: any observer with schedule(instr) sees the instruction stream."""
import numpy as np

import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.core.machine import Machine
from trnlab.nki.tensor import NkiTensor
from trnlab.runtime import run_kernel


class Recorder:
    def __init__(self, chip):
        self.chip = chip
        self.apis = []

    def schedule(self, instr):
        self.apis.append(instr.api)


def kernel(a):
    out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
    t = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=t, src=a)
    nisa.tensor_scalar(dst=t, data=t, op0=nl.multiply, operand0=3.0)
    nisa.dma_copy(dst=out, src=t)
    return out


def test_a_custom_observer_sees_every_instruction_in_order():
    m = Machine("trn1", scheduler=Recorder, tensor_class=NkiTensor)
    a = np.ones((128, 4), np.float32)
    run = run_kernel(kernel, (a,), {}, machine=m)
    np.testing.assert_array_equal(run.outputs, 3 * a)
    assert m.scheduler.chip.name == "trn1"
    assert m.scheduler.apis == ["nisa.dma_copy", "nisa.tensor_scalar", "nisa.dma_copy"]


def test_no_scheduler_means_no_timing():
    m = Machine("trn2", tensor_class=NkiTensor)
    run_kernel(kernel, (np.ones((128, 4), np.float32),), {}, machine=m)
    assert m.scheduler is None and sum(m.stats.instructions.values()) == 3
