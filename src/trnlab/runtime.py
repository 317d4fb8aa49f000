"""Running a kernel: wrap host arrays as HBM tensors, run the Python kernel on a Machine, convert back.

Shared by both front ends, the benchmark API and the torch path.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from trnlab.core import dtypes as dt
from trnlab.core import lnc
from trnlab.core.compiler import current as current_compiler
from trnlab.core.inputs import kernel_argument, kernel_call, mixed_sequence, static_used_as_tensor
from trnlab.core.machine import Liveness, Machine, running
from trnlab.core.progress import StatusLine, progress_hook
from trnlab.core.srcloc import user_location
from trnlab.core.tensor import Tensor
from trnlab.errors import PsumCapacityError, SbufCapacityError, SbufSpillWarning
from trnlab.timing import Scheduler


def is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def to_numpy(x) -> np.ndarray:
    """numpy / torch (incl. bfloat16) / ml_dtypes -> numpy array, dtype unchanged (64-bit types are
    refused when the array is placed, never narrowed: core.inputs.kernel_argument)."""
    if is_torch(x):
        import torch
        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(dt.bfloat16)
        for name in ("float8_e4m3fn", "float8_e5m2"):
            if t.dtype == getattr(torch, name, None):
                return t.view(torch.uint8).numpy().view(getattr(dt, name))
        return t.numpy()
    return np.asarray(x)


def _is_array(x) -> bool:
    return isinstance(x, np.ndarray) or is_torch(x) and hasattr(x, "detach")


def from_numpy(arr: np.ndarray, like) -> Any:
    """Return arr as the same kind of array the caller passed (torch in, torch out)."""
    if like is None or not is_torch(like):
        return arr
    import torch
    if arr.dtype == dt.bfloat16:
        return torch.from_numpy(np.ascontiguousarray(arr).view(np.int16).copy()).view(torch.bfloat16)
    if arr.dtype in dt.FP8:
        return torch.from_numpy(arr.astype(np.float32))
    return torch.from_numpy(np.ascontiguousarray(arr).copy())


@dataclass
class KernelRun:
    """The outcome of one kernel run: outputs as host arrays plus the machine (stats, timing)."""
    outputs: Any
    machine: Machine
    name: str = ""          # the kernel function's name
    machines: list | None = None   # threaded LNC launches: one Machine per program (machine = the slowest)

    @property
    def device_latency_s(self) -> float:
        """What a device measurement reports (nki.benchmark's nc_latency, a published latency): the
        simulated kernel time plus the chip's fixed launch time (hw kernel_launch_s); 0 when untimed."""
        sched = self.machine.scheduler
        return sched.end + self.machine.chip.kernel_launch_s if sched is not None else 0.0


# Profiling hook: every finished run is passed to each observer; `forced` overrides run options
# (e.g. {"timing": True, "trace": True, "numerics": False, "target": "trn2", "max_instructions": 10**7,
# "progress": True}) while a profiler or the CLI runs a script (trnlab.profile.cli, `trnlab run`): it
# reaches kernels launched through any front end, Beta 1's simulate_kernel/benchmark included.
observers: list[Callable[[KernelRun], None]] = []
forced: dict[str, Any] = {}


def timing_model(timing: bool = True, trace: bool = False):
    """The scheduler factory a Machine is given: the timing model (recording a trace) or None."""
    return functools.partial(Scheduler, trace=trace) if timing else None


def run_kernel(fn: Callable, args: tuple, kwargs: dict, *, target=None, numerics: bool = True,
               timing: bool = True, trace: bool = False, grid: tuple = (1,), tensor_class=Tensor,
               machine: Machine | None = None, threads: bool | None = None,
               max_instructions: int | None = None, progress=None, stack_alloc: bool = False) -> KernelRun:
    """Run fn(*args, **kwargs) with array arguments placed in HBM; grid programs run in order on one machine.

    A launch whose kernel synchronises its programs (nisa.core_barrier / nisa.sendrecv; threads=None
    detects it, True forces it) runs each program in its own thread on its own Machine (trnlab.core.lnc).
    max_instructions: a run (each program of a threaded launch) issuing more raises InstructionLimitError.
    progress: None shows a status line on stderr when it is a terminal and the run takes over ~3 s;
    True always, False never; or a callable(machine, instruction) (core.progress).
    stack_alloc: the kernel was decorated with nki.compiler.enable_stack_allocator (Machine stack_alloc)."""
    target = forced.get("target", target)
    numerics = forced.get("numerics", numerics)
    timing = forced.get("timing", timing)
    trace = forced.get("trace", trace)
    max_instructions = forced.get("max_instructions", max_instructions)
    hook = progress_hook(forced.get("progress", progress), getattr(fn, "__name__", ""))
    settings = dict(target=target, numerics=numerics, scheduler=timing_model(timing, trace),
                    tensor_class=tensor_class, max_instructions=max_instructions, progress=hook,
                    stack_alloc=bool(stack_alloc))
    try:
        with _rarer_collections():
            return _run_or_retry(fn, args, kwargs, grid, machine, threads, settings)
    finally:
        if isinstance(hook, StatusLine):
            hook.close()


# A run allocates a few small objects per instruction (views, instructions, hazard entries) and keeps
# them alive briefly: with CPython's default young-generation threshold (700) the cyclic collector
# runs ~150 times per 40k instructions and once walks the whole heap (~4% of a timing-only run). Tiles
# are freed by reference counting (Storage.__del__), never by the cyclic collector, so collecting less
# often changes no simulated result. Process-wide, so runs in several threads share one counter.
_GC_YOUNG = 20_000
_gc_lock = threading.Lock()
_gc_depth = 0
_gc_saved: tuple = ()


@contextlib.contextmanager
def _rarer_collections():
    global _gc_depth, _gc_saved
    with _gc_lock:
        if _gc_depth == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(_GC_YOUNG, _gc_saved[0]), *_gc_saved[1:])
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0:
                gc.set_threshold(*_gc_saved)


