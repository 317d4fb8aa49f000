"""Vector Engine instructions beyond elementwise math: scans, statistics, top-8, selects, shuffles.

Costs are the Nov-2025 ISA docstring formulas (ISA, see trnlab.hw for the public URLs);
N = elements per partition of the main input. Rows marked [UNCONFIRMED] have no published formula.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from trnlab.core import dtypes as dt
from trnlab.core.tensor import PSUM, Tensor
from trnlab.errors import DtypeError, NkiValidationError, ShapeError, UndefinedBehaviorWarning
from trnlab.isa import alu
from trnlab.isa.base import (DataToDst, Instruction, SrcToDst, ToDst, accumulate, as_2d, expect_elementwise,
                             expect_int, expect_not_both_psum, expect_same_dtype, expect_same_elements,
                             expect_same_partitions, expect_tile, expect_vector, expect_version, given,
                             is_bitvec, rows_where, start_partition_ok, tensors, vector_cost)
from trnlab.isa.base import fast_init as _fast_init, instruction_classes as _instruction_classes
from trnlab.isa.instructions import _operand, arith_inputs

FP32_MIN = float(np.finfo(np.float32).min)
_COMPARISONS = ("equal", "less", "less_equal", "greater", "greater_equal")


def _per_partition(ins, x, p: int) -> np.ndarray:
    """A scalar or [p, 1] tile as a [p, 1] fp32 column."""
    return np.broadcast_to(np.asarray(_operand(ins, x, p), dtype=np.float32).reshape(-1, 1), (p, 1))


def _fp32_rows(ins, t: Tensor) -> np.ndarray:
    """A tile's values as an fp32 [P, F] array."""
    return dt.to_fp32(as_2d(ins.read(t))).astype(np.float32)


def _reduce_out(ins, m, p: int, op: str, out: np.ndarray, init=None) -> None:
    """The optional Vector-accumulator reduction of `out` into reduce_res (select_reduce, range_select,
    exponential): runs unless reduce_cmd is idle and no reduce_res is given. init() gives the
    load_reduce start value; it is read only when the reduction runs."""
    if ins.reduce_res is not None or ins.reduce_cmd != "idle":
        red = accumulate(ins, m.vector_regs, p, ins.reduce_cmd, op, out, init() if init else None)
        if ins.reduce_res is not None:
            ins.reduce_res.write(red.reshape(ins.reduce_res.shape))


def _expect_rows(ins, chip, **tiles: Tensor) -> None:
    """On-chip tiles (checked in the given order) with equal partitions; free sizes may differ."""
    for name, t in tiles.items():
        expect_tile(ins, name, t, chip)
    expect_same_partitions(ins, **tiles)


def _check_arith(ins, *ops) -> None:
    for op in ops:
        alu.alu(op, ins.api, ins.loc)
        if is_bitvec(op):
            ins.fail(NkiValidationError, f"{ins.opcode} needs arithmetic operators, got bitvec {op!r}")


# ================================================================================================
# Scans
# ================================================================================================

