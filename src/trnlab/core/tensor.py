"""Tensors: a storage (one memory allocation) plus a strided numpy view into it.

Views share storage and cost nothing. Reads hand the engines the numpy view; writes round to the
tensor's dtype. Fresh storage is NaN-filled (integers: 4) and an element-level "written" mask
reports reads of never-written memory until the storage has been fully written once.
"""
from __future__ import annotations

import itertools
import operator
import math
import warnings

import numpy as np
from numpy.lib.stride_tricks import as_strided

from trnlab.config import strict_uninitialized
from trnlab.core import dtypes as dt
from trnlab.errors import OutOfBoundsError, ShapeError, UninitializedReadWarning, NkiValidationError

HBM, SBUF, PSUM = "hbm", "sbuf", "psum"


def _here() -> str:
    """The kernel line (for errors raised outside an instruction)."""
    from trnlab.core.srcloc import user_location
    return user_location()


def _at(loc: str | None) -> str:
    """An error's location: the given one, or (None) the kernel line found now."""
    return _here() if loc is None else loc


_uids = itertools.count(1)
_UNWRITTEN = "unwritten"     # Storage init state before any write: the mask is allocated on demand


def split_spans(shape, strides, pitch: int) -> tuple[int, int, int, int]:
    """(lo, hi) byte spans of the dims whose stride is a whole number of `pitch` bytes (they walk
    partitions, or HBM rows), then (lo, hi) of the other dims (within a partition / row)."""
    plo = phi = flo = fhi = 0
    for n, s in zip(shape, strides):
        if n > 1:
            span = (n - 1) * s
            if s and s % pitch == 0:
                if span < 0:
                    plo += span
                else:
                    phi += span
            elif span < 0:
                flo += span
            else:
                fhi += span
    return plo, phi, flo, fhi


class OperandOf:
    """An operand wrapping the view `self.tensor` (an indirect DMA access, a tensor indirection, a
    Beta 1 affine access): its dtype, memory and name are the tensor's."""

    __slots__ = ()

    @property
    def dtype(self):
        return self.tensor.dtype

    @property
    def buffer(self) -> str:
        return self.tensor.buffer

    @property
    def name(self) -> str:
        return self.tensor.name


def _n_real(key: tuple) -> int:
    """Entries of an index key that consume a dimension (not None / Ellipsis)."""
    return sum(1 for k in key if k is not None and k is not Ellipsis)


def _fast_key(key: tuple, shape: tuple, strides: tuple) -> int | None:
    """The byte offset a key adds, if it is the common kind that numpy already reads exactly as given:
    plain ints in range and slices of in-range non-negative int bounds, step None or 1, not empty. None:
    anything else (the full checks of Tensor._check_key then normalise it or raise)."""
    if len(key) > len(shape):
        return None
    delta = 0
    for k, size, stride in zip(key, shape, strides):
        if type(k) is slice:
            start, stop, step = k.start, k.stop, k.step
            if step is not None and (type(step) is not int or step != 1):
                return None
            if start is None:
                start = 0
            elif type(start) is not int or start < 0:
                return None
            if stop is None:
                stop = size
            elif type(stop) is not int or stop > size or stop < 0:
                return None
            if start >= stop:
                return None
            delta += start * stride
        elif type(k) is int and 0 <= k < size:
            delta += k * stride
        else:
            return None
    return delta


_LAYOUTS: dict = {}          # Tensor.layout() interned: the tuple -> its Layout


class Layout(tuple):
    """An interned Tensor.layout(): one object per distinct layout, so it hashes and compares by
    identity (validation keys hold several; hashing their contents was a hot cost)."""
    __slots__ = ()
    __hash__ = object.__hash__
    __eq__ = object.__eq__
    __ne__ = object.__ne__


_FREE_SIZES: dict = {}       # shape -> elements per partition (Tensor.free_size; a view is made per tile cut)
_REL_REGIONS: dict = {}      # on-chip view geometry -> its box relative to the allocation (Tensor._compute_region)
_LAYOUTS_MAX = 1 << 16


