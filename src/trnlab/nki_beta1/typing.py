"""neuronxcc.nki.typing: nt.tensor[shape, dtype] annotations (hints; never checked at run time)."""
from __future__ import annotations


class _TensorType:
    def __init__(self, spec=None, mutable: bool = False):
        self.spec, self.mutable = spec, mutable

    def __getitem__(self, spec):
        return _TensorType(spec, self.mutable)

    def __call__(self, *args, **kwargs):
        return _TensorType(args, self.mutable)

    def __repr__(self) -> str:
        return f"tensor[{self.spec}]"


tensor = _TensorType()
mutable_tensor = _TensorType(mutable=True)
mutable = mutable_tensor
scalar = _TensorType()
