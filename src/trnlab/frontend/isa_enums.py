"""The nki.isa enums both NKI front ends expose (engine, oob_mode, dge_mode, reduce_cmd, nc_version)."""
from __future__ import annotations

import enum


class engine(enum.Enum):  # noqa: N801  (NKI names)
    unknown = "unknown"
    tensor = "tensor"
    vector = "vector"
    scalar = "scalar"
    gpsimd = "gpsimd"
    dma = "dma"
    sync = "sync"


tensor_engine = engine.tensor
vector_engine = engine.vector
scalar_engine = engine.scalar
gpsimd_engine = engine.gpsimd
dma_engine = engine.dma
unknown_engine = engine.unknown


class oob_mode(enum.Enum):  # noqa: N801
    error = "error"
    skip = "skip"


class dge_mode(enum.Enum):  # noqa: N801
    unknown = "unknown"
    none = "none"
    swdge = "swdge"
    hwdge = "hwdge"


class reduce_cmd(enum.Enum):  # noqa: N801
    idle = "idle"
    reset = "reset"
    reduce = "reduce"
    reset_reduce = "reset_reduce"
    load_reduce = "load_reduce"


class nc_version(enum.IntEnum):  # noqa: N801
    gen2 = 2
    gen3 = 3
    gen4 = 4


__all__ = ["engine", "tensor_engine", "vector_engine", "scalar_engine", "gpsimd_engine", "dma_engine",
           "unknown_engine", "oob_mode", "dge_mode", "reduce_cmd", "nc_version"]
