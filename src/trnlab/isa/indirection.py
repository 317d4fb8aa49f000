"""Tensor Indirection (TI, NeuronCore-v4+): an on-chip view made by NkiTensor.indirect(index, num_elem).

AWS's NkiTensor.indirect docstring: TI reads or writes a column of data at given free-dimension offsets
across contiguous partitions, as the input (gather) or output (scatter) of an instruction. Offset i is
taken from index[i % G, i // G] of the partition's group of G partitions (G = 16 on the Vector, Scalar
and GpSimd engines, 32 on the Tensor engine); index is an SBUF tile [P, K] with P == data partitions,
num_elem defaults to index.size, and the view's shape is (P, num_elem).
Modelled consumer: nisa.tensor_copy (TensorCopyIndirect). Other instructions refuse a TI operand.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from trnlab.core import dtypes as dt
from trnlab.core.tensor import SBUF, OperandOf, Tensor
from trnlab.errors import DtypeError, OutOfBoundsError, PartitionError, ShapeError
from trnlab.isa.base import (Engine, Instruction, expect_same_partitions, expect_tile, expect_version,
                             vector_cost)
from trnlab.isa.base import fast_init as _fast_init, instruction_classes as _instruction_classes


def group_size(engine: Engine) -> int:
    return 32 if engine == Engine.TENSOR else 16


@dataclass(frozen=True, slots=True)
class TensorIndirection(OperandOf):
    """tensor[p, offset(p, i)] for i < num_elem, the offsets read from `index` (see the module doc)."""
    tensor: Tensor
    index: Tensor
    num_elem: int

    @property
    def shape(self) -> tuple:
        return (self.tensor.shape[0], self.num_elem)

    @property
    def size(self) -> int:
        return self.shape[0] * self.num_elem

    @property
    def free_size(self) -> int:
        return self.num_elem

    @property
    def ndim(self) -> int:
        return 2

    def is_indirect(self) -> bool:
        return True

    def describe(self) -> str:
        return (f"'{self.name}'.indirect('{self.index.name}', num_elem={self.num_elem}) "
                f"[{self.shape[0]},{self.num_elem}] {dt.name_of(self.dtype)} in {self.buffer}")

    def validate(self, ins: Instruction, chip, name: str) -> None:
        expect_version(ins, chip, 4)
        expect_tile(ins, f"{name} (indirect data)", self.tensor, chip)
        expect_tile(ins, f"{name} (indirect index)", self.index, chip, (SBUF,))
        if not dt.is_int(self.index.dtype):
            ins.fail(DtypeError, f"tensor indirection index {self.index.describe()} must be an integer tile")
        expect_same_partitions(ins, data=self.tensor, index=self.index)
        g, p, k = group_size(ins.engine), self.tensor.shape[0], self.index.free_size
        if not 0 < self.num_elem <= g * k:
            ins.fail(ShapeError, f"num_elem {self.num_elem} of {self.describe()}: a group of {g} partitions holds "
                                 f"{g} x {k} = {g * k} offsets (offset i is index[i % {g}, i // {g}])")
        last_group = (p - 1) // g * g
        if last_group + min(self.num_elem, g) > p:
            ins.fail(PartitionError, f"{self.describe()}: the group of {g} partitions starting at {last_group} needs "
                                     f"index rows up to {last_group + min(self.num_elem, g) - 1}, but there are {p} "
                                     f"partitions (use a multiple of {g})")

    def offsets(self, ins: Instruction) -> np.ndarray:
        """[P, num_elem] int64 free-dimension offsets, bounds-checked against the data's free size."""
        g = group_size(ins.engine)
        idx = self.index.read(ins.api, ins.loc).reshape(self.index.shape[0], -1).astype(np.int64)
        p, i = np.arange(self.tensor.shape[0]), np.arange(self.num_elem)
        rows = (p // g * g)[:, None] + (i % g)[None, :]
        offs = idx[rows, np.broadcast_to(i // g, rows.shape)]
        bad = (offs < 0) | (offs >= self.tensor.free_size)
        if bad.any():
            r, c = (int(v[0]) for v in np.nonzero(bad))
            ins.fail(OutOfBoundsError, f"tensor indirection offset {int(offs[r, c])} (partition {r}, element {c}) "
                                       f"is outside the {self.tensor.free_size} elements per partition of "
                                       f"{self.tensor.describe()}")
        return offs

    def coords(self, offs: np.ndarray) -> tuple:
        """Index arrays into the data view's own (possibly multi-dim) shape for each offset."""
        rows = np.broadcast_to(np.arange(offs.shape[0])[:, None], offs.shape)
        return (rows,) + np.unravel_index(offs, self.tensor.shape[1:])


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorCopyIndirect(Instruction):
    """nisa.tensor_copy where src (gather) and/or dst (scatter) is a TensorIndirection."""
    opcode: ClassVar[str] = "tensor_copy"
    dst: "Tensor | TensorIndirection"
    src: "Tensor | TensorIndirection"

    @staticmethod
    def _base(x):
        return x.tensor if isinstance(x, TensorIndirection) else x

    def reads(self):
        extra = tuple(x.index for x in (self.src, self.dst) if isinstance(x, TensorIndirection))
        return (self._base(self.src),) + extra

    def writes(self):
        return (self._base(self.dst),)

    def validate(self, chip):
        for name, x in (("src", self.src), ("dst", self.dst)):
            if isinstance(x, TensorIndirection):
                x.validate(self, chip, name)
            else:
                expect_tile(self, name, x, chip)
        if self.src.shape[0] != self.dst.shape[0] or self.src.free_size != self.dst.free_size:
            self.fail(ShapeError, f"src {self.src.describe()} and dst {self.dst.describe()} must have the same "
                                  f"partitions and elements per partition")

    def execute(self, m):
        values = self._gather(self.src)
        if dt.storage(self.dst.dtype) != values.dtype:
            values = dt.to_fp32(values).astype(np.float32)
        if isinstance(self.dst, TensorIndirection):
            self._scatter(self.dst, values.reshape(self.dst.shape))
        else:
            self.store(self.dst, values.reshape(self.dst.shape))

    def _gather(self, x) -> np.ndarray:
        if not isinstance(x, TensorIndirection):
            return self.raw(x)
        offs = x.offsets(self)
        return np.asarray(self.raw(x.tensor))[x.coords(offs)]

    def _scatter(self, x: TensorIndirection, values: np.ndarray) -> None:
        offs = x.offsets(self)
        full = np.zeros(x.tensor.shape, dtype=values.dtype)
        where = np.zeros(x.tensor.shape, dtype=bool)
        at = x.coords(offs)
        full[at], where[at] = values, True
        x.tensor.write(full, where=where, api=self.api, loc=self.loc)

    def cycles(self, chip):
        return vector_cost(chip, float(self.dst.free_size))


_fast_init(*_instruction_classes(globals()))     # (isa.base.fast_init: instructions are built per issue)
