"""The instruction base class and the shared hardware-rule checks.

An instruction is a frozen dataclass: its operands (tensor views), attributes, the front-end API
name and the kernel source line. `validate` checks hardware rules, `execute` is its numpy
semantics (fp32 math, rounded on write), `cost` what the timing model charges for it: an EngineCost
(`cycles` on the executing engine's clock), a MatmulCost or a DmaCost.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import types
import weakref
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import ClassVar, NamedTuple

import numpy as np

from trnlab.core import dtypes as dt
from trnlab.core.tensor import PSUM, SBUF, Tensor
from trnlab.errors import BufferKindError, DtypeError, NkiValidationError, PartitionError, ShapeError
from trnlab.isa import costs as dma_model


class Engine(str, enum.Enum):
    TENSOR = "tensor"     # PE array
    VECTOR = "vector"     # DVE
    SCALAR = "scalar"     # ACT
    GPSIMD = "gpsimd"     # POOL
    DMA = "dma"

    def __str__(self) -> str:
        return self.value


_DMA_ENGINE = Engine.DMA      # (an Enum class attribute lookup runs Python code: hot paths use constants)


# Costs are NamedTuples, not frozen dataclasses: one is built per scheduled instruction (hot path), and
# a frozen dataclass's __init__ is ~3x slower. The scheduler dispatches on their type.
class EngineCost(NamedTuple):
    """A compute instruction: `cycles` of its engine's clock (throughput cost, ISA formulas)."""
    cycles: float


class MatmulCost(NamedTuple):
    """nc_matmul: MultiplyMoving `cycles`, after a LoadStationary of `ls_cycles` that the timing model
    overlaps with the previous matmul (background LoadStationary, ARCH v2)."""
    cycles: float
    ls_cycles: float


class DmaCost(NamedTuple):
    """A DMA: `nbytes` spread over `pieces` queues (or the one `queue` asked for), each moving `rate`
    bytes/s, after a fixed start latency `fixed` (the model: trnlab.isa.costs)."""
    nbytes: int
    rate: float
    pieces: int
    queue: "int | None"
    hbm: bool          # reads or writes HBM: counted for MBU, capped by HBM bandwidth
    fixed: float = 0.0  # seconds from ready to the first byte: descriptors and semaphores


@dataclass(frozen=True, slots=True, kw_only=True, weakref_slot=True)     # (weakref: same_facts)
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
    def cost(self, chip) -> "EngineCost | MatmulCost | DmaCost":
        if self.engine is _DMA_ENGINE:       # a DMA's cost is its transfer (DmaInstruction.cost)
            raise TypeError(f"{type(self).__name__} runs on the DMA queues: derive it from "
                            f"trnlab.isa.base.DmaInstruction (first base) to get its DmaCost")
        return EngineCost(self.cycles(chip))

    def cycles(self, chip) -> float:
        """Engine cycles (throughput cost) on this instruction's engine."""
        return float(chip.min_ii_cycles)

    def engine_choices(self, chip) -> tuple:
        """The engines that can run this instruction with the same numerics as `self.engine`, Vector
        first (the timing scheduler's tie-break). Used only for ops the compiler places
        (compiler_placed); the default is the instruction's own engine."""
        return (self.engine,)

    def flops(self) -> float:
        """Useful matmul FLOPs (2*M*N*K): the numerator of MFU."""
        return 0.0

    def pe_flops(self) -> float:
        """FLOPs the Tensor engine performs, transposes included: the numerator of HFU."""
        return self.flops()

    def flop_dtypes(self) -> tuple:
        """The dtypes whose peak rate measures this instruction's FLOPs (trnlab.timing.metrics)."""
        return tuple(t.dtype for t in self.reads())

    def dma_bytes(self) -> int:
        return 0

    # --- helpers ---
    def fail(self, cls, what: str):
        raise cls(f"{self.api}: {what}. At {self.loc}")

    def read(self, t: Tensor) -> np.ndarray:
        """Engine input: the view's values upcast to fp32 (integers kept exact)."""
        return dt.to_fp32(self.raw(t))

    def raw(self, t: Tensor) -> np.ndarray:
        """The view's stored values. A masked instruction reads only the elements its mask selects, so
        only those are checked for never-written memory."""
        mask = self.mask
        where = mask if mask is not None and np.shape(mask) == t.shape else None
        return t.read(self.api, self.loc, where=where)

    def store(self, t: Tensor, values) -> None:
        t.write(values, where=self.mask, api=self.api, loc=self.loc)


