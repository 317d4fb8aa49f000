"""Beta 1 tensors: Tile (a strided view of a Storage), affine index access, masks, pending results.

* Indexing with ints / slices / nl.ds is basic numpy indexing. Indexing with nl.arange / nl.mgrid
  expressions builds a strided view over the storage (every affine index is a strided view); an
  out-of-bounds access becomes an `Access` that only an instruction with a covering `mask=` may use.
* `nl.par_dim` block tensors are stored partition-first and presented in the declared order;
  `t[i]` yields the i-th [P, ...] tile.
* Tile-returning calls give a `Pending` result: the instruction is issued when the value is first
  used (at the latest at the next front-end call), or directly into the destination of
  `t[...] = call(...)`, or as an accumulating matmul for `psum += nisa.nc_matmul(...)`.
"""
from __future__ import annotations

import sys
import threading
import weakref

import numpy as np

from trnlab.core import dtypes as dt
from trnlab.core.machine import current, has_current
from trnlab.core.srcloc import user_location
from trnlab.core.tensor import PSUM, SBUF, OperandOf, Tensor
from trnlab.errors import NkiValidationError, OutOfBoundsError, ShapeError
from trnlab.frontend.indexing import DynSlice  # noqa: F401  (nl.ds)
from trnlab.nki_beta1.index import Index, Predicate, affine_form, compact


# ================================================================================================
# Tile
# ================================================================================================

class Tile(Tensor):
    """A Beta 1 tensor or tile. `par_axis` is the partition dim of an nl.par_dim block tensor."""

    __slots__ = ("par_axis",)

    def __init__(self, storage, array, dtype, name=None, par_axis: int = 0):
        super().__init__(storage, array, dtype, name)
        self.par_axis = par_axis

    def _view(self, array, dtype=None, par_axis: int = 0) -> "Tile":
        return Tile(self.storage, array, self.dtype if dtype is None else dtype, self.name, par_axis)

    # --- indexing ---------------------------------------------------------------------------
    def __getitem__(self, key):
        flush()
        return index(self, key, user_location())

    def __setitem__(self, key, value):
        from trnlab.nki_beta1 import ops
        loc = user_location()
        if value is _state.last_inplace:       # `t[k] += x` already wrote through the view
            _state.last_inplace = None
            return
        dst = as_view(index(self, key, loc), "tensor assignment")
        if isinstance(value, Pending) and (value.consumable(dst, sys._getframe(1)) or
                                           (value.reduces and value.tile is None)):
            value.emit_into(dst)
            return
        if isinstance(value, Pending) and value.reduces:
            raise NkiValidationError(f"nl.loop_reduce: its result was used before the assignment into "
                                     f"`{dst.name}` ran, so it cannot reduce into it; assign the call directly "
                                     f"(`acc[...] = nl.loop_reduce(x, ...)`). At {loc}")
        flush()
        ops.assign(dst, value, loc)

    def __len__(self) -> int:
        return self.shape[0]

    def __iter__(self):
        raise TypeError("NKI tiles are not iterable; index them with nl.arange / slices")

    __hash__ = object.__hash__

    # --- views --------------------------------------------------------------------------------
    def broadcast_to(self, shape) -> "Tile":
        """A partition broadcast of an on-chip [1, F] tile runs on the Tensor engine (ops.pe_broadcast,
        CompilerModel.pe_broadcast); any other broadcast is a zero-stride view."""
        from trnlab.nki_beta1 import ops
        shape = tuple(int(s) for s in shape)
        if ops.pe_broadcastable(self, shape):
            flush()
            return ops.pe_broadcast(self, shape, user_location())
        return super().broadcast_to(shape)

    def view(self, dtype) -> "Tile":
        return self.bitcast(dtype)

    def reshape(self, *shape, **kw) -> "Tile":
        if "shape" in kw:                   # t.reshape(shape=(...)) is accepted too
            shape = (kw.pop("shape"),)
        if kw:
            raise TypeError(f"reshape() got unexpected keyword arguments {sorted(kw)}")
        return super().reshape(*shape)

    @property
    def T(self):
        from trnlab.nki_beta1 import language as nl
        return nl.transpose(self)

    # --- in-place arithmetic (t += x writes into t) -----------------------------------------------
    def _inplace(self, other, op: str):
        from trnlab.nki_beta1 import ops
        if op == "add" and isinstance(other, Pending) and other.accumulates and self.buffer == PSUM \
                and other.consumable(self, None):
            other.emit_into(self, accumulate=True)
        else:
            flush()
            ops.binary_into(self, self, other, op, user_location())
        _state.last_inplace = self
        return self

    def __iadd__(self, o):
        return self._inplace(o, "add")

    def __isub__(self, o):
        return self._inplace(o, "subtract")

    def __imul__(self, o):
        return self._inplace(o, "multiply")

    def __itruediv__(self, o):
        return self._inplace(o, "divide")

    # --- arithmetic operators map to nl.* tile calls -------------------------------------------
    def _bin(self, o, name, reverse=False):
        from trnlab.nki_beta1 import language as nl
        fn = getattr(nl, name)
        return fn(o, self) if reverse else fn(self, o)

    def __add__(self, o): return self._bin(o, "add")
    def __radd__(self, o): return self._bin(o, "add", True)
    def __sub__(self, o): return self._bin(o, "subtract")
    def __rsub__(self, o): return self._bin(o, "subtract", True)
    def __mul__(self, o): return self._bin(o, "multiply")
    def __rmul__(self, o): return self._bin(o, "multiply", True)
    def __truediv__(self, o): return self._bin(o, "divide")
    def __rtruediv__(self, o): return self._bin(o, "divide", True)
    def __pow__(self, o): return self._bin(o, "power")
    def __mod__(self, o): return self._bin(o, "fmod")
    def __lt__(self, o): return self._bin(o, "less")
    def __le__(self, o): return self._bin(o, "less_equal")
    def __gt__(self, o): return self._bin(o, "greater")
    def __ge__(self, o): return self._bin(o, "greater_equal")
    def __and__(self, o): return self._bin(o, "bitwise_and")
    def __or__(self, o): return self._bin(o, "bitwise_or")
    def __xor__(self, o): return self._bin(o, "bitwise_xor")
    def __lshift__(self, o): return self._bin(o, "left_shift")
    def __rshift__(self, o): return self._bin(o, "right_shift")

    def __neg__(self):
        from trnlab.nki_beta1 import language as nl
        return nl.negative(self)

    def __abs__(self):
        from trnlab.nki_beta1 import language as nl
        return nl.abs(self)


