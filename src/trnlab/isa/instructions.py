"""The instruction set: one frozen dataclass per instruction with its rules, numpy semantics and cost.

Costs are the Nov-2025 NKI ISA docstring formulas ("Estimated instruction cost" in
https://github.com/aws-neuron/aws-neuron-sdk/blob/1514f0161870766f551b0aee69da9a48b9ae6b7f/nki/api/nki/isa/__init__.py),
in cycles of the executing engine; N = elements per partition of the main input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from trnlab.core import dtypes as dt
from trnlab.core.tensor import HBM, PSUM, SBUF, Tensor
from trnlab.core.machine import register_spill_copy
from trnlab.errors import (AccumulateUninitializedWarning, BufferKindError, DtypeError, MatmulLimitError,
                           NkiValidationError, OutOfBoundsError, PartitionError, ShapeError)
from trnlab.hw import graph_chip
from trnlab.isa import alu
from trnlab.isa.base import (DataToDst, DmaCost, DmaInstruction, Engine, Instruction, MatmulCost, SrcToDst, ToDst, accumulate,
                             as_2d, balance_choices, float_math, expect_buffer,
                             expect_elementwise, expect_not_both_psum, expect_oob_mode, expect_partition_layout,
                             expect_same_elements, expect_same_partitions, expect_start_partition, expect_tile,
                             expect_vector, given, is_bitvec, rows_where, same_facts, tensors, validate_once,
                             vector_cost)
from trnlab.isa.base import fast_init as _fast_init, instruction_classes as _instruction_classes

ANY = (HBM, SBUF, PSUM)
ONCHIP = (SBUF, PSUM)


def _is16(t: Tensor) -> bool:
    return t.dtype in (dt.bfloat16, dt.float16)


def _sbuf16(a: Tensor, b: Tensor) -> bool:
    """Both operands 16-bit floats in SBUF: the chip's vector_bf16_speedup applies (2x on trn2+)."""
    return _is16(a) and _is16(b) and a.buffer == SBUF and b.buffer == SBUF


# ================================================================================================
# Data movement
# ================================================================================================

@dataclass(frozen=True, slots=True, kw_only=True)
class DmaCopy(DmaInstruction, SrcToDst):
    """dst = src through a DMA queue (HBM<->SBUF, SBUF<->SBUF, HBM<->HBM); dtype converts via fp32."""
    opcode: ClassVar[str] = "dma_copy"
    engine: Engine = Engine.DMA
    queue: int | None = None          # DMA queue (None: the scheduler picks)
    raw_bytes: bool = False           # hwdge: bytes move unconverted, dtypes must match

    @validate_once
    def validate(self, chip):
        expect_buffer(self, "dst", self.dst, (HBM, SBUF))
        expect_buffer(self, "src", self.src, (HBM, SBUF))
        if self.dst.size != self.src.size:
            self.fail(ShapeError, f"element counts differ: dst {self.dst.describe()} has {self.dst.size}, "
                                  f"src {self.src.describe()} has {self.src.size}")
        for name, t in (("dst", self.dst), ("src", self.src)):
            if t.on_chip and t.shape[0] > chip.partitions:
                self.fail(PartitionError, f"{name} partition dimension {t.shape[0]} exceeds maximum "
                                          f"{chip.partitions} ({t.describe()})")
        if self.raw_bytes and chip.nc_version < 3:
            self.fail(NkiValidationError, f"dge_mode=hwdge (hardware DGE) needs NeuronCore-v3 or newer; "
                                          f"target is {chip.name}")
        if self.raw_bytes and self.dst.dtype != self.src.dtype:
            self.fail(DtypeError, f"dge_mode=hwdge moves raw bytes: dst dtype {dt.name_of(self.dst.dtype)} "
                                  f"must equal src dtype {dt.name_of(self.src.dtype)}")

    def execute(self, m):
        src = self.raw(self.src)
        values = src if src.dtype == dt.storage(self.dst.dtype) else dt.to_fp32(src)
        if values.shape != self.dst.shape:
            values = values.reshape(self.dst.shape)
        self.store(self.dst, values)

    def dma_bytes(self) -> int:
        return max(self.src.nbytes, self.dst.nbytes)


@dataclass(frozen=True, slots=True, kw_only=True)
class SpillCopy(DmaCopy):
    """A DMA neuronx-cc inserts itself to spill an SBUF tile to HBM or reload it (CompilerModel.sbuf_spill,
    core.machine). It moves whole tiles, one contiguous run per partition, on the compiler's own spill
    queues (qSyncSpillReload0 in the fused-Mamba tutorial's profile), so it sustains the rate the DMAs
    of compiled graphs do (hw graph_dma_efficiency), not the NKI-kernel dma_efficiency fitted to the
    matmul tutorial's tile loads."""

    def cost(self, chip) -> DmaCost:
        return DmaInstruction.cost(self, graph_chip(chip))


register_spill_copy(SpillCopy)        # compiler spills/reloads (core.machine)