# --- construction -------------------------------------------------------------------------------------
def fast_init(*classes, positional: bool = False) -> None:
    """Give frozen slotted dataclasses an __init__ that sets each field through its slot descriptor: the
    assignments of dataclasses' generated __init__, in the same order with the same defaults, without
    looking object.__setattr__ up per field (an instruction is built per issue: ~1 us of ~3 us). A class
    this does not fit (post-init, default factories, non-init fields, positional fields unless
    `positional`: then every field is positional-or-keyword, as dataclasses makes them) keeps its own."""
    for cls in classes:
        made = _slot_init(cls, positional)
        if made is not None:
            cls.__init__ = made[0]
            if cls.__new__ is object.__new__:
                _makers[cls] = made[1]


# class -> its constructor function (fast_init): the same object as cls(...), built without type.__call__,
# which in CPython 3.11 packs keyword arguments into a dict and unpacks them again for __init__.
_makers: dict = {}


def maker(cls):
    """A function building cls(**fields) (hot front-end call sites): fast_init's, else the class itself."""
    return _makers.get(cls, cls)


def _slot_init(cls, positional: bool = False):
    """(__init__, constructor function) setting each field through its slot, or None if cls does not fit."""
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
        return None
    params, body, namespace = [], [], {}
    for i, f in enumerate(fields(cls)):
        if not f.init or f.kw_only is positional or f.default_factory is not dataclasses.MISSING:
            return None
        slot = next((k.__dict__[f.name] for k in cls.__mro__ if f.name in k.__dict__), None)
        if type(slot) is not types.MemberDescriptorType:
            return None
        namespace[f"_fi_set{i}"] = slot.__set__
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            namespace[f"_fi_default{i}"] = f.default
            params.append(f"{f.name}=_fi_default{i}")
        body.append(f"    _fi_set{i}(self, {f.name})")
    if not params:
        return None
    star = "" if positional else "*, "
    exec(f"def __init__(self, {star}{', '.join(params)}):\n" + "\n".join(body), namespace)
    namespace["_fi_new"], namespace["_fi_cls"] = object.__new__, cls
    exec(f"def make({star}{', '.join(params)}):\n    self = _fi_new(_fi_cls)\n" + "\n".join(body)
         + "\n    return self", namespace)
    init, make = namespace["__init__"], namespace["make"]
    init.__qualname__, make.__qualname__ = f"{cls.__qualname__}.__init__", f"{cls.__qualname__}.make"
    init.__module__ = make.__module__ = cls.__module__
    return init, make


def instruction_classes(namespace: dict) -> list:
    """The Instruction dataclasses defined in a module namespace (for fast_init)."""
    return [v for v in namespace.values() if isinstance(v, type) and issubclass(v, Instruction)
            and dataclasses.is_dataclass(v)]


# --- validation once per distinct instruction ------------------------------------------------------
# The hardware-rule checks of the common instructions are a pure function of the chip, the class, the
# attributes and each operand's layout (Tensor.layout): kernels issue the same few shapes thousands
# of times, so a combination that passed is not checked again (~10 us of a ~40 us matmul issue).
# Only failures raise, and those are always re-checked in full, so messages are unchanged.
_PLAIN = frozenset({type(None), bool, int, float, str, Engine})
_PASSED_MAX = 1 << 16
_passed: dict = {}            # id(chip) -> (chip, set of (class, facts) that passed validate)
_getters: dict = {}           # class -> (getter of its attributes except api and loc, types -> keyer)
# class -> facts function of the attribute types its latest instruction had (guarded: returns _MISS
# when an attribute's type differs). A kernel issues one class with the same types thousands of times:
# the guard then replaces building and hashing the tuple of types (hot: every instruction).
_guarded: dict = {}
_MISS = object()


