"""Indirect DMA: gather / scatter through a B2 access pattern with a per-partition index tile.

`t.ap(pattern=[[s0, n0], [s1, n1], ...], offset=o, vector_offset=idx, indirect_dim=d)` addresses
element (i0, i1, ...) of t's storage at  o + sum_k s_k * j_k  where j_k = i_k except j_d = idx[i_d]
(ISA dma_copy doc: vector indirection, one row index per partition). A row whose addresses leave the
tensor is out of bounds: oob_mode 'error' raises, 'skip' drops that row's transfer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from trnlab.core import dtypes as dt
from trnlab.core.tensor import HBM, SBUF, OperandOf, Tensor
from trnlab.errors import DtypeError, NkiValidationError, OutOfBoundsError, ShapeError
from trnlab.isa.base import DmaInstruction, Engine, Instruction, expect_buffer, expect_oob_mode
from trnlab.isa.base import fast_init as _fast_init, instruction_classes as _instruction_classes


@dataclass(frozen=True, slots=True)
class IndirectAccess(OperandOf):
    """An access pattern on `tensor`'s storage whose dim `indirect_dim` is indexed by the `index` tile."""
    tensor: Tensor
    pattern: tuple            # ((stride, count), ...) in elements
    offset: int
    index: Tensor
    indirect_dim: int = 0

    # --- the little of the Tensor interface front ends and messages use ---
    @property
    def shape(self) -> tuple:
        return tuple(int(c) for _, c in self.pattern)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def ndim(self) -> int:
        return len(self.pattern)

    def describe(self) -> str:
        dims = ",".join(str(c) for c in self.shape)
        return (f"'{self.name}'.ap([{dims}], indirect_dim={self.indirect_dim}, vector_offset="
                f"'{self.index.name}') {dt.name_of(self.dtype)} in {self.buffer}")

    def whole(self) -> Tensor:
        """The whole underlying storage as a tensor (for hazards: any element may be touched)."""
        return self.tensor._view(self.tensor.storage.array)

    def offsets(self, rows: np.ndarray) -> np.ndarray:
        """Element offsets (int64, shape = self.shape) with dim indirect_dim indexed by `rows`."""
        out = np.full(self.shape, int(self.offset), dtype=np.int64)
        for k, (stride, count) in enumerate(self.pattern):
            i = rows if k == self.indirect_dim else np.arange(int(count), dtype=np.int64)
            shape = [1] * len(self.pattern)
            shape[k] = int(count)
            out += (np.asarray(i, dtype=np.int64) * int(stride)).reshape(shape)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class DmaIndirect(DmaInstruction, Instruction):
    """dst = src where exactly one of them is an IndirectAccess (gather from / scatter to HBM)."""
    opcode: ClassVar[str] = "dma_indirect"
    dst: "Tensor | IndirectAccess"
    src: "Tensor | IndirectAccess"
    oob_mode: str = "error"
    engine: Engine = Engine.DMA
    queue: int | None = None

    @property
    def _ia(self) -> IndirectAccess:
        return self.dst if isinstance(self.dst, IndirectAccess) else self.src

    def reads(self):
        src = self.src.whole() if isinstance(self.src, IndirectAccess) else self.src
        return (src, self._ia.index)

    def writes(self):
        return (self.dst.whole() if isinstance(self.dst, IndirectAccess) else self.dst,)

    def validate(self, chip):
        if isinstance(self.dst, IndirectAccess) == isinstance(self.src, IndirectAccess):
            self.fail(NkiValidationError, "exactly one of dst and src may use vector_offset indirection")
        ia, plain = (self.dst, self.src) if isinstance(self.dst, IndirectAccess) else (self.src, self.dst)
        expect_buffer(self, "indirect tensor", ia.tensor, (HBM,))
        expect_buffer(self, "vector_offset", ia.index, (SBUF,))
        expect_buffer(self, "dst" if plain is self.dst else "src", plain, (HBM, SBUF))
        if not dt.is_int(ia.index.dtype):
            self.fail(DtypeError, f"vector_offset {ia.index.describe()} must be an integer tile")
        if not 0 <= ia.indirect_dim < ia.ndim:
            self.fail(ShapeError, f"indirect_dim {ia.indirect_dim} outside the {ia.ndim}-D pattern {list(ia.pattern)}")
        rows = int(ia.pattern[ia.indirect_dim][1])
        if ia.index.size != rows:
            self.fail(ShapeError, f"vector_offset {ia.index.describe()} holds {ia.index.size} indices; the "
                                  f"indirect dim {ia.indirect_dim} of the pattern has {rows}")
        if plain.size != ia.size:
            self.fail(ShapeError, f"element counts differ: {plain.describe()} has {plain.size}, "
                                  f"{ia.describe()} has {ia.size}")
        if dt.itemsize(ia.tensor.dtype) != ia.tensor.storage.array.itemsize:
            self.fail(NkiValidationError, f"indirect access through a bitcast view {ia.describe()} is not modelled")
        expect_oob_mode(self)

    def execute(self, m):
        ia = self._ia
        rows = self.raw(ia.index).reshape(-1).astype(np.int64)
        offs = ia.offsets(rows)
        flat = ia.tensor.storage.array.reshape(-1)
        ok_elem = (offs >= 0) & (offs < flat.size)
        other = tuple(k for k in range(ia.ndim) if k != ia.indirect_dim)
        ok_row = ok_elem.all(axis=other) if other else ok_elem
        if not ok_row.all() and self.oob_mode == "error":
            r = int(np.flatnonzero(~ok_row)[0])
            self.fail(OutOfBoundsError, f"indirect index {int(rows[r])} (vector_offset '{ia.index.name}'[{r}]) "
                                        f"reaches outside '{ia.tensor.storage.name}' ({flat.size} elements) "
                                        f"through {ia.describe()} (oob_mode=error)")
        keep = np.broadcast_to(np.expand_dims(ok_row, other), ia.shape)
        if ia is self.src:
            self._gather(ia, flat, offs, keep)
        else:
            self._scatter(ia, flat, offs, keep)

    def _gather(self, ia, flat, offs, keep):
        src_init = ia.tensor.storage.init_mask
        if src_init is not None and not src_init.reshape(-1)[offs[keep]].all():
            self.raw(ia.whole())                     # reports the uninitialised read
        values = np.zeros(ia.shape, dtype=flat.dtype)
        values[keep] = flat[offs[keep]]
        same = flat.dtype == dt.storage(self.dst.dtype)
        values = (values if same else dt.to_fp32(values)).reshape(self.dst.shape)
        self.dst.write(values, where=keep.reshape(self.dst.shape))

    def _scatter(self, ia, flat, offs, keep):
        src = self.raw(self.src)
        same = src.dtype == flat.dtype
        values = (src if same else dt.to_fp32(src)).reshape(ia.shape)
        flat[offs[keep]] = dt.cast(values[keep], ia.tensor.dtype)
        st = ia.tensor.storage
        if st.init_mask is not None:
            mask = st.init_mask.reshape(-1)
            before = int(np.count_nonzero(mask))
            mask[offs[keep]] = True
            st.n_init += int(np.count_nonzero(mask)) - before
            if st.n_init >= mask.size:
                st.init_mask = None

    def dma_bytes(self) -> int:
        ia = self._ia
        return ia.size * dt.itemsize(ia.dtype) + ia.index.nbytes