def _run_or_retry(fn, args, kwargs, grid, machine, threads, settings) -> KernelRun:
    """Run; over capacity, retry with tiles freed at their last use (core.machine.Liveness), and only
    when that still does not fit SBUF, let the compiler spill (CompilerModel.sbuf_spill)."""
    model = current_compiler()
    strict = {**settings, "compiler": model}
    try:
        return _run(fn, args, kwargs, grid, machine or Machine(**strict), threads)
    except (SbufCapacityError, PsumCapacityError) as first:
        if machine is not None:
            raise
        # Over capacity while the kernel's Python code holds its tiles: retry with tiles freed at
        # their last use, as the compiler allocates (core.machine.Liveness).
        probe = _probe(fn, args, kwargs, grid, threads, strict)
        error = first
        if probe is not None:
            try:
                return _run(fn, args, kwargs, grid, Machine(**strict, liveness=Liveness(probe.last_use, donors=probe.donors)),
                            threads)
            except (SbufCapacityError, PsumCapacityError) as second:
                error = second
        if not (model.sbuf_spill and isinstance(error, SbufCapacityError)):
            raise error
        # Still over SBUF: neuronx-cc spills compiler-allocated tiles to HBM (a kernel that places
        # its tiles itself raises the capacity error again from this run). The probe's record of every
        # use lets it weigh each tile's next use against the DMA its eviction adds (core.memory.spill_victims).
        liveness = Liveness(probe.last_use, probe.uses, probe.donors) if probe is not None else None
        return _run(fn, args, kwargs, grid, Machine(**strict, liveness=liveness, spill=True), threads)


def _probe(fn, args, kwargs, grid, threads, settings) -> Liveness | None:
    """Each allocation's uses and last use (a probing Liveness), from an untimed run with room to
    spare; None if that run fails."""
    probe = Liveness()
    try:
        _run(fn, args, kwargs, grid, Machine(**{**settings, "scheduler": None}, liveness=probe),
             threads, observe=False)
    except Exception:
        return None
    return probe