def as_tile(t: Tensor) -> Tile:
    return t if isinstance(t, Tile) else Tile(t.storage, t.array, t.dtype, t.name)


# ================================================================================================
# Indexing
# ================================================================================================

def _oob_message(t: Tensor, dim: int, lo: int, hi: int, size: int) -> str:
    return (f"Out-of-bound access for tensor `{t.name}` on dimension {dim}: index range [{lo}, {hi}] "
            f"exceed dimension size of {size}")


def _normalize(t: Tile, key) -> tuple:
    key = key if isinstance(key, tuple) else (key,)
    key = tuple(k.as_slice() if isinstance(k, DynSlice) else k for k in key)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = (slice(None),) * (t.ndim - len(key) + 1)
        key = key[:i] + fill + key[i + 1:]
    return key


def index(t: Tile, key, loc: str):
    """t[key] -> Tile view, Access (out of bounds until masked) or IndirectAccess (gather/scatter)."""
    if isinstance(key, Predicate):
        return predicate_view(t, key, loc)
    key = _normalize(t, key)
    if any(isinstance(k, (Tensor, Pending)) for k in key):
        return IndirectAccess(t, key, loc)
    if not any(isinstance(k, Index) for k in key):
        return _basic(t, key, loc)
    return _advanced(t, key, loc)


