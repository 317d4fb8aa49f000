"""neuronxcc.nki.compiler (ncc): allocation hints and compiler directives.

Allocation hints (`buffer=ncc.sbuf.mod_alloc(...)`) choose the memory; trnlab ignores the requested
placement but keeps capacity accounting (the tile is allocated like any other). Directives that only
steer the compiler's scheduling are accepted and have no effect on the simulation; enable_stack_allocator
changes how SBUF addresses are chosen (CompilerModel.stack_allocator)."""
from __future__ import annotations

import contextlib

import numpy as np

from trnlab.core.tensor import PSUM as _PSUM, SBUF as _SBUF


class _Alloc:
    """An allocation hint object passed as `buffer=`; it behaves like nl.sbuf / nl.psum."""

    def __init__(self, kind: str, how: str, args, kwargs):
        self.kind, self.how, self.args, self.kwargs = kind, how, args, kwargs

    def __repr__(self) -> str:
        return f"ncc.{self.kind}.{self.how}(...)"

    def psum_placement(self, shape: tuple, par_axis: int, itemsize: int, bank_bytes: int):
        """(address, footprint bytes) of psum.mod_alloc(base_bank=, num_bank_tiles=): the tiles of the block
        dims (those before the partition dim) cycle through prod(num_bank_tiles) banks from base_bank, so a
        block tensor holds only that many tiles' banks. (None, None) for any other allocation."""
        blocks = shape[:par_axis]
        tile_bytes = int(np.prod(shape[par_axis + 1:], dtype=np.int64)) * itemsize
        tile_banks = max(1, -(-tile_bytes // bank_bytes))
        if self.kind == _PSUM and self.how == "alloc" and self.args and callable(self.args[0]):
            return self._callback_banks(blocks, shape[par_axis], tile_bytes, tile_banks, bank_bytes)
        if self.kind != _PSUM or self.how != "mod_alloc":
            return None, None
        base = self.kwargs.get("base_bank", self.args[0] if self.args else 0)
        tiles = self.kwargs.get("num_bank_tiles", self.args[1] if len(self.args) > 1 else None)
        if tiles is None:
            return int(base) * bank_bytes, None
        tiles = tuple(int(n) for n in (tiles if isinstance(tiles, (tuple, list)) else (tiles,)))
        reuse = int(np.prod([min(n, b) for n, b in zip(tiles, blocks)], dtype=np.int64)) if blocks else 1
        return int(base) * bank_bytes, reuse * tile_banks * bank_bytes

    def _callback_banks(self, blocks, pdim_size, tile_bytes, tile_banks, bank_bytes):
        """psum.alloc(func): func(block_index, pdim_size, fdim_size) -> (bank, partition, byte offset) per
        block tile. Accounted as the span from its lowest to its highest bank (a gap between them counts too)."""
        call = self.args[0]
        banks = [int(call(idx=idx, pdim_size=pdim_size, fdim_size=tile_bytes)[0]) for idx in np.ndindex(*blocks)]
        lo, hi = min(banks), max(banks) + tile_banks
        return lo * bank_bytes, (hi - lo) * bank_bytes


class _Memory:
    def __init__(self, kind: str):
        self.kind = kind

    def mod_alloc(self, *args, **kwargs) -> _Alloc:
        """Modular allocation (base_addr=, base_partition=, num_par_tiles=, num_free_tiles=)."""
        return _Alloc(self.kind, "mod_alloc", args, kwargs)

    def alloc(self, *args, **kwargs) -> _Alloc:
        """Custom allocation callback: SBUF placement is ignored; PSUM banks are accounted (psum_placement)."""
        return _Alloc(self.kind, "alloc", args, kwargs)

    def auto_alloc(self, *args, **kwargs) -> _Alloc:
        return _Alloc(self.kind, "auto_alloc", args, kwargs)


sbuf = _Memory(_SBUF)
psum = _Memory(_PSUM)


def _passthrough_decorator(fn=None, **_):
    if fn is None:
        return lambda f: f
    return fn


def enable_stack_allocator(func=None, log_level=50):
    """The kernel's SBUF tiles are allocated as a stack (CompilerModel.stack_allocator): marks a jitted
    kernel (the documented order puts this decorator above @nki.jit), the kernel inside a benchmark or
    profile wrapper (@nki.jit(mode="benchmark"), @nki.benchmark, @nki.profile), or a function jitted
    or wrapped later (nki_beta1._run_options)."""
    def mark(k):
        kernel = getattr(k, "kernel", k)       # (Benchmarked / Profiled keep the kernel they run here)
        if hasattr(kernel, "options"):
            kernel.options["stack_allocator"] = True
        else:
            k._trnlab_stack_allocator = True
        return k
    return mark(func) if func is not None else mark


skip_middle_end_transformations = _passthrough_decorator
force_auto_alloc = _passthrough_decorator


@contextlib.contextmanager
def no_reorder():
    """Instructions issue in program order anyway (the simulator runs them as written)."""
    yield


def multi_buffer(*args, **kwargs):
    return _passthrough_decorator(*args[:1]) if args and callable(args[0]) else (lambda f: f)