@dataclass(frozen=True, slots=True, kw_only=True)
class DmaGather(DmaInstruction, ToDst):
    """Indirect DMA: dst[i, ...] = src[idx[i], ...] along src axis 0 (or scatter: dst[idx[i]] = src[i]).

    oob_mode 'error' raises on an index outside src; 'skip' leaves those rows untouched.
    accumulate (scatter only): dst[idx[i]] += src[i], the read-modify-write add of NKI's
    dma_copy(dst_rmw_op=np.add); rows are applied in order, each sum rounded to dst's dtype, so
    repeated indices accumulate (an embedding's gradient)."""
    opcode: ClassVar[str] = "dma_indirect"
    src: Tensor
    index: Tensor
    scatter: bool = False
    accumulate: bool = False
    oob_mode: str = "error"
    engine: Engine = Engine.DMA
    queue: int | None = None

    def reads(self):
        return (self.src, self.index, self.dst) if self.accumulate else (self.src, self.index)

    def validate(self, chip):
        if self.accumulate and not self.scatter:
            self.fail(NkiValidationError, "accumulate (dst_rmw_op=add) applies to a scatter only")
        expect_buffer(self, "index", self.index, (SBUF,))
        expect_buffer(self, "dst", self.dst, (HBM, SBUF))
        expect_buffer(self, "src", self.src, (HBM, SBUF))
        if not dt.is_int(self.index.dtype):
            self.fail(DtypeError, f"index tile {self.index.describe()} must be an integer type")
        expect_oob_mode(self)
        rows, table = (self.src, self.dst) if self.scatter else (self.dst, self.src)
        if rows.shape[0] != self.index.size:
            self.fail(ShapeError, f"{self.index.describe()} holds {self.index.size} indices but "
                                  f"{rows.describe()} has {rows.shape[0]} rows")
        if rows.size // max(1, rows.shape[0]) != table.size // max(1, table.shape[0]):
            self.fail(ShapeError, f"row sizes differ: {rows.describe()} vs indexed {table.describe()}")

    def execute(self, m):
        idx = self.raw(self.index).reshape(-1).astype(np.int64)
        table = self.dst if self.scatter else self.src
        rows = table.shape[0]
        bad = (idx < 0) | (idx >= rows)
        if bad.any() and self.oob_mode == "error":
            first = int(idx[bad][0])
            self.fail(OutOfBoundsError, f"indirect index {first} out of bounds for "
                                        f"{table.describe()} with {rows} rows (oob_mode=error)")
        ok = ~bad
        src = self.raw(self.src)
        if self.scatter:
            values = dt.to_fp32(src).reshape((len(idx),) + self.dst.shape[1:])
            target = self.dst.array
            if self.accumulate:
                for i in np.flatnonzero(ok):          # in order: a repeated row adds onto its last sum
                    target[idx[i]] = dt.cast(dt.to_fp32(target[idx[i]]) + values[i], self.dst.dtype)
            else:
                target[idx[ok]] = dt.cast(values[ok], self.dst.dtype)
            rows = np.zeros(self.dst.shape[0], dtype=bool)
            rows[idx[ok]] = True
            self.dst.mark_written(rows_where(rows, self.dst.shape))
        else:
            out = self.dst.array
            src = src.reshape((src.shape[0], -1))
            gathered = dt.to_fp32(src[idx[ok]]).reshape((int(ok.sum()),) + out.shape[1:])
            out[ok] = dt.cast(gathered, self.dst.dtype)
            self.dst.mark_written(rows_where(ok, out.shape) if not ok.all() else None)

    def dma_bytes(self) -> int:
        if self.accumulate:                   # the indexed rows are read, added to and written back
            return 2 * self.src.nbytes + self.index.nbytes
        # the rows moved: a gather fills dst, a scatter writes src's rows into dst (not the whole table: a
        # KV-cache update moves one position)
        return (self.src.nbytes if self.scatter else self.dst.nbytes) + self.index.nbytes