def _basic(t: Tile, key: tuple, loc: str) -> Tile:
    if len(key) > t.ndim:
        raise OutOfBoundsError(f"too many indices for {t.describe()}: {len(key)} given for rank {t.ndim}. At {loc}")
    if not t.on_chip and None not in key and _past_end(t, key):
        return _slices_access(t, key, loc)
    out, par_axis, dim_out = [], t.par_axis, 0
    for d, k in enumerate(key):
        if isinstance(k, slice) or k is None:
            out.append(k)
            dim_out += k is not None
            continue
        k = int(k)
        if t.on_chip and d == t.par_axis:       # an int on the partition dim keeps a size-1 dim
            k = k + t.shape[d] if k < 0 else k
            out.append(slice(k, k + 1))
            dim_out += 1
        else:
            out.append(k)
            if d < t.par_axis:
                par_axis -= 1
    if len(out) == t.ndim and not any(isinstance(k, slice) for k in out):
        out.append(Ellipsis)            # all ints: a 0-d view of the storage, not numpy's scalar copy
    view = t.index(tuple(out), api="indexing", loc=loc)
    result = t._view(view.array, par_axis=par_axis if t.on_chip else 0)
    if t.on_chip and result.ndim < 2:
        result = t._view(result.array.reshape(result.shape + (1,)))
    result._offset = view._offset       # known: reading it back from numpy costs ~2 us per view
    return result


def _past_end(t: Tile, key: tuple) -> bool:
    """A forward slice of an HBM tensor that runs past its end: a mask (nl.load / dma_copy mask=) may still
    keep the access in bounds, so the check waits for it."""
    for k, size in zip(key, t.shape):
        if isinstance(k, slice) and (k.step or 1) > 0 and k.stop is not None and (k.start or 0) >= 0 \
                and int(k.stop) > size:
            return True
    return False


def _slices_access(t: Tile, key: tuple, loc: str) -> "Access":
    """The basic key (ints and forward slices) as an affine Access, bounds-checked when it is used."""
    key = key + (slice(None),) * (t.ndim - len(key))
    n_out = sum(isinstance(k, slice) for k in key)
    arrays, j = [], 0
    for k, size in zip(key, t.shape):
        if isinstance(k, slice):
            start, stop, step = int(k.start or 0), size if k.stop is None else int(k.stop), int(k.step or 1)
            shape = [1] * n_out
            shape[j] = len(range(start, stop, step))
            arrays.append(np.arange(start, stop, step, dtype=np.int64).reshape(shape))
            j += 1
        else:
            arrays.append(np.int64(int(k) + size if int(k) < 0 else int(k)))
    return Access(t, np.broadcast_arrays(*arrays), loc)


def _advanced(t: Tile, key: tuple, loc: str):
    if any(isinstance(k, slice) for k in key[:len(key)]):
        raise NkiValidationError(
            f"Mixing basic tensor indexing and advanced tensor indexing is not supported "
            f"(err_unsupported_mixing_basic_advanced_tensor_indexing): tensor `{t.name}` is indexed with both "
            f"slices and nl.arange/nl.mgrid expressions. Use nl.arange for every dimension. At {loc}")
    if len(key) != t.ndim:
        raise ShapeError(f"tensor `{t.name}` {list(t.shape)} has {t.ndim} dimensions but the index has "
                         f"{len(key)} entries; index every dimension. At {loc}")
    arrays = [k.values if isinstance(k, Index) else np.int64(int(k)) for k in key]
    arrays = np.broadcast_arrays(*arrays)
    access = Access(t, arrays, loc)
    bad = access.bounds(None)
    return access if bad else access.strided()


