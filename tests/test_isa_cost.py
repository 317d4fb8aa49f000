"""Every instruction's cost comes from its ISA definition, DMA included; the scheduler dispatches on
the kind of cost, never on opcode strings; chip-preset constants, not literals, set the rates.

Oracles: AWS's published constants (DMAG: 17 B/ns per DMA engine on trn1, 16 engines; ~1.3 us fixed
DMA cost; ARCH v2: a 128-partition load = 16 transfers x 8 partitions; RTD: trn1 820 GB/s HBM per chip,
2 NeuronCores), the two fitted DMA constants of docs/calibration.md (0.44, 128 B), and the ISA
docstring formula max(MIN_II, N) for tensor_copy.
"""
import dataclasses

import ml_dtypes
import numpy as np
import pytest

from trnlab.core.machine import Machine
from trnlab.runtime import timing_model
from trnlab.hw import TRN1, TRN2
from trnlab.isa import DmaCopy, MatMul, TensorCopy, TensorScalar
from trnlab.isa.base import DmaCost, Engine, EngineCost, MatmulCost


def _machine(chip=TRN1):
    return Machine(chip, numerics=False, scheduler=timing_model())


def _alloc(m, kind, shape, dtype, name, fill=None):
    if kind == "hbm":
        return m.hbm_tensor(np.zeros(shape, dtype), name)
    return m.new_onchip(kind, shape, dtype, name, api="test", loc="here:1", fill=fill)


def test_dma_copy_cost_is_its_transfer_through_the_dma_model():
    m = _machine()
    src = _alloc(m, "hbm", (128, 512), np.float32, "a", fill=0.0)
    dst = _alloc(m, "sbuf", (128, 512), np.float32, "t")
    ins = DmaCopy(api="test", loc="here:1", dst=dst, src=src)
    cost = ins.cost(TRN1)
    assert isinstance(cost, DmaCost)
    assert cost.nbytes == 128 * 512 * 4 and cost.hbm and cost.queue is None
    assert cost.pieces == 16                      # 128 partitions / 8 per transfer, one transfer per queue
    # 2 KiB descriptors (one SBUF partition row): 17 GB/s x 0.44 x 2048 / (2048 + 128), under 820/2/16 GB/s
    assert cost.rate == pytest.approx(17e9 * 0.44 * 2048 / 2176, rel=1e-12)
    with pytest.raises(TypeError, match="DMA queues"):
        ins.cycles(TRN1)


def test_one_dma_on_an_idle_core_takes_fixed_latency_plus_its_share():
    m = _machine()
    src = _alloc(m, "hbm", (128, 512), np.float32, "a", fill=0.0)
    dst = _alloc(m, "sbuf", (128, 512), np.float32, "t")
    start, end = m.scheduler.schedule(DmaCopy(api="test", loc="here:1", dst=dst, src=src))
    share = 128 * 512 * 4 / 16
    assert start == pytest.approx(1.3e-6, rel=1e-12)
    assert end == pytest.approx(1.3e-6 + share / (17e9 * 0.44 * 2048 / 2176), rel=1e-12)
    assert m.scheduler.work.hbm_bytes == 128 * 512 * 4


def test_dma_on_a_fixed_queue_uses_one_queue():
    m = _machine()
    src = _alloc(m, "hbm", (128, 512), np.float32, "a", fill=0.0)
    dst = _alloc(m, "sbuf", (128, 512), np.float32, "t")
    cost = DmaCopy(api="test", loc="here:1", dst=dst, src=src, queue=5).cost(TRN1)
    assert (cost.pieces, cost.queue) == (1, 5)
    m.scheduler.schedule(DmaCopy(api="test", loc="here:1", dst=dst, src=src, queue=5))
    assert [u for u, b in m.scheduler.busy.items() if b > 0] == [("dma", 5)]


def test_matmul_cost_is_load_stationary_and_multiply_moving():
    m = _machine()
    st = _alloc(m, "sbuf", (128, 128), ml_dtypes.bfloat16, "s", fill=0.0)
    mv = _alloc(m, "sbuf", (128, 512), ml_dtypes.bfloat16, "m", fill=0.0)
    ps = _alloc(m, "psum", (128, 512), np.float32, "p")
    cost = MatMul(api="test", loc="here:1", dst=ps, stationary=st, moving=mv).cost(TRN1)
    # ISA nc_matmul: max(min(64, 128), 512) = 512 PE cycles; LoadStationary 128 columns at 4x (perf guide)
    assert type(cost) is MatmulCost and cost == MatmulCost(cycles=512.0, ls_cycles=32.0)