def _run(fn, args, kwargs, grid, m: Machine, threads, observe: bool = True) -> KernelRun:
    like = next((a for a in itertools.chain(args, kwargs.values()) if is_torch(a)), None)
    inputs: list[tuple[Tensor, Any]] = []

    statics: dict = {}          # arguments that reach the kernel as Python values or sequences
    loc = user_location()
    kernel_call(fn, args, kwargs, loc)

    def wrap(name, value):
        if _is_array(value):
            t = m.hbm_tensor(kernel_argument(to_numpy(value), name, loc), name)
            inputs.append((t, value))
            return t
        if isinstance(value, (tuple, list)) and any(_is_array(v) for v in value):
            if not all(_is_array(v) for v in value):
                raise mixed_sequence(name, value, loc)
            statics[name] = type(value)(wrap(f"{name}_{i}", v) for i, v in enumerate(value))
            return statics[name]
        statics[name] = value
        return value

    names = _param_names(fn, len(args))
    hargs = tuple(wrap(n, a) for n, a in zip(names, args))
    hkwargs = {k: wrap(k, v) for k, v in kwargs.items()}
    try:
        result, m, machines = _launch(fn, hargs, hkwargs, grid, m, threads)
    except AttributeError as exc:
        misuse = static_used_as_tensor(exc, statics)
        if misuse is None:
            raise
        raise misuse from exc
    # Write modified inputs back in place (as AWS's simulator does for mutated HBM inputs).
    for t, original in inputs:
        if isinstance(original, np.ndarray) and original.flags.writeable and original.dtype == t.array.dtype:
            if not np.array_equal(original, t.array, equal_nan=True):
                original[...] = t.array
    run = KernelRun(_convert_outputs(result, like), m, getattr(fn, "__name__", ""), machines)
    for mm in machines or [m]:
        report = mm.spill_report()
        if report is not None:
            warnings.warn(SbufSpillWarning(f"kernel {run.name!r}: {report}"), stacklevel=2)
    for observer in list(observers) if observe else ():
        observer(run)
    return run


def _launch(fn, hargs, hkwargs, grid, m: Machine, threads):
    """Run every program of the launch grid; (result, machine, per-program machines or None)."""
    result = None
    n_programs = int(np.prod(grid))
    machines = None
    if n_programs > 1 and threads is not False:
        if threads or lnc.uses_sync(fn):
            machines = [m] + [Machine(m.chip, numerics=m.numerics, scheduler=m.scheduler_factory,
                                      tensor_class=m.tensor_class, max_instructions=m.max_instructions,
                                      progress=m.progress, compiler=m.compiler, spill=m.sbuf.spill,
                                      stack_alloc=m.stack_alloc) for _ in range(n_programs - 1)]
            for other in machines[1:]:
                other.launch = m.launch          # programs of one launch exchange tiles (nisa.sendrecv)
            result = lnc.run_programs(fn, hargs, hkwargs, tuple(grid), machines)
            m = lnc.slowest(machines)
    if machines is None:
        with running(m):
            m.num_programs = tuple(grid)
            for pid in range(n_programs):
                m.program_id = tuple(int(i) for i in np.unravel_index(pid, grid))
                result = fn(*hargs, **hkwargs)
    return result, m, machines


def _param_names(fn, n) -> list[str]:
    import inspect
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"arg{i}" for i in range(n)]


def _host_values(t: Tensor) -> np.ndarray:
    """An output's values for the host: a copy, except for a whole tensor never written (every output
    of a timing-only run), whose storage holds only its blank fill and belongs to no one else: copying
    a [4096, 8192] output cost up to 0.4 s of page faults per timing-only run."""
    st = t.storage
    if st.unwritten and t.array is st.array:
        return t.array
    return t.numpy()


def _convert_outputs(result, like):
    if isinstance(result, Tensor):
        return from_numpy(_host_values(result), like)
    if isinstance(result, (tuple, list)):
        return type(result)(_convert_outputs(r, like) for r in result)
    if isinstance(result, dict):
        return {k: _convert_outputs(v, like) for k, v in result.items()}
    return result