@dataclass(frozen=True, slots=True, kw_only=True)
class TensorTensorScan(ToDst):
    """Per partition along the free axis: r[i] = (data0[i] op0 r[i-1]) op1 data1[i], r[-1] = initial.

    reverse0 swaps the operands of op0 (r[i-1] op0 data0[i]); reverse1 those of op1."""
    opcode: ClassVar[str] = "tensor_tensor_scan"
    data0: Tensor
    data1: Tensor
    initial: Any
    op0: str
    op1: str
    reverse0: bool = False
    reverse1: bool = False

    def reads(self):
        return tensors(self.data0, self.data1, self.initial)

    def validate(self, chip):
        expect_elementwise(self, chip, data0=self.data0, data1=self.data1, dst=self.dst)
        expect_not_both_psum(self, data0=self.data0, data1=self.data1)
        expect_vector(self, "initial", self.initial, self.data0.shape[0], chip)
        _check_arith(self, self.op0, self.op1)

    def execute(self, m):
        p = self.data0.shape[0]
        a, b = arith_inputs(self, as_2d(self.read(self.data0)), as_2d(self.read(self.data1)))
        f0, f1 = alu.alu(self.op0, self.api, self.loc), alu.alu(self.op1, self.api, self.loc)
        r = _per_partition(self, self.initial, p)[:, 0]
        out = np.empty(a.shape, dtype=np.float32)
        with np.errstate(all="ignore"):
            for i in range(a.shape[1]):
                t = f0(r, a[:, i]) if self.reverse0 else f0(a[:, i], r)
                r = np.asarray(f1(b[:, i], t) if self.reverse1 else f1(t, b[:, i]), dtype=np.float32)
                out[:, i] = r
        self.store(self.dst, out.reshape(self.dst.shape))

    def cycles(self, chip):
        # ISA: max(MIN_II, 2N); the 2 is chip.vector_two_input_cycles (fitted, hw presets)
        return vector_cost(chip, self.data0.free_size, per_elem=chip.vector_two_input_cycles)


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorScalarCumulative(SrcToDst):
    """reg = op1(op0(src[i], imm0), reg); dst[i] = reg, with the Vector accumulator registers."""
    opcode: ClassVar[str] = "tensor_scalar_cumulative"
    op0: str
    op1: str
    imm0: Any
    imm1: Any = None
    reduce_cmd: str = "reset_reduce"
    reverse0: bool = False

    def reads(self):
        return tensors(self.src, self.imm0, self.imm1)

    def validate(self, chip):
        expect_elementwise(self, chip, src=self.src, dst=self.dst)
        p = self.src.shape[0]
        expect_vector(self, "imm0", self.imm0, p, chip)
        expect_vector(self, "imm1", self.imm1, p, chip)
        _check_arith(self, self.op0, self.op1)
        if self.op1 not in ("add", "subtract", "multiply", "maximum", "minimum", "max", "min"):
            self.fail(NkiValidationError, f"op1 must be add, subtract, multiply, max or min, got {self.op1!r}")
        for name, t in (("src", self.src), ("dst", self.dst)):
            if t.dtype in (dt.int32, dt.uint32):
                self.fail(DtypeError, f"{name} {t.describe()}: int32/uint32 are not supported")
        if self.reduce_cmd not in ("reset_reduce", "reduce", "load_reduce"):
            self.fail(NkiValidationError, f"reduce_cmd must be reset_reduce, reduce or load_reduce, "
                                          f"got {self.reduce_cmd!r}")
        if self.reduce_cmd == "load_reduce" and self.imm1 is None:
            self.fail(NkiValidationError, "reduce_cmd=load_reduce needs imm1 (the start value)")

    def execute(self, m):
        p = self.src.shape[0]
        (x,) = arith_inputs(self, as_2d(self.read(self.src)))
        imm0 = _per_partition(self, self.imm0, p)[:, 0]
        f0, f1 = alu.alu(self.op0, self.api, self.loc), alu.alu(self.op1, self.api, self.loc)
        regs = m.vector_regs
        if self.reduce_cmd == "reset_reduce":
            regs[:p] = {"add": 0.0, "subtract": 0.0, "multiply": 1.0}.get(self.op1, alu.REDUCE_OPS[self.op1][0])
        elif self.reduce_cmd == "load_reduce":
            regs[:p] = _per_partition(self, self.imm1, p)
        r = regs[:p, 0].copy()
        out = np.empty(x.shape, dtype=np.float32)
        with np.errstate(all="ignore"):
            for i in range(x.shape[1]):
                v = f0(imm0, x[:, i]) if self.reverse0 else f0(x[:, i], imm0)
                r = np.asarray(f1(v, r), dtype=np.float32)
                out[:, i] = r
        regs[:p, 0] = r
        self.store(self.dst, out.reshape(self.dst.shape))

    def cycles(self, chip):
        return vector_cost(chip, self.src.free_size)        # [UNCONFIRMED] no published formula; as tensor_scalar


# ================================================================================================
# Statistics
# ================================================================================================

