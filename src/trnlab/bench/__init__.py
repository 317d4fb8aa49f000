"""trnlab.benchmark(kernel, target=..., numerics=True)(*args) -> BenchmarkResult.

Runs a kernel (an @nki.jit Kernel or a plain function written against the NKI front end) on the
simulated NeuronCore and reports the timing model's view (trnlab.timing.benchmark.BenchmarkResult).
numerics=False skips the arithmetic (timing-only); both modes give the same times. It sits above the
front ends it runs kernels through; `trnlab calibrate` (bench.calibrate) sits above the kernel library.
"""
from __future__ import annotations

from trnlab.nki.tensor import NkiTensor
from trnlab.runtime import run_kernel
from trnlab.timing.benchmark import BenchmarkResult, summarize


def benchmark(kernel, *, target=None, numerics: bool = True, trace: bool = False, top: int = 10,
              max_instructions: int | None = None, progress=None):
    """benchmark(kernel, target="trn2")(*args, **kwargs) -> BenchmarkResult.
    max_instructions / progress: as runtime.run_kernel (InstructionLimitError; stderr status line)."""
    fn = getattr(kernel, "fn", kernel)
    grid = tuple(getattr(kernel, "grid", (1,)))
    tensor_class = getattr(kernel, "tensor_class", NkiTensor)
    options = getattr(kernel, "options", {}) or {}
    name = getattr(fn, "__name__", "kernel")

    def run(*args, **kwargs) -> BenchmarkResult:
        result = run_kernel(fn, args, kwargs, target=target or options.get("target"), numerics=numerics,
                            timing=True, trace=trace, grid=grid, tensor_class=tensor_class,
                            max_instructions=max_instructions if max_instructions is not None
                            else options.get("max_instructions"), progress=progress)
        return summarize(result, name=name, top=top)
    return run


__all__ = ["benchmark", "BenchmarkResult"]
