"""NkiTensor: the current front end's tensor. Every view (slicing, nl.ds, reshape, permute, broadcast,
select, .view(dtype), .ap) shares the storage and costs nothing; nested views compose."""
from __future__ import annotations

from mmap import mmap as _mmap

import numpy as np
from numpy.lib.stride_tricks import as_strided

from trnlab.core import dtypes as dt
from trnlab.core.srcloc import user_location
from trnlab.core.tensor import HBM, Tensor
from trnlab.errors import NkiValidationError, OutOfBoundsError, ShapeError
from trnlab.frontend.indexing import DynSlice  # noqa: F401  (nl.ds)


_VIEWS_MAX = 256          # sub-views cached per tensor (NkiTensor.__getitem__)
# (layout, byte offset, key signature) -> (normalised key, byte delta, view layout, box relative to the
# allocation, cut). cut: (array, array[key]) of the latest on-chip array of a timing-only run cut this way;
# those tiles all share one array of the zero pages (core.machine.Machine._zero_view), so the next
# instance of a loop's tile reuses the cut (numpy's indexing is most of a view's cost)
_TEMPLATES: dict = {}
_TEMPLATES_MAX = 1 << 16


class NkiTensor(Tensor):
    __slots__ = ()

    # --- indexing -----------------------------------------------------------------------------------
    def __getitem__(self, key) -> "NkiTensor":
        if type(key) is not tuple and not isinstance(key, tuple):
            key = (key,)
        # A kernel cuts the same tiles out of a buffer many times (each rhs tile once per lhsT tile): a
        # key of plain ints and int-bounded slices gets the view made the first time (views never change;
        # its region and layout are then computed once, not per use). The cache key stands for a key of
        # exact ints and slices with exact-int (or None) bounds; any other key is not cached. Exact types:
        # True, 1.0 and np.int64(1) compare equal to 1 but index differently (or raise), so they must not
        # find a view cut by an int.
        sig = []
        for k in key:
            tk = type(k)
            if tk is slice:
                a, b, c = k.start, k.stop, k.step
                if (a is None or type(a) is int) and (b is None or type(b) is int) and (c is None or type(c) is int):
                    sig.append((a, b, c))
                else:
                    return self._index_key(key)
            elif tk is int:
                sig.append(k)
            else:
                return self._index_key(key)
        sig = tuple(sig)
        views = self._views
        if views is None:
            views = self._views = {}
        else:
            view = views.get(sig)
            if view is not None:
                return view
        view = self._templated_view(key, sig)
        if type(view.array) is np.ndarray:      # (an all-int key gives a copy: never cached)
            if len(views) >= _VIEWS_MAX:
                views.clear()
            views[sig] = view
        return view

    def _templated_view(self, key: tuple, sig: tuple) -> "NkiTensor":
        """The view of a plain key. Cutting the same key out of another tensor of the same layout at the
        same offset (the next instance of a loop's tile) gives the same normalised key, byte offset and
        layout: kept as a template, they skip the key checks and the layout computation."""
        lay = self._layout
        if lay is None:
            lay = self.layout()
        offset = self.byte_offset()
        tkey = (lay, offset, sig)
        template = _TEMPLATES.get(tkey)
        array = self.array
        if template is not None:
            norm, delta, layout, rel, cut = template
            if cut is not None and cut[0] is array:     # the tile's array is the one last cut: reuse the cut
                sub = cut[1]
            else:
                sub = array[norm]
                if rel is not None and type(array.base) is _mmap:
                    _TEMPLATES[tkey] = (norm, delta, layout, rel, (array, sub))
            writable = self._writable       # (a basic-indexing view is writable iff its base is)
            if writable is None:
                writable = self._writable = array.flags.writeable
            region = None
            if rel is not None:             # on chip: the box is the allocation's corner + rel
                alloc = self.storage.alloc
                p0, b0 = alloc.p0, alloc.b0
                region = (p0 + rel[0], p0 + rel[1], b0 + rel[2], b0 + rel[3])
            return self._known_view(sub, offset + delta, layout, writable, region)
        norm, delta = self._check_key(self._resolve_key(key), "indexing", None)
        view = self._view(array[norm])
        if type(view.array) is np.ndarray:
            view._offset = offset + delta
            rel = cut = None
            alloc = self.storage.alloc
            if self.storage.kind != HBM and alloc is not None:
                p0, p1, b0, b1 = view.region()
                rel = (p0 - alloc.p0, p1 - alloc.p0, b0 - alloc.b0, b1 - alloc.b0)
                if type(array.base) is _mmap:
                    cut = (array, view.array)
            if len(_TEMPLATES) >= _TEMPLATES_MAX:
                _TEMPLATES.clear()
            _TEMPLATES[tkey] = (norm, delta, view.layout(), rel, cut)
        return view

    def _index_key(self, key: tuple) -> "NkiTensor":
        # loc=None: the kernel line is looked up only if the key fails its checks
        return self.index(self._resolve_key(key), api="indexing", loc=None)

    def _resolve_key(self, key: tuple) -> tuple:
        """The key as Tensor.index takes it: nl.ds slices made slices, on-chip ranks kept (_keep_rank)."""
        ints = 0
        for k in key:
            if type(k) is not slice:            # (hot: most tile keys are slices and a few ints)
                if isinstance(k, DynSlice):
                    key = tuple(k.as_slice() if isinstance(k, DynSlice) else k for k in key)
                    ints = sum(1 for k in key if type(k) is not slice)
                    break
                ints += 1
        # _keep_rank changes only an int on dim 0 or a key that would leave fewer than 2 dims
        if ints and self.storage.kind != HBM and (type(key[0]) is not slice or self.array.ndim - ints < 2):
            key = self._keep_rank(key)
        return key

    def _keep_rank(self, key: tuple) -> tuple:
        """On-chip: an int on the partition dim keeps a size-1 dim; an int on a free dim drops it
        unless the result would fall below 2-D."""
        ints = []
        for i, k in enumerate(key):
            if k is Ellipsis or k is None:
                return key
            if not isinstance(k, slice):
                ints.append(i)
        if not ints:
            return key
        out = None
        remaining = self.array.ndim - len(ints)
        for i in ints:
            if i == 0 or remaining < 2:
                v = self._index_int(key[i], "index", "indexing", None)
                v = v + self.array.shape[i] if v < 0 else v
                if out is None:
                    out = list(key)
                out[i] = slice(v, v + 1)
                remaining += 1
        return key if out is None else tuple(out)

    def __setitem__(self, key, value):
        """t[...] = u (NKI 0.6 kernels commit loop-carried state this way): a copy into the view, by
        DMA when either side is in HBM, else tensor_copy on the Vector engine; a scalar is a memset."""
        from trnlab.core.machine import current
        from trnlab.isa import instructions as ins
        from trnlab.isa.base import Engine
        loc, dst = user_location(), self[key]
        if isinstance(value, Tensor):
            if HBM in (dst.buffer, value.buffer):
                instr = ins.DmaCopy(api="tensor assignment", loc=loc, dst=dst, src=value)
            else:
                instr = ins.TensorCopy(api="tensor assignment", loc=loc, dst=dst, src=value, engine=Engine.VECTOR)
        elif np.ndim(value) == 0 and not isinstance(value, (str, bytes)):
            instr = ins.Memset(api="tensor assignment", loc=loc, dst=dst, value=value, engine=Engine.VECTOR)
        else:
            raise NkiValidationError(f"tensor assignment: the value must be an NKI tensor or a scalar, got "
                                     f"{type(value).__name__}. At {loc}")
        current().issue(instr)

    def __iter__(self):
        raise TypeError("NKI tensors are not iterable; index them explicitly")

    def __bool__(self) -> bool:
        """Simulator-only truth value (as in AWS's doc examples `assert nl.equal(a, b)`): all elements != 0."""
        return bool(np.all(dt.to_fp32(self.read("bool(tensor)", user_location())) != 0))

    # --- attributes of AWS's NkiTensor ----------------------------------------------------------------
    @property
    def strides(self) -> tuple:
        """Element strides of this view."""
        k = self.array.itemsize
        return tuple(s // k for s in self.array.strides)

    @property
    def offset(self) -> int:
        """Element offset of this view from the start of its storage."""
        return self.byte_offset() // self.array.itemsize

    def get_pattern(self) -> list:
        """The view's access pattern [[stride, count], ...] in elements."""
        return [[s, n] for s, n in zip(self.strides, self.shape)]

    def is_contiguous(self) -> bool:
        return bool(self.array.flags.c_contiguous)

    # --- views ----------------------------------------------------------------------------------------
    def _fail(self, api: str, msg: str, cls=ShapeError):
        raise cls(f"{api}: {msg} ({self.describe()}). At {user_location()}")

    def reshape(self, *shape) -> "NkiTensor":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(s) for s in shape)
        if self.on_chip and (len(shape) < 2 or shape[0] != self.shape[0]):
            self._fail("reshape", f"cannot reshape an on-chip tensor to {list(shape)}: the partition dim "
                                  f"{self.shape[0]} must stay dim 0 and the result needs a free dim")
        return super().reshape(shape)

    def permute(self, *axes) -> "NkiTensor":
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        axes = tuple(int(a) % self.ndim for a in axes)
        if sorted(axes) != list(range(self.ndim)):
            self._fail("permute", f"{list(axes)} is not a permutation of {self.ndim} dims")
        if self.on_chip and axes[0] != 0:
            self._fail("permute", f"{list(axes)} moves the partition dim of an on-chip tensor")
        return super().permute(axes)

    def view(self, dtype) -> "NkiTensor":
        """Reinterpret the bytes as dtype (the last dim scales with the item size)."""
        return self.bitcast(dtype)

    def reinterpret_cast(self, dtype) -> "NkiTensor":
        return self.bitcast(dtype)

    def broadcast(self, dim: int, size: int) -> "NkiTensor":
        """Expand the size-1 dim `dim` to `size` (stride 0)."""
        dim = int(dim) % self.ndim
        if self.shape[dim] != 1:
            self._fail("broadcast", f"dim {dim} has size {self.shape[dim]}, only size-1 dims broadcast")
        shape = list(self.shape)
        shape[dim] = int(size)
        return self.broadcast_to(tuple(shape))

    def expand_dim(self, dim: int) -> "NkiTensor":
        dim = int(dim) % (self.ndim + 1)
        if self.on_chip and dim == 0:
            self._fail("expand_dim", "cannot insert a dim before the partition dim")
        return self._view(np.expand_dims(self.array, dim))

    def squeeze_dim(self, dim: int) -> "NkiTensor":
        dim = int(dim) % self.ndim
        if self.shape[dim] != 1:
            self._fail("squeeze_dim", f"dim {dim} has size {self.shape[dim]}, not 1")
        if self.on_chip and (dim == 0 or self.ndim <= 2):
            self._fail("squeeze_dim", "on-chip tensors keep the partition dim and at least one free dim")
        return self._view(np.squeeze(self.array, axis=dim))

    def flatten_dims(self, start: int, end: int) -> "NkiTensor":
        """Merge dims start..end (inclusive) into one."""
        start, end = int(start) % self.ndim, int(end) % self.ndim
        if self.on_chip and start == 0 and end > 0:
            self._fail("flatten_dims", "cannot merge the partition dim with free dims")
        shape = self.shape[:start] + (int(np.prod(self.shape[start:end + 1])),) + self.shape[end + 1:]
        return self.reshape(shape)

    def reshape_dim(self, dim: int, shape) -> "NkiTensor":
        """Split dim `dim` into `shape`."""
        dim = int(dim) % self.ndim
        return self.reshape(self.shape[:dim] + tuple(int(s) for s in shape) + self.shape[dim + 1:])

    def select(self, dim: int, index: int) -> "NkiTensor":
        """Pick one index of dim `dim`, dropping it."""
        dim = int(dim) % self.ndim
        if self.on_chip and (dim == 0 or self.ndim <= 2):
            self._fail("select", "on-chip tensors keep the partition dim and at least one free dim")
        key = [slice(None)] * self.ndim
        key[dim] = int(index)
        return self.index(tuple(key), api="select", loc=user_location())

    def slice(self, dim: int, start: int, end: int, step: int = 1) -> "NkiTensor":
        dim = int(dim) % self.ndim
        key = [slice(None)] * self.ndim
        key[dim] = slice(start, end, step)      # bounds checked (ints only) by index()
        return self.index(tuple(key), api="slice", loc=user_location())

    def transpose(self, *axes):
        return self.permute(*axes) if axes else self.permute(tuple(reversed(range(self.ndim))))

    def rearrange(self, src_pattern, dst_pattern, fixed_sizes=None):
        raise NotImplementedError(f"NkiTensor.rearrange is not modelled by trnlab; use reshape/permute. "
                                  f"At {user_location()}")

    def indirect(self, index, num_elem=None):
        """Tensor Indirection (NeuronCore-v4+): a gather/scatter view for nisa.tensor_copy (see
        trnlab.isa.indirection). num_elem defaults to index.size, as AWS documents."""
        from trnlab.isa.indirection import TensorIndirection
        return TensorIndirection(self, index, int(index.size if num_elem is None else num_elem))

    def vector_select(self, dim, vector_offset):
        raise NotImplementedError(f"NkiTensor.vector_select is not modelled by trnlab; use .ap(vector_offset=). "
                                  f"At {user_location()}")

    def is_indirect(self) -> bool:
        return False

    # --- access patterns --------------------------------------------------------------------------------
    def ap(self, pattern, offset: int = 0, scalar_offset=None, vector_offset=None, indirect_dim=0,
           dtype=None):
        """Address the storage directly ([[step, num], ...] in elements of dtype, from `offset`), ignoring
        the current view. On-chip, the first pair walks partitions: its step must be the storage's
        elements per partition."""
        if scalar_offset is not None or vector_offset is not None:
            from trnlab.isa import dma   # indirect access patterns live in the ISA layer
            pattern = tuple((int(s), int(c)) for s, c in pattern)
            if vector_offset is not None:
                if scalar_offset is not None:
                    raise NkiValidationError(f"ap: vector_offset and scalar_offset are mutually exclusive. "
                                             f"At {user_location()}")
                base = self.bitcast(dtype) if dtype is not None else self
                return dma.IndirectAccess(base, pattern, int(offset), vector_offset, int(indirect_dim))
            t = dma.resolve_scalar_offset(self, pattern, offset, scalar_offset, int(indirect_dim),
                                          api="ap", loc=user_location())
            return t.bitcast(dtype) if dtype is not None else t
        return self._static_ap(pattern, int(offset), dtype)

    def _static_ap(self, pattern, offset: int, dtype) -> "NkiTensor":
        loc = user_location(3)
        dtype = dt.canonical(dtype) if dtype is not None else self.storage_dtype()
        st = self.storage
        flat = st.array.reshape(-1).view(np.uint8).view(dt.storage(dtype))
        pattern = [(int(s), int(c)) for s, c in pattern]
        if not pattern:
            raise ShapeError(f"ap: empty access pattern on {self.describe()}. At {loc}")
        if self.on_chip:
            per_partition = flat.size // st.array.shape[0]
            if pattern[0][1] > 1 and pattern[0][0] != per_partition:
                raise NkiValidationError(
                    f"ap: the first [step, num] pair walks partitions, so its step must be the {per_partition} "
                    f"elements per partition of '{st.name}', got {pattern[0][0]} (pattern {pattern}). At {loc}")
        shape = tuple(c for _, c in pattern)
        strides = tuple(s for s, _ in pattern)
        lo = offset + sum(min(0, (c - 1) * s) for s, c in pattern)
        hi = offset + sum(max(0, (c - 1) * s) for s, c in pattern)
        if lo < 0 or hi >= flat.size:
            raise OutOfBoundsError(f"ap: access pattern {pattern} offset {offset} reaches elements [{lo}, {hi}] "
                                   f"outside '{st.name}' ({flat.size} elements of {dt.name_of(dtype)}). At {loc}")
        k = flat.itemsize
        arr = as_strided(flat[offset:], shape=shape, strides=tuple(s * k for s in strides))
        return type(self)(st, arr, dtype, self.name)

    def storage_dtype(self):
        """The logical dtype of the whole allocation (this view's dtype unless it was reinterpreted)."""
        return self.dtype if self.array.itemsize == self.storage.array.itemsize else self.storage.array.dtype