class Access(OperandOf):
    """An affine access t[idx_0, ..., idx_n] (index arrays broadcast to the access shape)."""

    def __init__(self, tensor: Tile, arrays, loc: str):
        self.tensor, self.arrays, self.loc = tensor, [np.asarray(a) for a in arrays], loc

    @property
    def shape(self) -> tuple:
        return self.arrays[0].shape

    def bounds(self, where) -> str | None:
        """The AWS out-of-bound message for the first violated dim (masked-out elements ignored)."""
        for d, a in enumerate(self.arrays):
            vals = compact(a) if where is None else a[np.broadcast_to(where, a.shape)]
            if vals.size == 0:
                continue
            lo, hi, size = int(vals.min()), int(vals.max()), self.tensor.shape[d]
            if lo < 0 or hi >= size:
                return _oob_message(self.tensor, d, lo, hi, size)
        return None

    def cut(self, box) -> "Access":
        return Access(self.tensor, [a[box] for a in self.arrays], self.loc)

    def view(self, where) -> Tile:
        """The strided view of this access; `where` (mask) limits the bounds check."""
        msg = self.bounds(where)
        if msg:
            raise OutOfBoundsError(f"{msg}. At {self.loc}")
        return self.strided()

    def strided(self) -> Tile:
        """The strided view of this access, already known to be in bounds."""
        t = self.tensor
        shape = self.shape
        offset = t.byte_offset()
        strides = [0] * len(shape)
        for d, a in enumerate(self.arrays):
            form = affine_form(a if a.shape == shape else np.broadcast_to(a, shape))
            if form is None:
                raise NotImplementedError(f"non-affine index expression on dimension {d} of tensor `{t.name}`: "
                                          f"NKI indices must be affine in nl.arange/mgrid and loop variables. "
                                          f"At {self.loc}")
            origin, coefs = form
            offset += origin * t.array.strides[d]
            for k, c in enumerate(coefs):
                strides[k] += c * t.array.strides[d]
        try:
            arr = np.ndarray(shape, dtype=t.array.dtype, buffer=t.storage.array, offset=offset,
                             strides=tuple(strides))
        except (ValueError, TypeError):
            raise NotImplementedError(f"masked-out elements of tensor `{t.name}` fall outside its storage; "
                                      f"only rectangular masks may cover out-of-bound indices. At {self.loc}") from None
        if not t.storage.array.flags.writeable:
            arr.flags.writeable = False
        view = t._view(arr)
        view._offset = offset               # (bytes from the storage's start, as byte_offset() would find)
        return view


class IndirectAccess(OperandOf):
    """t[idx_tile, ...]: rows selected by an SBUF index tile (nl.load gathers, nl.store scatters)."""

    def __init__(self, tensor: Tile, key: tuple, loc: str):
        pos = [i for i, k in enumerate(key) if isinstance(k, (Tensor, Pending))]
        if len(pos) == 1 and pos[0] > 0 and all(_is_int(k) for k in key[:pos[0]]):
            tensor = _basic(tensor, key[:pos[0]], loc)     # x[b, idx, ...]: gather within x[b]
            key, pos = key[pos[0]:], [0]
        self.tensor, self.loc = tensor, loc
        if pos != [0]:
            raise NkiValidationError(f"indirect indexing of `{tensor.name}` needs the index tile in the first "
                                     f"(partition) position, after integer indices only. At {loc}")
        from trnlab.nki_beta1.ops import tile_of
        self.index_tile = tile_of(key[0])
        rest = key[1:]
        rows = tensor.shape[0]
        if rest and any(isinstance(k, Index) for k in rest):
            full = Index(np.arange(rows, dtype=np.int64).reshape((rows,) + (1,) * (max(k.ndim for k in rest
                                                                                  if isinstance(k, Index)) - 1)))
            self.table = as_view(_advanced(tensor, (full,) + rest, loc), "indirect access")
        else:
            self.table = _basic(tensor, (slice(None),) + rest, loc) if rest else tensor

    @property
    def shape(self) -> tuple:
        return (self.index_tile.size,) + tuple(self.table.shape[1:])


def _is_int(k) -> bool:
    return isinstance(k, (int, np.integer)) and not isinstance(k, bool)


def as_view(x, api: str):
    """A Tile view from an index result (raises the AWS out-of-bound message for an unmasked access)."""
    if isinstance(x, Access):
        return x.view(None)
    if isinstance(x, IndirectAccess):
        raise NkiValidationError(f"{api}: indirect (index-tile) access of `{x.tensor.name}` is only supported "
                                 f"by nl.load / nl.store. At {x.loc}")
    return x


def predicate_view(t: Tile, pred: Predicate, loc: str) -> Tile:
    """tile[predicate] (operand masking, e.g. lhsT[i_f <= 64]): the rectangular region of the mask."""
    region = Region.of(pred, t.shape, loc)
    if region.residual is not None:
        raise NotImplementedError(f"operand masking of `{t.name}` with a non-rectangular predicate is not "
                                  f"supported; use mask= on the instruction. At {loc}")
    return t._view(t.array[region.box])