def _plain(v) -> bool:
    t = type(v)
    return t in _PLAIN or (t is tuple and all(_plain(x) for x in v))


def _keyer(types: tuple, names: tuple):
    """The key functions of a class's attribute-type signature, written out for it (hot: every
    instruction): keyer(values) and guarded(instruction) give (a token of the class and signature, the
    values with tensors as their layout), or None when a tuple attribute holds something not plain;
    guarded reads the attributes `names` itself and gives _MISS if one's type is not the signature's.
    (False, None): the types are not memoisable."""
    parts, checks, reads = ["_token"], [], []
    for i, t in enumerate(types):
        if issubclass(t, Tensor):
            checks.append(f"    t = v{i}\n    l{i} = t._layout\n    if l{i} is None:\n        l{i} = t.layout()")
            parts.append(f"l{i}")
        elif t is tuple:
            checks.append(f"    x = v{i}\n    if x and not _plain(x):\n        return None")
            parts.append(f"v{i}")
        elif t in _PLAIN:
            parts.append(f"v{i}")
        else:
            return False, None
        reads.append(f"    v{i} = ins.{names[i]}\n    if type(v{i}) is not _T{i}:\n        return _MISS")
    body = "\n".join(checks) + f"\n    return ({', '.join(parts)},)"
    unpack = f"    {', '.join(f'v{i}' for i in range(len(types)))}{',' if len(types) == 1 else ''} = v\n"
    namespace = {"_plain": _plain, "_token": object(), "_MISS": _MISS,
                 **{f"_T{i}": t for i, t in enumerate(types)}}
    exec(f"def keyer(v):\n{unpack}{body}", namespace)
    exec("def guarded(ins):\n" + "\n".join(reads) + f"\n{body}", namespace)
    return namespace["keyer"], namespace["guarded"]


def _facts(ins) -> "tuple | None":
    """A key of the instruction's class, attribute types and values, tensors as their layout; None if one
    is not a plain value (a mask array, an indirect access, ...): such an instruction is always checked
    in full."""
    cls = type(ins)
    guarded = _guarded.get(cls)
    if guarded is not None:
        facts = guarded(ins)
        if facts is not _MISS:
            return facts
    info = _getters.get(cls) or _class_info(cls)
    vals = info[0](ins)
    types = tuple(map(type, vals))
    keyers = info[1].get(types)
    if keyers is None:
        keyers = info[1][types] = _keyer(types, info[2])
    keyer, guarded = keyers
    if keyer is False:
        return None
    _guarded[cls] = guarded
    return keyer(vals)


def _class_info(cls) -> tuple:
    """(getter of the class's attributes except api and loc, attribute types -> (keyer, guarded), the
    attribute names)."""
    names = tuple(f.name for f in fields(cls) if f.name not in ("api", "loc"))
    getter = attrgetter(*names) if len(names) > 1 else (lambda ins, _get=attrgetter(*names): (_get(ins),))
    info = _getters[cls] = (getter, {}, names)
    return info


def validate_once(validate):
    """Decorator of a validate(self, chip) that reads only the chip, the attributes and operand layouts."""
    @functools.wraps(validate)
    def once(self, chip):
        global _last
        guarded = _guarded.get(type(self))         # _facts, inline (hot)
        facts = _MISS if guarded is None else guarded(self)
        if facts is _MISS:
            facts = _facts(self)
        if facts is None:
            return validate(self, chip)
        entry = _passed.get(id(chip))
        if entry is None or entry[0] is not chip:
            entry = _passed[id(chip)] = (chip, {})
        seen = entry[1]
        memo = seen.get(facts)
        if memo is None:
            validate(self, chip)
            if len(seen) >= _PASSED_MAX:
                seen.clear()
            memo = seen[facts] = {}
        _last = (weakref.ref(self), chip, memo)
        return None
    return once


