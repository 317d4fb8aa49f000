"""neuronxcc.nki.typing: nt.tensor[shape, dtype] annotations (hints; never checked at run time).

nki.benchmark also accepts nt.tensor[[shape], dtype] as an argument: a placeholder for an input whose
values do not matter; materialize() turns it into a random host array."""
from __future__ import annotations

import numpy as np


class _TensorType:
    def __init__(self, spec=None, mutable: bool = False):
        self.spec, self.mutable = spec, mutable

    def __getitem__(self, spec):
        return _TensorType(spec, self.mutable)

    def __call__(self, *args, **kwargs):
        return _TensorType(args, self.mutable)

    def __repr__(self) -> str:
        return f"tensor[{self.spec}]"

    def is_placeholder(self) -> bool:
        """True for nt.tensor[[d0, d1, ...], dtype] (a shape and a dtype)."""
        spec = self.spec
        return (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], (tuple, list))
                and all(isinstance(d, (int, np.integer)) for d in spec[0]))

    def materialize(self, rng: np.random.Generator) -> np.ndarray:
        """A random host array of the placeholder's shape and dtype (uniform in [0, 1) for floats)."""
        from trnlab.core import dtypes as dt
        shape, dtype = tuple(int(d) for d in self.spec[0]), dt.canonical(self.spec[1])
        if dt.is_float(dtype):
            return rng.random(shape, dtype=np.float32).astype(dtype)
        return rng.integers(0, 8, size=shape).astype(dtype)


def materialize_args(args: tuple, kwargs: dict, seed: int = 0, *, values: bool = True) -> tuple[tuple, dict]:
    """Replace nt.tensor[[shape], dtype] placeholders by random host arrays (nki.benchmark inputs);
    values=False: by zeros (a timing-only run never reads them)."""
    rng = np.random.default_rng(seed)

    def one(v):
        if not (isinstance(v, _TensorType) and v.is_placeholder()):
            return v
        if values:
            return v.materialize(rng)
        from trnlab.core import dtypes as dt
        return np.zeros(tuple(int(d) for d in v.spec[0]), dt.storage(dt.canonical(v.spec[1])))
    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}


def only_placeholders(args: tuple, kwargs: dict) -> bool:
    """Every tensor argument is an nt.tensor[[shape], dtype] placeholder (and there is one): the kernel's
    inputs are random values the caller never sees, so its outputs can say nothing, and nki.benchmark
    times it without computing them (AWS's published matmul tutorial benchmarks this way; computing
    its four [4096, 8192] @ [8192, 8192] products took ~4 min of numpy for no observable result)."""
    values = (*args, *kwargs.values())
    placeholders = [v for v in values if isinstance(v, _TensorType) and v.is_placeholder()]
    arrays = [v for v in values if not isinstance(v, _TensorType) and hasattr(v, "shape") and hasattr(v, "dtype")]
    return bool(placeholders) and not arrays


tensor = _TensorType()
mutable_tensor = _TensorType(mutable=True)
mutable = mutable_tensor
scalar = _TensorType()
