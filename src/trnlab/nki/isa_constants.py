"""nki.isa.constants: the ISA enums under their `nisa.constants.*` spelling (oob_mode, dge_mode, ...)."""
from trnlab.nki.isa import (dge_mode, engine, matmul_perf_mode, nc_version, oob_mode,  # noqa: F401
                            reduce_cmd)

__all__ = ["dge_mode", "engine", "matmul_perf_mode", "nc_version", "oob_mode", "reduce_cmd"]
