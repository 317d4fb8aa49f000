"""Running a kernel on N ranks (nki.multi_rank_simulate): one Machine per rank, each rank's arguments placed in
its own HBM, ranks meeting at their nki.collectives calls (trnlab.core.ranks). Honours runtime.forced and
notifies runtime.observers once per launch, so `trnlab run` / `trnlab profile` capture it like any run."""
from __future__ import annotations

from dataclasses import dataclass

from trnlab import runtime
from trnlab.core import ranks
from trnlab.core.compiler import current as current_compiler
from trnlab.core.inputs import kernel_argument, kernel_call
from trnlab.core.machine import Machine
from trnlab.core.srcloc import user_location
from trnlab.core.tensor import Tensor
from trnlab.errors import LaunchError
from trnlab.frontend.kernel import unwrap
from trnlab.hw.systems import get_system


@dataclass
class MultiRankRun(runtime.KernelRun):
    """A multi-rank launch: `outputs` per rank, `machines` per rank (`machine` is the slowest rank's), the
    system the ranks are placed on."""
    system: object = None

    @property
    def world_size(self) -> int:
        return len(self.machines or ())

    def rank_latency_s(self) -> list:
        """Each rank's simulated kernel time (0 when untimed)."""
        return [m.scheduler.end if m.scheduler is not None else 0.0 for m in self.machines]


def run_multi_rank(kernel, world_size, per_rank_inputs, *, target=None, system=None, numerics: bool = True,
                   timing: bool = True, trace: bool = False, tensor_class=Tensor, max_instructions=None):
    """Run kernel on world_size ranks; returns a MultiRankRun (outputs: one per rank, in rank order)."""
    fn, grid = unwrap(kernel)
    options = getattr(kernel, "options", {}) or {}
    if tuple(grid) != (1,):
        raise LaunchError(f"multi-rank launch of kernel[{list(grid)}]: launch the kernel itself; an SPMD/LNC grid "
                          f"inside each rank is not modelled")
    forced = runtime.forced
    target = forced.get("target", target or options.get("target"))
    numerics = forced.get("numerics", numerics)
    timing = forced.get("timing", timing)
    trace = forced.get("trace", trace)
    max_instructions = forced.get("max_instructions", max_instructions or options.get("max_instructions"))
    if target is None and system is not None:
        target = get_system(system).chip          # the ranks run on the system's chip
    calls = ranks.per_rank_calls(world_size, per_rank_inputs)
    loc = user_location()
    machines = [Machine(target, numerics=numerics, scheduler=runtime.timing_model(timing, trace),
                        tensor_class=getattr(kernel, "tensor_class", tensor_class),
                        max_instructions=max_instructions, compiler=current_compiler())
                for _ in calls]
    spec = ranks.system_for(machines[0].chip, system, len(calls))
    names = runtime._param_names(fn, max(len(a) for a, _ in calls))
    placed = [_place(fn, m, args, kwargs, names, loc) for m, (args, kwargs) in zip(machines, calls)]
    _check_same_statics(calls, names)
    world = ranks.World(len(calls), spec)
    results = ranks.run_ranks(fn, placed, machines, world)
    like = next((a for a in calls[0][0] if runtime.is_torch(a)), None)
    outputs = [runtime._convert_outputs(r, like) for r in results]
    slowest = ranks_slowest(machines)
    run = MultiRankRun(outputs, slowest, getattr(fn, "__name__", ""), machines, system=spec)
    for observer in list(runtime.observers):
        observer(run)
    return run


def ranks_slowest(machines: list):
    timed = [m for m in machines if m.scheduler is not None]
    return max(timed, key=lambda m: m.scheduler.end) if timed else machines[0]


def _place(fn, m: Machine, args: tuple, kwargs: dict, names: list, loc: str) -> tuple:
    """The rank's (args, kwargs) with its arrays placed in its own HBM."""
    kernel_call(fn, args, kwargs, loc)

    def wrap(name, value):
        if runtime._is_array(value):
            return m.hbm_tensor(kernel_argument(runtime.to_numpy(value), name, loc), name)
        if isinstance(value, (tuple, list)) and value and all(runtime._is_array(v) for v in value):
            return type(value)(wrap(f"{name}_{i}", v) for i, v in enumerate(value))
        return value

    return (tuple(wrap(n, a) for n, a in zip(names, args)), {k: wrap(k, v) for k, v in kwargs.items()})


def _check_same_statics(calls: list, names: list) -> None:
    """Arrays may differ across ranks in value only; every other argument must be equal on every rank."""
    a0, k0 = calls[0]
    for r, (a, k) in enumerate(calls[1:], start=1):
        pairs = [(names[i] if i < len(names) else f"arg{i}", x, y) for i, (x, y) in enumerate(zip(a0, a))]
        pairs += [(key, k0.get(key), k.get(key)) for key in sorted(set(k0) | set(k))]
        if len(a) != len(a0):
            raise LaunchError(f"multi-rank launch: rank {r} passes {len(a)} positional arguments, rank 0 {len(a0)}")
        for name, x, y in pairs:
            if runtime._is_array(x) or runtime._is_array(y):
                xs, ys = runtime.to_numpy(x), runtime.to_numpy(y)
                if xs.shape != ys.shape or xs.dtype != ys.dtype:
                    raise LaunchError(f"multi-rank launch: argument '{name}' is {list(ys.shape)} {ys.dtype} on rank "
                                      f"{r} but {list(xs.shape)} {xs.dtype} on rank 0; array arguments must have the "
                                      f"same shape and dtype on every rank")
            elif not ranks.same_static(x, y):
                raise LaunchError(f"multi-rank launch: argument '{name}' is {y!r:.60} on rank {r} but {x!r:.60} on "
                                  f"rank 0; non-array arguments must be equal on every rank")


__all__ = ["MultiRankRun", "run_multi_rank"]
