"""The instruction base class and the shared hardware-rule checks.

An instruction is a frozen dataclass: its operands (tensor views), attributes, the front-end API
name and the kernel source line. `validate` checks hardware rules, `execute` is its numpy
semantics (fp32 math, rounded on write), `cycles` its cost on the executing engine's clock.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from trnlab.core import dtypes as dt
from trnlab.core.tensor import HBM, PSUM, SBUF, Tensor
from trnlab.errors import BufferKindError, PartitionError, ShapeError, DtypeError


class Engine(str, enum.Enum):
    TENSOR = "tensor"     # PE array
    VECTOR = "vector"     # DVE
    SCALAR = "scalar"     # ACT
    GPSIMD = "gpsimd"     # POOL
    DMA = "dma"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True, kw_only=True)
class Instruction:
    api: str                     # the front-end API that issued it (e.g. "nisa.nc_matmul")
    loc: str                     # kernel file:line
    opcode: ClassVar[str] = "instruction"
    engine: Engine = Engine.VECTOR
    mask: "np.ndarray | None" = None   # Beta 1 mask= predicate over the dst iteration space

    # --- operands ---
    def reads(self) -> tuple[Tensor, ...]:
        return ()

    def writes(self) -> tuple[Tensor, ...]:
        return ()

    # --- semantics ---
    def validate(self, chip) -> None:
        pass

    def execute(self, machine) -> None:
        raise NotImplementedError(f"{self.api}: numpy semantics of {self.opcode} not modelled")

    # --- cost ---
    def cycles(self, chip) -> float:
        """Engine cycles (throughput cost) on this instruction's engine."""
        return float(chip.min_ii_cycles)

    def flops(self) -> float:
        return 0.0

    def dma_bytes(self) -> int:
        return 0

    # --- helpers ---
    def fail(self, cls, what: str):
        raise cls(f"{self.api}: {what}. At {self.loc}")

    def read(self, t: Tensor) -> np.ndarray:
        """Engine input: the view's values upcast to fp32 (integers kept exact)."""
        return dt.to_fp32(t.read(self.api, self.loc))

    def store(self, t: Tensor, values) -> None:
        t.write(values, where=self.mask)


# --- shared rule checks (messages follow AWS's wording where it is documented) -----------------------

def expect_buffer(ins: Instruction, name: str, t: Tensor, allowed: tuple) -> None:
    if t.buffer not in allowed:
        ins.fail(BufferKindError,
                 f"Expected operand '{name}' of '{ins.api}' to be in address space '{'|'.join(allowed)}', "
                 f"but got a tile in '{t.buffer}' instead ({t.describe()})")


def expect_tile(ins: Instruction, name: str, t: Tensor, chip, allowed=(SBUF, PSUM)) -> None:
    """An on-chip operand: right buffer, rank >= 2, partition dim within limits."""
    expect_buffer(ins, name, t, allowed)
    if t.ndim < 2:
        ins.fail(ShapeError, f"Insufficient rank for operand '{name}' {t.describe()}: on-chip tiles need "
                             f"a partition and at least one free dimension")
    if t.shape[0] > chip.partitions:
        ins.fail(PartitionError, f"{name} partition dimension {t.shape[0]} exceeds maximum {chip.partitions} "
                                 f"({t.describe()})")
    limit = chip.psum_free_max_elems if t.buffer == PSUM else chip.sbuf_free_max_elems
    if t.free_size > limit and ins.engine in (Engine.VECTOR, Engine.SCALAR, Engine.GPSIMD):
        ins.fail(ShapeError, f"free size of operand '{name}' {t.describe()} is {t.free_size} elements per "
                             f"partition; limit from {t.buffer} is {limit}")


def expect_same_partitions(ins: Instruction, **tiles: Tensor) -> None:
    items = [(k, v) for k, v in tiles.items() if v is not None]
    first = items[0][1].shape[0]
    if any(v.shape[0] != first for _, v in items):
        desc = ", ".join(f"{k}[{', '.join(str(d) for d in v.shape)}]" for k, v in items)
        ins.fail(PartitionError, f"number of partitions (dimension 0 size of a tile) mismatch in parameters "
                                 f"({desc}) of '{ins.api}'")


def expect_same_elements(ins: Instruction, **tiles: Tensor) -> None:
    items = [(k, v) for k, v in tiles.items() if v is not None]
    first = items[0][1].free_size
    if any(v.free_size != first for _, v in items):
        desc = ", ".join(f"{k}{list(v.shape)}" for k, v in items)
        ins.fail(ShapeError, f"elements per partition mismatch in parameters ({desc}) of '{ins.api}'")


def expect_float(ins: Instruction, name: str, t: Tensor) -> None:
    if not dt.is_float(t.dtype):
        ins.fail(DtypeError, f"operand '{name}' must be a float type, got {dt.name_of(t.dtype)} ({t.describe()})")


def as_2d(x: np.ndarray) -> np.ndarray:
    """[P, f1, f2, ...] -> [P, F] (a view when possible)."""
    return x.reshape(x.shape[0], -1)


def vector_cost(chip, n: float, *, per_elem: float = 1.0, fast_16bit: bool = False) -> float:
    """max(MIN_II, per_elem * N) Vector-engine cycles (ISA docstrings), with trn2+ 16-bit speedups."""
    speed = chip.vector_bf16_speedup if fast_16bit else 1.0
    return max(chip.min_ii_cycles, per_elem * n / speed)