# (weak reference to the instruction, chip, memo) of the latest validate_once pass: methods marked
# @same_facts of that very instruction reuse its key's memo (the key is not built twice). Identity-checked,
# so another thread's instruction or an unvalidated one just computes; weak, so that it never keeps an
# instruction's tiles (and their SBUF/PSUM space) alive.
_last: tuple = (lambda: None, None, None)


def same_facts(method):
    """Decorator of a method (self) or (self, chip) that, like validate, reads only the chip, the class,
    the attributes and the operand layouts (a cost, FLOPs): computed once per distinct validated
    instruction (matmuls repeat thousands of times)."""
    name = method.__name__

    @functools.wraps(method)
    def memoized(self, *chip):
        last = _last
        if last[0]() is self and (not chip or chip[0] is last[1]):
            memo = last[2]
            v = memo.get(name)
            if v is None:
                v = memo[name] = method(self, *chip)
            return v
        return method(self, *chip)
    return memoized


def facts_memo(ins, chip) -> "dict | None":
    """The memo of `ins`'s validated facts on `chip` (as same_facts uses), if it is the instruction
    validate_once last passed: observers keep there what they derive from the facts alone."""
    last = _last
    return last[2] if last[0]() is ins and chip is last[1] else None


# APIs whose instructions name no engine in the kernel: high-level nl ops (both front ends, including
# the operators `t += u`, which lower to nl.add) and tensor assignment `t[...] = u`. neuronx-cc places
# them on Vector, Scalar or GpSimd (CompilerModel.engine_balance); nisa.* calls keep their engine.
_PLACED_APIS = frozenset({"tensor assignment"})


def compiler_placed(instr: Instruction) -> bool:
    """The compiler, not the kernel, chose this instruction's engine."""
    api = instr.api
    return api.startswith("nl.") or api in _PLACED_APIS


def balance_choices(ins: Instruction, *, scalar: bool, gpsimd: bool) -> tuple:
    """(Vector, [Scalar], [GpSimd]) for an op the ISA lets run on several engines (nki.isa docs:
    tensor_copy and tensor_scalar "using Vector or Scalar or GpSimd Engine", tensor_tensor "Vector
    Engine or GpSimd Engine", memset "Vector or GpSimd Engine"), keeping numerics fixed: an instruction
    the front end issued on another engine than Vector keeps it (its numerics were chosen there), and
    GpSimd, which cannot reach PSUM (ARCH), is offered only for PSUM-free operands."""
    if ins.engine != Engine.VECTOR:
        return (ins.engine,)
    out = [Engine.VECTOR]
    if scalar:
        out.append(Engine.SCALAR)
    if gpsimd and all(t.buffer != PSUM for t in (*ins.reads(), *ins.writes()) if isinstance(t, Tensor)):
        out.append(Engine.GPSIMD)
    return tuple(out)


def float_math(ins: Instruction) -> bool:
    """Arithmetic runs in fp32 on every engine: some input tile is a float (GpSimd does exact integer
    arithmetic when all inputs are integers, isa.instructions.arith_inputs)."""
    return any(dt.is_float(t.dtype) for t in ins.reads() if isinstance(t, Tensor))


class DmaInstruction:
    """Mixin (first base) of the instructions the DMA queues run: their cost is a DmaCost. Subclasses
    define `engine = Engine.DMA`, `queue` and dma_bytes()."""
    __slots__ = ()

    @same_facts
    def cost(self, chip) -> DmaCost:
        nbytes = self.dma_bytes()
        chunk = dma_model.chunk_bytes(self)
        hbm = dma_model.touches_hbm(self)
        queue = self.queue
        pieces = 1 if queue is not None else dma_model.dma_pieces(chip, nbytes, chunk)
        return DmaCost(nbytes, dma_model.dma_queue_rate(chip, chunk, hbm), pieces, queue, hbm,
                       dma_model.dma_start_s(chip, self))

    def cycles(self, chip) -> float:
        raise TypeError(f"{self.opcode} runs on the DMA queues: its cost is time (cost()), not engine cycles")


