"""Built-in kernels the profiler can run by name: name -> (kernel, example-input factory).

Discovered from trnlab.kernels, in this order:
  1. `trnlab.kernels.KERNELS`: {name: entry}, an entry being (kernel, factory), an object with
     `.kernel` and `.example_inputs`, or a kernel with an `example_inputs` attribute;
  2. every submodule of trnlab.kernels defining `example_inputs()` (for its kernel named like the
     module, or its only @nki.jit kernel) or an `EXAMPLES` dict {name: (kernel, factory)}.
A factory returns the positional args, a kwargs dict, or (args, kwargs); it may take `rng` and `seed`.
Modules without a factory fall back to FALLBACK_INPUTS below when the kernel's parameters match.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class KernelSpec:
    name: str
    kernel: Any                         # an @nki.jit Kernel or a plain kernel function
    factory: Callable[..., Any]         # example inputs (random, default shape)
    source: str = ""

    def inputs(self, seed: int = 0) -> tuple[tuple, dict]:
        return normalize_inputs(call_factory(self.factory, seed))


def call_factory(factory, seed: int):
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    if "rng" in params:
        return factory(rng=np.random.default_rng(seed))
    if "seed" in params:
        return factory(seed=seed)
    return factory()


def normalize_inputs(value) -> tuple[tuple, dict]:
    if isinstance(value, dict):
        return (), value
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], (tuple, list)) \
            and isinstance(value[1], dict):
        return tuple(value[0]), value[1]
    if isinstance(value, (tuple, list)):
        return tuple(value), {}
    return (value,), {}


def _f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _bf16(rng, *shape):
    import ml_dtypes
    return rng.standard_normal(shape).astype(ml_dtypes.bfloat16)


def _rope_inputs(rng, b=1, h=8, s=512, d=128):
    inv = 1.0 / 10000 ** (np.arange(0, d, 2) / d)
    angles = np.outer(np.arange(s), inv)
    angles = np.concatenate([angles, angles], axis=1)             # Hugging Face layout: halves repeated
    return (_f32(rng, b, h, s, d), np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32))


# name -> [(expected leading parameter names, factory(rng)), ...]; used only when the kernel's
# module defines no example_inputs(); the first entry whose names match the signature wins.
FALLBACK_INPUTS: dict[str, list[tuple[tuple[str, ...], Callable]]] = {
    "add": [(("a", "b"), lambda rng: (_f32(rng, 512, 2048), _f32(rng, 512, 2048)))],
    "transpose": [(("x",), lambda rng: (_f32(rng, 512, 1024),))],
    "softmax": [(("x",), lambda rng: (_f32(rng, 512, 2048),))],
    "rmsnorm": [(("x", "weight"), lambda rng: (_f32(rng, 512, 2048), _f32(rng, 2048)))],
    "rope": [(("x", "cos", "sin"), _rope_inputs)],
    "matmul": [(("lhsT", "rhs"), lambda rng: (_bf16(rng, 1024, 512), _bf16(rng, 1024, 1024))),
               (("a_t", "b"), lambda rng: (_bf16(rng, 1024, 512), _bf16(rng, 1024, 1024))),
               (("a", "b"), lambda rng: (_bf16(rng, 512, 1024), _bf16(rng, 1024, 1024)))],
}


def _fallback(name: str, kernel, source: str) -> KernelSpec | None:
    fn = getattr(kernel, "fn", kernel)
    try:
        params = tuple(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None
    for expected, factory in FALLBACK_INPUTS.get(name, []):
        if params[:len(expected)] == expected:
            return KernelSpec(name, kernel, factory, source)
    return None


def _spec(name: str, entry, source: str) -> KernelSpec | None:
    if isinstance(entry, KernelSpec):
        return entry
    if isinstance(entry, (tuple, list)) and len(entry) >= 2 and callable(entry[1]):
        return KernelSpec(name, entry[0], entry[1], source)
    kernel = getattr(entry, "kernel", entry)
    factory = getattr(entry, "example_inputs", None) or getattr(kernel, "example_inputs", None)
    return KernelSpec(name, kernel, factory, source) if callable(factory) else None


def _module_kernels(module) -> dict[str, Any]:
    from trnlab.frontend.kernel import Kernel
    return {k: v for k, v in vars(module).items()
            if isinstance(v, Kernel) and getattr(v, "__module__", module.__name__) == module.__name__}


def _from_module(module, short: str) -> dict[str, KernelSpec]:
    specs: dict[str, KernelSpec] = {}
    for name, entry in (getattr(module, "EXAMPLES", None) or {}).items():
        spec = _spec(name, entry, module.__name__)
        if spec:
            specs[name] = spec
    kernels = _module_kernels(module)
    kernel = kernels.get(short) or kernels.get(f"{short}_kernel") \
        or (next(iter(kernels.values())) if len(kernels) == 1 else None)
    if kernel is None or short in specs:
        return specs
    factory = getattr(module, "example_inputs", None)
    spec = KernelSpec(short, kernel, factory, module.__name__) if callable(factory) \
        else _fallback(short, kernel, module.__name__)
    if spec:
        specs[short] = spec
    else:
        specs[short] = KernelSpec(short, kernel, None, module.__name__)   # found, but no inputs
    return specs


def discover() -> tuple[dict[str, KernelSpec], dict[str, str]]:
    """(runnable kernels by name, problems by module or kernel) from the trnlab.kernels package."""
    found, errors = _discover_all()
    specs = {}
    for name, spec in found.items():
        if spec.factory is None:
            errors[name] = (f"kernel '{name}' ({spec.source}) has no example inputs: define "
                            f"example_inputs(rng) in its module")
        else:
            specs[name] = spec
    return specs, errors


def _discover_all() -> tuple[dict[str, KernelSpec], dict[str, str]]:
    specs: dict[str, KernelSpec] = {}
    errors: dict[str, str] = {}
    try:
        package = importlib.import_module("trnlab.kernels")
    except Exception as exc:  # the package is optional while it is being written
        return specs, {"trnlab.kernels": f"{type(exc).__name__}: {exc}"}
    for name, entry in (getattr(package, "KERNELS", None) or {}).items():
        spec = _spec(name, entry, "trnlab.kernels") \
            or _fallback(name, getattr(entry, "kernel", entry), "trnlab.kernels")
        specs[name] = spec or KernelSpec(name, getattr(entry, "kernel", entry), None, "trnlab.kernels")
    for info in pkgutil.iter_modules(getattr(package, "__path__", [])):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"trnlab.kernels.{info.name}")
        except Exception as exc:
            errors[f"trnlab.kernels.{info.name}"] = f"{type(exc).__name__}: {exc}"
            continue
        for name, spec in _from_module(module, info.name).items():
            specs.setdefault(name, spec)
    return specs, errors


def get(name: str) -> KernelSpec:
    specs, errors = discover()
    if name in specs:
        return specs[name]
    if name in errors:
        raise KeyError(errors[name])
    known = ", ".join(sorted(specs)) or "none yet"
    why = "".join(f"\n  {mod}: {err}" for mod, err in errors.items())
    raise KeyError(f"no built-in kernel named '{name}' in trnlab.kernels; available: {known}"
                   + (f"\nproblems:{why}" if why else ""))