# ================================================================================================
# Masks
# ================================================================================================

class Region:
    """A mask over an iteration space: its bounding box, and the boolean residual inside the box
    (None when the mask is rectangular)."""

    __slots__ = ("box", "residual", "empty")

    def __init__(self, box, residual, empty):
        self.box, self.residual, self.empty = box, residual, empty

    @staticmethod
    def of(mask, shape: tuple, loc: str) -> "Region | None":
        if mask is None:
            return None
        values = mask.values if isinstance(mask, Predicate) else np.asarray(mask, dtype=bool)
        try:
            full = np.broadcast_to(values, shape)
        except ValueError:
            raise ShapeError(f"mask of shape {list(values.shape)} does not match the instruction's iteration "
                             f"space {list(shape)}. At {loc}") from None
        if not full.any():
            return Region(tuple(slice(0, 0) for _ in shape), None, True)
        box = []
        for k in range(len(shape)):
            other = tuple(j for j in range(len(shape)) if j != k)
            hit = np.flatnonzero(full.any(axis=other) if other else full)
            # Partitions: keep start 0 (engine accesses must start at partition 0/32/64/96); the
            # residual mask excludes leading partitions instead.
            box.append(slice(0 if k == 0 else int(hit[0]), int(hit[-1]) + 1))
        box = tuple(box)
        inner = full[box]
        return Region(box, None if inner.all() else np.ascontiguousarray(inner), False)


def free_boxes(mask: np.ndarray) -> list:
    """Pieces covering exactly the True cells of a boolean mask over [P, free...]: each piece is
    (box, rows) with `box` a rectangular box of the free dims (partitions 0..n) and `rows` the per-partition
    residual inside it (None when the piece is a full rectangle). Neighbouring free indices with equal
    sub-masks merge, so a padding mask gives a handful of pieces, not one per element."""
    m = np.moveaxis(np.asarray(mask, dtype=bool), 0, -1)     # partitions last: leaves are partition vectors
    out = []

    def walk(sub, prefix):
        if sub.ndim == 1:
            hit = np.flatnonzero(sub)
            if hit.size:
                n = int(hit[-1]) + 1
                rows = None if sub[:n].all() else sub[:n].copy()
                out.append(((slice(0, n),) + prefix, rows))
            return
        start = 0
        for i in range(1, sub.shape[0] + 1):
            if i == sub.shape[0] or not np.array_equal(sub[i], sub[start]):
                walk(sub[start], prefix + (slice(start, i),))
                start = i

    walk(m, ())
    return out


def cut(x, region: Region | None, shape: tuple):
    """Operand x restricted to the mask's bounding box (broadcast dims of x are left alone)."""
    if isinstance(x, Access):
        if region is None:
            return x.view(None)
        box = _box_for(x.shape, region.box, shape)
        where = region.residual
        return x.cut(box).view(where)
    if region is None or not isinstance(x, Tensor):
        return x
    return x._view(x.array[_box_for(x.shape, region.box, shape)]) if isinstance(x, Tile) else \
        Tile(x.storage, x.array[_box_for(x.shape, region.box, shape)], x.dtype, x.name)


def _box_for(xshape: tuple, box: tuple, shape: tuple) -> tuple:
    if len(xshape) != len(shape):
        if int(np.prod(xshape)) == int(np.prod(shape)) and all(s.start == 0 and s.stop == n
                                                               for s, n in zip(box, shape)):
            return (slice(None),) * len(xshape)
        raise ShapeError(f"a masked operand of shape {list(xshape)} must have the rank of the iteration "
                         f"space {list(shape)}")
    return tuple(s if n == full else slice(None) for s, n, full in zip(box, xshape, shape))


# ================================================================================================
# Pending results
# ================================================================================================

class _State(threading.local):  # per thread: kernels may run in several threads at once
    pending = None            # weakref to the Pending result not yet issued
    last_inplace = None       # the view an in-place operator just wrote
    depth = 0                 # nesting of running Beta 1 kernels (sub-kernel calls)


