"""The Beta 1 NKI front end (`neuronxcc.nki`): jit, simulate_kernel, baremetal, benchmark, trace.

Every entry point runs the kernel on trnlab's simulated NeuronCore with numpy (or torch) I/O; the
benchmark latency comes from the timing model (the machine's scheduler end time).
"""
from __future__ import annotations

import functools

from trnlab.errors import NkiValidationError
from trnlab.frontend.kernel import Kernel, unwrap
from trnlab.nki_beta1 import compiler, isa, language, typing  # noqa: F401
from trnlab.nki_beta1.tile import Tile, _state


def _b1_function(fn):
    """The kernel body with the front end's pending-result state cleared around each program."""
    if getattr(fn, "_trnlab_b1", False):
        return fn

    @functools.wraps(fn)
    def body(*args, **kwargs):
        if _state.depth:                     # a sub-kernel call inside a running kernel
            return fn(*args, **kwargs)
        _state.pending = _state.last_inplace = None
        language.start_program()
        _state.depth += 1
        try:
            return fn(*args, **kwargs)
        finally:
            _state.depth -= 1
            _state.pending = _state.last_inplace = None
    body._trnlab_b1 = True
    return body


class Beta1Kernel(Kernel):
    """@nki.jit kernel of the Beta 1 front end; kernel[d0, d1] launches an SPMD grid."""

    def __init__(self, fn, *, grid=(1,), options=None):
        super().__init__(_b1_function(fn), tensor_class=Tile, grid=grid, options=options)

    def __getitem__(self, grid) -> "Beta1Kernel":
        return type(self)(self.fn, grid=grid, options=self.options)      # Kernel checks the grid


def _as_kernel(kernel) -> Beta1Kernel:
    if isinstance(kernel, (Benchmarked, Profiled)):
        kernel = kernel.kernel
    if isinstance(kernel, Beta1Kernel):
        return kernel
    fn, grid = unwrap(kernel)
    options = kernel.options if isinstance(kernel, Kernel) else _run_options({}, fn)
    return Beta1Kernel(fn, grid=grid, options=options)


def jit(func=None, mode: str = "auto", **options):
    """@nki.jit / @nki.jit(mode=...): every mode runs on the simulator; mode='benchmark' also
    records `kernel.benchmark_result`."""
    def wrap(f):
        k = Beta1Kernel(f, options=_run_options(options, f))
        return Benchmarked(k, **options) if mode == "benchmark" else k
    return wrap(func) if func is not None else wrap


def _run_options(options: dict, f=None) -> dict:
    target = options.get("platform_target") or options.get("target")
    out = {"target": target} if target else {}
    if getattr(f, "_trnlab_stack_allocator", False):     # compiler.enable_stack_allocator under @nki.jit/a wrapper
        out["stack_allocator"] = True
    return out


def trace(func=None, **_):
    """nki.trace: a sub-kernel traced into its caller (runs as a plain call inside a kernel)."""
    return jit(func) if func is not None else jit


def simulate_kernel(kernel, *args, **kwargs):
    """Run kernel[grid](*args) on the CPU simulator; numpy in, numpy out."""
    return _as_kernel(kernel).run(args, kwargs).outputs


def baremetal(kernel=None, *, save_neff_name=None, save_trace_name=None, additional_compile_opt=None,
              artifacts_dir=None, **_):
    """@nki.baremetal: run with numpy I/O (on trnlab's simulator; no NEFF is written)."""
    def wrap(k):
        return _as_kernel(k)
    return wrap(kernel) if kernel is not None else wrap


# --- benchmark ----------------------------------------------------------------------------------------
class NcLatency:
    """Latency statistics in microseconds. The timing model is deterministic, so every percentile
    equals the predicted latency of one run."""

    def __init__(self, latency_us: float, iters: int):
        self.latency_us = float(latency_us)
        self.iters = int(iters)

    def get_latency_percentile(self, percentile) -> float:
        p = float(percentile)
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"percentile must be within [0, 100], got {percentile}")
        return self.latency_us

    def __repr__(self) -> str:
        return f"NcLatency({self.latency_us:.3f} us, iters={self.iters}, predicted by trnlab's timing model)"


class BenchmarkResult:
    def __init__(self, nc_latency: NcLatency, run):
        self.nc_latency = nc_latency
        self.run = run