class Storage:
    """One allocation: its memory kind, backing numpy array, address and initialisation state."""

    __slots__ = ("kind", "array", "name", "alloc", "hbm_address", "_init_mask", "n_init", "uid",
                 "_ptr", "row_bytes", "on_free", "relocated", "__weakref__")

    def __init__(self, kind: str, array: np.ndarray, name: str, *, initialized: bool,
                 alloc=None, hbm_address: int = 0):
        self.kind = kind
        self.array = array
        self.name = name
        self.alloc = alloc
        self.hbm_address = hbm_address
        self.uid = next(_uids)
        self._ptr = None
        self._init_mask = None if initialized else _UNWRITTEN
        self.n_init = 0
        # bytes per partition (on-chip) of this allocation; read for every region and layout check
        self.row_bytes = array.strides[0] if array.ndim > 1 else array.itemsize
        # (function, argument) called once when the storage dies (an on-chip tile frees its space);
        # cheaper than a weakref.finalize per tile
        self.on_free = None
        # True once a compiler spill reloaded the tile at another address (core.memory.reload): views
        # then recompute their physical box instead of trusting the one they cached
        self.relocated = False

    def __del__(self):
        on_free = self.on_free
        if on_free is not None:
            on_free[0](on_free[1])

    @property
    def init_mask(self) -> np.ndarray | None:
        """Per element: written yet? None once every element has been written. Allocated on first
        use, so a storage whose first write covers all of it never needs one."""
        mask = self._init_mask
        if mask is _UNWRITTEN:
            mask = self._init_mask = np.zeros(self.array.shape, dtype=bool)
        return mask

    @init_mask.setter
    def init_mask(self, mask: np.ndarray | None) -> None:
        self._init_mask = mask

    @property
    def unwritten(self) -> bool:
        """Nothing has been written yet (and no mask allocated)."""
        return self._init_mask is _UNWRITTEN

    @property
    def base_ptr(self) -> int:
        ptr = self._ptr
        if ptr is None:
            ptr = self._ptr = self.array.__array_interface__["data"][0]
        return ptr