# --- common operand shapes: dst <- f(...), dst <- f(data), dst <- f(src) ---------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class ToDst(Instruction):
    """Writes one output tensor `dst`."""
    dst: Tensor

    def writes(self):
        return (self.dst,)


@dataclass(frozen=True, slots=True, kw_only=True)
class DataToDst(ToDst):
    """One input tile `data`, one output tile `dst`; validate defaults to the elementwise rules."""
    data: Tensor

    def reads(self):
        return (self.data,)

    def validate(self, chip):
        expect_elementwise(self, chip, data=self.data, dst=self.dst)


@dataclass(frozen=True, slots=True, kw_only=True)
class SrcToDst(ToDst):
    """One input tensor `src`, one output tensor `dst`; validate defaults to the elementwise rules."""
    src: Tensor

    def reads(self):
        return (self.src,)

    def validate(self, chip):
        expect_elementwise(self, chip, src=self.src, dst=self.dst)


def tensors(*xs) -> tuple:
    """The operands that are tensors (others are scalars or None)."""
    return tuple(x for x in xs if isinstance(x, Tensor))


def given(*ts) -> tuple:
    """The optional operands that are set."""
    return tuple(t for t in ts if t is not None)


def rows_where(rows: np.ndarray, shape: tuple) -> np.ndarray:
    """A per-partition (dim 0) boolean, broadcast to a write mask of `shape`."""
    return np.broadcast_to(rows.reshape((-1,) + (1,) * (len(shape) - 1)), shape)


# --- shared rule checks (messages follow AWS's wording where it is documented) -----------------------

def expect_buffer(ins: Instruction, name: str, t: Tensor, allowed: tuple) -> None:
    if t.buffer not in allowed:
        ins.fail(BufferKindError,
                 f"Expected operand '{name}' of '{ins.api}' to be in address space '{'|'.join(allowed)}', "
                 f"but got a tile in '{t.buffer}' instead ({t.describe()})")


def expect_tile(ins: Instruction, name: str, t: Tensor, chip, allowed=(SBUF, PSUM)) -> None:
    """An on-chip compute-engine operand: right buffer (GpSimd cannot reach PSUM), rank >= 2, partition
    dim within limits and laid along partitions, legal start partition, free size within limits."""
    if not isinstance(t, Tensor):
        from trnlab.isa.indirection import TensorIndirection     # (it imports this module)
        if isinstance(t, TensorIndirection):
            raise NotImplementedError(f"{ins.api}: a tensor indirection (NkiTensor.indirect) operand '{name}' is "
                                      f"modelled by trnlab for nisa.tensor_copy only. At {ins.loc}")
        ins.fail(ShapeError, f"operand '{name}' must be a tile, got {type(t).__name__} {t!r}")
    expect_buffer(ins, name, t, allowed)
    if ins.engine == Engine.GPSIMD and t.buffer == PSUM:
        ins.fail(BufferKindError, f"GpSimd Engine cannot access PSUM: operand '{name}' {t.describe()}; "
                                  f"use the Vector or Scalar Engine")
    if t.ndim < 2:
        ins.fail(ShapeError, f"Insufficient rank for operand '{name}' {t.describe()}: on-chip tiles need "
                             f"a partition and at least one free dimension")
    if t.shape[0] > chip.partitions:
        ins.fail(PartitionError, f"{name} partition dimension {t.shape[0]} exceeds maximum {chip.partitions} "
                                 f"({t.describe()})")
    expect_partition_layout(ins, name, t)
    expect_start_partition(ins, name, t)
    limit = chip.psum_free_max_elems if t.buffer == PSUM else chip.sbuf_free_max_elems
    if t.free_size > limit and ins.engine in (Engine.VECTOR, Engine.SCALAR, Engine.GPSIMD):
        ins.fail(ShapeError, f"free size of operand '{name}' {t.describe()} is {t.free_size} elements per "
                             f"partition; limit from {t.buffer} is {limit}")