class Benchmarked:
    """A kernel wrapped by nki.benchmark: calling it runs once and sets `.benchmark_result`."""

    def __init__(self, kernel, *, warmup: int = 10, iters: int = 100, save_neff_name=None, save_trace_name=None,
                 additional_compile_opt=None, **_):
        self.kernel = _as_kernel(kernel)
        self.warmup, self.iters = int(warmup), int(iters)
        self.save_neff_name, self.save_trace_name = save_neff_name, save_trace_name
        self.benchmark_result = None
        functools.update_wrapper(self, self.kernel.fn)

    def __getitem__(self, grid) -> "Benchmarked":
        return Benchmarked(self.kernel[grid], warmup=self.warmup, iters=self.iters,
                           save_neff_name=self.save_neff_name, save_trace_name=self.save_trace_name)

    def __call__(self, *args, **kwargs):
        numerics = not typing.only_placeholders(args, kwargs)     # (placeholders only: timing-only)
        args, kwargs = typing.materialize_args(args, kwargs, values=numerics)
        trace = bool(self.save_neff_name or self.save_trace_name)
        run = self.kernel.run(args, kwargs, timing=True, numerics=numerics, trace=trace)
        chip = run.machine.chip
        # AWS's NcLatency is a measured device latency, which includes the fixed launch time that
        # trnlab calibrate fits (hw kernel_launch_s); the kernel's own time is printed beside it
        latency_us = run.device_latency_s * 1e6
        kernel_us = latency_us - chip.kernel_launch_s * 1e6
        self.benchmark_result = BenchmarkResult(NcLatency(latency_us, self.iters), run)
        name = getattr(self.kernel.fn, "__name__", "kernel")
        _save_artifacts(run, name, self.save_neff_name, self.save_trace_name)
        print(f"trnlab benchmark of {name}: predicted latency {latency_us:.2f} us on {chip.name} "
              f"(kernel {kernel_us:.2f} us + launch {chip.kernel_launch_s * 1e6:.1f} us; timing model, "
              f"warmup/iters not needed)")
        return run.outputs


def _save_artifacts(run, name: str, neff_name, trace_name) -> None:
    """Files at the names AWS's nki.benchmark writes, so scripts that rename them afterwards run unmodified:
    save_trace_name gets trnlab's Perfetto/Chrome trace JSON (not an NTFF), save_neff_name a text listing of
    the simulated instructions (not a NEFF: no compiled binary exists)."""
    from trnlab.profile.outputs import write_text_atomic
    from trnlab.profile.source import from_run, instructions
    from trnlab.profile.trace import write_trace
    data = from_run(run, name)
    if trace_name:
        write_trace(data, trace_name)
    if neff_name:
        lines = [f"# trnlab instruction listing of kernel '{name}' on {data.chip.name}: NOT a NEFF.",
                 "# trnlab simulates the kernel; no compiled NEFF exists. The trace is trnlab's timing model.",
                 f"# predicted latency {data.total_s * 1e6:.3f} us",
                 "# start_us\tend_us\tengine\topcode\tapi\tsource"]
        lines += [f"{i['start'] * 1e6:.3f}\t{i['end'] * 1e6:.3f}\t{i['engine']}\t{i['name']}\t{i['api']}\t{i['loc']}"
                  for i in instructions(data.events)]
        write_text_atomic(neff_name, "\n".join(lines) + "\n")


def benchmark(kernel=None, *, warmup: int = 10, iters: int = 100, save_neff_name=None, save_trace_name=None,
              additional_compile_opt=None, **kwargs):
    """@nki.benchmark(warmup=, iters=): after a call, `f.benchmark_result.nc_latency.get_latency_percentile(p)`
    gives the predicted latency in microseconds. save_trace_name / save_neff_name: see _save_artifacts."""
    def wrap(k):
        return Benchmarked(k, warmup=warmup, iters=iters, save_neff_name=save_neff_name,
                           save_trace_name=save_trace_name)
    return wrap(kernel) if kernel is not None else wrap


class Profiled:
    """A kernel wrapped by nki.profile: each call runs it traced and writes trnlab's profile (trace.json,
    summary.json, report.html) into `working_directory`. No NEFF or NTFF is written: those are device
    artifacts; the profile comes from the timing model."""

    def __init__(self, kernel, working_directory, overwrite: bool):
        self.kernel = _as_kernel(kernel)
        self.working_directory, self.overwrite = working_directory, bool(overwrite)
        self.profile_summary = None
        functools.update_wrapper(self, self.kernel.fn)

    def __getitem__(self, grid) -> "Profiled":
        return Profiled(self.kernel[grid], self.working_directory, self.overwrite)

    def __call__(self, *args, **kwargs):
        import os
        from trnlab.profile import profile_run
        out = self.working_directory
        existing = os.path.join(out, "trace.json")
        if not self.overwrite and os.path.exists(existing):
            raise NkiValidationError(f"nki.profile: {existing} already exists and overwrite=False; pass "
                                     f"overwrite=True or another working_directory")
        args, kwargs = typing.materialize_args(args, kwargs)
        run = self.kernel.run(args, kwargs, timing=True, trace=True)
        name = getattr(self.kernel.fn, "__name__", "kernel")
        self.profile_summary = profile_run(run, out, name=name, quiet=True)
        print(f"trnlab profile of {name}: trace.json, summary.json, report.html in {out} (timing model; "
              f"no NEFF/NTFF is written)")
        return run.outputs


def profile(func=None, *, working_directory=None, save_neff_name=None, save_trace_name=None, overwrite=False,
            profile_nth=1, additional_compile_opt=None, **_):
    """@nki.profile(working_directory=...): every call runs the kernel on the simulator and writes trnlab's
    profile of that run into working_directory (an absolute path, as AWS requires)."""
    import os
    if working_directory is None or not os.path.isabs(str(working_directory)):
        raise NkiValidationError(f"nki.profile: working_directory must be an absolute path, got "
                                 f"{working_directory!r}")

    def wrap(k):
        return Profiled(k, str(working_directory), overwrite)
    return wrap(func) if func is not None else wrap


__all__ = ["jit", "trace", "simulate_kernel", "baremetal", "benchmark", "profile", "language", "isa",
           "typing", "compiler", "Beta1Kernel"]