def resolve_scalar_offset(t: Tensor, pattern, offset: int, scalar_offset, indirect_dim: int, *,
                          api: str, loc: str) -> Tensor:
    """Scalar indirection, resolved eagerly: the whole pattern moves by value * the row-major stride of
    dimension `indirect_dim` of the tensor `.ap()` is called on (a tensor dimension, not a pattern entry:
    nki-library's TensorView drops the selected dimension from the pattern and names the base tensor's
    dimension, reshaping the base to create one when needed).

    `scalar_offset` is a [1, 1] SBUF/HBM tile or anything int() accepts (e.g. a register value)."""
    if isinstance(scalar_offset, Tensor):
        if scalar_offset.size != 1:
            raise ShapeError(f"{api}: scalar_offset {scalar_offset.describe()} must hold one element. At {loc}")
        value = int(np.asarray(scalar_offset.read(api, loc)).reshape(-1)[0])
    else:
        try:
            value = int(scalar_offset)
        except TypeError:
            raise NotImplementedError(f"{api}: scalar_offset of type {type(scalar_offset).__name__} is not "
                                      f"modelled (use a [1, 1] tile). At {loc}") from None
    shape = tuple(t.shape)
    if not 0 <= indirect_dim < len(shape):
        raise ShapeError(f"{api}: indirect_dim {indirect_dim} outside the dimensions of {t.describe()} "
                         f"(shape {list(shape)}). At {loc}")
    shifted = int(offset) + value * int(np.prod(shape[indirect_dim + 1:], dtype=np.int64))
    try:
        return t.ap(pattern, shifted)
    except OutOfBoundsError as exc:
        raise OutOfBoundsError(f"{api}: dynamic offset {value} (scalar_offset, indirect_dim={indirect_dim}): "
                               f"{str(exc).rsplit('. At ', 1)[0]}. At {loc}") from None


_fast_init(*_instruction_classes(globals()))     # (isa.base.fast_init: instructions are built per issue)
