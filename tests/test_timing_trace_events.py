"""Trace events (Scheduler trace=True): every queue piece of a DMA carries the instruction's operands
(made once per instruction), Event/Operand built by their slot-setting __init__ behave as the
dataclasses they are, and dtypes.name_of names dtypes by identity."""
import dataclasses

import ml_dtypes
import numpy as np
import pytest

import trnlab.nki as nki
import trnlab.nki.isa as nisa
import trnlab.nki.language as nl
from trnlab.core import dtypes as dt
from trnlab.nki.tensor import NkiTensor
from trnlab.runtime import run_kernel
from trnlab.timing.scheduler import Event, Operand

A = np.zeros((128, 2048), np.float32)


@nki.jit
def copy_through(a):
    out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm, name="out")
    t = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf, name="tile")
    nisa.dma_copy(dst=t, src=a)
    nisa.dma_copy(dst=out, src=t)
    return out


def test_each_dma_piece_names_its_instructions_operands():
    run = run_kernel(copy_through, (A,), {}, numerics=False, trace=True, tensor_class=NkiTensor)
    events = run.machine.scheduler.records
    load = [e for e in events if e.index == 0]
    store = [e for e in events if e.index == 1]
    assert len(load) > 1 and len(store) > 1          # 1 MiB transfers: spread over several queues
    tile = Operand("tile", (128, 2048), "float32", "sbuf")
    for e in load:
        assert e.operands[0] == tile and e.operands[1].buffer == "hbm" and len(e.operands) == 2
    for e in store:
        assert e.operands == (Operand("out", (128, 2048), "float32", "hbm"), tile)
    assert sum(e.nbytes for e in load) == A.nbytes


def test_event_init_keeps_dataclass_behaviour():
    e = Event("nc_matmul", "tensor", 0.5, 1.5, "k.py:3", "nisa.nc_matmul")
    assert (e.operands, e.flops, e.nbytes, e.index) == ((), 0.0, 0, -1)     # the declared defaults
    assert Event(name="x", track="t", start=0, end=1, loc="l", api="a", index=7).index == 7
    assert dataclasses.replace(e, nbytes=9).nbytes == 9 and dataclasses.replace(e, nbytes=9).name == "nc_matmul"
    assert e == Event("nc_matmul", "tensor", 0.5, 1.5, "k.py:3", "nisa.nc_matmul")
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.start = 0.0
    with pytest.raises(TypeError):
        Event("only-a-name")
    with pytest.raises(TypeError):
        Operand("x", (1,), "float32", "sbuf", extra=1)


def test_name_of_by_identity():
    for d, name in ((np.dtype(np.float32), "float32"), (np.dtype(ml_dtypes.bfloat16), "bfloat16"),
                    (np.dtype(">f4"), "float32"), (np.dtype(np.int8), "int8")):
        assert dt.name_of(d) == name and dt.name_of(d) == name
    assert dt.name_of(dt.tfloat32) == "tfloat32"
    many = [np.dtype([("f", np.float32, (i,))]) for i in range(1, dt._NAMES_MAX + 50)]
    assert [dt.name_of(d) for d in many] == [d.name for d in many]
    assert len(dt._NAMES) <= dt._NAMES_MAX