def expect_partition_layout(ins: Instruction, name: str, t: Tensor) -> None:
    """Dim 0 of an engine operand walks partitions one by one; free dims stay inside a partition
    (ARCH v2: "No partition striding"). A stride-0 dim 0 is a partition broadcast view."""
    a, row = t.array, t.storage.row_bytes
    shape, strides = a.shape, a.strides          # (each ndarray.shape access builds a new tuple)
    if shape[0] > 1 and strides[0] not in (0, row):
        ins.fail(PartitionError, f"operand '{name}' {t.describe()} steps {strides[0] / row:g} partitions per "
                                 f"index of dim 0; engines access consecutive partitions (no partition striding, "
                                 f"and the partition dim must be dim 0)")
    for d in range(1, len(shape)):
        n, stride = shape[d], strides[d]
        if n > 1 and abs(stride) >= row and stride % row == 0:
            ins.fail(PartitionError, f"free dim {d} of operand '{name}' {t.describe()} crosses partitions; "
                                     f"only dim 0 may map to partitions")


def start_partition_ok(start: int, count: int) -> bool:
    """ARCH v2: >64 partitions must start at 0; 33-64 at 0 or 64; <=32 at 0/32/64/96."""
    if count > 64:
        return start == 0
    if count > 32:
        return start in (0, 64)
    return start in (0, 32, 64, 96)


def expect_start_partition(ins: Instruction, name: str, t: Tensor) -> None:
    if t.buffer not in (SBUF, PSUM):
        return
    start = t.region()[0]
    if start == 0:              # every access may start at partition 0
        return
    count = t.shape[0]
    if not start_partition_ok(start, count):
        allowed = "0" if count > 64 else ("0 or 64" if count > 32 else "0, 32, 64 or 96")
        ins.fail(PartitionError, f"operand '{name}' {t.describe()} accesses {count} partitions starting at "
                                 f"partition {start}; an access of {count} partitions must start at {allowed} "
                                 f"(ARCH start-partition rule)")


def _expect_equal(ins: Instruction, tiles: dict, key, error, item, message: str) -> None:
    """Fail unless key(tile) is equal over the given (not None) tiles. message names {api} and {items},
    the ", "-joined item(name, tile) descriptions."""
    items = [(k, v) for k, v in tiles.items() if v is not None]
    first = key(items[0][1])
    if any(key(v) != first for _, v in items):
        ins.fail(error, message.format(api=ins.api, items=", ".join(item(k, v) for k, v in items)))


def _partitions(t: Tensor) -> int:
    return t.shape[0]


_dtype, _free_size = attrgetter("dtype"), attrgetter("free_size")


def _dtype_item(name: str, t: Tensor) -> str:
    return f"{name} {dt.name_of(t.dtype)}"


def _shape_item(name: str, t: Tensor) -> str:
    return f"{name}{list(t.shape)}"


def expect_same_dtype(ins: Instruction, **tiles: Tensor) -> None:
    _expect_equal(ins, tiles, _dtype, DtypeError, _dtype_item, "dtypes must match in '{api}': {items}")


def expect_not_both_psum(ins: Instruction, **tiles: Tensor) -> None:
    items = [(k, v) for k, v in tiles.items() if isinstance(v, Tensor)]
    if len(items) == 2 and all(v.buffer == PSUM for _, v in items):
        ins.fail(BufferKindError, f"'{items[0][0]}' and '{items[1][0]}' cannot both be in PSUM "
                                  f"({items[0][1].describe()}; {items[1][1].describe()})")


def expect_vector(ins: Instruction, name: str, x, p: int, chip) -> None:
    """A per-partition operand: a scalar, or a [p, 1] tile."""
    if isinstance(x, Tensor):
        expect_tile(ins, name, x, chip)
        if x.shape[0] != p or x.free_size != 1:
            ins.fail(ShapeError, f"per-partition operand '{name}' {x.describe()} must be [{p}, 1] "
                                 f"(one element per partition of the data)")


