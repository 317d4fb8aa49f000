"""Refusals: unsupported operators (all listed at once, before anything runs) and HBM capacity."""
import pytest
import torch

import trnlab.torch as tt
from trnlab.errors import HbmCapacityError, UnsupportedOperatorError


class Unsupported(torch.nn.Module):
    def forward(self, x):
        a = torch.cumsum(x, dim=-1)
        b = torch.sort(x, dim=-1).values
        c = torch.flip(x, dims=[0])
        return a + b + c + torch.relu(x)


def test_unsupported_ops_listed_all_at_once():
    x = torch.randn(4, 8)
    with pytest.raises(UnsupportedOperatorError) as info:
        tt.compile(Unsupported(), (x,), dtype=torch.float32)
    msg = str(info.value)
    ops = {op for op, _, _ in info.value.ops}
    assert {"aten.cumsum.default", "aten.sort.default", "aten.flip.default"} <= ops
    assert "float32[4, 8]" in msg and "test_torch_errors.py:" in msg and "nothing was run" in msg
    assert "torch.cumsum(x, dim=-1)" in msg


def test_cpu_fallback_runs_and_is_named():
    x = torch.randn(4, 8)
    fn, rep = tt.compile(Unsupported(), (x,), dtype=torch.float32, fallback="cpu")
    assert rep.numerics_ok
    names = {f["op"] for f in rep.fallbacks}
    assert {"aten.cumsum.default", "aten.sort.default", "aten.flip.default"} <= names
    assert all(0 < f["share"] < 1 for f in rep.fallbacks)


def test_weights_exceeding_hbm_are_refused_with_numbers():
    from trnlab.torch import models
    model = models.build("llama-3-8b", meta=True)          # 8.0 B params: 16 GB in bf16 > 12 GiB/core on trn2
    ids = torch.zeros(1, 8, dtype=torch.long, device="meta")
    with pytest.raises(HbmCapacityError) as info:
        tt.compile(model, (ids,), target="trn2", numerics=False)
    err = info.value
    assert err.limit == 12 * 2**30 and err.required > err.limit
    assert str(err.required) in str(err) and str(err.limit) in str(err)


def test_activations_exceeding_hbm_are_refused():
    class Big(torch.nn.Module):
        def forward(self, x):
            return (x * 2).exp()
    x = torch.empty(4, 1 << 30, device="meta")              # 16 GiB of fp32 activations
    with pytest.raises(HbmCapacityError):
        tt.compile(Big(), (x,), target="trn2", dtype=torch.float32, numerics=False)
