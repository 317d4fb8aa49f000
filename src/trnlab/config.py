"""The one place where environment flags are read.

Accepted values (anything else raises trnlab.errors.ConfigError naming the variable, the value and these;
an empty value counts as unset):
  NEURON_PLATFORM_TARGET_OVERRIDE  AWS's target names: trn1|gen2|inf2, trn2|gen3, trn3|gen4 (any case)
  TRNLAB_TARGET                    the same names (trnlab's own spelling of the override above)
  NKI_NC_VERSION                   NeuronCore version: 2|3|4 (also v2, gen2, ...) = trn1|trn2|trn3
  NKI_PRECISE_FP                   1 (AWS's default: round on every write) or 0 (fp32 everywhere: not modelled)
  TRNLAB_STRICT                    0 (default) or 1: uninitialised reads raise instead of warning
  TRNLAB_FORCE_COMPAT              0 (default) or 1: trnlab.compat shadows a real installed nki/neuronxcc
  TRNLAB_MAX_INSTRUCTIONS          a positive integer: stop a run that issues more instructions
  TRNLAB_COMPILER                  compiler-model switches, e.g. psum_zero_fold=0,multibuffer=0 or none
                                   (trnlab.core.compiler.CompilerModel)
"""
from __future__ import annotations

import os

from trnlab.errors import ConfigError

# AWS's NEURON_PLATFORM_TARGET_OVERRIDE names -> trnlab preset (same table as trnlab.hw.ALIASES)
TARGETS = {"trn1": "trn1", "gen2": "trn1", "inf2": "trn1",
           "trn2": "trn2", "gen3": "trn2",
           "trn3": "trn3", "gen4": "trn3"}
NC_VERSIONS = {"2": "trn1", "3": "trn2", "4": "trn3"}
FLAGS = ("NKI_PRECISE_FP", "TRNLAB_STRICT", "TRNLAB_FORCE_COMPAT")


def _get(name: str) -> str | None:
    value = os.environ.get(name)
    return value.strip() if value and value.strip() else None


def _bad(name: str, value: str, valid: str) -> ConfigError:
    return ConfigError(f"environment variable {name}={value!r} is not accepted; valid values: {valid}")


def env_target() -> str | None:
    """AWS's target override: trn1|gen2, trn2|gen3, trn3|gen4 (also honours NKI_NC_VERSION)."""
    for name in ("NEURON_PLATFORM_TARGET_OVERRIDE", "TRNLAB_TARGET"):
        value = _get(name)
        if value is not None:
            if value.lower() not in TARGETS:
                raise _bad(name, value, "|".join(TARGETS))
            return value.lower()
    nc = _get("NKI_NC_VERSION")
    if nc is None:
        return None
    key = nc.lower().removeprefix("gen").removeprefix("v")
    if key not in NC_VERSIONS:
        raise _bad("NKI_NC_VERSION", nc, "2|3|4 (or v2, gen2, ...)")
    return NC_VERSIONS[key]


def _flag(name: str, default: bool) -> bool:
    value = _get(name)
    if value is None:
        return default
    if value not in ("0", "1"):
        raise _bad(name, value, "0|1")
    return value == "1"


def precise_fp() -> bool:
    """False when NKI_PRECISE_FP=0 asks for AWS's fp32-everywhere mode. trnlab does not model that mode
    (it always rounds on write, as NKI_PRECISE_FP=1, AWS's default): Machine raises NotImplementedError."""
    return _flag("NKI_PRECISE_FP", True)


def strict_uninitialized() -> bool:
    """TRNLAB_STRICT=1 turns uninitialised-read warnings into errors."""
    return _flag("TRNLAB_STRICT", False)


def force_compat() -> bool:
    """TRNLAB_FORCE_COMPAT=1 lets trnlab.compat shadow a real installed nki/neuronxcc."""
    return _flag("TRNLAB_FORCE_COMPAT", False)


def max_instructions() -> int | None:
    """TRNLAB_MAX_INSTRUCTIONS=N: the instruction limit for every run (None: no limit)."""
    value = _get("TRNLAB_MAX_INSTRUCTIONS")
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise _bad("TRNLAB_MAX_INSTRUCTIONS", value, "a positive integer")
    return int(value)


def compiler_switches() -> str | None:
    """TRNLAB_COMPILER: the compiler-model switches (parsed by trnlab.core.compiler)."""
    return _get("TRNLAB_COMPILER")


def validate() -> None:
    """Read every flag once so a bad value fails at start-up (the CLI calls this before any work)."""
    env_target()
    for name in FLAGS:
        _flag(name, False)
    max_instructions()