def test_fp32_matmul_is_4x_and_the_onezero_hint_halves_it():
    m = _machine()
    st = _alloc(m, "sbuf", (1, 128), np.float32, "ones", fill=1.0)
    mv = _alloc(m, "sbuf", (1, 512), np.float32, "row", fill=0.0)
    ps = _alloc(m, "psum", (128, 512), np.float32, "p")
    plain = MatMul(api="test", loc="here:1", dst=ps, stationary=st, moving=mv).cost(TRN1)
    hinted = MatMul(api="test", loc="here:1", dst=ps, stationary=st, moving=mv, onezero=True).cost(TRN1)
    # ISA nc_matmul: 4 x max(min(64, 128), 512) PE cycles for fp32 inputs; is_stationary_onezero /
    # is_moving_onezero "could lead to 2x better performance" for fp32: 2 x 512
    assert plain.cycles == 4 * 512.0 and hinted.cycles == 2 * 512.0
    assert plain.ls_cycles == hinted.ls_cycles == 4 * 128 / 4


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RenamedMatMul(MatMul):
    """The same instruction under another opcode: scheduling must not depend on the name."""
    opcode = "renamed_matmul"


def _two_matmuls(cls):
    m = _machine(TRN2)
    st = [_alloc(m, "sbuf", (128, 128), ml_dtypes.bfloat16, f"s{i}", fill=0.0) for i in range(2)]
    mv = _alloc(m, "sbuf", (128, 512), ml_dtypes.bfloat16, "m", fill=0.0)
    ps = [_alloc(m, "psum", (128, 512), np.float32, f"p{i}") for i in range(2)]
    for i in range(2):
        m.issue(cls(api="test", loc="here:1", dst=ps[i], stationary=st[i], moving=mv))
    return m.scheduler.end


def test_scheduler_dispatches_on_cost_kind_not_opcode():
    assert RenamedMatMul.opcode != MatMul.opcode
    assert _two_matmuls(RenamedMatMul) == _two_matmuls(MatMul)


@pytest.mark.parametrize("make", ["tensor_copy", "tensor_scalar"])
def test_vector_16bit_rate_comes_from_the_chip_preset(make):
    m = _machine(TRN2)
    a = _alloc(m, "sbuf", (128, 2048), ml_dtypes.bfloat16, "a", fill=0.0)
    b = _alloc(m, "sbuf", (128, 2048), ml_dtypes.bfloat16, "b")
    if make == "tensor_copy":
        ins = TensorCopy(api="test", loc="here:1", dst=b, src=a)
    else:
        ins = TensorScalar(api="test", loc="here:1", dst=b, data=a, op0="multiply", operand0=2.0)
    # ISA: max(MIN_II, N) Vector cycles, N halved by trn2's 2x 16-bit rate (ARCH v3: 512 vs 256 elem/cycle)
    assert type(ins.cost(TRN2)) is EngineCost
    assert ins.cost(TRN2) == EngineCost(2048 / 2)
    assert ins.cost(TRN1) == EngineCost(2048)
    faster = TRN2.replace(vector_bf16_speedup=4.0)
    assert ins.cost(faster) == EngineCost(2048 / 4)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DmaWithoutModel(TensorCopy):
    """A DMA-engine instruction that forgot the DmaInstruction base (it would have cost 0 cycles)."""
    opcode = "dma_without_model"
    engine: Engine = Engine.DMA


def test_dma_engine_instruction_without_the_dma_model_is_refused():
    m = _machine()
    a = _alloc(m, "sbuf", (128, 64), np.float32, "a", fill=0.0)
    b = _alloc(m, "sbuf", (128, 64), np.float32, "b")
    with pytest.raises(TypeError, match="DmaInstruction"):
        DmaWithoutModel(api="test", loc="here:1", dst=b, src=a).cost(TRN1)
