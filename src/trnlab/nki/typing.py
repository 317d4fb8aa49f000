"""nki.typing: tensor annotations (nt.tensor[shape, dtype]); they are hints and never checked at run time."""
from __future__ import annotations


class _TensorType:
    def __init__(self, spec=None, mutable=False):
        self.spec, self.mutable = spec, mutable

    def __getitem__(self, spec):
        return _TensorType(spec, self.mutable)

    def __repr__(self):
        return f"tensor[{self.spec}]"


tensor = _TensorType()
mutable_tensor = _TensorType(mutable=True)
scalar = _TensorType()
