"""neuronxcc.nki.compiler (ncc): allocation hints and compiler directives.

Allocation hints (`buffer=ncc.sbuf.mod_alloc(...)`) choose the memory; trnlab ignores the requested
placement but keeps capacity accounting (the tile is allocated like any other). Directives that only
steer the compiler's scheduling are accepted and have no effect on the simulation."""
from __future__ import annotations

import contextlib

from trnlab.core.tensor import PSUM as _PSUM, SBUF as _SBUF


class _Alloc:
    """An allocation hint object passed as `buffer=`; it behaves like nl.sbuf / nl.psum."""

    def __init__(self, kind: str, how: str, args, kwargs):
        self.kind, self.how, self.args, self.kwargs = kind, how, args, kwargs

    def __repr__(self) -> str:
        return f"ncc.{self.kind}.{self.how}(...)"


class _Memory:
    def __init__(self, kind: str):
        self.kind = kind

    def mod_alloc(self, *args, **kwargs) -> _Alloc:
        """Modular allocation (base_addr=, base_partition=, num_par_tiles=, num_free_tiles=)."""
        return _Alloc(self.kind, "mod_alloc", args, kwargs)

    def alloc(self, *args, **kwargs) -> _Alloc:
        """Custom allocation callback: accepted, placement ignored."""
        return _Alloc(self.kind, "alloc", args, kwargs)

    def auto_alloc(self, *args, **kwargs) -> _Alloc:
        return _Alloc(self.kind, "auto_alloc", args, kwargs)


sbuf = _Memory(_SBUF)
psum = _Memory(_PSUM)


def _passthrough_decorator(fn=None, **_):
    if fn is None:
        return lambda f: f
    return fn


skip_middle_end_transformations = _passthrough_decorator
enable_stack_allocator = _passthrough_decorator
force_auto_alloc = _passthrough_decorator


@contextlib.contextmanager
def no_reorder():
    """Instructions issue in program order anyway (the simulator runs them as written)."""
    yield


def multi_buffer(*args, **kwargs):
    return _passthrough_decorator(*args[:1]) if args and callable(args[0]) else (lambda f: f)