class Tensor:
    """A view of a Storage. On-chip tensors have the partition dim first."""

    __slots__ = ("storage", "array", "dtype", "name", "_region", "_offset", "shape", "free_size", "_layout",
                 "_views", "_hz", "_owner", "_writable")

    def __init__(self, storage: Storage, array: np.ndarray, dtype, name: str | None = None):
        self.storage = storage
        self.array = array
        self.dtype = dtype
        self.name = name if name is not None else storage.name
        self._region = None          # cached physical box (recomputed once a spill reload moved the tile)
        self._offset = 0 if array is storage.array else None   # cached byte_offset() (__array_interface__ costs ~2 us)
        self._layout = None          # cached layout()
        self._views = None           # front ends may cache sub-views by key here (a view never changes)
        self._hz = None              # cached hazard-tracker access (timing.hazards.HazardTracker.accesses)
        #                              (both re-made while storage.relocated: a spill reload moved the tile)
        # the launch whose Machine.issue accepts it as an operand (True: any launch); Machine checks again
        # in full whenever this differs from its launch
        alloc = storage.alloc
        self._owner = True if alloc is None else alloc.launch
        self._writable = None        # cached array.flags.writeable (Machine.issue)
        # plain attributes, not properties: read many times per instruction (a view never changes)
        self.shape = shape = array.shape
        free = _FREE_SIZES.get(shape)                          # elements per partition; 1 for a 1-D tensor
        if free is None:
            if len(_FREE_SIZES) >= _LAYOUTS_MAX:
                _FREE_SIZES.clear()
            free = _FREE_SIZES[shape] = math.prod(shape[1:])
        self.free_size: int = free

    # --- description ---------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def size(self) -> int:
        return self.array.size

    @property
    def buffer(self) -> str:
        return self.storage.kind

    @property
    def on_chip(self) -> bool:
        return self.storage.kind != HBM

    @property
    def itemsize(self) -> int:
        return dt.itemsize(self.dtype)

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    def describe(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        return f"'{self.name}'[{dims}] {dt.name_of(self.dtype)} in {self.buffer}"

    def __repr__(self) -> str:
        return f"Tensor({self.describe()})"

    def __len__(self) -> int:
        return self.shape[0]

    # --- addresses ------------------------------------------------------------------------------
    def byte_offset(self) -> int:
        off = self._offset
        if off is None:
            off = self._offset = self.array.__array_interface__["data"][0] - self.storage.base_ptr
        return off

    def _span(self, dims) -> tuple[int, int]:
        lo = hi = 0
        a = self.array
        for d in dims:
            n, s = a.shape[d], a.strides[d]
            if n > 1:
                if s < 0:
                    lo += (n - 1) * s
                else:
                    hi += (n - 1) * s
        return lo, hi

    def region(self) -> tuple[int, int, int, int]:
        """Physical bounding box (p0, p1, b0, b1). HBM: partitions (0, 1), b = linear byte address."""
        r = self._region
        if r is None or self.storage.relocated:
            r = self._region = self._compute_region()
        return r

    def _compute_region(self) -> tuple[int, int, int, int]:
        st, a = self.storage, self.array
        off = self.byte_offset()
        if st.kind == HBM:
            lo, hi = self._span(range(a.ndim))
            base = st.hbm_address + off
            return 0, 1, base + lo, base + hi + a.itemsize
        row = st.row_bytes
        # the box relative to the allocation's corner is a function of the view's geometry: kernels cut
        # the same views out of every instance of a tile
        key = (self.shape, a.strides, row, off, a.itemsize)
        rel = _REL_REGIONS.get(key)
        if rel is None:
            plo, phi, flo, fhi = split_spans(a.shape, a.strides, row)
            p_start, b_start = divmod(off, row)
            rel = (p_start + plo // row, p_start + phi // row + 1, b_start + flo, b_start + fhi + a.itemsize)
            if len(_REL_REGIONS) >= _LAYOUTS_MAX:
                _REL_REGIONS.clear()
            _REL_REGIONS[key] = rel
        alloc = st.alloc
        p0, b0 = alloc.p0, alloc.b0
        return p0 + rel[0], p0 + rel[1], b0 + rel[2], b0 + rel[3]

    def layout(self) -> tuple:
        """Everything hardware-rule checks read of a view, hashable: class, memory, dtype, shape, strides,
        partition pitch and partitions; the byte range too in PSUM (a matmul result must not cross a
        bank), not elsewhere, where no rule reads it (isa.base.validate_once keys instructions on it, so
        the tiles of one SBUF buffer share one key)."""
        lay = self._layout
        if lay is None:
            st = self.storage
            r = self.region()
            lay = (type(self), st.kind, self.dtype, self.shape, self.array.strides, st.row_bytes,
                   r if st.kind == PSUM else r[:2])
            # one object per distinct layout: validation keys holding it then compare by identity
            interned = _LAYOUTS.get(lay)
            if interned is None:
                if len(_LAYOUTS) >= _LAYOUTS_MAX:
                    _LAYOUTS.clear()
                interned = _LAYOUTS[lay] = Layout(lay)
            lay = self._layout = interned
        return lay

    def partition_start(self) -> int:
        return self.region()[0]

    # --- data -----------------------------------------------------------------------------------
    def _mask_view(self) -> np.ndarray | None:
        st = self.storage
        if st.init_mask is None or self.array.itemsize != st.array.itemsize:
            return None
        k = st.array.itemsize
        flat = st.init_mask.reshape(-1)
        return as_strided(flat[self.byte_offset() // k:], shape=self.array.shape,
                          strides=tuple(s // k for s in self.array.strides))

    def _bitcast_cover(self) -> np.ndarray:
        """A bitcast view (itemsize differs from the storage's): for each of its elements, the flat
        indices of the storage elements its bytes fall in, shape (*self.shape, span)."""
        k, a = self.storage.array.itemsize, self.array
        first = np.full(a.shape, self.byte_offset(), dtype=np.int64)
        for d, (n, stride) in enumerate(zip(a.shape, a.strides)):
            shape = [1] * a.ndim
            shape[d] = n
            first = first + np.arange(n, dtype=np.int64).reshape(shape) * stride
        span = np.arange(max(1, a.itemsize // k), dtype=np.int64)
        return first[..., None] // k + span

    def _init_state(self) -> np.ndarray | None:
        """Per element of this view: written yet? (None when the whole storage has been written.)"""
        st = self.storage
        if st.init_mask is None:
            return None
        mask = self._mask_view()
        if mask is not None:
            return mask
        return st.init_mask.reshape(-1)[self._bitcast_cover()].all(axis=-1)

    def read(self, api: str = "read", loc: str = "", where=None) -> np.ndarray:
        """The raw values (storage dtype). Reports reads of never-written elements (only those inside
        `where`, a boolean mask of this view's shape, when an instruction is masked)."""
        mask = self._init_state()
        if mask is not None and where is not None:
            mask = mask | ~np.broadcast_to(where, mask.shape)
        if mask is not None and not mask.all():
            msg = (f"{api}: reads uninitialised memory of {self.describe()} "
                   f"({int(mask.size - np.count_nonzero(mask))} of {mask.size} elements never written; "
                   f"they hold NaN/4 sentinels). At {loc}")
            if strict_uninitialized():
                raise NkiValidationError(msg)
            warnings.warn(msg, UninitializedReadWarning, stacklevel=2)
        return self.array

    def is_initialized(self) -> bool:
        mask = self._init_state()
        return mask is None or bool(mask.all())

    def write(self, values, where=None, *, api: str = "write", loc: str = "") -> None:
        """Round values to this tensor's dtype and store them (optionally only where `where`)."""
        if not self.array.flags.writeable:
            from trnlab.core.srcloc import user_location
            raise NkiValidationError(f"{api}: cannot write to broadcast view {self.describe()} (a stride-0 "
                                     f"dimension has one element behind many indices). At {loc or user_location()}")
        out = dt.cast(values, self.dtype)
        if where is None:
            if out.shape != self.array.shape:
                out = np.broadcast_to(out, self.array.shape)
            self.array[...] = out
        else:
            np.copyto(self.array, np.broadcast_to(out, self.array.shape), where=where)
        self.mark_written(where)

    def mark_written(self, where=None) -> None:
        st = self.storage
        if where is None and st.unwritten and self._covers_storage():
            st.init_mask, st.n_init = None, st.array.size     # the first write covers every element
            return
        if st.init_mask is None:
            return
        mask = self._mask_view()
        if mask is None:                      # a bitcast view: mark the storage elements it covers
            cover = self._bitcast_cover()
            if where is not None:
                cover = cover[np.broadcast_to(where, self.array.shape)]
            flat = st.init_mask.reshape(-1)
            before = int(np.count_nonzero(flat))
            flat[cover.reshape(-1)] = True
            st.n_init += int(np.count_nonzero(flat)) - before
        else:
            before = int(np.count_nonzero(mask))
            if where is None:
                mask[...] = True
                st.n_init += mask.size - before        # every element of the view is now set
            else:
                np.logical_or(mask, where, out=mask)
                st.n_init += int(np.count_nonzero(mask)) - before
        if st.n_init >= st.init_mask.size:
            st.init_mask = None

    def _covers_storage(self) -> bool:
        """This view is every element of its storage, each once."""
        a, whole = self.array, self.storage.array
        return (a.size == whole.size and a.itemsize == whole.itemsize and self.byte_offset() == 0
                and (a.flags.c_contiguous or a.flags.f_contiguous) and whole.flags.c_contiguous)

    def numpy(self) -> np.ndarray:
        """A copy of the values (logical dtype)."""
        return np.array(self.array)

    # --- views ----------------------------------------------------------------------------------
    def _view(self, array: np.ndarray, dtype=None) -> "Tensor":
        return type(self)(self.storage, array, self.dtype if dtype is None else dtype, self.name)

    def _known_view(self, array: np.ndarray, offset: int, layout, writable, region) -> "Tensor":
        """_view(array) with its byte offset, layout, writability and region (None: not known) already
        known (a front end's cached view geometry): the same attributes, set once, without the class
        call (hot: a view per tile cut). A subclass with its own __init__ gets _view and the setting."""
        cls = type(self)
        if cls.__init__ is not _TENSOR_INIT:
            view = self._view(array)
            view._offset, view._layout, view._writable = offset, layout, writable
            if region is not None:
                view._region = region
            return view
        view = _new_object(cls)
        storage = view.storage = self.storage
        view.array = array
        view.dtype = self.dtype
        name = self.name
        view.name = name if name is not None else storage.name
        view._region = region
        view._offset = offset
        view._layout = layout
        view._views = None
        view._hz = None
        alloc = storage.alloc
        view._owner = True if alloc is None else alloc.launch
        view._writable = writable
        view.shape = shape = array.shape
        free = _FREE_SIZES.get(shape)
        if free is None:
            if len(_FREE_SIZES) >= _LAYOUTS_MAX:
                _FREE_SIZES.clear()
            free = _FREE_SIZES[shape] = math.prod(shape[1:])
        view.free_size = free
        return view

    def index(self, key, *, api: str = "indexing", loc: str | None = "") -> "Tensor":
        """Basic indexing (ints, slices, Ellipsis, None) with bounds checks; numpy would silently clip.
        loc=None: find the kernel line only when a check fails (indexing is hot; lookups are not free)."""
        if not isinstance(key, tuple):
            key = (key,)
        key, delta = self._check_key(key, api, loc)
        array = self.array[key]
        view = self._view(array)
        if isinstance(array, np.ndarray):       # (all-int keys give a numpy scalar, a copy)
            view._offset = self.byte_offset() + delta
        return view

    def _check_key(self, key: tuple, api: str, loc: str | None) -> tuple[tuple, int]:
        """The key with slices and ints normalised, and the byte offset it adds to this view's start
        (numpy's rule: an empty slice starts at 0). Hot (every tile index): slices and ints first."""
        shape, strides = self.shape, self.array.strides
        if len(key) > len(shape) and _n_real(key) > len(shape):
            raise OutOfBoundsError(f"{api}: too many indices for {self.describe()}: {len(key)} given for "
                                   f"rank {len(shape)}. At {_at(loc)}")
        fast = _fast_key(key, shape, strides)
        if fast is not None:
            return key, fast
        out, dim, delta = [], 0, 0
        for k in key:
            if type(k) is slice:
                size = shape[dim]
                start, stop, step = k.start, k.stop, k.step
                if step is None:
                    step = 1
                elif type(step) is not int:
                    step = self._index_int(step, "slice step", api, loc)
                if step <= 0:
                    raise ShapeError(f"{api}: slice step must be positive, got {step} on dim {dim} of "
                                     f"{self.describe()}. At {_at(loc)}")
                if start is None:
                    start = 0
                elif type(start) is not int:
                    start = self._index_int(start, "slice start", api, loc)
                if stop is None:
                    stop = size
                elif type(stop) is not int:
                    stop = self._index_int(stop, "slice stop", api, loc)
                if start < 0:
                    start += size
                if stop < 0:
                    stop += size
                if start < 0 or stop > size or start > stop:
                    raise OutOfBoundsError(
                        f"Out-of-bound access for tensor `{self.name}` on dimension {dim}: index range "
                        f"[{start}, {stop - 1}] exceed dimension size of {size} ({api}). At {_at(loc)}")
                if start == stop:
                    raise ShapeError(f"{api}: empty slice [{start}:{stop}] on dim {dim} of {self.describe()}: "
                                     f"a view needs at least 1 element per dimension. At {_at(loc)}")
                out.append(slice(start, stop, step))
                delta += start * strides[dim]
            elif k is None:
                out.append(k)
                continue
            elif k is Ellipsis:
                dim += len(shape) - _n_real(key)
                out.append(k)
                continue
            else:
                size = shape[dim]
                i = k if type(k) is int else self._index_int(k, "index", api, loc)
                if i < -size or i >= size:
                    raise OutOfBoundsError(
                        f"Out-of-bound access for tensor `{self.name}` on dimension {dim}: index {i} "
                        f"exceed dimension size of {size} ({api}). At {_at(loc)}")
                out.append(i)
                delta += (i + size if i < 0 else i) * strides[dim]
            dim += 1
        return tuple(out), delta

    def _index_int(self, k, what: str, api: str, loc: str | None) -> int:
        """An index or slice bound as an int: ints, numpy ints and __index__ objects; a float or a string
        is refused (int() would truncate 1.5 to 1 silently)."""
        if isinstance(k, (float, np.floating, str, bytes, bool, np.bool_)):
            raise ShapeError(f"{api}: {what} {k!r} ({type(k).__name__}) for {self.describe()} must be an int. "
                             f"At {_at(loc)}")
        try:
            return operator.index(k)
        except TypeError:
            pass
        try:
            return int(k)          # front-end index objects that define __int__ only
        except (TypeError, ValueError):
            raise ShapeError(f"{api}: unsupported {what} {k!r} for {self.describe()}. At {_at(loc)}") from None

    def reshape(self, *shape) -> "Tensor":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(s) for s in shape)
        if int(np.prod(shape, dtype=np.int64)) != self.size:
            raise ShapeError(f"reshape: cannot reshape {self.describe()} ({self.size} elements) to {list(shape)}. "
                             f"At {_here()}")
        view = self.array.view()
        try:
            view.shape = shape
        except AttributeError:
            raise ShapeError(f"reshape: {self.describe()} is not contiguous enough to view as {list(shape)}. "
                             f"At {_here()}") from None
        return self._view(view)

    def permute(self, *axes) -> "Tensor":
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return self._view(self.array.transpose(axes))

    def broadcast_to(self, shape) -> "Tensor":
        return self._view(np.broadcast_to(self.array, tuple(shape)))

    def bitcast(self, dtype) -> "Tensor":
        """Reinterpret the bytes (NKI tensor.view(dtype))."""
        dtype = dt.canonical(dtype)
        return self._view(self.array.view(dt.storage(dtype)), dtype)

    def ap(self, pattern, offset: int = 0) -> "Tensor":
        """Address the storage directly: pattern = [[stride, count], ...] in elements (NKI .ap())."""
        st = self.storage
        flat = st.array.reshape(-1).view(self.array.dtype)    # elements of this view's dtype (bitcasts)
        k = flat.itemsize
        total = flat.size
        shape = tuple(int(c) for _, c in pattern)
        strides = tuple(int(s) for s, _ in pattern)
        lo = offset + sum(min(0, (c - 1) * s) for s, c in zip(strides, shape))
        hi = offset + sum(max(0, (c - 1) * s) for s, c in zip(strides, shape))
        if lo < 0 or hi >= total:
            raise OutOfBoundsError(f"ap: access pattern {pattern} offset {offset} reaches elements [{lo}, {hi}] "
                                   f"outside {self.storage.name} ({total} elements). At {_here()}")
        return self._view(as_strided(flat[offset:], shape=shape, strides=tuple(s * k for s in strides)))


_TENSOR_INIT = Tensor.__init__      # (Tensor._known_view builds a view of a class that keeps it)
_new_object = object.__new__
