"""The current NKI front end (layout of AWS's `nki` package): language, isa, typing, jit, simulate."""
from __future__ import annotations

from trnlab.frontend.kernel import Kernel, unwrap
from trnlab.nki import isa, language, typing  # noqa: F401
from trnlab.nki.tensor import NkiTensor


def jit(fn=None, *, mode=None, platform_target=None, **options):
    """@nki.jit / @nki.jit(...): the kernel runs on the simulated NeuronCore when called."""
    if platform_target is not None:
        options["target"] = platform_target
    if fn is None:
        return lambda f: Kernel(f, tensor_class=NkiTensor, options=options)
    return Kernel(fn, tensor_class=NkiTensor, options=options)


def simulate(kernel, *, target=None, numerics: bool = True):
    """nki.simulate(kernel)(*args): run on the CPU simulator; numpy in -> numpy out (torch -> torch)."""
    fn, grid = unwrap(kernel)
    k = Kernel(fn, tensor_class=NkiTensor, grid=grid)

    def run(*args, **kwargs):
        return k.run(args, kwargs, target=target, numerics=numerics).outputs
    return run


def _unavailable(name):
    def fn(*a, **k):
        raise NotImplementedError(f"nki.{name} is not available in the current NKI front end "
                                  f"(it is Beta 1 only); use trnlab.benchmark or neuronxcc.nki.{name}")
    return fn


baremetal = _unavailable("baremetal")
profile = _unavailable("profile")
simulate_kernel = _unavailable("simulate_kernel")

__all__ = ["jit", "simulate", "language", "isa", "typing", "Kernel"]
