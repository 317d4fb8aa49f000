"""The machine: one simulated NeuronCore running an instruction stream.

Front ends allocate tensors through it and `issue` ISA instructions to it. Each instruction is
validated, executed on numpy (unless numerics are off) and handed to the scheduler the machine was
given (an observer, e.g. trnlab.timing.Scheduler; None: no timing): functional and timing execution
consume the same stream, online. The core knows nothing of the timing model.
"""
from __future__ import annotations

import bisect
import contextvars
import itertools
import math
import mmap
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from trnlab.config import max_instructions as env_max_instructions, precise_fp
from trnlab.core import dtypes as dt, inputs
from trnlab.core.srcloc import user_location
from trnlab.core.compiler import CompilerModel, current as current_compiler
from trnlab.core.memory import OnChipMemory, PsumMemory
from trnlab.core.tensor import HBM, PSUM, SBUF, Storage, Tensor
from trnlab.core.progress import PROGRESS_EVERY
from trnlab.errors import ForeignTileError, HbmCapacityError, InstructionLimitError, LaunchError, PsumCapacityError, SbufCapacityError, NkiValidationError, PartitionError, ShapeError, SimulationError
from trnlab.hw import ChipSpec, get_chip


@dataclass
class RunStats:
    instructions: Counter = field(default_factory=Counter)     # opcode -> count
    by_engine: Counter = field(default_factory=Counter)        # engine -> count
    flops: float = 0.0                                          # matmul FLOPs (2*M*N*K)
    dma_bytes: int = 0
    spill_bytes: int = 0                                        # SBUF<->HBM bytes of compiler spills + reloads
    spilled: dict = field(default_factory=dict)                 # alloc uid -> Allocation, tiles spilled
    folded_memsets: int = 0      # PSUM zero-fills the compiler folded into a matmul (psum_zero_fold)


_launches = itertools.count(1)
# The DMA instruction class of compiler spills and reloads (trnlab.isa.instructions.DmaCopy registers
# itself: the core must not import the ISA, which builds on it).
_spill_copy: list = []


def register_spill_copy(cls) -> None:
    _spill_copy[:] = [cls]


def _instruction_limit(limit) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0:
        raise LaunchError(f"max_instructions must be None or an int >= 0, got {limit!r}")
    return int(limit)


def _sr_generator(seed) -> "np.random.Generator | None":
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise LaunchError(f"stochastic_rounding must be None, a seed (int >= 0) or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


_LAZY_MIN_BYTES = 1 << 20         # below this, np.zeros is as fast (measured: 3 us for 256 KiB)
_ZERO_ARRAYS_MAX = 1 << 12        # tile shapes whose zero-page view a machine keeps (Machine._zero_view)


def _lazy_zeros(shape: tuple, storage) -> np.ndarray:
    """Zeros on fresh anonymous pages (mmap), which the OS maps only when touched. np.zeros may take
    a large block from the heap and clear it (glibc raises its mmap threshold after big frees): ~80 us
    per multi-MiB tile that a timing-only run never touches."""
    nbytes = math.prod(shape) * storage.itemsize
    if nbytes < _LAZY_MIN_BYTES:
        return np.zeros(shape, dtype=storage)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=storage).reshape(shape)


def _covers(t, storage) -> bool:
    """The view t spans every element of storage."""
    return t.storage is storage and t.array.size == storage.array.size


def _absorbs_zero(instr, storage) -> bool:
    """A matmul (unmasked) whose destination is all of `storage` and that does not read it otherwise."""
    return (instr.opcode == "nc_matmul" and instr.mask is None and _covers(instr.dst, storage)
            and not any(getattr(r, "storage", None) is storage for r in instr.reads()))


