"""trnlab.torch.compile(..., dp=N): data-parallel replicas, each on 1/N of the batch."""
import json

import pytest

torch = pytest.importorskip("torch")

import trnlab.torch as tt  # noqa: E402
from trnlab.errors import OptionError  # noqa: E402


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64))


def test_replicas_match_eager_and_take_one_replica_time():
    model, x = _mlp(), torch.randn(8, 64)
    dp = tt.compile(model, (x,), dp=4, target="trn1", dtype=torch.float32)
    y = dp(x)
    assert torch.allclose(y, model(x), rtol=1e-3, atol=1e-3)          # eager PyTorch is the oracle
    r = dp.report
    assert (r.dp, r.tp, r.ranks) == (4, 1, 4) and r.numerics_ok
    one = tt.compile(model, (x[:2],), target="trn1", dtype=torch.float32)   # one replica on its slice
    assert r.latency_s == pytest.approx(one.report.latency_s)
    assert r.tokens_per_s == pytest.approx(4 * one.report.tokens_per_s)
    assert r.rank_latency_us == pytest.approx([one.report.latency_s * 1e6] * 4)
    d = r.to_dict()
    assert d["dp"] == 4 and d["ranks"] == 4 and len(d["rank_latency_us"]) == 4 and d["collectives_us"] == 0
    assert json.loads(r.to_json())["tokens_per_s"] == pytest.approx(4 * one.report.tokens_per_s)
    assert (r.model, r.target, r.decode) == (one.report.model, "trn1", None)     # what the CLI reads
    assert len(r.numerics) == 4 and len(d["numerics_per_replica"]) == 4         # every replica checked
    assert "Data parallelism: 4 replicas x TP 1 = 4 ranks" in " ".join(str(r).split())


def test_replicas_of_tensor_parallel_groups():
    model, x = _mlp(), torch.randn(4, 64)
    dp = tt.compile(model, (x,), dp=2, tp=2, dtype=torch.float32)
    assert torch.allclose(dp(x), model(x), rtol=1e-3, atol=1e-3)
    r = dp.report
    assert (r.dp, r.tp, r.ranks) == (2, 2, 4) and r.numerics_ok
    assert r.collectives_us > 0 and r.collectives_us == pytest.approx(r.replica.collectives_us)
    assert len(r.rank_latency_us) == 4


def test_timing_only_replicas_give_the_batch_shape():
    model, x = _mlp(), torch.randn(6, 64)
    dp = tt.compile(model, (x,), dp=3, target="trn2", numerics=False)
    assert dp(x).shape == (6, 64)
    assert dp.report.ranks == 3


@pytest.mark.parametrize("kwargs, needle", [
    ({"dp": 3}, "dp=3 does not divide the batch of 8"),
    ({"dp": 0}, "dp must be an integer >= 1, got 0"),
    ({"dp": True}, "dp must be an integer >= 1, got True"),
    ({"dp": 2, "tp": 0}, "tp must be an integer >= 1, got 0"),
    ({"dp": 1, "tp": 33, "system": "trn1.32xlarge"}, "tp=33 exceeds the 32 ranks of trn1.32xlarge"),
    ({"dp": 2, "sequence_parallel": True}, "sequence_parallel=True needs tp=N"),
    ({"sequence_parallel": True}, "sequence_parallel=True needs tp=N"),
    ({"dp": 2, "train": True}, "train=True with tp/system/dp is not supported"),
    ({"dp": 32, "tp": 2, "system": "trn1.32xlarge"}, "dp=32 x tp=2 = 64 ranks exceeds the 32 ranks"),
])
def test_bad_data_parallel_options_are_refused(kwargs, needle):
    with pytest.raises(OptionError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        tt.compile(_mlp(), (torch.randn(8, 64),), target="trn1", **kwargs)


def test_inputs_with_different_batches_are_refused():
    class Two(torch.nn.Module):
        def forward(self, a, b):
            return a.sum(0) + b.sum(0)
    with pytest.raises(OptionError, match="sizes differ: input 0 4, input 1 6"):
        tt.compile(Two(), (torch.randn(4, 8), torch.randn(6, 8)), dp=2, target="trn1")
