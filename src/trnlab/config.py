"""The one place where environment flags are read."""
from __future__ import annotations

import os


def env_target() -> str | None:
    """AWS's target override: trn1|gen2, trn2|gen3, trn3|gen4 (also honours NKI_NC_VERSION)."""
    value = os.environ.get("NEURON_PLATFORM_TARGET_OVERRIDE") or os.environ.get("TRNLAB_TARGET")
    if value:
        return value
    nc = os.environ.get("NKI_NC_VERSION")
    if nc:
        return {"2": "trn1", "3": "trn2", "4": "trn3"}.get(nc.strip().lstrip("v").lstrip("gen"), nc)
    return None


def precise_fp() -> bool:
    """False when NKI_PRECISE_FP=0 asks for AWS's fp32-everywhere mode. trnlab does not model that mode
    (it always rounds on write, as NKI_PRECISE_FP=1, AWS's default): Machine raises NotImplementedError."""
    return os.environ.get("NKI_PRECISE_FP", "1") != "0"


def strict_uninitialized() -> bool:
    """TRNLAB_STRICT=1 turns uninitialised-read warnings into errors."""
    return os.environ.get("TRNLAB_STRICT", "0") == "1"


def force_compat() -> bool:
    """TRNLAB_FORCE_COMPAT=1 lets trnlab.compat shadow a real installed nki/neuronxcc."""
    return os.environ.get("TRNLAB_FORCE_COMPAT", "0") == "1"
