"""nki.compiler: per-kernel compiler options. They tune AWS's compiler and have no effect on what a kernel
computes, so trnlab accepts and records them."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CompileConfig:
    """Options passed to @nki.jit(compile_config=...) (downstream compiler behaviour)."""
    address_rotation: bool | None = None
    non_ssa_legalization: bool | None = None
    dead_code_elim: bool | None = None
    barrier_check: bool | None = None


@dataclass
class SpecializationConfig:
    """Options passed to @nki.jit(specialization_config=...)."""
    allow_nested_config_override: bool | None = None


__all__ = ["CompileConfig", "SpecializationConfig"]