@dataclass(frozen=True, slots=True, kw_only=True)
class BnStats(DataToDst):
    """dst[p] = (count, mean, var*count) of the even-indexed then of the odd-indexed elements (6 values)."""
    opcode: ClassVar[str] = "bn_stats"

    def validate(self, chip):
        _expect_rows(self, chip, data=self.data, dst=self.dst)
        if self.data.free_size > chip.bn_stats_fmax:
            self.fail(ShapeError, f"data {self.data.describe()} has {self.data.free_size} elements per partition; "
                                  f"bn_stats_fmax is {chip.bn_stats_fmax}")
        if self.dst.free_size != 6:
            self.fail(ShapeError, f"dst {self.dst.describe()} must hold 6 elements per partition "
                                  f"(count, mean, var*count for even and odd elements), has {self.dst.free_size}")

    def execute(self, m):
        x = as_2d(self.read(self.data)).astype(np.float32)
        out = np.zeros((x.shape[0], 6), dtype=np.float32)
        for k, part in enumerate((x[:, 0::2], x[:, 1::2])):
            n = part.shape[1]
            if n == 0:
                continue
            mean = part.mean(axis=1, dtype=np.float32)
            m2 = np.square(part - mean[:, None]).sum(axis=1, dtype=np.float32)
            out[:, 3 * k:3 * k + 3] = np.stack([np.full_like(mean, n), mean, m2], axis=1)
        self.store(self.dst, out.reshape(self.dst.shape))

    def cycles(self, chip):
        return vector_cost(chip, self.data.free_size)        # ISA: max(MIN_II, N)