@dataclass(frozen=True, slots=True, kw_only=True)
class DmaTranspose(DmaInstruction, SrcToDst):
    """dst = permute(src, axes) done by the DMA engines (trn2+: 2- and 4-byte dtypes)."""
    opcode: ClassVar[str] = "dma_transpose"
    axes: tuple
    engine: Engine = Engine.DMA
    queue: int | None = None

    def validate(self, chip):
        expect_buffer(self, "dst", self.dst, (SBUF, HBM))
        expect_buffer(self, "src", self.src, (SBUF, HBM))
        if sorted(self.axes) != list(range(self.src.ndim)):
            self.fail(ShapeError, f"axes {list(self.axes)} are not a permutation of the {self.src.ndim} dims "
                                  f"of {self.src.describe()}")
        if self.dst.dtype != self.src.dtype:
            self.fail(DtypeError, f"dma_transpose needs src.dtype == dst.dtype, got {dt.name_of(self.src.dtype)} "
                                  f"and {dt.name_of(self.dst.dtype)}")
        want = tuple(self.src.shape[a] for a in self.axes)
        if tuple(self.dst.shape) != want:
            self.fail(ShapeError, f"dst shape {list(self.dst.shape)} must equal src shape permuted by "
                                  f"{list(self.axes)} = {list(want)}")
        if dt.itemsize(self.src.dtype) not in (2, 4):
            self.fail(DtypeError, f"dma_transpose supports 2- and 4-byte dtypes, got {dt.name_of(self.src.dtype)}")

    def execute(self, m):
        self.store(self.dst, np.transpose(dt.to_fp32(self.raw(self.src)), self.axes))

    def dma_bytes(self) -> int:
        return self.src.nbytes


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorCopy(SrcToDst):
    """dst = src on Vector, Scalar or GpSimd (bit-exact when dtypes are equal)."""
    opcode: ClassVar[str] = "tensor_copy"

    @validate_once
    def validate(self, chip):
        expect_tile(self, "src", self.src, chip)
        expect_tile(self, "dst", self.dst, chip)
        expect_same_partitions(self, dst=self.dst, src=self.src)
        expect_same_elements(self, dst=self.dst, src=self.src)
        if self.engine == Engine.SCALAR and chip.nc_version < 3:
            self.fail(NkiValidationError, "tensor_copy is not supported on the Scalar Engine of NeuronCore-v2 "
                                          f"(target {chip.name}); use activation(op=copy)")

    def execute(self, m):
        src = self.raw(self.src)
        exact = src.dtype == dt.storage(self.dst.dtype) and not (self.engine == Engine.SCALAR and m.chip.nc_version < 3)
        values = src if exact else dt.to_fp32(src).astype(np.float32)
        self.store(self.dst, values.reshape(self.dst.shape))

    @same_facts
    def cycles(self, chip):
        fast = _sbuf16(self.src, self.dst) and self.engine == Engine.VECTOR
        return vector_cost(chip, self.src.free_size, fast_16bit=fast)

    def engine_choices(self, chip):
        # ISA tensor_copy: Vector, Scalar or GpSimd; bit-exact on each from NeuronCore-v3. NeuronCore-v2's
        # Scalar Engine copies through an fp32 cast (ISA tensor_copy doc), which gives Vector's values when
        # both sides are floats; with PSUM on either side only Vector or Scalar can run it (GpSimd: no PSUM)
        scalar = chip.nc_version >= 3 or (dt.is_float(self.src.dtype) and dt.is_float(self.dst.dtype))
        return balance_choices(self, scalar=scalar, gpsimd=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Memset(ToDst):
    opcode: ClassVar[str] = "memset"
    value: float

    @validate_once
    def validate(self, chip):
        expect_tile(self, "dst", self.dst, chip)
        if dt.is_int(self.dst.dtype) and float(self.value) != int(float(self.value)):
            self.fail(DtypeError, f"memset value {self.value!r} does not match integer dst {self.dst.describe()}")
        if dt.is_int(self.dst.dtype) and self.dst.dtype != dt.bool_:
            bits = 8 * self.dst.dtype.itemsize       # a signed or unsigned bit pattern of that width
            lo, hi = -(1 << (bits - 1)), (1 << bits) - 1
            if not lo <= int(float(self.value)) <= hi:
                self.fail(DtypeError, f"memset value {self.value!r} does not fit the {bits} bits of integer dst "
                                      f"{self.dst.describe()} (range [{lo}, {hi}])")

    def execute(self, m):
        if dt.is_int(self.dst.dtype):
            self.store(self.dst, np.full(self.dst.shape, int(float(self.value)), dtype=np.int64))
        else:
            self.store(self.dst, np.full(self.dst.shape, self.value, dtype=np.float32))

    @same_facts
    def cycles(self, chip):
        # ISA memset: max(MIN_II, N/2) Vector Engine cycles for a 16-bit zero fill, else max(MIN_II, N)
        half = self.value == 0 and _is16(self.dst) and self.engine == Engine.VECTOR
        return vector_cost(chip, self.dst.free_size, per_elem=0.5 if half else 1.0)

    def engine_choices(self, chip):
        return balance_choices(self, scalar=False, gpsimd=True)      # ISA memset: Vector or GpSimd


def _check_pattern(ins) -> None:
    """The [[step, num], ...] free pattern must cover dst's elements per partition."""
    n = int(np.prod([c for _, c in ins.pattern])) if ins.pattern else 1
    if n != ins.dst.free_size:
        ins.fail(ShapeError, f"pattern {list(map(list, ins.pattern))} covers {n} elements per partition "
                             f"but dst {ins.dst.describe()} has {ins.dst.free_size}")


def affine_values(shape: tuple, pattern, offset: int, channel_multiplier: int) -> np.ndarray:
    """offset + p*channel_multiplier + sum_k step_k * i_k over the [[step, num], ...] free pattern (int64)."""
    p = shape[0]
    values = np.full((p,) + tuple(int(n) for _, n in pattern), int(offset), dtype=np.int64)
    values += (np.arange(p, dtype=np.int64) * int(channel_multiplier)).reshape((p,) + (1,) * len(pattern))
    for k, (step, num) in enumerate(pattern):
        shape_k = [1] * (len(pattern) + 1)
        shape_k[k + 1] = int(num)
        values += (np.arange(int(num), dtype=np.int64) * int(step)).reshape(shape_k)
    return values


@dataclass(frozen=True, slots=True, kw_only=True)
class Iota(ToDst):
    """dst = offset + p*channel_multiplier + sum(step_k * i_k), computed in int32 (GpSimd)."""
    opcode: ClassVar[str] = "iota"
    pattern: tuple          # ((step, num), ...) over the free dims
    offset: int = 0
    channel_multiplier: int = 0
    engine: Engine = Engine.GPSIMD

    def validate(self, chip):
        expect_tile(self, "dst", self.dst, chip, allowed=(SBUF,))
        _check_pattern(self)

    def execute(self, m):
        values = affine_values(self.dst.shape, self.pattern, self.offset, self.channel_multiplier)
        values = values.astype(np.int32)
        self.store(self.dst, (values if dt.is_int(self.dst.dtype) else values.astype(np.float32))
                   .reshape(self.dst.shape))

    def cycles(self, chip):
        return chip.gpsimd_start_cycles + self.dst.free_size       # ISA: 150 + N


@dataclass(frozen=True, slots=True, kw_only=True)
class AffineSelect(ToDst):
    """dst = where(cmp(affine(p, i), 0), on_true, on_false_value) (GpSimd). Causal masks use it."""
    opcode: ClassVar[str] = "affine_select"
    on_true: Tensor
    on_false_value: float
    pattern: tuple
    offset: int = 0
    channel_multiplier: int = 0
    cmp_op: str = "greater_equal"
    engine: Engine = Engine.GPSIMD

    def reads(self):
        return (self.on_true,)

    def validate(self, chip):
        expect_elementwise(self, chip, allowed=(SBUF,), dst=self.dst, on_true_tile=self.on_true)
        _check_pattern(self)
        alu.alu(self.cmp_op, self.api, self.loc)

    def execute(self, m):
        pred = alu.alu(self.cmp_op, self.api, self.loc)(
            affine_values(self.dst.shape, self.pattern, self.offset, self.channel_multiplier), 0)
        data = dt.to_fp32(self.read(self.on_true)).reshape(pred.shape)
        out = np.where(pred != 0, data, np.float32(self.on_false_value))
        self.store(self.dst, out.reshape(self.dst.shape))

    def cycles(self, chip):
        return chip.gpsimd_start_cycles + self.dst.free_size       # ISA: 150 + N


# ================================================================================================
# Tensor engine
# ================================================================================================

_MATMUL_DTYPES = (dt.float8_e4m3, dt.float8_e5m2, dt.float8_e4m3fn, dt.bfloat16, dt.float16, dt.float32,
                  dt.tfloat32)
_WIDE_MATMUL_DTYPES = frozenset({dt.float32, dt.tfloat32})


@dataclass(frozen=True, slots=True, kw_only=True)
class MatMul(ToDst):
    """dst[M, N] (+)= stationary[K, M].T @ moving[K, N]; fp32 accumulation in PSUM.

    accumulate: False overwrites, True adds, None overwrites where dst was never written and adds
    elsewhere. perf_mode='double_row' (trn2+ fp8): inputs [K, 2, F] contract over K and the 2."""
    opcode: ClassVar[str] = "nc_matmul"
    stationary: Tensor
    moving: Tensor
    accumulate: bool | None = None
    perf_mode: str = "none"
    is_transpose: bool = False
    tile_position: tuple = ()         # (start_row, start_col) of the PE sub-array (tiling mode)
    tile_size: tuple = ()             # (row_size, col_size)
    onezero: bool = False             # is_stationary_onezero / is_moving_onezero: an operand holds only 0s and 1s
    engine: Engine = Engine.TENSOR

    def reads(self):
        return (self.stationary, self.moving)

    def _kmn(self):
        s, mv = self.stationary, self.moving
        if self.perf_mode == "double_row":
            return s.shape[0] * 2, s.free_size // 2, mv.free_size // 2
        return s.shape[0], s.free_size, mv.free_size

    @validate_once
    def validate(self, chip):
        s, mv, d = self.stationary, self.moving, self.dst
        expect_buffer(self, "stationary", s, (SBUF,))
        expect_buffer(self, "moving", mv, (SBUF,))
        expect_buffer(self, "dst", d, (PSUM,))
        for name, t in (("stationary", s), ("moving", mv), ("dst", d)):
            if t.ndim < 2:
                self.fail(ShapeError, f"Insufficient rank for operand '{name}' {t.describe()}")
            if t.shape[0] > chip.partitions:
                self.fail(PartitionError, f"{name} partition dimension {t.shape[0]} exceeds maximum "
                                          f"{chip.partitions} ({t.describe()})")
            expect_partition_layout(self, name, t)
            expect_start_partition(self, name, t)
        if self.perf_mode not in ("none", "double_row"):
            self.fail(NkiValidationError, f"unknown perf_mode {self.perf_mode!r}")
        k, m, n = self._kmn()
        kmax = chip.partitions * (2 if self.perf_mode == "double_row" else 1)
        if s.shape[0] != mv.shape[0]:
            self.fail(PartitionError, f"contraction (partition) sizes differ: stationary {s.describe()} has "
                                      f"K={s.shape[0]}, moving {mv.describe()} has K={mv.shape[0]}")
        if k > kmax:
            self.fail(MatmulLimitError, f"contraction dim K={k} of {s.describe()} exceeds limit {kmax}")
        if m > chip.gemm_stationary_fmax:
            self.fail(MatmulLimitError, f"stationary free size M={m} of {s.describe()} exceeds "
                                        f"gemm_stationary_fmax={chip.gemm_stationary_fmax}")
        nmax, span = self._moving_limit(chip)
        if n > nmax:
            self.fail(MatmulLimitError, f"moving free size N={n} of {mv.describe()} exceeds "
                                        f"gemm_moving_fmax={nmax} on {chip.name}")
        if d.shape[0] != m or d.free_size != n:
            self.fail(ShapeError, f"dst {d.describe()} must be [M={m}, N={n}] for stationary {s.describe()} "
                                  f"and moving {mv.describe()}")
        self._check_dst(chip, span)
        self._check_tiling(chip, k, m)
        for name, t in (("stationary", s), ("moving", mv)):
            if t.dtype not in _MATMUL_DTYPES:
                self.fail(DtypeError, f"{name} dtype {dt.name_of(t.dtype)} is not a matmul input type "
                                      f"(fp8_e4m3, fp8_e5m2, bf16, fp16, tf32, fp32)")
        wide = _WIDE_MATMUL_DTYPES
        if (s.dtype in wide) != (mv.dtype in wide):
            self.fail(DtypeError, f"fp32/tf32 cannot be mixed with {dt.name_of(mv.dtype if s.dtype in wide else s.dtype)}"
                                  f": stationary is {dt.name_of(s.dtype)}, moving is {dt.name_of(mv.dtype)}")
        pair = {s.dtype, mv.dtype}
        if dt.float8_e4m3 in pair and dt.float8_e4m3fn in pair:
            self.fail(DtypeError, "float8_e4m3 (legacy, max 240) cannot be mixed with float8_e4m3fn in a matmul")
        if dt.float8_e4m3fn in pair and chip.nc_version < 4:
            self.fail(DtypeError, f"float8_e4m3fn matmul inputs need trn3 (NeuronCore v4), target is {chip.name}")
        if self.perf_mode == "double_row":
            if self.is_transpose:
                self.fail(NkiValidationError, "perf_mode=double_row cannot be combined with is_transpose")
            if not chip.fp8_double_row:
                self.fail(NkiValidationError, f"perf_mode=double_row needs trn2 or later, target is {chip.name}")
            if not (s.dtype in dt.FP8 and mv.dtype in dt.FP8):
                self.fail(DtypeError, f"perf_mode=double_row needs fp8 inputs, got {dt.name_of(s.dtype)} and "
                                      f"{dt.name_of(mv.dtype)}")
            if s.ndim != 3 or s.shape[1] != 2 or mv.ndim != 3 or mv.shape[1] != 2:
                self.fail(ShapeError, f"perf_mode=double_row takes [K, 2, M] and [K, 2, N] inputs, got "
                                      f"{list(s.shape)} and {list(mv.shape)}")

    def _moving_limit(self, chip) -> tuple[int, int]:
        """(N limit, PSUM bytes a result may span). v2/v3: one bank; v4: all 8 banks (ISA nc_matmul doc:
        moving up to 4096 for an fp32 dst, 8192 for bf16)."""
        if chip.nc_version >= 4:
            span = chip.psum_banks * chip.psum_bank_bytes
            return span // dt.itemsize(self.dst.dtype), span
        return chip.gemm_moving_fmax, chip.psum_bank_bytes

    def _check_dst(self, chip, span: int) -> None:
        d = self.dst
        if self.is_transpose:
            s = self.stationary.dtype
            ok = d.dtype in (s, dt.float32) or (s in dt.FP8 and d.dtype in (dt.bfloat16, dt.float16))
            if not ok:
                self.fail(DtypeError, f"transpose-mode dst {d.describe()} must have the data dtype "
                                      f"{dt.name_of(s)} (fp8 data: a 16-bit dtype)")
        elif not (d.dtype == dt.float32 or (d.dtype == dt.bfloat16 and chip.nc_version >= 4)):
            self.fail(DtypeError, f"matmul dst {d.describe()} must be float32"
                                  f"{' or bfloat16' if chip.nc_version >= 4 else ''} on {chip.name}")
        _, _, b0, b1 = d.region()
        nbytes = d.free_size * 4 if d.dtype == dt.float32 else d.free_size * dt.itemsize(d.dtype)
        if nbytes > span:
            self.fail(MatmulLimitError, f"dst {d.describe()} spans {nbytes} B per partition; a matmul "
                                        f"result must fit {span} B of PSUM on {chip.name}")
        if span == chip.psum_bank_bytes and b0 // span != (b1 - 1) // span:
            self.fail(MatmulLimitError, f"dst {d.describe()} crosses a {span} B PSUM bank boundary (bytes "
                                        f"[{b0}, {b1}) of the partition); a matmul result must fit one bank")

    def _check_tiling(self, chip, k: int, m: int) -> None:
        if not self.tile_position and not self.tile_size:
            return
        if len(self.tile_position) != 2 or len(self.tile_size) != 2:
            self.fail(NkiValidationError, f"tile_position {self.tile_position} and tile_size {self.tile_size} "
                                          f"must both be set as 2-tuples to enable tiling mode")
        sizes = (32, 64, 128) if chip.nc_version >= 3 else (64, 128)
        (r0, c0), (rs, cs) = (int(v) for v in self.tile_position), (int(v) for v in self.tile_size)
        for what, start, size in (("row", r0, rs), ("column", c0, cs)):
            if size not in sizes:
                self.fail(MatmulLimitError, f"tile_size {what} size {size} must be one of {list(sizes)} on "
                                            f"{chip.name}")
            if start % size or start + size > chip.pe_rows:
                self.fail(MatmulLimitError, f"tile_position {what} start {start} must be a multiple of {size} "
                                            f"with start + size <= {chip.pe_rows}")
        if self.perf_mode == "double_row" and cs < chip.pe_cols:
            self.fail(NkiValidationError, "perf_mode=double_row cannot be combined with column tiling")
        if self.stationary.shape[0] > rs or m > cs:
            self.fail(MatmulLimitError, f"stationary {self.stationary.describe()} (K={self.stationary.shape[0]}, "
                                        f"M={m}) does not fit tile_size ({rs}, {cs})")

    def _exact_transpose(self, s: np.ndarray, mv: np.ndarray):
        """Transpose mode on v3+ is bit-exact: with a one-hot moving matrix, pick elements, do not multiply."""
        if mv.dtype.kind not in "fiu" or not np.isin(mv, (0, 1)).all() or not (mv.sum(axis=0) == 1).all():
            return None
        rows = np.argmax(mv, axis=0)                 # moving column n selects stationary row rows[n]
        return s[rows, :].T

    def execute(self, m):
        if self.is_transpose and self.perf_mode == "none" and m.chip.nc_version >= 3:
            s2 = as_2d(self.raw(self.stationary))
            picked = self._exact_transpose(s2, dt.to_fp32(as_2d(self.raw(self.moving))))
            if picked is not None:
                same = picked.dtype == dt.storage(self.dst.dtype)
                self.store(self.dst, (picked if same else dt.to_fp32(picked)).reshape(self.dst.shape))
                return
        s = self.read(self.stationary)
        mv = self.read(self.moving)
        if self.perf_mode == "double_row":
            s = s.transpose(1, 0, 2).reshape(-1, s.shape[2])
            mv = mv.transpose(1, 0, 2).reshape(-1, mv.shape[2])
        else:
            s, mv = as_2d(s), as_2d(mv)
        if s.dtype != np.float32:
            s = s.astype(np.float32)
        if mv.dtype != np.float32:
            mv = mv.astype(np.float32)
        result = (s.T @ mv).reshape(self.dst.shape)
        dst = self.dst
        if self.is_transpose or self.accumulate is False:
            self.store(dst, result)
            return
        if self.accumulate is True:
            if not dst.is_initialized():
                import warnings
                warnings.warn(f"{self.api}: accumulate=True into uninitialised PSUM {dst.describe()} is "
                              f"undefined on hardware. At {self.loc}", AccumulateUninitializedWarning, stacklevel=3)
                prior = np.nan_to_num(dt.to_fp32(dst.array), nan=0.0)
            elif dst.dtype == dt.float32 and self.mask is None and dst.array.flags.writeable:
                np.add(dst.array, result, out=dst.array)     # fp32 PSUM accumulate in place (hot path)
                return
            else:
                prior = dt.to_fp32(dst.array)
            self.store(dst, prior + result)
            return
        # accumulate=None: first write to a location overwrites, later writes add.
        mask = dst._init_state()
        if mask is None:
            self.store(dst, dt.to_fp32(dst.array) + result)
        else:
            self.store(dst, np.where(mask, dt.to_fp32(dst.array) + result, result))

    @same_facts
    def flops(self) -> float:
        return 0.0 if self.is_transpose else self.pe_flops()

    @same_facts
    def pe_flops(self) -> float:
        k, m, n = self._kmn()
        return 2.0 * k * m * n

    def flop_dtypes(self) -> tuple:
        return (self.stationary.dtype, self.moving.dtype)

    @same_facts
    def cost(self, chip) -> MatmulCost:
        # MultiplyMoving, ISA nc_matmul: max(min(64, N_stat), N_mov) PE cycles for 8/16-bit inputs, 4x for
        # fp32. perf_mode=double_row (trn2+ fp8): K=256 in the time of K=128 (_kmn halves the free sizes).
        # LoadStationary streams the stationary's M columns, up to 4x faster than an MM of the same free
        # size (perf guide Opt #7: LS_II ~ 128/4 = 32 cycles); the scheduler overlaps it with the
        # previous matmul (background LS, ARCH v2), so the throughput cost is the moving stream.
        _, m, n = self._kmn()
        wide = self.stationary.dtype == dt.float32
        mm = max(min(chip.matmul_init_cycles, m), n)
        if wide or self.moving.dtype == dt.float32:
            # ISA nc_matmul: the onezero hints "could lead to 2x better performance" for fp32 operands
            mm *= chip.matmul_fp32_factor / (2 if self.onezero else 1)
        ls = m / chip.matmul_ls_speedup
        if wide:
            ls *= chip.matmul_fp32_factor
        return MatmulCost(float(mm), float(ls))

    def cycles(self, chip) -> float:
        return self.cost(chip).cycles

    def ls_cycles(self, chip) -> float:
        return self.cost(chip).ls_cycles


@dataclass(frozen=True, slots=True, kw_only=True)
class Transpose(SrcToDst):
    """dst[F, P] = src[P, F] on the Tensor engine (SBUF->PSUM, <=128x128) or Vector (<=32x32)."""
    opcode: ClassVar[str] = "nc_transpose"
    engine: Engine = Engine.TENSOR

    @validate_once
    def validate(self, chip):
        s, d = self.src, self.dst
        if self.engine == Engine.TENSOR:
            expect_tile(self, "data", s, chip, allowed=(SBUF,))
            expect_tile(self, "dst", d, chip, allowed=(PSUM,))
            limit = chip.partitions
        elif self.engine != Engine.VECTOR:
            self.fail(NkiValidationError, f"nc_transpose runs on the Tensor or Vector Engine, not {self.engine}")
        else:
            expect_tile(self, "data", s, chip)
            expect_tile(self, "dst", d, chip)
            limit = 32
        if s.ndim < 2:
            self.fail(ShapeError, f"Insufficient rank for {s.describe()}")
        p, f = s.shape[0], s.free_size
        if p > limit or f > limit:
            self.fail(ShapeError, f"size of dimension {0 if p > limit else 1} in '{s.name}[{p}, {f}]' of "
                                  f"'{self.api}' exceed architecture limitation of {limit} ({self.engine} engine)")
        if d.shape[0] != f or d.free_size != p:
            self.fail(ShapeError, f"dst {d.describe()} must be [{f}, {p}] to hold the transpose of {s.describe()}")
        if self.engine == Engine.TENSOR and d.dtype not in (s.dtype, dt.float32):
            self.fail(DtypeError, f"dst dtype {dt.name_of(d.dtype)} must equal data dtype "
                                  f"{dt.name_of(s.dtype)} or be float32")
        if self.engine == Engine.VECTOR and d.dtype != s.dtype:
            self.fail(DtypeError, f"Vector Engine transpose needs dst dtype {dt.name_of(d.dtype)} == data dtype "
                                  f"{dt.name_of(s.dtype)}")

    def execute(self, m):
        x = as_2d(self.raw(self.src))
        values = x.T if x.dtype == dt.storage(self.dst.dtype) else dt.to_fp32(x).T
        if self.engine == Engine.TENSOR and m.chip.nc_version < 3 and dt.is_float(self.src.dtype):
            # NeuronCore-v2 transposes by multiplying with an identity matrix: a NaN/Inf input poisons
            # its whole output row (x * 0 = NaN), as documented for nc_transpose.
            poisoned = ~np.isfinite(dt.to_fp32(x)).all(axis=0)
            if poisoned.any():
                values = dt.to_fp32(values).copy()
                values[poisoned, :] = np.nan
        self.store(self.dst, values.reshape(self.dst.shape))

    def pe_flops(self) -> float:
        if self.engine != Engine.TENSOR:
            return 0.0
        p, f = self.src.shape[0], self.src.free_size      # an identity matmul: 2 * P * P * F
        return 2.0 * p * p * f

    def flop_dtypes(self) -> tuple:
        return ()        # measured at the bf16 peak: its cost (below) does not depend on the dtype

    def cycles(self, chip):
        p, f = self.src.shape[0], self.src.free_size
        if self.engine == Engine.TENSOR:
            return float(max(p, min(chip.matmul_init_cycles, f)))   # ISA: max(P, min(64, F))
        return vector_cost(chip, f)                                 # ISA: max(MIN_II, N)


# ================================================================================================
# Vector / Scalar / GpSimd arithmetic
# ================================================================================================

def _operand(ins: Instruction, x, p: int):
    """A scalar or a [P, 1] per-partition vector broadcastable over [P, F]: fp32, integers kept exact."""
    if isinstance(x, Tensor):
        if x.shape[0] != p or x.free_size != 1:
            ins.fail(ShapeError, f"per-partition operand {x.describe()} must be [{p}, 1]")
        v = ins.read(x).reshape(p, 1)
        return v if v.dtype.kind in "iu" else v.astype(np.float32, copy=False)
    return np.float32(x) if not isinstance(x, (int, np.integer)) else x


def arith_inputs(ins: Instruction, *xs):
    """Inputs of an arithmetic ALU op: fp32 math, except exact integer math on GpSimd when every
    input is an integer (ISA tensor_tensor: int32/uint32 run natively on GpSimd)."""
    arrays = [np.asarray(x) for x in xs]
    if ins.engine == Engine.GPSIMD and all(a.dtype.kind in "iub" for a in arrays):
        return [a.astype(np.int64) for a in arrays]
    return [a.astype(np.float32) if a.dtype != np.float32 else a for a in arrays]


def bitvec_inputs(ins: Instruction, *xs):
    """Inputs of a bitvec op: integer bit patterns, never converted."""
    out = []
    for x in xs:
        a = np.asarray(x)
        if a.dtype.kind == "f":
            if a.ndim or float(a) != int(a):
                ins.fail(DtypeError, f"bitvec operator needs integer operands, got a {a.dtype} value")
            a = np.int64(int(a))
        out.append(a)
    return out


def _check_ops_same_kind(ins: Instruction, *ops) -> None:
    kinds = {is_bitvec(o) for o in ops if o is not None}
    if len(kinds) > 1:
        ins.fail(NkiValidationError, f"operators {[o for o in ops if o is not None]} mix bitvec and arithmetic "
                                     f"operators; both must be of the same type")


def _check_bitvec_dtypes(ins: Instruction, **tiles) -> None:
    for name, t in tiles.items():
        if isinstance(t, Tensor) and not dt.is_int(t.dtype):
            ins.fail(DtypeError, f"bitvec operators need integer tiles: '{name}' is {t.describe()}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Activation(Instruction):
    """dst = func(data * scale + bias) on the Scalar engine, with an optional add-reduce along F.

    reduce_cmd: 'idle' | 'reset' | 'reduce' | 'reset_reduce' act on the 128 per-lane accumulator
    registers, whose state persists across calls; reduce_res receives the accumulator."""
    opcode: ClassVar[str] = "activation"
    dst: Tensor | None
    func: str
    data: Tensor
    bias: Any = None
    scale: Any = 1.0
    reduce_op: str | None = None
    reduce_res: Tensor | None = None
    reduce_cmd: str = "idle"
    alpha: float = 0.0
    engine: Engine = Engine.SCALAR

    def reads(self):
        return tensors(self.data, self.bias, self.scale)

    def writes(self):
        return given(self.dst, self.reduce_res)

    @validate_once
    def validate(self, chip):
        expect_tile(self, "data", self.data, chip)
        if self.dst is not None:
            expect_tile(self, "dst", self.dst, chip)
            expect_same_partitions(self, dst=self.dst, data=self.data)
            expect_same_elements(self, dst=self.dst, data=self.data)
        p = self.data.shape[0]
        expect_vector(self, "bias", self.bias, p, chip)
        expect_vector(self, "scale", self.scale, p, chip)
        if self.bias is not None and not isinstance(self.bias, Tensor) and chip.nc_version < 3:
            self.fail(NkiValidationError, f"a scalar bias ({self.bias!r}) needs NeuronCore-v3 or newer; on "
                                          f"{chip.name} bias must be a [{p}, 1] vector")
        if isinstance(self.bias, Tensor) and self.bias.dtype is dt.tfloat32:
            self.fail(DtypeError, f"bias {self.bias.describe()} cannot be tfloat32")
        if self.reduce_op not in (None, "add"):
            self.fail(NkiValidationError, f"activation reduce supports only add, got {self.reduce_op!r}")
        if self.reduce_res is not None:
            expect_vector(self, "reduce_res", self.reduce_res, p, chip)
        if self.reduce_cmd not in ("idle", "reset", "reduce", "reset_reduce"):
            self.fail(NkiValidationError, f"activation reduce_cmd must be idle, reset, reduce or reset_reduce, "
                                          f"got {self.reduce_cmd!r}")
        if self.func != "prelu":
            alu.activation(self.func, self.api, self.loc)

    def execute(self, m):
        p = self.data.shape[0]
        x = as_2d(self.read(self.data)).astype(np.float32, copy=False)
        scale = _operand(self, self.scale, p)
        bias = _operand(self, self.bias, p) if self.bias is not None else None
        y = x * scale if not (isinstance(scale, np.float32) and scale == 1.0) else x
        if bias is not None:
            y = y + bias
        if self.func == "prelu":
            out = np.where(y >= 0, y, y * np.float32(self.alpha))
        else:
            out = alu.activation(self.func, self.api, self.loc)(y).astype(np.float32, copy=False)
        if self.dst is not None:
            self.store(self.dst, out.reshape(self.dst.shape))
        rows = None
        if self.mask is not None:            # masked-off elements are not computed: they add nothing
            keep = np.asarray(self.mask, dtype=bool).reshape(out.shape)
            out, rows = np.where(keep, out, np.float32(0.0)), keep.any(axis=1)
        saved = m.reduce_regs[:p].copy()
        if self.reduce_cmd == "idle" and self.reduce_op is None:
            result = saved                           # read-out only
        else:
            result = accumulate(self, m.reduce_regs, p, self.reduce_cmd, "add", out)
        if rows is not None:                 # a partition the mask skips entirely keeps its accumulator
            m.reduce_regs[:p][~rows] = saved[~rows]
        if self.reduce_res is not None:
            where = None if rows is None else rows_where(rows, self.reduce_res.shape)
            self.reduce_res.write(result.reshape(self.reduce_res.shape), where=where, api=self.api, loc=self.loc)

    def cycles(self, chip):
        c = vector_cost(chip, self.data.free_size)                      # ISA: max(MIN_II, N)
        if self.reduce_res is not None or self.reduce_op is not None:
            c += chip.min_ii_cycles                                     # activation_reduce: + MIN_II
        return c


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorTensor(ToDst):
    """dst = data1 op data2, elementwise over equal partitions and equal elements per partition."""
    opcode: ClassVar[str] = "tensor_tensor"
    data1: Tensor
    data2: Tensor
    op: str

    def reads(self):
        return (self.data1, self.data2)

    @validate_once
    def validate(self, chip):
        expect_elementwise(self, chip, data1=self.data1, data2=self.data2, dst=self.dst)
        expect_not_both_psum(self, data1=self.data1, data2=self.data2)
        alu.alu(self.op, self.api, self.loc)
        if is_bitvec(self.op):
            _check_bitvec_dtypes(self, data1=self.data1, data2=self.data2, dst=self.dst)
        if self.op in ("power", "pow") and any(t.buffer == PSUM for t in (self.data1, self.data2, self.dst)):
            self.fail(BufferKindError, "tensor_tensor op=power runs on GpSimd, which cannot access PSUM "
                                       f"(data1 {self.data1.describe()}, data2 {self.data2.describe()}, "
                                       f"dst {self.dst.describe()})")

    def execute(self, m):
        a = self.read(self.data1).reshape(self.dst.shape)
        b = self.read(self.data2).reshape(self.dst.shape)
        a, b = (bitvec_inputs if is_bitvec(self.op) else arith_inputs)(self, a, b)
        self.store(self.dst, alu.alu(self.op, self.api, self.loc)(a, b))

    @same_facts
    def cycles(self, chip):
        n = self.data1.free_size
        one_psum = (self.data1.buffer == PSUM) != (self.data2.buffer == PSUM)
        fast = (self.engine == Engine.VECTOR and self.op in ("add", "multiply", "subtract") and _is16(self.data1) and _is16(self.data2)
                and _is16(self.dst) and not one_psum)
        # ISA: N in the fast cases, else 2N; the 2 is chip.vector_two_input_cycles (fitted, hw presets)
        return vector_cost(chip, n, per_elem=1.0 if (one_psum or fast) else chip.vector_two_input_cycles)

    def engine_choices(self, chip):
        # ISA tensor_tensor: Vector or GpSimd; bitvec ops stay on Vector, integer math on its engine
        return balance_choices(self, scalar=False, gpsimd=not is_bitvec(self.op) and float_math(self))


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorScalar(DataToDst):
    """dst = (data op0 operand0) op1 operand1; operands are scalars or [P,1] vectors; reverse swaps order.

    With accum_op, also reduce the result along F into accum_dst ([P, 1]): tensor_scalar_reduce."""
    opcode: ClassVar[str] = "tensor_scalar"
    op0: str
    operand0: Any
    reverse0: bool = False
    op1: str | None = None
    operand1: Any = None
    reverse1: bool = False
    accum_op: str | None = None
    accum_dst: Tensor | None = None
    reduce_cmd: str = "reset_reduce"   # Vector accumulator registers (tensor_scalar_reduce)
    reduce_init: Any = None            # load_reduce start value: scalar or [P, 1]

    def reads(self):
        return tensors(self.data, self.operand0, self.operand1)

    def writes(self):
        return given(self.dst, self.accum_dst)

    @validate_once
    def validate(self, chip):
        expect_elementwise(self, chip, data=self.data, dst=self.dst)
        p = self.data.shape[0]
        expect_vector(self, "operand0", self.operand0, p, chip)
        expect_vector(self, "operand1", self.operand1, p, chip)
        alu.alu(self.op0, self.api, self.loc)
        if self.op1 is not None:
            alu.alu(self.op1, self.api, self.loc)
        if (self.op1 is None) != (self.operand1 is None):
            self.fail(NkiValidationError, f"op1 ({self.op1!r}) and operand1 ({self.operand1!r}) must both be "
                                          f"set or both be None")
        _check_ops_same_kind(self, self.op0, self.op1)
        if is_bitvec(self.op0):
            _check_bitvec_dtypes(self, data=self.data, dst=self.dst)
            if self.engine != Engine.VECTOR:
                self.fail(NkiValidationError, f"bitvec tensor_scalar must run on the Vector Engine, not {self.engine}")
        if self.engine == Engine.SCALAR and chip.nc_version <= 3:
            combo = (self.op0, self.op1)
            if combo not in (("multiply", "add"), ("multiply", None), ("add", None)):
                self.fail(NkiValidationError, f"the Scalar Engine on {chip.name} supports only (multiply, add), "
                                              f"(multiply, None), (add, None); got {combo}")
        if self.accum_dst is not None:
            self._validate_reduce(chip, p)

    def _validate_reduce(self, chip, p):
        expect_vector(self, "reduce_res", self.accum_dst, p, chip)
        if (self.accum_op or "add") not in ("add", "multiply", "maximum", "minimum", "max", "min"):
            self.fail(NkiValidationError, f"reduce_op must be add, multiply, max or min, got {self.accum_op!r}")
        if is_bitvec(self.op0):
            self.fail(NkiValidationError, f"tensor_scalar_reduce supports arithmetic operators only, got {self.op0!r}")
        if self.reduce_cmd not in ("idle", "reset_reduce", "reduce", "load_reduce"):
            self.fail(NkiValidationError, f"reduce_cmd must be idle, reset_reduce, reduce or load_reduce, got "
                                          f"{self.reduce_cmd!r}")
        if (self.reduce_cmd == "load_reduce") != (self.reduce_init is not None):
            self.fail(NkiValidationError, "reduce_init must be given exactly when reduce_cmd is load_reduce")
        expect_vector(self, "reduce_init", self.reduce_init, p, chip)

    def execute(self, m):
        p = self.data.shape[0]
        x = as_2d(self.read(self.data))
        prep = bitvec_inputs if is_bitvec(self.op0) else arith_inputs
        y = _apply(self, self.op0, *prep(self, x, _operand(self, self.operand0, p)), self.reverse0)
        if self.op1 is not None:
            y = _apply(self, self.op1, *prep(self, y, _operand(self, self.operand1, p)), self.reverse1)
        self.store(self.dst, np.asarray(y).reshape(self.dst.shape))
        if self.accum_dst is not None:
            init = _operand(self, self.reduce_init, p) if self.reduce_init is not None else None
            red = accumulate(self, m.vector_regs, p, self.reduce_cmd, self.accum_op or "add",
                             np.asarray(y, dtype=np.float32), init)
            self.accum_dst.write(red.reshape(self.accum_dst.shape))

    def cycles(self, chip):
        fast = _sbuf16(self.data, self.dst) and self.engine == Engine.VECTOR     # a Vector datapath speedup
        c = vector_cost(chip, self.data.free_size, fast_16bit=fast)
        return c + (chip.min_ii_cycles if self.accum_dst is not None else 0)

    def engine_choices(self, chip):
        # ISA tensor_scalar: Vector, Scalar or GpSimd; bitvec ops and the Vector accumulator registers
        # (tensor_scalar_reduce) only on Vector; the v2/v3 Scalar Engine only for multiply/add
        if is_bitvec(self.op0) or self.accum_dst is not None:
            return (self.engine,)
        scalar = chip.nc_version > 3 or (self.op0, self.op1) in (("multiply", "add"), ("multiply", None), ("add", None))
        return balance_choices(self, scalar=scalar, gpsimd=float_math(self))


def _apply(ins, op, x, operand, reverse):
    fn = alu.alu(op, ins.api, ins.loc)
    return fn(operand, x) if reverse and op not in alu.UNARY_ALU else fn(x, operand)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalarTensorTensor(DataToDst):
    """dst = (data op0 operand0) op1 operand1_tile."""
    opcode: ClassVar[str] = "scalar_tensor_tensor"
    op0: str
    operand0: Any
    op1: str
    operand1: Tensor
    reverse0: bool = False
    reverse1: bool = False

    def reads(self):
        return tensors(self.data, self.operand0, self.operand1)

    def validate(self, chip):
        expect_elementwise(self, chip, data=self.data, operand1=self.operand1, dst=self.dst)
        expect_not_both_psum(self, data=self.data, operand1=self.operand1)
        expect_vector(self, "operand0", self.operand0, self.data.shape[0], chip)
        for op in (self.op0, self.op1):
            alu.alu(op, self.api, self.loc)
            if is_bitvec(op):
                self.fail(NkiValidationError, f"scalar_tensor_tensor supports arithmetic operators only, got {op!r}")

    def execute(self, m):
        p = self.data.shape[0]
        x, o0 = arith_inputs(self, as_2d(self.read(self.data)), _operand(self, self.operand0, p))
        y = _apply(self, self.op0, x, o0, self.reverse0)
        y, t = arith_inputs(self, y, as_2d(self.read(self.operand1)))
        y = _apply(self, self.op1, y, t, self.reverse1)
        self.store(self.dst, np.asarray(y).reshape(self.dst.shape))

    def cycles(self, chip):
        n = self.data.free_size
        fast = (_is16(self.data) and _is16(self.operand1) and self.op0 == "subtract"
                and self.op1 == "multiply" and n % 2 == 0)
        # ISA: N or 2N; the 2 is chip.vector_two_input_cycles (fitted, hw presets)
        return max(chip.min_ii_cycles, n if fast else chip.vector_two_input_cycles * n)


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorReduce(DataToDst):
    """dst = reduce(op, data, free axes); never across partitions. negate multiplies by -1."""
    opcode: ClassVar[str] = "tensor_reduce"
    op: str
    axes: tuple
    negate: bool = False

    @validate_once
    def validate(self, chip):
        expect_tile(self, "data", self.data, chip)
        expect_tile(self, "dst", self.dst, chip)
        if 0 in self.axes:
            self.fail(ShapeError, "tensor_reduce cannot reduce the partition dimension (axis 0); use "
                                  "tensor_partition_reduce or a matmul")
        expect_same_partitions(self, data=self.data, dst=self.dst)
        if any(a >= self.data.ndim or a < 0 for a in self.axes):
            self.fail(ShapeError, f"axes {list(self.axes)} out of range for {self.data.describe()}")
        if sorted(self.axes) != list(range(self.data.ndim - len(self.axes), self.data.ndim)):
            self.fail(ShapeError, f"axes {list(self.axes)} of {self.data.describe()} must be the last contiguous "
                                  f"free dimension(s), ending at dim {self.data.ndim - 1}")
        alu.reducer(self.op, self.api, self.loc)
        if is_bitvec(self.op):
            _check_bitvec_dtypes(self, data=self.data, dst=self.dst)
            if self.negate:
                self.fail(NkiValidationError, "negate applies to arithmetic reductions only")
        kept = self.data.size // max(1, int(np.prod([self.data.shape[a] for a in self.axes])))
        if kept != self.dst.size:
            self.fail(ShapeError, f"dst {self.dst.describe()} has {self.dst.size} elements; reducing "
                                  f"{self.data.describe()} over axes {list(self.axes)} gives {kept}")

    def execute(self, m):
        x = self.read(self.data)
        if not is_bitvec(self.op):
            x = x.astype(np.float32, copy=False)
        r = alu.reduce(self.op, x, tuple(self.axes), self.api, self.loc)
        if self.negate:
            r = -r
        self.store(self.dst, np.asarray(r).reshape(self.dst.shape))

    def cycles(self, chip):
        n = self.data.free_size
        fast = _is16(self.data) and _is16(self.dst) and self.op in ("add", "max", "maximum")
        return max(chip.min_ii_cycles, n / 2 if fast else n)      # ISA: N/2 or N


@dataclass(frozen=True, slots=True, kw_only=True)
class Reciprocal(DataToDst):
    """dst = 1 / data on the Vector engine (more precise than activation(reciprocal))."""
    opcode: ClassVar[str] = "reciprocal"
    # validate: DataToDst's elementwise rules

    def execute(self, m):
        with np.errstate(divide="ignore"):
            self.store(self.dst, (np.float32(1.0) / self.read(self.data).astype(np.float32)).reshape(self.dst.shape))

    def cycles(self, chip):
        return vector_cost(chip, self.data.free_size, per_elem=8.0)   # ISA: max(MIN_II, 8N)


_fast_init(*_instruction_classes(globals()))     # (isa.base.fast_init: instructions are built per issue)
