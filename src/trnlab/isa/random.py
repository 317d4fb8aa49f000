"""Random numbers: per-engine PRNG streams kept on the Machine, seeded and deterministic.

The hardware runs XORWOW per compute lane; trnlab does not reproduce its bit stream (the lane
mapping and seeding are unpublished). Each engine owns one numpy Philox stream: the same seeds give
the same numbers on every run, and rand_get_state / rand_set_state round-trip a stream exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from trnlab.core import dtypes as dt
from trnlab.core.tensor import PSUM, SBUF, Tensor
from trnlab.errors import DtypeError, NkiValidationError, ShapeError
from trnlab.isa.base import (DataToDst, Engine, Instruction, ToDst, as_2d, expect_elementwise, expect_same_dtype,
                             expect_tile, expect_vector, expect_version, tensors, vector_cost)
from trnlab.isa.base import fast_init as _fast_init, instruction_classes as _instruction_classes
from trnlab.isa.instructions import _operand

_DEFAULT_SEEDS = {Engine.VECTOR: 0x5EED0, Engine.GPSIMD: 0x5EED1}
_STATE_WORDS = {Engine.GPSIMD: 6, Engine.VECTOR: 24}     # XORWOW state per lane (ISA rand_set_state)


def stream(m, engine: Engine) -> np.random.Generator:
    """The machine's PRNG stream of an engine (created on first use with a fixed seed)."""
    gen = m.rng_streams.get(engine)
    if gen is None:
        gen = m.rng_streams[engine] = np.random.Generator(np.random.Philox(_DEFAULT_SEEDS.get(engine, 7)))
    return gen


def reseed(m, engine: Engine, words: np.ndarray) -> None:
    key = ("snapshot", engine, np.ascontiguousarray(words, dtype=np.uint32).tobytes())
    saved = m.rng_streams.get(key)
    gen = np.random.Generator(np.random.Philox())
    if saved is not None:
        gen.bit_generator.state = saved
    else:
        gen = np.random.Generator(np.random.Philox(np.random.SeedSequence(words.astype(np.uint64).tolist())))
    m.rng_streams[engine] = gen


def uniform(m, engine: Engine, shape) -> np.ndarray:
    """fp32 uniform [0, 1) numbers drawn from the engine's stream."""
    return stream(m, engine).random(shape, dtype=np.float32)


