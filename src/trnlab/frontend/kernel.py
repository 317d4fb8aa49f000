"""Kernel objects for @nki.jit: call to run on the simulator, index to launch a grid/LNC."""
from __future__ import annotations

import functools
import operator

from trnlab.core.machine import has_current
from trnlab.errors import LaunchError
from trnlab.runtime import run_kernel


class Kernel:
    """A jitted kernel. Called from host code it runs on a fresh simulated NeuronCore and returns
    host arrays; called from inside another kernel it is an ordinary function call (a sub-kernel)."""

    def __init__(self, fn, *, tensor_class, grid=(1,), options=None):
        self.fn = fn
        self.tensor_class = tensor_class
        self.grid = launch_grid(grid)
        self.options = dict(options or {})
        self.last_run = None
        functools.update_wrapper(self, fn)

    def __getitem__(self, grid) -> "Kernel":
        return Kernel(self.fn, tensor_class=self.tensor_class, grid=grid, options=self.options)

    def __call__(self, *args, **kwargs):
        if has_current():
            return self.fn(*args, **kwargs)
        return self.run(args, kwargs).outputs

    def run(self, args, kwargs, *, target=None, numerics=True, timing=True, trace=False,
            max_instructions=None, progress=None):
        """One run on a fresh machine (runtime.run_kernel); max_instructions and progress default to the
        kernel's options (@nki.jit(max_instructions=...))."""
        opts = self.options
        if max_instructions is None:
            max_instructions = opts.get("max_instructions")
        if progress is None:
            progress = opts.get("progress")
        run = run_kernel(self.fn, args, kwargs, target=target or opts.get("target"),
                         numerics=numerics, timing=timing, trace=trace, grid=self.grid,
                         tensor_class=self.tensor_class, threads=opts.get("lnc_threads"),
                         max_instructions=max_instructions, progress=progress,
                         stack_alloc=opts.get("stack_allocator", False))
        self.last_run = run
        return run


def launch_grid(grid) -> tuple:
    """kernel[2], kernel[2, 3], kernel[nl.spmd_dim(...)]: a tuple of positive ints. A zero or negative
    dimension would run no program and return nothing; a float would be truncated."""
    dims = grid if isinstance(grid, (tuple, list)) else (grid,)
    out = []
    for d in dims:
        try:
            n = operator.index(d)
        except TypeError:
            n = None
        if n is None or n < 1:
            from trnlab.core.srcloc import user_location
            raise LaunchError(f"kernel launch grid {list(dims)!r}: every grid dimension must be an int >= 1 "
                              f"(the number of programs along it), got {d!r}. At {user_location()}")
        out.append(n)
    if not out:
        raise LaunchError("kernel launch grid (): give at least one dimension, e.g. kernel[2]")
    return tuple(out)


def unwrap(kernel):
    """(python function, grid) of a Kernel, a plain function, or a functools.partial."""
    if isinstance(kernel, Kernel):
        return kernel.fn, kernel.grid
    return kernel, (1,)