@dataclass(frozen=True, slots=True, kw_only=True)
class BnAggr(DataToDst):
    """dst[p] = (mean, variance) aggregated from (count, mean, var*count) triples of bn_stats outputs."""
    opcode: ClassVar[str] = "bn_aggr"

    def validate(self, chip):
        _expect_rows(self, chip, data=self.data, dst=self.dst)
        if self.data.free_size % 3:
            self.fail(ShapeError, f"data {self.data.describe()} has {self.data.free_size} elements per partition; "
                                  f"bn_aggr needs (count, mean, var*count) triples, a multiple of 3")
        if self.dst.free_size != 2:
            self.fail(ShapeError, f"dst {self.dst.describe()} must hold 2 elements per partition (mean, variance)")

    def execute(self, m):
        t = as_2d(self.read(self.data)).astype(np.float32).reshape(self.data.shape[0], -1, 3)
        count, mean, m2 = t[..., 0], t[..., 1], t[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            n = count.sum(axis=1, dtype=np.float32)
            total = np.where(count > 0, count * mean, 0).sum(axis=1, dtype=np.float32) / n
            spread = np.where(count > 0, m2 + count * np.square(mean - total[:, None]), 0)
            var = spread.sum(axis=1, dtype=np.float32) / n
        self.store(self.dst, np.stack([total, var], axis=1).reshape(self.dst.shape))

    def cycles(self, chip):
        return vector_cost(chip, 13 * (self.data.free_size / 3))   # ISA: max(MIN_II, 13*(N/3))


# ================================================================================================
# Top-8 family
# ================================================================================================

def _check_top8_input(ins, name: str, t: Tensor) -> None:
    if not 8 <= t.free_size <= 16384:
        ins.fail(ShapeError, f"{name} {t.describe()} has {t.free_size} elements per partition; "
                             f"must be between 8 and 16384")
    if t.ndim > 4:
        ins.fail(ShapeError, f"{name} {t.describe()} must be at most 3-D in its free dims")


def _check_eight(ins, name: str, t: Tensor) -> None:
    if t.free_size != 8:
        ins.fail(ShapeError, f"{name} {t.describe()} must hold exactly 8 elements per partition, "
                             f"has {t.free_size}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Max8(SrcToDst):
    """dst[p, :8] = the 8 largest values of src[p] in descending order (fp32 compare)."""
    opcode: ClassVar[str] = "max8"

    def validate(self, chip):
        _expect_rows(self, chip, src=self.src, dst=self.dst)
        _check_top8_input(self, "src", self.src)
        _check_eight(self, "dst", self.dst)

    def execute(self, m):
        x = _fp32_rows(self, self.src)
        top = -np.sort(-x, axis=1, kind="stable")[:, :8]
        self.store(self.dst, top.reshape(self.dst.shape))

    def cycles(self, chip):
        return float(self.src.free_size)                     # ISA: N


def _first_indices(data: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """[P, 8] index of the first element of data[p] equal to vals[p, j]; -1 when absent."""
    hit = data[:, None, :] == vals[:, :, None]               # [P, 8, N]
    idx = np.argmax(hit, axis=2)
    return np.where(hit.any(axis=2), idx, -1)


@dataclass(frozen=True, slots=True, kw_only=True)
class NcFindIndex8(DataToDst):
    """dst[p, j] = index of the first element of data[p] equal to vals[p, j] (uint16/uint32)."""
    opcode: ClassVar[str] = "nc_find_index8"
    vals: Tensor

    def reads(self):
        return (self.data, self.vals)

    def validate(self, chip):
        _expect_rows(self, chip, data=self.data, vals=self.vals, dst=self.dst)
        _check_top8_input(self, "data", self.data)
        _check_eight(self, "vals", self.vals)
        _check_eight(self, "dst", self.dst)
        if self.dst.dtype not in (dt.uint16, dt.uint32):
            self.fail(DtypeError, f"dst {self.dst.describe()} must be uint16 or uint32")

    def execute(self, m):
        data, vals = _fp32_rows(self, self.data), _fp32_rows(self, self.vals)
        idx = _first_indices(data, vals)
        if (idx < 0).any():
            warnings.warn(f"{self.api}: {int((idx < 0).sum())} of the vals are not in data; the hardware result "
                          f"is undefined there (trnlab writes the dtype's max). At {self.loc}",
                          UndefinedBehaviorWarning, stacklevel=3)
            idx = np.where(idx < 0, np.iinfo(self.dst.dtype).max, idx)
        self.store(self.dst, idx.astype(np.int64).reshape(self.dst.shape))

    def cycles(self, chip):
        return float(self.data.free_size)                    # ISA: N


@dataclass(frozen=True, slots=True, kw_only=True)
class NcMatchReplace8(DataToDst):
    """dst = data with the first occurrence of each vals[p, j] (taken in order j = 0..7) replaced by imm;
    dst_idx optionally receives the matched indices."""
    opcode: ClassVar[str] = "nc_match_replace8"
    vals: Tensor
    imm: float
    dst_idx: Tensor | None = None

    def reads(self):
        return (self.data, self.vals)

    def writes(self):
        return given(self.dst, self.dst_idx)

    def validate(self, chip):
        _expect_rows(self, chip, data=self.data, vals=self.vals, dst=self.dst)
        expect_same_elements(self, data=self.data, dst=self.dst)
        _check_top8_input(self, "data", self.data)
        _check_eight(self, "vals", self.vals)
        if self.dst_idx is not None:
            expect_tile(self, "dst_idx", self.dst_idx, chip)
            expect_same_partitions(self, data=self.data, dst_idx=self.dst_idx)
            _check_eight(self, "dst_idx", self.dst_idx)
            expect_int(self, "dst_idx", self.dst_idx)

    def execute(self, m):
        data, vals = _fp32_rows(self, self.data).copy(), _fp32_rows(self, self.vals)
        rows = np.arange(data.shape[0])
        found = np.full(vals.shape, -1, dtype=np.int64)
        for j in range(8):                       # sequential: duplicate vals match successive occurrences
            hit = data == vals[:, j:j + 1]
            ok = hit.any(axis=1)
            col = np.argmax(hit, axis=1)
            data[rows[ok], col[ok]] = np.float32(self.imm)
            found[:, j] = np.where(ok, col, -1)
        self.store(self.dst, data.reshape(self.dst.shape))
        if self.dst_idx is not None:
            if (found < 0).any():
                warnings.warn(f"{self.api}: {int((found < 0).sum())} of the vals are not in data; their indices "
                              f"are undefined on hardware. At {self.loc}", UndefinedBehaviorWarning, stacklevel=3)
            found = np.where(found < 0, np.iinfo(self.dst_idx.dtype).max, found)
            self.dst_idx.write(found.reshape(self.dst_idx.shape))

    def cycles(self, chip):
        # ISA says "min(MIN_II, N)", almost certainly a typo for max(MIN_II, N) [UNCONFIRMED].
        return vector_cost(chip, self.data.free_size)


# ================================================================================================
# Selects
# ================================================================================================

def _predicate(ins, t: Tensor, reverse: bool) -> np.ndarray:
    pred = as_2d(ins.read(t)) != 0
    return ~pred if reverse else pred


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorCopyPredicated(ToDst):
    """dst[i] = src[i] (or the scalar src) where predicate[i] != 0 (inverted by reverse_pred); else unchanged."""
    opcode: ClassVar[str] = "tensor_copy_predicated"
    src: Any
    predicate: Tensor
    reverse_pred: bool = False

    def reads(self):
        # dst is read too: unselected elements keep their value.
        return tensors(self.src, self.predicate, self.dst)

    def validate(self, chip):
        expect_elementwise(self, chip, dst=self.dst, predicate=self.predicate)
        if isinstance(self.src, Tensor):
            expect_tile(self, "src", self.src, chip)
            expect_same_partitions(self, src=self.src, dst=self.dst)
            expect_same_elements(self, src=self.src, dst=self.dst)
            expect_not_both_psum(self, src=self.src, predicate=self.predicate)
            expect_same_dtype(self, src=self.src, dst=self.dst)
        if self.predicate.dtype.kind not in "ub":
            self.fail(DtypeError, f"predicate {self.predicate.describe()} must be uint8, uint16 or uint32")

    def execute(self, m):
        pred = _predicate(self, self.predicate, self.reverse_pred).reshape(self.dst.shape)
        if isinstance(self.src, Tensor):
            values = self.raw(self.src).reshape(self.dst.shape)
        else:
            values = np.asarray(self.src, dtype=np.float32 if dt.is_float(self.dst.dtype) else np.int64)
        self.dst.write(values, where=pred if self.mask is None else (pred & self.mask))

    def cycles(self, chip):
        split = isinstance(self.src, Tensor) and (self.src.buffer == PSUM) != (self.predicate.buffer == PSUM)
        return vector_cost(chip, self.dst.free_size, per_elem=1.0 if split else 2.0)  # ISA: N or 2N


@dataclass(frozen=True, slots=True, kw_only=True)
class SelectReduce(Instruction):
    """dst = where(predicate, on_true, on_false); optional max-reduce into reduce_res via Vector accumulators."""
    opcode: ClassVar[str] = "select_reduce"
    dst: Tensor
    predicate: Tensor
    on_true: Tensor
    on_false: Any
    reduce_res: Tensor | None = None
    reduce_cmd: str = "idle"
    reduce_op: str = "maximum"
    reverse_pred: bool = False

    def reads(self):
        return tensors(self.predicate, self.on_true, self.on_false)

    def writes(self):
        return given(self.dst, self.reduce_res)

    def validate(self, chip):
        expect_elementwise(self, chip, dst=self.dst, predicate=self.predicate, on_true=self.on_true)
        expect_not_both_psum(self, on_true=self.on_true, predicate=self.predicate)
        p = self.on_true.shape[0]
        expect_vector(self, "on_false", self.on_false, p, chip)
        if self.on_true.dtype in (dt.tfloat32, dt.int32, dt.uint32):
            self.fail(DtypeError, f"on_true {self.on_true.describe()} cannot be tfloat32, int32 or uint32")
        if self.predicate.dtype not in (dt.int8, dt.uint8, dt.int16, dt.uint16, dt.bool_):
            self.fail(DtypeError, f"predicate {self.predicate.describe()} must be int8, uint8, int16 or uint16")
        if self.reduce_op not in ("maximum", "max"):
            self.fail(NkiValidationError, f"select_reduce supports reduce_op=maximum only, got {self.reduce_op!r}")
        if self.reduce_res is not None:
            expect_vector(self, "reduce_res", self.reduce_res, p, chip)
            if not dt.is_float(self.reduce_res.dtype):
                self.fail(DtypeError, f"reduce_res {self.reduce_res.describe()} must be a float type")

    def execute(self, m):
        p = self.on_true.shape[0]
        pred = _predicate(self, self.predicate, self.reverse_pred)
        out = np.where(pred, _fp32_rows(self, self.on_true), _per_partition(self, self.on_false, p))
        self.store(self.dst, out.reshape(self.dst.shape))
        _reduce_out(self, m, p, "maximum", out)

    def cycles(self, chip):
        return vector_cost(chip, self.dst.free_size)        # [UNCONFIRMED] as range_select: max(MIN_II, N)


@dataclass(frozen=True, slots=True, kw_only=True)
class RangeSelect(Instruction):
    """dst = where(cmp0(range_start + i, bound0) & cmp1(range_start + i, bound1), on_true, on_false_value)
    over the flattened free index i; max-reduce into reduce_res (trn2+)."""
    opcode: ClassVar[str] = "range_select"
    dst: Tensor
    on_true: Tensor
    comp_op0: str
    comp_op1: str
    bound0: Tensor
    bound1: Tensor
    reduce_cmd: str = "reset_reduce"
    reduce_res: Tensor | None = None
    reduce_op: str = "maximum"
    range_start: int = 0
    on_false_value: float = FP32_MIN

    def reads(self):
        return (self.on_true, self.bound0, self.bound1)

    def writes(self):
        return given(self.dst, self.reduce_res)

    def validate(self, chip):
        expect_version(self, chip, 3)
        expect_elementwise(self, chip, dst=self.dst, on_true_tile=self.on_true)
        p = self.on_true.shape[0]
        for name, b in (("bound0", self.bound0), ("bound1", self.bound1)):
            if not isinstance(b, Tensor):
                self.fail(ShapeError, f"{name} must be a [{p}, 1] tile, got {b!r}")
            expect_vector(self, name, b, p, chip)
            if b.dtype != dt.float32:
                self.fail(DtypeError, f"{name} {b.describe()} must be float32")
        for name, op in (("comp_op0", self.comp_op0), ("comp_op1", self.comp_op1)):
            if op not in _COMPARISONS:
                self.fail(NkiValidationError, f"{name} must be one of {list(_COMPARISONS)}, got {op!r}")
        if not dt.is_float(self.on_true.dtype):
            self.fail(DtypeError, f"on_true_tile {self.on_true.describe()} must be a float type")
        if np.float32(self.on_false_value) != np.float32(FP32_MIN):
            self.fail(NkiValidationError, f"on_false_value must be FP32_MIN ({FP32_MIN}) on hardware, "
                                          f"got {self.on_false_value}")
        if self.reduce_op not in ("maximum", "max"):
            self.fail(NkiValidationError, f"range_select supports reduce_op=maximum only, got {self.reduce_op!r}")
        if self.reduce_res is not None:
            expect_vector(self, "reduce_res", self.reduce_res, p, chip)
        if self.range_start + self.on_true.free_size > 2 ** 24:
            self.fail(ShapeError, f"range_start {self.range_start} + free index must stay below 2^24")

    def execute(self, m):
        p = self.on_true.shape[0]
        idx = (self.range_start + np.arange(self.on_true.free_size, dtype=np.float32))[None, :]
        c0 = alu.alu(self.comp_op0, self.api, self.loc)(idx, _per_partition(self, self.bound0, p))
        c1 = alu.alu(self.comp_op1, self.api, self.loc)(idx, _per_partition(self, self.bound1, p))
        out = np.where((c0 != 0) & (c1 != 0), _fp32_rows(self, self.on_true), np.float32(self.on_false_value))
        self.store(self.dst, out.reshape(self.dst.shape))
        _reduce_out(self, m, p, "maximum", out)

    def cycles(self, chip):
        return vector_cost(chip, self.on_true.free_size)     # ISA: max(MIN_II, N)


# ================================================================================================
# Cross-partition shuffle, exponential
# ================================================================================================

@dataclass(frozen=True, slots=True, kw_only=True)
class NcStreamShuffle(SrcToDst):
    """Within each 32-partition quadrant: dst[q*32 + i] = src[q*32 + mask[i]]; mask 255 leaves dst unchanged."""
    opcode: ClassVar[str] = "nc_stream_shuffle"
    shuffle_mask: tuple

    def validate(self, chip):
        expect_tile(self, "src", self.src, chip)
        expect_tile(self, "dst", self.dst, chip)
        expect_same_dtype(self, src=self.src, dst=self.dst)
        expect_same_elements(self, src=self.src, dst=self.dst)
        mask = self.shuffle_mask
        if len(mask) != 32 or any(not (0 <= int(v) < 32 or int(v) == 255) for v in mask):
            self.fail(NkiValidationError, f"shuffle_mask must be 32 entries in [0, 32) or 255, got {list(mask)}")
        active = -(-max(self.src.shape[0], self.dst.shape[0]) // 32) * 32
        for name, t in (("src", self.src), ("dst", self.dst)):
            start = t.region()[0]
            if not start_partition_ok(start, active):
                self.fail(NkiValidationError, f"{name} {t.describe()} starts at partition {start}; with "
                                              f"{active} active partitions the start must be "
                                              f"{'0' if active > 64 else ('0/64' if active > 32 else '0/32/64/96')}")
        for j in range(self.dst.shape[0]):
            v = int(mask[j % 32])
            if v != 255 and (j // 32) * 32 + v >= self.src.shape[0]:
                self.fail(ShapeError, f"dst partition {j} copies src partition {(j // 32) * 32 + v}, outside "
                                      f"{self.src.describe()}")

    def execute(self, m):
        src = as_2d(self.raw(self.src)).copy()        # in-place shuffles are allowed
        rows = np.array([j for j in range(self.dst.shape[0]) if int(self.shuffle_mask[j % 32]) != 255], dtype=int)
        from_rows = np.array([(j // 32) * 32 + int(self.shuffle_mask[j % 32]) for j in rows], dtype=int)
        where = np.zeros(self.dst.shape[0], dtype=bool)
        where[rows] = True
        values = np.zeros((self.dst.shape[0], src.shape[1]), dtype=src.dtype)
        values[rows] = src[from_rows]
        where = rows_where(where, self.dst.shape)
        self.dst.write(values.reshape(self.dst.shape), where=where if self.mask is None else (where & self.mask))

    def cycles(self, chip):
        return vector_cost(chip, self.src.free_size)         # ISA: max(MIN_II, N)


@dataclass(frozen=True, slots=True, kw_only=True)
class Exponential(SrcToDst):
    """dst = exp(src - max_value) on the Vector Engine (trn3), optional sum into the accumulators."""
    opcode: ClassVar[str] = "exponential"
    max_value: Any = 0.0
    reduce_res: Tensor | None = None
    reduce_cmd: str = "idle"
    reduce_init: Any = 0.0

    def reads(self):
        return tensors(self.src, self.max_value, self.reduce_init)

    def writes(self):
        return given(self.dst, self.reduce_res)

    def validate(self, chip):
        expect_version(self, chip, 4)
        expect_elementwise(self, chip, src=self.src, dst=self.dst)
        p = self.src.shape[0]
        expect_vector(self, "max_value", self.max_value, p, chip)
        if self.src.ndim > 4:
            self.fail(ShapeError, f"src {self.src.describe()} must be at most 4-D")
        if self.reduce_res is not None:
            expect_vector(self, "reduce_res", self.reduce_res, p, chip)
        if self.reduce_cmd not in ("idle", "reset_reduce", "reduce", "load_reduce"):
            self.fail(NkiValidationError, f"reduce_cmd must be idle, reset_reduce, reduce or load_reduce, "
                                          f"got {self.reduce_cmd!r}")
        if self.reduce_cmd != "load_reduce" and not isinstance(self.reduce_init, Tensor) and self.reduce_init:
            self.fail(NkiValidationError, "reduce_init must be unset or 0.0 unless reduce_cmd is load_reduce")

    def execute(self, m):
        p = self.src.shape[0]
        with np.errstate(over="ignore"):
            out = np.exp(_fp32_rows(self, self.src) - _per_partition(self, self.max_value, p))
        self.store(self.dst, out.reshape(self.dst.shape))
        _reduce_out(self, m, p, "add", out, lambda: _per_partition(self, self.reduce_init, p))

    def cycles(self, chip):
        return vector_cost(chip, self.src.free_size)         # [UNCONFIRMED] ARCH v4: 4x ScalarE exp rate


_fast_init(*_instruction_classes(globals()))     # (isa.base.fast_init: instructions are built per issue)