def _check_rng_engine(ins, chip, t: Tensor | None = None, *, v3: tuple = (Engine.GPSIMD,)) -> None:
    allowed = (Engine.VECTOR,) if chip.nc_version < 3 else ((Engine.GPSIMD, Engine.VECTOR)
                                                             if chip.nc_version >= 4 else v3)
    if ins.engine not in allowed:
        ins.fail(NkiValidationError, f"{ins.opcode} runs on {', '.join(map(str, allowed))} on {chip.name}, "
                                     f"not {ins.engine}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Rand(ToDst):
    """mode='bits' (nisa.rng): 32 random bits per element, truncated to the integer dst dtype's LSBs.
    mode='uniform' (nisa.rand2, trn3): fp32 uniform values in [low, high] (scalars or [P, 1] tiles)."""
    opcode: ClassVar[str] = "rng"
    mode: str = "bits"
    low: Any = 0.0
    high: Any = 1.0

    def reads(self):
        return tensors(self.low, self.high)

    def validate(self, chip):
        expect_tile(self, "dst", self.dst, chip)
        if self.mode == "bits":
            if self.engine not in (Engine.VECTOR, Engine.GPSIMD) or (chip.nc_version < 3 and self.engine != Engine.VECTOR):
                self.fail(NkiValidationError, f"rng runs on the Vector{'' if chip.nc_version < 3 else ' or GpSimd'} "
                                              f"Engine on {chip.name}, not {self.engine}")
            if self.dst.dtype not in (dt.int8, dt.int16, dt.int32, dt.uint8, dt.uint16, dt.uint32):
                self.fail(DtypeError, f"rng dst {self.dst.describe()} must be int8/16/32 or uint8/16/32")
        elif self.mode == "uniform":
            expect_version(self, chip, 4)
            if self.engine != Engine.VECTOR:
                self.fail(NkiValidationError, f"rand2 runs on the Vector Engine, not {self.engine}")
            p = self.dst.shape[0]
            expect_vector(self, "min", self.low, p, chip)
            expect_vector(self, "max", self.high, p, chip)
            if not isinstance(self.low, Tensor) and not isinstance(self.high, Tensor) and not self.low < self.high:
                self.fail(NkiValidationError, f"rand2 needs min < max, got min={self.low}, max={self.high}")
        else:
            self.fail(NkiValidationError, f"unknown random mode {self.mode!r}")

    def execute(self, m):
        shape = (self.dst.shape[0], self.dst.free_size)
        if self.mode == "bits":
            bits = stream(m, self.engine).integers(0, 2 ** 32, size=shape, dtype=np.uint32)
            target = dt.storage(self.dst.dtype)
            lsbs = bits.astype(np.dtype(f"u{target.itemsize}"))        # keep the least significant bits
            self.store(self.dst, lsbs.view(target).reshape(self.dst.shape))
            return
        p = self.dst.shape[0]
        lo = np.asarray(_operand(self, self.low, p), dtype=np.float32).reshape(-1, 1)
        hi = np.asarray(_operand(self, self.high, p), dtype=np.float32).reshape(-1, 1)
        u = uniform(m, self.engine, shape)
        self.store(self.dst, (lo + u * (hi - lo)).reshape(self.dst.shape))

    def cycles(self, chip):
        return vector_cost(chip, self.dst.free_size)        # [UNCONFIRMED] no published formula


@dataclass(frozen=True, slots=True, kw_only=True)
class Dropout(DataToDst):
    """dst = data where a fresh uniform draw >= prob, else 0 (no rescaling), on the Vector Engine."""
    opcode: ClassVar[str] = "dropout"
    prob: Any

    def reads(self):
        return tensors(self.data, self.prob)

    def validate(self, chip):
        expect_elementwise(self, chip, data=self.data, dst=self.dst)
        expect_same_dtype(self, data=self.data, dst=self.dst)
        expect_vector(self, "prob", self.prob, self.data.shape[0], chip)
        if isinstance(self.prob, Tensor):
            if not dt.is_float(self.prob.dtype):
                self.fail(DtypeError, f"prob {self.prob.describe()} must be a float type")
            if dt.is_int(self.data.dtype) and self.prob.dtype != dt.float32:
                self.fail(DtypeError, f"integer data needs a float32 prob, got {self.prob.describe()}")
        elif not 0.0 <= float(self.prob) <= 1.0:
            self.fail(NkiValidationError, f"drop probability must be in [0, 1], got {self.prob}")

    def execute(self, m):
        p = self.data.shape[0]
        x = as_2d(self.read(self.data))
        prob = np.asarray(_operand(self, self.prob, p), dtype=np.float32).reshape(-1, 1)
        keep = uniform(m, Engine.VECTOR, x.shape) >= prob
        self.store(self.dst, np.where(keep, x, np.zeros((), dtype=x.dtype)).reshape(self.dst.shape))

    def cycles(self, chip):
        return vector_cost(chip, self.data.free_size)        # ISA: max(MIN_II, N)


@dataclass(frozen=True, slots=True, kw_only=True)
class _SeedLoad(Instruction):
    """Loads PRNG seeds or state from the src_seeds tile; cycles: the Instruction default, MIN_II."""
    src_seeds: Tensor

    def reads(self):
        return (self.src_seeds,)


@dataclass(frozen=True, slots=True, kw_only=True)
class SetRngSeed(_SeedLoad):
    """Seed the Vector Engine PRNG from a [1, 1] 32-bit tile (nisa.set_rng_seed)."""
    opcode: ClassVar[str] = "set_rng_seed"

    def validate(self, chip):
        expect_tile(self, "src_seeds", self.src_seeds, chip)
        if self.src_seeds.size != 1 or dt.itemsize(self.src_seeds.dtype) != 4:
            self.fail(ShapeError, f"src_seeds {self.src_seeds.describe()} must be a [1, 1] 32-bit tensor")

    def execute(self, m):
        raw = np.ascontiguousarray(self.raw(self.src_seeds)).reshape(-1).view(np.uint32)
        reseed(m, Engine.VECTOR, raw)


@dataclass(frozen=True, slots=True, kw_only=True)
class RandSetState(_SeedLoad):
    """Load per-lane PRNG state words ([P, 6] GpSimd / [P, 24] Vector, uint32) into an engine (trn2+)."""
    opcode: ClassVar[str] = "rand_set_state"

    def validate(self, chip):
        expect_version(self, chip, 3)
        _check_rng_engine(self, chip)
        expect_tile(self, "src_seeds", self.src_seeds, chip, allowed=(SBUF,))
        _check_state_tile(self, "src_seeds", self.src_seeds)

    def execute(self, m):
        reseed(m, self.engine, as_2d(self.raw(self.src_seeds)))


@dataclass(frozen=True, slots=True, kw_only=True)
class RandGetState(ToDst):
    """Store an engine's PRNG state into [P, 6|24] uint32 words; rand_set_state of them resumes it (trn2+).
    cycles: the Instruction default, MIN_II."""
    opcode: ClassVar[str] = "rand_get_state"

    def validate(self, chip):
        expect_version(self, chip, 3)
        _check_rng_engine(self, chip)
        expect_tile(self, "dst", self.dst, chip, allowed=(SBUF,) if chip.nc_version < 4 else (SBUF, PSUM))
        _check_state_tile(self, "dst", self.dst)

    def execute(self, m):
        gen = stream(m, self.engine)
        state = gen.bit_generator.state
        probe = np.random.Generator(np.random.Philox())
        probe.bit_generator.state = state
        words = probe.integers(0, 2 ** 32, size=(self.dst.shape[0], self.dst.free_size), dtype=np.uint32)
        m.rng_streams[("snapshot", self.engine, words.tobytes())] = state
        self.store(self.dst, words.reshape(self.dst.shape))


def _check_state_tile(ins, name: str, t: Tensor) -> None:
    if t.dtype != dt.uint32:
        ins.fail(DtypeError, f"{name} {t.describe()} must be uint32")
    words = _STATE_WORDS[ins.engine]
    if t.free_size != words:
        ins.fail(ShapeError, f"{name} {t.describe()} must hold {words} XORWOW state words per partition "
                             f"on the {ins.engine} engine, has {t.free_size}")


_fast_init(*_instruction_classes(globals()))     # (isa.base.fast_init: instructions are built per issue)
