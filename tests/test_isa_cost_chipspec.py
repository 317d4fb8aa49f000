"""A chip preset with an impossible cost constant is refused with a typed error naming the field, the
rule, the value and the caller's line (before: a zero bandwidth raised ZeroDivisionError mid-run and a
negative clock gave a silently wrong latency)."""
import pytest

from trnlab.errors import TargetError, TrnlabError
from trnlab.hw import PRESETS, TRN2


@pytest.mark.parametrize("field, value, rule", [
    ("vector_hz", -1e9, "> 0"),
    ("tensor_hz", float("nan"), "> 0"),
    ("dma_queue_bytes_per_s", 0, "> 0"),
    ("dma_queues", 0, "> 0"),
    ("dma_efficiency", 1.5, "in (0, 1]"),
    ("dma_fixed_s", -1e-6, ">= 0"),
    ("vector_bf16_speedup", 0.5, ">= 1"),
    ("pe_throttle_floor", 0.0, "in (0, 1]"),
])
def test_impossible_constant_is_a_target_error(field, value, rule):
    with pytest.raises(TargetError) as info:
        TRN2.replace(**{field: value})
    message = str(info.value)
    assert isinstance(info.value, TrnlabError)
    assert f"{field} must be {rule}" in message and repr(value) in message and "'trn2'" in message
    assert f"{__file__}:" in message                      # the line that built the preset


def test_presets_and_plausible_replacements_pass():
    assert set(PRESETS) == {"trn1", "trn2", "trn3"}
    assert TRN2.replace(dma_efficiency=1.0, dma_fixed_s=0.0, vector_bf16_speedup=1.0).dma_efficiency == 1.0
