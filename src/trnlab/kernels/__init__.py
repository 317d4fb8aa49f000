"""trnlab's own kernel library, written in the current NKI front end (trnlab.nki).

Every kernel takes HBM tensors and returns new HBM tensor(s); called from host code with numpy or
torch arrays it runs on a fresh simulated NeuronCore (`kernel.last_run.machine` has stats and
timing). Layouts are documented in each module's docstring.

KERNELS maps a name to a KernelSpec: the kernel, a numpy reference with the same signature, and
`example_inputs(shape_scale=1.0, dtype=np.float32, seed=0)` returning the positional arguments.
Note: `trnlab.kernels.add` etc. are the kernels; import a module's helpers with
`from trnlab.kernels.add import reference`.

This is the one kernel library: the PyTorch model path (trnlab.torch) lowers every op onto these
modules' view-level entry points (gemm_into, flash_attention_into, softmax_into, rmsnorm_into,
layernorm_into, elementwise.unary/binary/scalar_op/where, rows.reduce_last/argmax_last,
gather.gather_rows/scatter_rows), which write into existing HBM views of any strides.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from trnlab.core import dtypes as dt
from trnlab.kernels.add import add as add
from trnlab.kernels.cumsum import cumsum as cumsum
from trnlab.kernels.flash_attention import flash_attention as flash_attention
from trnlab.kernels.gemm import gemm as gemm
from trnlab.kernels.layernorm import layernorm as layernorm
from trnlab.kernels.rmsnorm import rmsnorm as rmsnorm
from trnlab.kernels.rope import rope as rope
from trnlab.kernels.softmax import softmax as softmax
from trnlab.kernels.transpose import transpose as transpose

# Default comparison tolerances (rtol, atol) of a kernel's output against its fp32 numpy reference
# evaluated on the same (already rounded) inputs. bf16: one rounding of the output is 2^-9 relative
# (half an ulp of bf16's 8-bit significand), plus intermediate bf16 roundings; tests state their own.
FP32_TOL = (1e-5, 1e-5)
BF16_TOL = (2 ** -7, 2 ** -7)


@dataclass(frozen=True)
class KernelSpec:
    name: str
    kernel: Any                                   # an @nki.jit Kernel
    reference: Callable[..., np.ndarray]          # numpy, same signature as the kernel
    example_inputs: Callable[..., tuple]          # (shape_scale=1.0, dtype=np.float32, seed=0) -> args
    tolerances: dict = field(default_factory=dict)   # dtype name -> (rtol, atol), overrides defaults

    def tolerance(self, dtype) -> tuple[float, float]:
        name = np.dtype(dtype).name
        return self.tolerances.get(name, FP32_TOL if name == "float32" else BF16_TOL)


# flash_attention bf16: p is rounded to bf16 before P @ v (2^-8 relative per term, times P @ |v|,
# about max|v| ~ 4 for standard-normal v) on top of the output rounding.
# gemm bf16: 1024-term fp32 dot products of bf16 inputs, output rounded once (2^-9), plus the bias.
_TOLERANCES = {"flash_attention": {"bfloat16": (2 ** -6, 2 ** -5)}, "gemm": {"bfloat16": (2 ** -7, 2 ** -6)}}
_NAMES = ("add", "transpose", "softmax", "rmsnorm", "layernorm", "flash_attention", "cumsum", "rope",
          "gemm", "elementwise", "gather")
_registry: dict[str, KernelSpec] | None = None


def _spec_of(name: str, tolerances=None) -> KernelSpec:
    module = importlib.import_module(f"trnlab.kernels.{name}")
    return KernelSpec(name, getattr(module, name), module.reference, module.example_inputs, tolerances or {})


def _matmul_specs() -> dict[str, KernelSpec]:
    """Entries of kernels/matmul.py (written by the timing engineer), if that module exists:
    its own KERNELS dict, else every @nki.jit kernel named matmul* with the module's reference and
    its example_inputs adapted to the (shape_scale, dtype, seed) contract."""
    try:
        module = importlib.import_module("trnlab.kernels.matmul")
    except ModuleNotFoundError as exc:
        if exc.name == "trnlab.kernels.matmul":
            return {}
        raise
    own = getattr(module, "KERNELS", None)
    if isinstance(own, dict) and own:
        return dict(own)
    reference = getattr(module, "reference", None)
    factory = getattr(module, "example_inputs", None)
    if reference is None or factory is None:
        return {}
    from trnlab.nki import Kernel
    factory = _matmul_factory(factory)
    return {name: KernelSpec(name, k, reference, factory) for name, k in vars(module).items()
            if isinstance(k, Kernel) and name.startswith("matmul")}


def _matmul_factory(factory):
    """Adapt example_inputs(K=, M=, N=, seed=) to (shape_scale, dtype, seed): sizes grow by whole
    multiples of the defaults (which fit every tutorial step's block sizes)."""
    params = inspect.signature(factory).parameters
    if "shape_scale" in params:
        return factory

    def example_inputs(shape_scale=1.0, dtype="bfloat16", seed=0):
        f = max(1, int(round(shape_scale)))
        sizes = {d: params[d].default * f for d in ("K", "M", "N") if d in params}
        store = dt.storage(dt.canonical(dtype))
        return tuple(a.astype(np.float32).astype(store) for a in factory(seed=seed, **sizes))
    return example_inputs


def _build() -> dict[str, KernelSpec]:
    specs = {name: _spec_of(name, _TOLERANCES.get(name)) for name in _NAMES}
    specs.update(_matmul_specs())
    return specs


def __getattr__(name: str):
    # KERNELS is built on first use so that kernels/matmul.py may import this package.
    global _registry
    if name == "KERNELS":
        if _registry is None:
            _registry = _build()
        return _registry
    raise AttributeError(f"module 'trnlab.kernels' has no attribute {name!r}")


# elementwise and gather are registered but not re-exported here, so that `trnlab.kernels.elementwise`
# and `trnlab.kernels.gather` stay the modules (the model path imports their view-level entry points).
__all__ = ["KERNELS", "KernelSpec", *(n for n in _NAMES if n not in ("elementwise", "gather"))]
