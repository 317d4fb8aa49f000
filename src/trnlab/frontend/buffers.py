"""The memory-buffer markers both NKI front ends accept as `buffer=` (nl.sbuf, nl.psum, nl.hbm, ...)."""
from __future__ import annotations

from trnlab.core.tensor import HBM, PSUM, SBUF


class Buffer:
    """A named buffer; `kind` is the trnlab storage kind (sbuf, psum or hbm)."""

    def __init__(self, name: str, kind: str):
        self.name, self.kind = name, kind

    def __repr__(self) -> str:
        return f"nl.{self.name}"

    # A tensor's `.buffer` is its storage kind string; kernels test `t.buffer == nl.sbuf` (and
    # `t.buffer in (nl.hbm, nl.shared_hbm, nl.private_hbm)`), so a marker equals its kind string.
    def __eq__(self, other):
        if isinstance(other, str):
            return other == self.kind
        return self is other

    __hash__ = object.__hash__


sbuf = Buffer("sbuf", SBUF)
psum = Buffer("psum", PSUM)
hbm = Buffer("hbm", HBM)
shared_hbm = Buffer("shared_hbm", HBM)
private_hbm = Buffer("private_hbm", HBM)

__all__ = ["Buffer", "sbuf", "psum", "hbm", "shared_hbm", "private_hbm"]
