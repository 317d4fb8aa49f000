"""The instruction set: one frozen dataclass per instruction with its rules, numpy semantics and cost.

Costs are the Nov-2025 NKI ISA docstring formulas (see ../shared/reference/trainium-hardware.md §3),
in cycles of the executing engine; N = elements per partition of the main input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from trnlab.core import dtypes as dt
from trnlab.core.tensor import HBM, PSUM, SBUF, Tensor
from trnlab.errors import (AccumulateUninitializedWarning, BufferKindError, DtypeError, MatmulLimitError,
                           NkiValidationError, OutOfBoundsError, PartitionError, ShapeError)
from trnlab.isa import alu
from trnlab.isa.base import (Engine, Instruction, as_2d, expect_buffer, expect_same_elements,
                             expect_same_partitions, expect_tile, vector_cost)

ANY = (HBM, SBUF, PSUM)
ONCHIP = (SBUF, PSUM)


def _is16(t: Tensor) -> bool:
    return t.dtype in (dt.bfloat16, dt.float16)


# ================================================================================================
# Data movement
# ================================================================================================

@dataclass(frozen=True, slots=True, kw_only=True)
class DmaCopy(Instruction):
    """dst = src through a DMA queue (HBM<->SBUF, SBUF<->SBUF, HBM<->HBM); dtype converts via fp32."""
    opcode: ClassVar[str] = "dma_copy"
    dst: Tensor
    src: Tensor
    engine: Engine = Engine.DMA
    queue: int | None = None          # DMA queue (None: the scheduler picks)
    raw_bytes: bool = False           # hwdge: bytes move unconverted, dtypes must match

    def reads(self):
        return (self.src,)

    def writes(self):
        return (self.dst,)

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
        if self.raw_bytes and self.dst.dtype != self.src.dtype:
            self.fail(DtypeError, f"dge_mode=hwdge moves raw bytes: dst dtype {dt.name_of(self.dst.dtype)} "
                                  f"must equal src dtype {dt.name_of(self.src.dtype)}")

    def execute(self, m):
        src = self.src.read(self.api, self.loc)
        values = src if src.dtype == dt.storage(self.dst.dtype) else dt.to_fp32(src)
        if values.shape != self.dst.shape:
            values = values.reshape(self.dst.shape)
        self.store(self.dst, values)

    def dma_bytes(self) -> int:
        return max(self.src.nbytes, self.dst.nbytes)

    def cycles(self, chip) -> float:
        return 0.0  # DMA time is modelled by the timing package (queues, fixed cost, bandwidth)


@dataclass(frozen=True, slots=True, kw_only=True)
class DmaGather(Instruction):
    """Indirect DMA: dst[i, ...] = src[idx[i], ...] along src axis 0 (or scatter: dst[idx[i]] = src[i]).

    oob_mode 'error' raises on an index outside src; 'skip' leaves those rows untouched."""
    opcode: ClassVar[str] = "dma_indirect"
    dst: Tensor
    src: Tensor
    index: Tensor
    scatter: bool = False
    oob_mode: str = "error"
    engine: Engine = Engine.DMA
    queue: int | None = None

    def reads(self):
        return (self.src, self.index)

    def writes(self):
        return (self.dst,)

    def validate(self, chip):
        expect_buffer(self, "index", self.index, (SBUF,))
        if not dt.is_int(self.index.dtype):
            self.fail(DtypeError, f"index tile {self.index.describe()} must be an integer type")

    def execute(self, m):
        idx = self.index.read(self.api, self.loc).reshape(-1).astype(np.int64)
        table = self.dst if self.scatter else self.src
        rows = table.shape[0]
        bad = (idx < 0) | (idx >= rows)
        if bad.any() and self.oob_mode == "error":
            first = int(idx[bad][0])
            self.fail(OutOfBoundsError, f"indirect index {first} out of bounds for "
                                        f"{table.describe()} with {rows} rows (oob_mode=error)")
        ok = ~bad
        src = self.src.read(self.api, self.loc)
        if self.scatter:
            values = dt.to_fp32(src).reshape((len(idx),) + self.dst.shape[1:])
            target = self.dst.array
            target[idx[ok]] = dt.cast(values[ok], self.dst.dtype)
            self.dst.mark_written()
        else:
            out = self.dst.array
            gathered = dt.to_fp32(src[idx[ok]]).reshape((int(ok.sum()),) + out.shape[1:])
            out[ok] = dt.cast(gathered, self.dst.dtype)
            self.dst.mark_written(np.broadcast_to(ok.reshape((-1,) + (1,) * (out.ndim - 1)), out.shape)
                                  if not ok.all() else None)

    def dma_bytes(self) -> int:
        return self.dst.nbytes + self.index.nbytes

    def cycles(self, chip) -> float:
        return 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DmaTranspose(Instruction):
    """dst = permute(src, axes) done by the DMA engines (trn2+: 2- and 4-byte dtypes)."""
    opcode: ClassVar[str] = "dma_transpose"
    dst: Tensor
    src: Tensor
    axes: tuple
    engine: Engine = Engine.DMA
    queue: int | None = None

    def reads(self):
        return (self.src,)

    def writes(self):
        return (self.dst,)

    def validate(self, chip):
        expect_buffer(self, "dst", self.dst, (SBUF, HBM))
        expect_buffer(self, "src", self.src, (SBUF, HBM))
        want = tuple(self.src.shape[a] for a in self.axes)
        if tuple(self.dst.shape) != want:
            self.fail(ShapeError, f"dst shape {list(self.dst.shape)} must equal src shape permuted by "
                                  f"{list(self.axes)} = {list(want)}")
        if dt.itemsize(self.src.dtype) not in (2, 4):
            self.fail(DtypeError, f"dma_transpose supports 2- and 4-byte dtypes, got {dt.name_of(self.src.dtype)}")

    def execute(self, m):
        self.store(self.dst, np.transpose(dt.to_fp32(self.src.read(self.api, self.loc)), self.axes))

    def dma_bytes(self) -> int:
        return self.src.nbytes

    def cycles(self, chip) -> float:
        return 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorCopy(Instruction):
    """dst = src on Vector, Scalar or GpSimd (bit-exact when dtypes are equal)."""
    opcode: ClassVar[str] = "tensor_copy"
    dst: Tensor
    src: Tensor

    def reads(self):
        return (self.src,)

    def writes(self):
        return (self.dst,)

    def validate(self, chip):
        expect_tile(self, "src", self.src, chip)
        expect_tile(self, "dst", self.dst, chip)
        expect_same_partitions(self, dst=self.dst, src=self.src)
        expect_same_elements(self, dst=self.dst, src=self.src)

    def execute(self, m):
        src = self.src.read(self.api, self.loc)
        values = src if src.dtype == dt.storage(self.dst.dtype) else dt.to_fp32(src)
        self.store(self.dst, values.reshape(self.dst.shape))

    def cycles(self, chip):
        fast = _is16(self.src) and _is16(self.dst) and self.src.buffer == SBUF and self.dst.buffer == SBUF
        speed = 2.0 if fast and self.engine == Engine.VECTOR and chip.nc_version >= 3 else 1.0
        return vector_cost(chip, self.src.free_size / speed)


@dataclass(frozen=True, slots=True, kw_only=True)
class Memset(Instruction):
    opcode: ClassVar[str] = "memset"
    dst: Tensor
    value: float

    def writes(self):
        return (self.dst,)

    def validate(self, chip):
        expect_tile(self, "dst", self.dst, chip)

    def execute(self, m):
        self.store(self.dst, np.full(self.dst.shape, self.value,
                                     dtype=np.float32 if dt.is_float(self.dst.dtype) else np.int64))

    def cycles(self, chip):
        half = self.value == 0 and _is16(self.dst)
        return vector_cost(chip, self.dst.free_size, per_elem=0.5 if half else 1.0)


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
class Iota(Instruction):
    """dst = offset + p*channel_multiplier + sum(step_k * i_k), computed in int32 (GpSimd)."""
    opcode: ClassVar[str] = "iota"
    dst: Tensor
    pattern: tuple          # ((step, num), ...) over the free dims
    offset: int = 0
    channel_multiplier: int = 0
    engine: Engine = Engine.GPSIMD

    def writes(self):
        return (self.dst,)

    def validate(self, chip):
        expect_tile(self, "dst", self.dst, chip, allowed=(SBUF,))
        n = int(np.prod([c for _, c in self.pattern])) if self.pattern else 1
        if n != self.dst.free_size:
            self.fail(ShapeError, f"pattern {list(map(list, self.pattern))} covers {n} elements per partition "
                                  f"but dst {self.dst.describe()} has {self.dst.free_size}")

    def execute(self, m):
        values = affine_values(self.dst.shape, self.pattern, self.offset, self.channel_multiplier)
        values = values.astype(np.int32)
        self.store(self.dst, (values if dt.is_int(self.dst.dtype) else values.astype(np.float32))
                   .reshape(self.dst.shape))

    def cycles(self, chip):
        return chip.gpsimd_start_cycles + self.dst.free_size       # ISA: 150 + N


@dataclass(frozen=True, slots=True, kw_only=True)
class AffineSelect(Instruction):
    """dst = where(cmp(affine(p, i), 0), on_true, on_false_value) (GpSimd). Causal masks use it."""
    opcode: ClassVar[str] = "affine_select"
    dst: Tensor
    on_true: Tensor
    on_false_value: float
    pattern: tuple
    offset: int = 0
    channel_multiplier: int = 0
    cmp_op: str = "greater_equal"
    engine: Engine = Engine.GPSIMD

    def reads(self):
        return (self.on_true,)

    def writes(self):
        return (self.dst,)

    def validate(self, chip):
        expect_tile(self, "dst", self.dst, chip)
        expect_tile(self, "on_true_tile", self.on_true, chip)
        expect_same_partitions(self, dst=self.dst, on_true_tile=self.on_true)

    def execute(self, m):
        pred = alu.alu(self.cmp_op, self.api, self.loc)(
            affine_values(self.dst.shape, self.pattern, self.offset, self.channel_multiplier), 0)
        data = self.read(self.on_true).reshape(pred.shape)
        out = np.where(pred != 0, data, np.float32(self.on_false_value))
        self.store(self.dst, out.reshape(self.dst.shape))

    def cycles(self, chip):
        return chip.gpsimd_start_cycles + self.dst.free_size       # ISA: 150 + N


# ================================================================================================
# Tensor engine
# ================================================================================================

_MATMUL_DTYPES = (dt.float8_e4m3, dt.float8_e5m2, dt.float8_e4m3fn, dt.bfloat16, dt.float16, dt.float32,
                  dt.tfloat32)


@dataclass(frozen=True, slots=True, kw_only=True)
class MatMul(Instruction):
    """dst[M, N] (+)= stationary[K, M].T @ moving[K, N]; fp32 accumulation in PSUM.

    accumulate: False overwrites, True adds, None overwrites where dst was never written and adds
    elsewhere. perf_mode='double_row' (trn2+ fp8): inputs [K, 2, F] contract over K and the 2."""
    opcode: ClassVar[str] = "nc_matmul"
    dst: Tensor
    stationary: Tensor
    moving: Tensor
    accumulate: bool | None = None
    perf_mode: str = "none"
    is_transpose: bool = False
    engine: Engine = Engine.TENSOR

    def reads(self):
        return (self.stationary, self.moving)

    def writes(self):
        return (self.dst,)

    def _kmn(self):
        s, mv = self.stationary, self.moving
        if self.perf_mode == "double_row":
            return s.shape[0] * 2, s.free_size // 2, mv.free_size // 2
        return s.shape[0], s.free_size, mv.free_size

    def validate(self, chip):
        s, mv, d = self.stationary, self.moving, self.dst
        expect_buffer(self, "stationary", s, (SBUF,))
        expect_buffer(self, "moving", mv, (SBUF,))
        expect_buffer(self, "dst", d, (PSUM,))
        for name, t in (("stationary", s), ("moving", mv), ("dst", d)):
            if t.ndim < 2:
                self.fail(ShapeError, f"Insufficient rank for operand '{name}' {t.describe()}")
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
        if n > chip.gemm_moving_fmax:
            self.fail(MatmulLimitError, f"moving free size N={n} of {mv.describe()} exceeds "
                                        f"gemm_moving_fmax={chip.gemm_moving_fmax}")
        if d.shape[0] != m or d.free_size != n:
            self.fail(ShapeError, f"dst {d.describe()} must be [M={m}, N={n}] for stationary {s.describe()} "
                                  f"and moving {mv.describe()}")
        if d.free_size * 4 > chip.psum_bank_bytes:
            self.fail(MatmulLimitError, f"dst {d.describe()} spans {d.free_size * 4} B per partition; a matmul "
                                        f"result must fit one PSUM bank ({chip.psum_bank_bytes} B)")
        for name, t in (("stationary", s), ("moving", mv)):
            if t.dtype not in _MATMUL_DTYPES:
                self.fail(DtypeError, f"{name} dtype {dt.name_of(t.dtype)} is not a matmul input type "
                                      f"(fp8_e4m3, fp8_e5m2, bf16, fp16, tf32, fp32)")
        wide = {dt.float32, dt.tfloat32}
        if (s.dtype in wide) != (mv.dtype in wide):
            self.fail(DtypeError, f"fp32/tf32 cannot be mixed with {dt.name_of(mv.dtype if s.dtype in wide else s.dtype)}"
                                  f": stationary is {dt.name_of(s.dtype)}, moving is {dt.name_of(mv.dtype)}")
        pair = {s.dtype, mv.dtype}
        if dt.float8_e4m3 in pair and dt.float8_e4m3fn in pair:
            self.fail(DtypeError, "float8_e4m3 (legacy, max 240) cannot be mixed with float8_e4m3fn in a matmul")
        if dt.float8_e4m3fn in pair and chip.nc_version < 4:
            self.fail(DtypeError, f"float8_e4m3fn matmul inputs need trn3 (NeuronCore v4), target is {chip.name}")
        if self.perf_mode == "double_row":
            if not chip.fp8_double_row:
                self.fail(NkiValidationError, f"perf_mode=double_row needs trn2 or later, target is {chip.name}")
            if not (s.dtype in dt.FP8 and mv.dtype in dt.FP8):
                self.fail(DtypeError, f"perf_mode=double_row needs fp8 inputs, got {dt.name_of(s.dtype)} and "
                                      f"{dt.name_of(mv.dtype)}")
            if s.ndim != 3 or s.shape[1] != 2 or mv.ndim != 3 or mv.shape[1] != 2:
                self.fail(ShapeError, f"perf_mode=double_row takes [K, 2, M] and [K, 2, N] inputs, got "
                                      f"{list(s.shape)} and {list(mv.shape)}")

    def execute(self, m):
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
            else:
                prior = dt.to_fp32(dst.array)
            self.store(dst, prior + result)
            return
        # accumulate=None: first write to a location overwrites, later writes add.
        mask = dst._mask_view()
        if mask is None:
            self.store(dst, dt.to_fp32(dst.array) + result)
        else:
            self.store(dst, np.where(mask, dt.to_fp32(dst.array) + result, result))

    def flops(self) -> float:
        k, m, n = self._kmn()
        return 2.0 * k * m * n

    def cycles(self, chip) -> float:
        # ISA nc_matmul: max(min(64, N_stat), N_mov) PE cycles for 8/16-bit inputs, 4x for fp32.
        # Stationary (weight) loads overlap the previous matmul (background LoadStationary), so the
        # throughput cost is the moving stream; the timing model adds the load when it cannot hide.
        _, m, n = self._kmn()
        c = max(min(chip.matmul_init_cycles, m), n)
        if self.stationary.dtype == dt.float32 or self.moving.dtype == dt.float32:
            c *= 4
        return float(c)


@dataclass(frozen=True, slots=True, kw_only=True)
class Transpose(Instruction):
    """dst[F, P] = src[P, F] on the Tensor engine (SBUF->PSUM, <=128x128) or Vector (<=32x32)."""
    opcode: ClassVar[str] = "nc_transpose"
    dst: Tensor
    src: Tensor
    engine: Engine = Engine.TENSOR

    def reads(self):
        return (self.src,)

    def writes(self):
        return (self.dst,)

    def validate(self, chip):
        s, d = self.src, self.dst
        if self.engine == Engine.TENSOR:
            expect_buffer(self, "data", s, (SBUF,))
            expect_buffer(self, "dst", d, (PSUM,))
            limit = chip.partitions
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
        if self.engine == Engine.TENSOR and dt.is_float(d.dtype) and d.dtype not in (s.dtype, dt.float32):
            self.fail(DtypeError, f"dst dtype {dt.name_of(d.dtype)} must equal data dtype "
                                  f"{dt.name_of(s.dtype)} or be float32")

    def execute(self, m):
        x = as_2d(self.src.read(self.api, self.loc))
        values = x.T if x.dtype == dt.storage(self.dst.dtype) else dt.to_fp32(x).T
        self.store(self.dst, values.reshape(self.dst.shape))

    def flops(self) -> float:
        return 0.0

    def cycles(self, chip):
        p, f = self.src.shape[0], self.src.free_size
        if self.engine == Engine.TENSOR:
            return float(max(p, min(chip.matmul_init_cycles, f)))   # ISA: max(P, min(64, F))
        return vector_cost(chip, f)                                 # ISA: max(MIN_II, N)


# ================================================================================================
# Vector / Scalar / GpSimd arithmetic
# ================================================================================================

def _operand(ins: Instruction, x, p: int):
    """A scalar or a [P, 1] per-partition vector as an fp32 array broadcastable over [P, F]."""
    if isinstance(x, Tensor):
        if x.shape[0] != p or x.free_size != 1:
            ins.fail(ShapeError, f"per-partition operand {x.describe()} must be [{p}, 1]")
        return ins.read(x).reshape(p, 1).astype(np.float32, copy=False)
    return np.float32(x) if not isinstance(x, (int, np.integer)) else x


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
        return tuple(t for t in (self.data, self.bias, self.scale) if isinstance(t, Tensor))

    def writes(self):
        return tuple(t for t in (self.dst, self.reduce_res) if t is not None)

    def validate(self, chip):
        expect_tile(self, "data", self.data, chip)
        if self.dst is not None:
            expect_tile(self, "dst", self.dst, chip)
            expect_same_partitions(self, dst=self.dst, data=self.data)
            expect_same_elements(self, dst=self.dst, data=self.data)
        if isinstance(self.bias, Tensor) and (self.bias.shape[0] != self.data.shape[0] or self.bias.free_size != 1):
            self.fail(ShapeError, f"bias {self.bias.describe()} must be a [{self.data.shape[0]}, 1] vector")
        if self.reduce_op not in (None, "add"):
            self.fail(NkiValidationError, f"activation reduce supports only add, got {self.reduce_op!r}")
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
        regs = m.reduce_regs
        if self.reduce_cmd in ("reset", "reset_reduce"):
            regs[:p] = 0.0
        if self.reduce_cmd in ("reduce", "reset_reduce") or self.reduce_op == "add":
            regs[:p] += out.sum(axis=1, keepdims=True, dtype=np.float32)
        if self.reduce_res is not None:
            self.reduce_res.write(regs[:p].reshape(self.reduce_res.shape))

    def cycles(self, chip):
        c = vector_cost(chip, self.data.free_size)                      # ISA: max(MIN_II, N)
        if self.reduce_res is not None or self.reduce_op is not None:
            c += chip.min_ii_cycles                                     # activation_reduce: + MIN_II
        return c


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorTensor(Instruction):
    """dst = data1 op data2, elementwise over equal partitions and equal elements per partition."""
    opcode: ClassVar[str] = "tensor_tensor"
    dst: Tensor
    data1: Tensor
    data2: Tensor
    op: str

    def reads(self):
        return (self.data1, self.data2)

    def writes(self):
        return (self.dst,)

    def validate(self, chip):
        expect_tile(self, "data1", self.data1, chip)
        expect_tile(self, "data2", self.data2, chip)
        expect_tile(self, "dst", self.dst, chip)
        expect_same_partitions(self, data1=self.data1, data2=self.data2, dst=self.dst)
        expect_same_elements(self, data1=self.data1, data2=self.data2, dst=self.dst)
        if self.data1.buffer == PSUM and self.data2.buffer == PSUM:
            self.fail(BufferKindError, "data1 and data2 cannot both be in PSUM")
        alu.alu(self.op, self.api, self.loc)

    def execute(self, m):
        a = self.read(self.data1).reshape(self.dst.shape)
        b = self.read(self.data2).reshape(self.dst.shape)
        self.store(self.dst, alu.alu(self.op, self.api, self.loc)(a, b))

    def cycles(self, chip):
        n = self.data1.free_size
        one_psum = (self.data1.buffer == PSUM) != (self.data2.buffer == PSUM)
        fast = (self.op in ("add", "multiply", "subtract") and _is16(self.data1) and _is16(self.data2)
                and _is16(self.dst) and not one_psum)
        return vector_cost(chip, n, per_elem=1.0 if (one_psum or fast) else 2.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorScalar(Instruction):
    """dst = (data op0 operand0) op1 operand1; operands are scalars or [P,1] vectors; reverse swaps order.

    With accum_op, also reduce the result along F into accum_dst ([P, 1]): tensor_scalar_reduce."""
    opcode: ClassVar[str] = "tensor_scalar"
    dst: Tensor
    data: Tensor
    op0: str
    operand0: Any
    reverse0: bool = False
    op1: str | None = None
    operand1: Any = None
    reverse1: bool = False
    accum_op: str | None = None
    accum_dst: Tensor | None = None

    def reads(self):
        return tuple(t for t in (self.data, self.operand0, self.operand1) if isinstance(t, Tensor))

    def writes(self):
        return tuple(t for t in (self.dst, self.accum_dst) if t is not None)

    def validate(self, chip):
        expect_tile(self, "data", self.data, chip)
        expect_tile(self, "dst", self.dst, chip)
        expect_same_partitions(self, data=self.data, dst=self.dst)
        expect_same_elements(self, data=self.data, dst=self.dst)
        alu.alu(self.op0, self.api, self.loc)
        if self.op1 is not None:
            alu.alu(self.op1, self.api, self.loc)

    def execute(self, m):
        p = self.data.shape[0]
        x = as_2d(self.read(self.data))
        y = _apply(self, self.op0, x, _operand(self, self.operand0, p), self.reverse0)
        if self.op1 is not None:
            y = _apply(self, self.op1, y, _operand(self, self.operand1, p), self.reverse1)
        self.store(self.dst, np.asarray(y).reshape(self.dst.shape))
        if self.accum_dst is not None:
            red = alu.reduce(self.accum_op or "add", np.asarray(y, dtype=np.float32), 1, self.api, self.loc,
                             keepdims=True)
            self.accum_dst.write(red.reshape(self.accum_dst.shape))

    def cycles(self, chip):
        fast = _is16(self.data) and _is16(self.dst) and self.data.buffer == SBUF and self.dst.buffer == SBUF
        speed = 2.0 if fast and chip.nc_version >= 3 else 1.0
        c = vector_cost(chip, self.data.free_size / speed)
        return c + (chip.min_ii_cycles if self.accum_dst is not None else 0)


def _apply(ins, op, x, operand, reverse):
    fn = alu.alu(op, ins.api, ins.loc)
    return fn(operand, x) if reverse else fn(x, operand)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalarTensorTensor(Instruction):
    """dst = (data op0 operand0) op1 operand1_tile."""
    opcode: ClassVar[str] = "scalar_tensor_tensor"
    dst: Tensor
    data: Tensor
    op0: str
    operand0: Any
    op1: str
    operand1: Tensor
    reverse0: bool = False
    reverse1: bool = False

    def reads(self):
        return tuple(t for t in (self.data, self.operand0, self.operand1) if isinstance(t, Tensor))

    def writes(self):
        return (self.dst,)

    def validate(self, chip):
        expect_tile(self, "data", self.data, chip)
        expect_tile(self, "operand1", self.operand1, chip)
        expect_tile(self, "dst", self.dst, chip)
        expect_same_partitions(self, data=self.data, operand1=self.operand1, dst=self.dst)
        expect_same_elements(self, data=self.data, operand1=self.operand1, dst=self.dst)

    def execute(self, m):
        p = self.data.shape[0]
        x = as_2d(self.read(self.data))
        y = _apply(self, self.op0, x, _operand(self, self.operand0, p), self.reverse0)
        t = as_2d(self.read(self.operand1))
        y = _apply(self, self.op1, y, t, self.reverse1)
        self.store(self.dst, np.asarray(y).reshape(self.dst.shape))

    def cycles(self, chip):
        n = self.data.free_size
        fast = (_is16(self.data) and _is16(self.operand1) and self.op0 == "subtract"
                and self.op1 == "multiply" and n % 2 == 0)
        return max(chip.min_ii_cycles, n if fast else 2 * n)       # ISA: N or 2N


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorReduce(Instruction):
    """dst = reduce(op, data, free axes); never across partitions. negate multiplies by -1."""
    opcode: ClassVar[str] = "tensor_reduce"
    dst: Tensor
    data: Tensor
    op: str
    axes: tuple
    negate: bool = False

    def reads(self):
        return (self.data,)

    def writes(self):
        return (self.dst,)

    def validate(self, chip):
        expect_tile(self, "data", self.data, chip)
        expect_tile(self, "dst", self.dst, chip)
        expect_same_partitions(self, data=self.data, dst=self.dst)
        if 0 in self.axes:
            self.fail(ShapeError, "tensor_reduce cannot reduce the partition dimension (axis 0); use "
                                  "tensor_partition_reduce or a matmul")
        if any(a >= self.data.ndim or a < 0 for a in self.axes):
            self.fail(ShapeError, f"axes {list(self.axes)} out of range for {self.data.describe()}")
        alu.reducer(self.op, self.api, self.loc)
        kept = self.data.size // max(1, int(np.prod([self.data.shape[a] for a in self.axes])))
        if kept != self.dst.size:
            self.fail(ShapeError, f"dst {self.dst.describe()} has {self.dst.size} elements; reducing "
                                  f"{self.data.describe()} over axes {list(self.axes)} gives {kept}")

    def execute(self, m):
        x = self.read(self.data)
        r = alu.reduce(self.op, x, tuple(self.axes), self.api, self.loc)
        if self.negate:
            r = -r
        self.store(self.dst, np.asarray(r).reshape(self.dst.shape))

    def cycles(self, chip):
        n = self.data.free_size
        fast = _is16(self.data) and _is16(self.dst) and self.op in ("add", "max", "maximum")
        return max(chip.min_ii_cycles, n / 2 if fast else n)      # ISA: N/2 or N


@dataclass(frozen=True, slots=True, kw_only=True)
class Reciprocal(Instruction):
    """dst = 1 / data on the Vector engine (more precise than activation(reciprocal))."""
    opcode: ClassVar[str] = "reciprocal"
    dst: Tensor
    data: Tensor

    def reads(self):
        return (self.data,)

    def writes(self):
        return (self.dst,)

    def validate(self, chip):
        expect_tile(self, "data", self.data, chip)
        expect_tile(self, "dst", self.dst, chip)
        expect_same_partitions(self, data=self.data, dst=self.dst)
        expect_same_elements(self, data=self.data, dst=self.dst)

    def execute(self, m):
        with np.errstate(divide="ignore"):
            self.store(self.dst, (np.float32(1.0) / self.read(self.data).astype(np.float32)).reshape(self.dst.shape))

    def cycles(self, chip):
        return vector_cost(chip, self.data.free_size, per_elem=8.0)   # ISA: max(MIN_II, 8N)