class Machine:
    def __init__(self, target: "str | ChipSpec | None" = None, *, numerics: bool = True,
                 scheduler: "Callable[[ChipSpec], Any] | None" = None, tensor_class=Tensor,
                 liveness: "Liveness | None" = None, max_instructions: int | None = None,
                 progress: "Callable[[Machine, Any], None] | None" = None, compiler: "CompilerModel | None" = None,
                 spill: bool = False, stochastic_rounding: "int | np.random.Generator | None" = None,
                 stack_alloc: bool = False):
        """scheduler: a factory chip -> observer whose schedule(instr) sees every issued instruction
        (trnlab.timing.Scheduler, or functools.partial(Scheduler, trace=True)); None runs untimed.
        max_instructions: issuing more raises InstructionLimitError. progress: called with (machine,
        instruction) every PROGRESS_EVERY instructions (core.progress). spill: True lets the compiler model's
        sbuf_spill act (runtime.run_kernel asks for it only after the run without it and the last-use
        retry overflowed SBUF); False keeps the overflow an SbufCapacityError.
        stochastic_rounding: None rounds fp32 -> bf16 writes to nearest even; a seed (int) or a numpy
        Generator rounds them stochastically (dtypes.stochastic_round_bf16), deterministic per seed: AWS's
        BF16 training mode, NEURON_RT_STOCHASTIC_ROUNDING_EN=1 (https://awsdocs-neuron.readthedocs-hosted.com/
        en/latest/about-neuron/appnotes/torch-neuronx/migration-from-xla-downcast-bf16.html). Other roundings
        are unchanged.
        stack_alloc: the kernel asks for stack allocation (nki.compiler.enable_stack_allocator); SBUF is
        allocated as a stack when the compiler model's stack_allocator honours it."""
        if not precise_fp():
            raise NotImplementedError(
                "NKI_PRECISE_FP=0 (AWS's fp32-everywhere simulator mode) is not modelled by trnlab, which "
                "always rounds to the destination dtype on write (NKI_PRECISE_FP=1, AWS's default); unset it")
        self.chip = chip = get_chip(target)
        self.compiler = compiler if compiler is not None else current_compiler()
        model = self.compiler
        depth = model.multibuffer_depth if model.multibuffer else 1
        self.stack_alloc = stack_alloc
        stack = stack_alloc and model.stack_allocator
        self.sbuf = OnChipMemory(partitions=chip.partitions, bytes_per_partition=chip.sbuf_bytes_per_partition,
                                 target=chip.name, rotate=1 if stack else depth,
                                 spill=spill and model.sbuf_spill, stack=stack)
        self.psum = PsumMemory(partitions=chip.partitions, banks=chip.psum_banks,
                               bank_bytes=chip.psum_bank_bytes, target=chip.name, rotate=depth)
        self._tiles: dict = {}           # SBUF alloc uid -> (weakref to its Storage, dtype), when spilling
        self._spill_area: dict = {}      # SBUF alloc uid -> its HBM spill tensor
        self.liveness = liveness
        if liveness is not None:
            # tiles are freed at their last use (or, probing, measured with room to spare): a stack site's
            # previous instance is not freed because the site runs again, so a list of its tiles may live
            self.sbuf.stack_frees_previous = False
        if self.sbuf.spill and liveness is not None and liveness.uses:
            # the probe saw the whole program: victims by next use per byte of DMA (OnChipMemory._victim_order)
            self.sbuf.next_use = lambda alloc: self._uses_away(liveness.next_use(alloc.seq, self.issued))
        if liveness is not None and liveness.probing:
            self.sbuf.capacity *= _PROBE_ROOM        # the probe measures lifetimes, not capacity
            self.psum.capacity *= _PROBE_ROOM
            self.psum.banks *= _PROBE_ROOM
        self.launch = next(_launches)    # tiles belong to the launch that allocated them (LNC programs share it)
        self.issued = 0                  # instructions issued so far (liveness bookkeeping, limits)
        self.max_instructions = _instruction_limit(
            env_max_instructions() if max_instructions is None else max_instructions)
        self.progress = progress
        self._checkpoint_at = self._next_checkpoint()
        self.allocated = 0               # on-chip allocations so far
        self.numerics = numerics
        self.tensor_class = tensor_class
        self.hbm_used = 0
        self.stats = RunStats()
        self.reduce_regs = np.zeros((chip.partitions, 1), dtype=np.float32)  # activation accumulators
        self.vector_regs = np.zeros((chip.partitions, 1), dtype=np.float32)  # Vector accumulators
        self.rng_streams: dict = {}      # engine -> PRNG stream (isa.random); seeded, deterministic
        self.rng = np.random.default_rng(0)
        self.sr_rng = _sr_generator(stochastic_rounding)
        self.program_id: tuple = (0,)
        self.num_programs: tuple = (1,)
        self.printed: list[str] = []
        self.scheduler_factory = scheduler
        self.scheduler = scheduler(chip) if scheduler is not None else None
        if hasattr(self.scheduler, "balance"):       # the timing scheduler places nl ops (engine_balance)
            self.scheduler.balance = self.compiler.engine_balance
        self._pending_zero: dict = {}    # storage uid -> its deferred nl.zeros memset (psum_zero_fold)
        self._zeros = None               # the zero pages timing-only on-chip tiles view (_blank)
        self._zero_arrays: dict = {}     # (shape, id(storage dtype)) -> (dtype, the view of _zeros)

    # --- allocation -----------------------------------------------------------------------------
    def hbm_tensor(self, array: np.ndarray, name: str, *, dtype=None, initialized: bool = True) -> Tensor:
        """Place an array in HBM (kernel inputs, outputs, constants)."""
        dtype = dt.canonical(dtype if dtype is not None else array.dtype)
        required = self._hbm_fits(name, np.shape(array), int(np.size(array)) * dt.storage(dtype).itemsize)
        arr = np.ascontiguousarray(array, dtype=dt.storage(dtype))
        address, self.hbm_used = self.hbm_used, required
        st = Storage(HBM, arr, name, initialized=initialized, hbm_address=address)
        return self.tensor_class(st, arr, dtype, name)

    def _hbm_fits(self, name: str, shape, nbytes: int) -> int:
        """HBM bytes in use once a tensor of nbytes is placed; checked before anything is placed or
        allocated, so a failure takes no space."""
        required = self.hbm_used + -(-nbytes // 64) * 64
        if required > self.chip.hbm_bytes_per_core:
            from trnlab.core.srcloc import user_location
            raise HbmCapacityError(
                f"HBM capacity exceeded on {self.chip.name}: tensor '{name}' {list(shape)} needs "
                f"{nbytes} B, {self.hbm_used} B already placed; limit {self.chip.hbm_bytes_per_core} B per "
                f"NeuronCore, required {required} B. At {user_location()}",
                required=required, limit=self.chip.hbm_bytes_per_core)
        return required

    def _blank(self, shape: tuple, dtype, *, on_chip: bool = False) -> np.ndarray:
        """A fresh uninitialised buffer: NaN/4-filled; with numerics off, zero pages the OS maps
        lazily (timing-only runs of huge shapes then cost no memory traffic). On-chip tiles of a
        timing-only run all view the same zero pages: nothing executes, so nothing writes them, and a
        view costs ~0.5 us where fresh zeros cost 3-20 us per tile."""
        storage = dt.storage(dtype)
        if not self.numerics:
            if on_chip:
                return self._zero_view(shape, storage)
            return _lazy_zeros(shape, storage)
        # Fill through an unsigned view of the same width: numpy fills ml_dtypes arrays (bf16, fp8)
        # element by element through a Python-level cast, ~13x slower than a plain integer fill.
        bits = np.array(dt.fill_value(dtype), dtype=storage).view(f"u{storage.itemsize}")
        return np.full(shape, bits, dtype=bits.dtype).view(storage)

    def _zero_view(self, shape: tuple, storage) -> np.ndarray:
        """The view of the zero pages for a tile of this shape and storage dtype: one array object per
        shape, shared by its tiles (as the pages are; front ends then reuse their cuts, NkiTensor)."""
        key = (shape, id(storage))
        known = self._zero_arrays.get(key)
        if known is not None and known[0] is storage:
            return known[1]
        nbytes = math.prod(shape) * storage.itemsize
        zeros = self._zeros
        if zeros is None or len(zeros) < nbytes:       # (older tiles keep the smaller block alive)
            zeros = self._zeros = mmap.mmap(-1, max(nbytes, _LAZY_MIN_BYTES))
            self._zero_arrays = {}
        arr = np.ndarray(shape, dtype=storage, buffer=zeros)
        if len(self._zero_arrays) >= _ZERO_ARRAYS_MAX:
            self._zero_arrays.clear()
        self._zero_arrays[key] = (storage, arr)
        return arr

    def new_hbm(self, shape, dtype, name: str, *, api: str = "nl.ndarray") -> Tensor:
        loc = user_location()
        shape, dtype = inputs.new_tensor(shape, dtype, name, api, loc)
        size = inputs.nbytes(shape, dt.storage(dtype))
        self._hbm_fits(name, shape, size)
        if self.numerics:
            inputs.host_can_hold(size, name, shape, api, loc)
        arr = self._blank(shape, dtype)
        return self.hbm_tensor(arr, name, dtype=dtype, initialized=False)

    def new_onchip(self, kind: str, shape, dtype, name: str, *, api: str, loc: str,
                   p0: int = 0, address: int | None = None, fill=None, footprint: int | None = None) -> Tensor:
        """Allocate an SBUF/PSUM tile [P, free...]; checks partition and capacity limits."""
        shape, dtype = inputs.new_tensor(shape, dtype, name, api, loc)
        if len(shape) < 2:
            raise ShapeError(f"{api}: Insufficient rank for on-chip tensor '{name}' {list(shape)}: "
                             f"SBUF/PSUM tiles need at least 2 dimensions (partition, free). At {loc}")
        limit = self.chip.partitions
        if shape[0] > limit or p0 + shape[0] > limit or p0 < 0:
            raise PartitionError(f"{api}: number of partitions {shape[0]} of '{name}' {list(shape)} exceed "
                                 f"architecture limitation of {limit} (start partition {p0}). At {loc}")
        nbytes = inputs.nbytes(shape[1:], dtype)
        if footprint is not None:            # modular allocation: tiles of the tensor reuse the same banks
            nbytes = min(nbytes, int(footprint))
        memory = self.psum if kind == PSUM else self.sbuf
        if kind not in (SBUF, PSUM):
            raise NkiValidationError(f"{api}: unknown on-chip buffer {kind!r}. At {loc}")
        share = None
        if (self.liveness is not None and self.compiler.operand_reuse and kind == SBUF and address is None
                and footprint is None):
            share = self.liveness.donor(self.allocated, self.issued)
        alloc = memory.allocate(name=name, shape=shape, dtype_name=dt.name_of(dtype), p0=p0,
                                nparts=shape[0], nbytes=nbytes, loc=loc, api=api, address=address, share=share)
        if fill is None:
            arr = self._blank(shape, dtype, on_chip=True)
        else:
            arr = np.full(shape, 0, dtype=dt.storage(dtype))
            arr[...] = dt.cast(np.asarray(fill, dtype=np.float32), dtype)
        st = Storage(kind, arr, name, initialized=fill is not None, alloc=alloc)
        alloc.has_data = alloc.dirty = fill is not None
        st.on_free = (memory.free, alloc.uid)
        alloc.seq = self.allocated
        alloc.launch = self.launch
        alloc.last_use = self.issued
        self.allocated += 1
        if memory.spill:
            self._tiles[alloc.uid] = (weakref.ref(st), dtype)
            if memory.pending_spills:
                victims, memory.pending_spills = memory.pending_spills, []
                self._spill_dmas(victims, loc)
        if self.liveness is not None:
            self.liveness.allocated(alloc, memory, self.issued)
        return self.tensor_class(st, arr, dtype, name)

    # --- execution ------------------------------------------------------------------------------
    def issue(self, instr) -> None:
        if self.issued >= self._checkpoint_at:
            self._checkpoint(instr)
        instr.validate(self.chip)
        # _check_writable then _check_owned, only when a view has no cached verdict (a view's flags and
        # allocation never change): the common case costs a look at two attributes per operand
        launch = self.launch
        writes = instr.writes()
        operands = instr.reads() + writes
        try:                            # tensors: plain attribute reads (None or another operand raises)
            for t in writes:
                if t._writable is not True:
                    self._check_writable(instr)
                    break
            for t in operands:
                owner = t._owner
                if owner is not True and owner != launch:
                    self._check_owned(instr)
                    break
        except AttributeError:
            self._check_operands(instr, writes, operands, launch)
        if self.sbuf.reclaimed or self.psum.reclaimed:
            self._check_not_reclaimed(instr)
        if self.sbuf.spill:
            self._touch(instr)
        if self._pending_zero:
            self._settle_zero(instr)
        if self.numerics:
            try:
                if self.sr_rng is None:
                    instr.execute(self)
                else:
                    with dt.stochastic_rounding(self.sr_rng):
                        instr.execute(self)
            except (NkiValidationError, SimulationError):
                raise
            except Exception as exc:  # numpy failures become errors that name the instruction
                raise SimulationError(f"{instr.api}: {type(exc).__name__}: {exc}. At {instr.loc}") from exc
        if instr.api == "nl.zeros" and self._defers_zero(instr):
            self._pending_zero[instr.dst.storage.uid] = instr
        else:
            self._commit(instr)
        # numbered in program order whether or not it was deferred: Liveness compares these numbers with
        # those of its untimed probe run, which never defers
        if self.liveness is not None:
            self.liveness.issued(instr, self.issued)
        self.issued += 1

    def _check_operands(self, instr, writes, operands, launch) -> None:
        """issue's operand checks where an operand is None or not a tensor."""
        for t in writes:
            if t is not None and getattr(t, "_writable", None) is not True:
                self._check_writable(instr)
                break
        for t in operands:
            owner = getattr(t, "_owner", None)
            if owner is not True and owner != launch:
                self._check_owned(instr)
                break

    def _commit(self, instr) -> None:
        """Count an executed instruction and hand it to the scheduler (which may place it on another
        engine: the engine counted is the one it runs on)."""
        stats = self.stats
        stats.instructions[instr.opcode] += 1
        stats.flops += instr.flops()
        stats.dma_bytes += instr.dma_bytes()
        engine = instr.engine
        if self.scheduler is not None:
            self.scheduler.schedule(instr)
            engine = getattr(self.scheduler, "placed", None) or engine
        stats.by_engine[engine] += 1

    # --- compiler model: PSUM zero folding (CompilerModel.psum_zero_fold) ----------------------------
    # AWS's matmul tutorial kernels zero a PSUM accumulator with nl.zeros(..., buffer=nl.psum) and then
    # accumulate matmuls into it. neuronx-cc emits no memset for that: the first matmul writes PSUM with
    # accumulate off. No AWS document states it; it is inferred from the tutorial's measured times (the
    # fully optimised kernel runs at ~85% of PE peak on trn1, which leaves no room for a Vector memset
    # of every accumulator on the critical path). Numerics are unchanged: the zero-fill executes at once,
    # so the first matmul still accumulates onto zeros (0 + x == x in fp32); only its timing is dropped.
    def _defers_zero(self, instr) -> bool:
        """An nl.zeros fill of a whole PSUM tile, timed: becomes 'pending zero' instead of a memset."""
        if self.scheduler is None or instr.api != "nl.zeros" or instr.opcode != "memset":
            return False
        dst = instr.dst
        return (self.compiler.psum_zero_fold and dst.buffer == PSUM and instr.mask is None
                and float(instr.value) == 0.0 and _covers(dst, dst.storage))

    def _settle_zero(self, instr) -> None:
        """The first instruction touching a pending-zero tile: a matmul writing all of it absorbs the
        zeroing (its write is the overwrite); anything else (a read, a partial write, another op) gets
        the memset scheduled first, as the kernel wrote it."""
        pending = self._pending_zero
        for t in (*instr.writes(), *instr.reads()):
            st = getattr(t, "storage", None)
            memset = pending.pop(st.uid, None) if st is not None else None
            if memset is None:
                continue
            if _absorbs_zero(instr, st):
                self.stats.folded_memsets += 1
            else:
                self._commit(memset)


    # --- compiler spill (core.compiler.CompilerModel.sbuf_spill) ------------------------------------
    def _touch(self, instr) -> None:
        """Record the use of each SBUF operand (LRU victim choice), reload spilled ones first, and mark
        written ones dirty (their HBM spill copy, if any, is stale)."""
        written = {id(t) for t in instr.writes() if t is not None}
        allocs = [(a, id(t) in written) for t, a in ((t, getattr(getattr(t, "storage", None), "alloc", None))
                                                      for t in instr.reads() + instr.writes() if t is not None)
                  if a is not None]
        pinned = {a.uid for a, _ in allocs}
        for a, writes in allocs:
            a.last_use = self.issued
            if a.spilled:
                address = a.b0
                victims = self.sbuf.reload(a, pinned)
                if a.b0 != address:
                    self._relocated(a)
                if a.spilled:
                    memory = self.sbuf
                    raise SbufCapacityError(
                        f"{instr.api}: SBUF capacity exceeded on {self.chip.name}: spilled tile {a.describe()} "
                        f"cannot be reloaded: the operands of this instruction alone need more than the "
                        f"limit of {memory.capacity} B per partition. At {instr.loc}",
                        required=memory.used_in(a.p0, a.p1) + a.nbytes, limit=memory.capacity,
                        largest=memory.largest())
                self._spill_dmas(victims, instr.loc)
                if a.has_data:                  # a never-written tile has nothing to bring back
                    self._spill_dma(a, instr.loc, reload=True)
            if writes:
                a.has_data = a.dirty = True

    def _uses_away(self, index: int | None) -> int | None:
        """How many instructions from now until a use at program index `index` (None: never)."""
        return None if index is None else index - self.issued

    def _relocated(self, alloc) -> None:
        """A reloaded tile came back at another address: its views' cached physical boxes are stale."""
        st = self._tiles[alloc.uid][0]()
        if st is not None:
            st.relocated = True

    def _spill_dmas(self, victims, loc: str) -> None:
        """Store each evicted tile to HBM, unless its HBM copy is still valid (reloaded and not written
        since) or it holds no data yet (never written): then eviction costs no DMA."""
        for a in victims:
            self.stats.spilled[a.uid] = a
            if a.dirty:
                self._spill_dma(a, loc, reload=False)
                a.dirty = False

    def _spill_dma(self, alloc, loc: str, *, reload: bool) -> None:
        """The DMA neuronx-cc inserts for a spill (SBUF -> HBM) or a reload (HBM -> SBUF): timed and
        counted like any DMA, not executed (a tile keeps its own values, so the data stays exact)."""
        ref, dtype = self._tiles[alloc.uid]
        st = ref()
        if st is None:
            return
        nbytes = alloc.nbytes * (alloc.p1 - alloc.p0)
        stats = self.stats
        stats.instructions["dma_copy"] += 1
        stats.by_engine["dma"] += 1
        stats.dma_bytes += nbytes
        stats.spill_bytes += nbytes
        stats.spilled[alloc.uid] = alloc
        if self.scheduler is None:          # untimed: accounting only
            return
        tile = Tensor(st, st.array, dtype, alloc.name)
        area = self._spill_area.get(alloc.uid)
        if area is None:
            area = self._spill_area[alloc.uid] = self.hbm_tensor(
                np.zeros(st.array.shape, dtype=st.array.dtype), f"spill.{alloc.name}", dtype=dtype)
        src, dst = (area, tile) if reload else (tile, area)
        # not counted in `issued`: Liveness numbers the kernel's own instructions (its probe never spills)
        self.scheduler.schedule(_spill_copy[0](api="neuronx-cc reload" if reload else "neuronx-cc spill",
                                               loc=loc, dst=dst, src=src))

    def spill_report(self) -> str | None:
        """One line naming the spilled tiles (grouped by allocation site) and the traffic, or None."""
        spilled = self.stats.spilled
        if not spilled:
            return None
        sites: dict = {}
        for a in spilled.values():
            sites.setdefault((a.loc, a.shape, a.dtype_name), []).append(a)
        tiles = "; ".join(
            f"{group[0].describe()}, {group[0].nbytes * (group[0].p1 - group[0].p0)} B"
            + (f" (and {len(group) - 1} more tiles of that line)" if len(group) > 1 else "")
            for group in sites.values())
        return (f"SBUF spill on {self.chip.name}: {len(spilled)} compiler-allocated tile(s) did not fit SBUF "
                f"and were spilled to HBM and reloaded ({self.stats.spill_bytes} B of spill/reload DMA "
                f"traffic): {tiles}. Shrink or free tiles earlier to avoid it, or switch it off "
                f"(--compiler sbuf_spill=0) to get the capacity error")

    def _next_checkpoint(self) -> int:
        """The instruction count at which issue() next stops for the limit or the progress hook."""
        at = [self.max_instructions] if self.max_instructions is not None else []
        if self.progress is not None:
            at.append((self.issued // PROGRESS_EVERY + 1) * PROGRESS_EVERY)
        return min((a for a in at if a >= self.issued), default=1 << 62)

    def _checkpoint(self, instr) -> None:
        limit = self.max_instructions
        if limit is not None and self.issued >= limit:
            raise InstructionLimitError(
                f"{instr.api}: instruction limit reached: the run already issued max_instructions={limit:,} "
                f"instructions and this one would exceed it (raise or drop max_instructions for longer "
                f"runs). At {instr.loc}")
        if self.progress is not None and self.issued % PROGRESS_EVERY == 0:
            self.progress(self, instr)
        self._checkpoint_at = self._next_checkpoint()

    @staticmethod
    def _check_writable(instr) -> None:
        """Every destination must be writable before anything executes: an instruction with two outputs
        (dst and reduce_res) must not write one and then fail on the other."""
        for t in instr.writes():
            if t is None:
                continue
            writable = getattr(t, "_writable", None)       # (a view's flags never change: cached on it)
            if writable is None:
                writable = t.array.flags.writeable
                if isinstance(t, Tensor):
                    t._writable = writable
            if not writable:
                raise NkiValidationError(
                    f"{instr.api}: cannot write to broadcast view {t.describe()} (a stride-0 dimension has one "
                    f"element behind many indices). At {instr.loc}")

    def _check_owned(self, instr) -> None:
        """A tile kept from an earlier run (a global, a returned tile) is refused: its data belongs to a
        NeuronCore state that no longer exists, and reading it would silently use stale values."""
        launch = self.launch
        for t in instr.reads() + instr.writes():
            owner = getattr(t, "_owner", None)         # (a view checked before: cached on it)
            if owner is True or owner == launch:
                continue
            alloc = getattr(getattr(t, "storage", None), "alloc", None)
            if isinstance(t, Tensor):
                t._owner = True if alloc is None else alloc.launch if alloc.launch == launch else None
            if alloc is not None and alloc.launch != launch:
                raise ForeignTileError(
                    f"{instr.api}: tile {alloc.describe()} belongs to another kernel run; SBUF/PSUM tiles "
                    f"live only in the run that allocated them (keep host data in HBM tensors or numpy "
                    f"arrays instead). At {instr.loc}")

    def _check_not_reclaimed(self, instr) -> None:
        for t in instr.reads() + instr.writes():
            alloc = t.storage.alloc
            if alloc is not None and alloc.superseded:
                memory = self.psum if t.buffer == PSUM else self.sbuf
                error = PsumCapacityError if t.buffer == PSUM else SbufCapacityError
                tiles = "; ".join(a.describe() for a in memory.largest())
                raise error(
                    f"{instr.api}: {t.buffer.upper()} capacity exceeded on {self.chip.name}: tile "
                    f"{alloc.describe()} is still used after a newer instance of its allocation site "
                    f"needed its space; limit {memory.capacity} B per partition. Largest live tiles: "
                    f"{tiles or 'none'}. At {instr.loc}",
                    required=memory.used_in(0, self.chip.partitions) + alloc.nbytes, limit=memory.capacity,
                    largest=memory.largest())


# --- the current machine ------------------------------------------------------------------------
# A context variable, not a process-global stack: each thread (and each asyncio task) has its own, so
# kernels run concurrently in several threads each issue to their own Machine. A new thread starts
# with no current machine; many machines may exist in one process and nest within one thread.
_current: contextvars.ContextVar[tuple] = contextvars.ContextVar("trnlab_machine_stack", default=())


def current() -> Machine:
    stack = _current.get()
    if not stack:
        raise SimulationError("no kernel is running: NKI calls must happen inside a kernel run "
                              "(nki.simulate(kernel)(...), trnlab.run_kernel, or calling an @nki.jit kernel)")
    return stack[-1]


def has_current() -> bool:
    return bool(_current.get())


class running:
    """Context manager making `machine` current in the calling thread/context."""

    def __init__(self, machine: Machine):
        self.machine = machine
        self._token = None

    def __enter__(self) -> Machine:
        self._token = _current.set(_current.get() + (self.machine,))
        return self.machine

    def __exit__(self, *exc) -> None:
        _current.reset(self._token)


# --- last-use liveness ------------------------------------------------------------------------------
_PROBE_ROOM = 1024


_STREAMING = frozenset({"activation", "tensor_tensor", "tensor_scalar", "scalar_tensor_tensor", "tensor_tensor_scan",
                        "tensor_copy"})      # read each operand at position i before writing position i


def _whole_sbuf_tile(t):
    """The SBUF allocation `t` covers whole, else None (a view of part of it, PSUM, HBM, no tensor)."""
    storage = getattr(t, "storage", None)
    alloc = getattr(storage, "alloc", None)
    if alloc is None or storage.kind != SBUF or not t._covers_storage():
        return None
    return alloc


class Liveness:
    """Compiler-style tile lifetimes: a tile's space is free after the last instruction that touches it.

    By default a tile lives while the kernel's Python code holds it (plus NKI loop scoping). A kernel
    that keeps dead tiles referenced (e.g. in locals after their last use) can then exceed SBUF/PSUM
    although neuronx-cc, which allocates by last use, fits it. run_kernel retries such a kernel: a
    probe run with room to spare records each allocation's last use (allocations are numbered in
    program order, deterministic for a kernel and its inputs), and the real run frees each tile right
    after it. A tile used after its recorded last use (a kernel that is not deterministic) is reported
    as a capacity error by Machine.issue, like any reclaimed tile."""

    def __init__(self, last_use: dict | None = None, uses: dict | None = None, donors: dict | None = None):
        """last_use, uses, donors: a probe's records (None: this one probes). uses: allocation seq -> the
        increasing indices of the instructions that read or write it (spill victims: core.memory);
        donors: see `donor`."""
        self.probing = last_use is None
        self.last_use: dict[int, int] = {} if last_use is None else last_use
        self.uses: dict[int, list] = {} if uses is None else uses
        self._free_after: dict[int, list] = {}
        # allocation seq -> (index of the instruction that first writes it, seqs of the whole-tile operands
        # of that instruction it could share bytes with: CompilerModel.operand_reuse); kept from the probe
        self.donors: dict[int, tuple] = {} if donors is None else donors

    def next_use(self, seq: int, now: int) -> int | None:
        """Index of the first instruction at or after `now` that uses allocation `seq`; None if none."""
        uses = self.uses.get(seq, ())
        i = bisect.bisect_left(uses, now)
        return uses[i] if i < len(uses) else None

    def allocated(self, alloc, memory, now: int) -> None:
        if self.probing:
            self.last_use[alloc.seq] = now - 1          # never used: dead at once
            self.uses[alloc.seq] = []
            return
        last = self.last_use.get(alloc.seq, 1 << 62)
        if last < now:                                   # never touched by an instruction
            self._release(alloc, memory)
        else:
            self._free_after.setdefault(last, []).append((alloc, memory))

    def donor(self, seq: int, now: int):
        """The live allocation whose bytes allocation `seq` may take (CompilerModel.operand_reuse): an
        operand of the instruction `now` that first writes `seq`, read for the last time there."""
        entry = self.donors.get(seq)
        if entry is None or entry[0] != now:
            return None
        for alloc, _memory in self._free_after.get(now, ()):
            if alloc.seq in entry[1] and alloc.live:
                return alloc
        return None

    def _record_donors(self, instr, index: int) -> None:
        """Probe: a position-by-position instruction writing all of a tile for the first time may put its
        result over any whole-tile SBUF operand of the same partitions, shape and element size."""
        if instr.opcode not in _STREAMING or len(instr.writes()) != 1:
            return
        dst = instr.writes()[0]
        out = _whole_sbuf_tile(dst)
        if out is None or self.uses.get(out.seq):        # not a whole SBUF tile, or written before
            return
        same = []
        for t in instr.reads():
            a = _whole_sbuf_tile(t)
            if (a is not None and a is not out and t.shape == dst.shape and t.array.itemsize == dst.array.itemsize
                    and (a.p0, a.p1, a.nbytes) == (out.p0, out.p1, out.nbytes)):
                same.append(a.seq)
        if same:
            self.donors[out.seq] = (index, frozenset(same))

    def issued(self, instr, index: int) -> None:
        if self.probing:
            self._record_donors(instr, index)
            for t in instr.reads() + instr.writes():
                alloc = getattr(getattr(t, "storage", None), "alloc", None)
                if alloc is not None:
                    self.last_use[alloc.seq] = index
                    uses = self.uses[alloc.seq]
                    if not uses or uses[-1] != index:
                        uses.append(index)
            return
        for alloc, memory in self._free_after.pop(index, ()):
            self._release(alloc, memory)

    @staticmethod
    def _release(alloc, memory) -> None:
        if alloc.live:
            memory.retire(alloc)
