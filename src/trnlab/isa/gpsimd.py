"""GpSimd Engine instructions: cross-partition reduce, in-partition gather, nonzero compaction.

GpSimd has no rule-of-thumb cost model (ARCH v2: each instruction is a hand-written kernel); costs
below start from GPSIMD_START (~150 cycles, ISA iota/affine_select) and are marked [UNCONFIRMED].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from trnlab.core import dtypes as dt
from trnlab.core.tensor import SBUF, Tensor
from trnlab.errors import DtypeError, NkiValidationError, OutOfBoundsError, ShapeError
from trnlab.isa import alu
from trnlab.isa.base import (DataToDst, Engine, SrcToDst, as_2d, expect_int, expect_same_dtype,
                             expect_same_elements, expect_same_partitions, expect_tile, expect_version,
                             is_bitvec, rows_where)
from trnlab.isa.base import fast_init as _fast_init, instruction_classes as _instruction_classes

_PARTITION_REDUCE_OPS = ("add", "maximum", "max", "bitwise_or", "bitwise_and")


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorPartitionReduce(DataToDst):
    """dst[0, :] = reduce(op, data[:, :]) across partitions (GpSimd)."""
    opcode: ClassVar[str] = "tensor_partition_reduce"
    op: str
    engine: Engine = Engine.GPSIMD

    def validate(self, chip):
        expect_tile(self, "data", self.data, chip, allowed=(SBUF,))
        expect_tile(self, "dst", self.dst, chip, allowed=(SBUF,))
        if self.op not in _PARTITION_REDUCE_OPS:
            self.fail(NkiValidationError, f"tensor_partition_reduce supports add, max, bitwise_or and "
                                          f"bitwise_and, got {self.op!r}")
        if self.dst.shape[0] != 1:
            self.fail(ShapeError, f"dst {self.dst.describe()} must have 1 partition (the reduction result)")
        expect_same_elements(self, data=self.data, dst=self.dst)
        if is_bitvec(self.op):
            for name, t in (("data", self.data), ("dst", self.dst)):
                expect_int(self, name, t, "an integer type for a bitvec reduction")

    def execute(self, m):
        x = as_2d(self.read(self.data))
        if not is_bitvec(self.op):
            x = x.astype(np.float32)
        r = alu.reduce(self.op, x, 0, self.api, self.loc, keepdims=True)
        self.store(self.dst, np.asarray(r).reshape(self.dst.shape))

    def cycles(self, chip):
        # [UNCONFIRMED] 8 cores x 16 partitions: each core folds its 16 rows (N cycles), then 8 partials.
        return chip.gpsimd_start_cycles + 2.0 * self.data.free_size


@dataclass(frozen=True, slots=True, kw_only=True)
class NcNGather(DataToDst):
    """dst[p, j] = data[p].flatten()[indices[p, j]] within each partition (GpSimd, SBUF only)."""
    opcode: ClassVar[str] = "nc_n_gather"
    indices: Tensor
    engine: Engine = Engine.GPSIMD

    def reads(self):
        return (self.data, self.indices)

    def validate(self, chip):
        for name, t in (("dst", self.dst), ("data", self.data), ("indices", self.indices)):
            expect_tile(self, name, t, chip, allowed=(SBUF,))
        expect_same_partitions(self, dst=self.dst, data=self.data, indices=self.indices)
        expect_same_elements(self, dst=self.dst, indices=self.indices)
        expect_same_dtype(self, dst=self.dst, data=self.data)
        if self.indices.dtype != dt.uint32:
            self.fail(DtypeError, f"indices {self.indices.describe()} must be uint32")

    def execute(self, m):
        data = as_2d(self.raw(self.data))
        idx = as_2d(self.raw(self.indices)).astype(np.int64)
        bad = (idx < 0) | (idx >= data.shape[1])
        if bad.any():
            p, j = map(int, np.argwhere(bad)[0])
            self.fail(OutOfBoundsError, f"index {int(idx[p, j])} at indices[{p}, {j}] is outside "
                                        f"[0, {data.shape[1]}) of {self.data.describe()}")
        self.store(self.dst, np.take_along_axis(data, idx, axis=1).reshape(self.dst.shape))

    def cycles(self, chip):
        # [UNCONFIRMED] one element per partition per cycle after the GpSimd start-up
        return chip.gpsimd_start_cycles + float(self.indices.free_size)


@dataclass(frozen=True, slots=True, kw_only=True)
class NonzeroWithCount(SrcToDst):
    """On partitions 0, 16, ..., 112: dst = [indices of nonzero src + index_offset, padding..., count] (trn2+)."""
    opcode: ClassVar[str] = "nonzero_with_count"
    index_offset: int = 0
    padding_val: int = -1
    engine: Engine = Engine.GPSIMD

    def validate(self, chip):
        expect_version(self, chip, 3)
        expect_tile(self, "src", self.src, chip, allowed=(SBUF,))
        expect_tile(self, "dst", self.dst, chip, allowed=(SBUF,))
        expect_same_partitions(self, src=self.src, dst=self.dst)
        if self.dst.free_size != self.src.free_size + 1:
            self.fail(ShapeError, f"dst {self.dst.describe()} must have one more element per partition than "
                                  f"src {self.src.describe()} (the count)")
        if self.src.dtype not in (dt.float32, dt.int32):
            self.fail(DtypeError, f"src {self.src.describe()} must be float32 or int32")
        if self.dst.dtype != dt.int32:
            self.fail(DtypeError, f"dst {self.dst.describe()} must be int32")

    def execute(self, m):
        rows = np.arange(0, self.src.shape[0], 16)
        src = as_2d(self.raw(self.src))
        n = src.shape[1]
        out = np.zeros((self.dst.shape[0], n + 1), dtype=np.int64)
        for r in rows:
            nz = np.flatnonzero(src[r] != 0)
            out[r, :] = self.padding_val
            out[r, :len(nz)] = nz + self.index_offset
            out[r, n] = len(nz)
        where = np.zeros(self.dst.shape[0], dtype=bool)
        where[rows] = True
        self.dst.write(out.reshape(self.dst.shape), where=rows_where(where, self.dst.shape))

    def cycles(self, chip):
        return chip.gpsimd_start_cycles + float(self.src.free_size)    # [UNCONFIRMED]


_fast_init(*_instruction_classes(globals()))     # (isa.base.fast_init: instructions are built per issue)
