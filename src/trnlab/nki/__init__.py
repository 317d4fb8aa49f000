"""The current NKI front end (layout of AWS's `nki` package): language, isa, typing, compiler, collectives,
jit and simulate."""
from __future__ import annotations

from trnlab.errors import NkiValidationError as NkiValidationError
from trnlab.frontend.kernel import Kernel, unwrap
from trnlab.nki import collectives, compiler, isa, isa_constants, language, typing  # noqa: F401
from trnlab.nki.tensor import NkiTensor

# `nisa.constants.oob_mode` is how kernels spell the ISA enums; expose the submodule on nki.isa.
isa.constants = isa_constants

# `nki.dtype`: the type of nl.float32 & co., used in kernel signatures (`index_dtype: nki.dtype = nl.int32`).
from numpy import dtype as dtype  # noqa: E402


def jit(fn=None, *, mode=None, platform_target=None, **options):
    """@nki.jit / @nki.jit(...): the kernel runs on the simulated NeuronCore when called.

    `mode` is deprecated and ignored (NKI 0.3). `platform_target` was removed in NKI 0.3 (the target comes
    from NEURON_PLATFORM_TARGET_OVERRIDE), but NKI Beta 2 kernels, including AWS's published examples,
    still pass it: trnlab warns and runs the kernel on that target."""
    if platform_target is not None:
        import warnings
        from trnlab.errors import TrnlabWarning
        warnings.warn(f"nki.jit(platform_target={platform_target!r}) is NKI Beta 2 syntax, removed in NKI 0.3 "
                      f"(set NEURON_PLATFORM_TARGET_OVERRIDE=trn1|trn2|trn3 instead); trnlab runs this kernel "
                      f"on {platform_target!r}", TrnlabWarning, stacklevel=2)
        options = {**options, "target": str(platform_target)}
    if fn is None:
        return lambda f: _make_kernel(f, options)
    return _make_kernel(fn, options)


def _make_kernel(fn, options) -> Kernel:
    fn, grid = unwrap(fn)
    return Kernel(fn, tensor_class=NkiTensor, grid=grid, options=options)


def simulate(kernel, *, target=None, numerics: bool = True, max_instructions=None, progress=None):
    """nki.simulate(kernel)(*args): run on the CPU simulator; numpy in -> numpy out (torch -> torch).
    nki.simulate(kernel[2]) runs an LNC2 launch sharing HBM: both programs in order on one machine, or, when
    the kernel synchronises them (nisa.core_barrier / nisa.sendrecv), as two threads on one machine each
    (trnlab.core.lnc)."""
    fn, grid = unwrap(kernel)
    k = Kernel(fn, tensor_class=NkiTensor, grid=grid, options=getattr(kernel, "options", None))

    def run(*args, **kwargs):
        result = k.run(args, kwargs, target=target, numerics=numerics, max_instructions=max_instructions,
                       progress=progress)
        if isinstance(kernel, Kernel):
            kernel.last_run = result
        return result.outputs
    return run


def multi_rank_simulate(kernel, *, world_size, per_rank_inputs, system=None, target=None, numerics: bool = True):
    """Run a kernel on world_size ranks, one simulated NeuronCore each, meeting at their nki.collectives calls;
    a list of per-rank outputs. per_rank_inputs: (args, kwargs) per rank, a sequence in rank order or a mapping
    {rank: (args, kwargs)}; array arguments may differ in value only. `system` (trnlab): the system the ranks
    are placed on for the collectives' cost (default: trn2.48xlarge for trn2, trn1.32xlarge, trn3-ultraserver;
    trnlab.hw.systems). The run (per-rank machines and timelines) is kernel.last_run."""
    from trnlab.frontend.multi_rank import run_multi_rank
    run = run_multi_rank(kernel, world_size, per_rank_inputs, target=target, system=system, numerics=numerics,
                         tensor_class=NkiTensor)
    if isinstance(kernel, Kernel):
        kernel.last_run = run
    return run.outputs


def _unavailable(name):
    def fn(*a, **k):
        raise NotImplementedError(f"nki.{name} is not available in the current NKI front end "
                                  f"(it is Beta 1 only); use trnlab.benchmark or neuronxcc.nki.{name}")
    fn.__name__ = name
    return fn


baremetal = _unavailable("baremetal")
benchmark = _unavailable("benchmark")
profile = _unavailable("profile")
simulate_kernel = _unavailable("simulate_kernel")

__all__ = ["jit", "simulate", "multi_rank_simulate", "language", "isa", "typing", "compiler", "collectives", "Kernel"]