def expect_int(ins: Instruction, name: str, t: Tensor, what: str = "an integer type") -> None:
    if not dt.is_int(t.dtype):
        ins.fail(DtypeError, f"operand '{name}' must be {what}, got {dt.name_of(t.dtype)} ({t.describe()})")


def expect_oob_mode(ins: Instruction) -> None:
    """Indirect DMA: an out-of-bounds index raises ('error') or drops its row ('skip')."""
    if ins.oob_mode not in ("error", "skip"):
        ins.fail(NkiValidationError, f"oob_mode must be 'error' or 'skip', got {ins.oob_mode!r}")


def expect_version(ins: Instruction, chip, minimum: int) -> None:
    names = {2: "trn1 (NeuronCore-v2)", 3: "trn2 (NeuronCore-v3)", 4: "trn3 (NeuronCore-v4)"}
    if chip.nc_version < minimum:
        ins.fail(NkiValidationError, f"{ins.opcode} needs {names[minimum]} or newer; target is {chip.name} "
                                     f"(NeuronCore-v{chip.nc_version})")


def expect_same_partitions(ins: Instruction, **tiles: Tensor) -> None:
    _expect_equal(ins, tiles, _partitions, PartitionError, _shape_item,
                  "number of partitions (dimension 0 size of a tile) mismatch in parameters ({items}) of '{api}'")


def expect_same_elements(ins: Instruction, **tiles: Tensor) -> None:
    _expect_equal(ins, tiles, _free_size, ShapeError, _shape_item,
                  "elements per partition mismatch in parameters ({items}) of '{api}'")


def expect_elementwise(ins: Instruction, chip, *, allowed=(SBUF, PSUM), **tiles: Tensor) -> None:
    """Operands of an elementwise instruction: on-chip tiles (checked in the given order) with equal
    partitions and equal elements per partition."""
    for name, t in tiles.items():
        expect_tile(ins, name, t, chip, allowed)
    expect_same_partitions(ins, **tiles)
    expect_same_elements(ins, **tiles)


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


def accumulate(ins: Instruction, regs: np.ndarray, p: int, cmd: str, op: str, values: np.ndarray,
               init=None) -> np.ndarray:
    """Per-lane accumulator registers of an engine (Scalar: activation; Vector: tensor_scalar_reduce,
    select_reduce, range_select, exponential). Returns the [p, 1] result to read out.

    idle leaves the registers alone and returns this instruction's own reduction; reset / reset_reduce
    start from the operator's identity; load_reduce starts from `init` (scalar or [p, 1])."""
    from trnlab.isa import alu
    red = np.asarray(alu.reduce(op, np.asarray(values, dtype=np.float32), 1, ins.api, ins.loc, keepdims=True),
                     dtype=np.float32)
    if cmd == "idle":
        return red
    identity, combine = alu.reducer(op, ins.api, ins.loc)
    if cmd in ("reset", "reset_reduce"):
        regs[:p] = identity
    elif cmd == "load_reduce":
        regs[:p] = np.asarray(init, dtype=np.float32).reshape(-1, 1) if init is not None else 0.0
    elif cmd != "reduce":
        ins.fail(NkiValidationError, f"unknown reduce_cmd {cmd!r}; expected idle, reset, reduce, "
                                     f"reset_reduce or load_reduce")
    if cmd != "reset":
        regs[:p] = combine(regs[:p], red)
    return regs[:p].copy()


BITVEC_OPS = frozenset({"bitwise_and", "bitwise_or", "bitwise_xor", "left_shift", "right_shift",
                        "arith_shift_right", "logical_shift_left", "logical_shift_right", "invert"})


def is_bitvec(op: str | None) -> bool:
    return op in BITVEC_OPS


fast_init(*instruction_classes(globals()))