_state = _State()

# Storages of tiles the front end placed itself (a call's result that the kernel never allocated):
# the compiler, not the kernel, chose their buffer, so it may move them where a consumer needs them.
_compiler_placed = weakref.WeakSet()


def compiler_placed(t: Tensor) -> bool:
    return t.storage in _compiler_placed


def flush() -> None:
    """Issue the pending result (called before every front-end call that touches tiles)."""
    ref = _state.pending
    if ref is None:
        return
    _state.pending = None
    p = ref()
    if p is not None and p.tile is None and has_current() and current() is p.machine:
        p.materialize()


class _Strong:
    """A strong reference with weakref's call interface."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __call__(self):
        return self.obj


class Pending:
    """A tile-returning call whose instruction is issued on first use (or into an assignment target)."""

    __slots__ = ("shape", "dtype", "kind", "emit", "machine", "tile", "api", "accumulates", "targets",
                 "name", "reduces", "loc", "__weakref__")

    def __init__(self, shape, dtype, kind: str, emit, api: str, *, targets=(SBUF, PSUM),
                 accumulates: bool = False, name: str = "", reduces: bool = False, required: bool = False):
        flush()
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dt.canonical(dtype)
        self.kind, self.emit, self.api = kind, emit, api
        self.machine = current()
        self.tile = None
        self.accumulates = accumulates
        self.targets = targets
        self.name = name
        self.reduces = reduces          # nl.loop_reduce: an assignment target is reduced into, not overwritten
        self.loc = user_location()      # the call's line: its tile's allocation site, whenever it is issued
        # required: the call also writes an in-place operand (reduce_res), so it is issued even when its
        # result is discarded (held strongly until the next flush, not through a weak reference)
        _state.pending = _Strong(self) if required else weakref.ref(self)

    def materialize(self) -> Tile:
        if self.tile is None:
            from trnlab.nki_beta1.ops import alloc
            dst = alloc(self.kind, self.shape, self.dtype, self.api, self.name, loc=self.loc)
            _compiler_placed.add(dst.storage)
            self.emit(dst, False)
            self.tile = dst
        return self.tile

    def consumable(self, dst: Tensor, frame) -> bool:
        """Issue straight into dst? Only while still pending, unnamed in the kernel, shapes compatible."""
        ref = _state.pending
        if self.tile is not None or ref is None or ref() is not self or dst.buffer not in self.targets:
            return False
        if frame is not None and any(v is self for v in frame.f_locals.values()):
            return False
        if tuple(dst.shape) == self.shape:
            return True
        return False

    def emit_into(self, dst: Tensor, accumulate: bool = False) -> None:
        _state.pending = None
        self.emit(dst, accumulate or self.reduces)
        self.tile = dst

    # --- behave like the tile ---------------------------------------------------------------------
    def __getattr__(self, name):
        return getattr(self.materialize(), name)

    def __getitem__(self, key):
        return self.materialize()[key]

    def __setitem__(self, key, value):
        self.materialize()[key] = value

    def __repr__(self) -> str:
        return f"Pending({self.api} -> {list(self.shape)} {dt.name_of(self.dtype)} in {self.kind})"

    def __iter__(self):
        raise TypeError("NKI tiles are not iterable")

    def __len__(self):
        return self.shape[0]

    def __iadd__(self, o):
        return self.materialize().__iadd__(o)

    def __isub__(self, o):
        return self.materialize().__isub__(o)

    def __imul__(self, o):
        return self.materialize().__imul__(o)

    def __itruediv__(self, o):
        return self.materialize().__itruediv__(o)


def _delegate(name):
    def method(self, *args):
        return getattr(self.materialize(), name)(*args)
    method.__name__ = name
    return method


for _m in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
           "__pow__", "__mod__", "__lt__", "__le__", "__gt__", "__ge__", "__and__", "__or__", "__xor__",
           "__lshift__", "__rshift__", "__neg__", "__abs__"):
    setattr(Pending, _m, _delegate(_m))
