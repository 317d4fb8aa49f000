"""where / masked_fill are exact selections (eager PyTorch as the oracle), also when the branch not
taken holds inf or NaN (the safe-log pattern) and for infinite fill values (attention masks)."""
import pytest

torch = pytest.importorskip("torch")

import trnlab.torch as tt  # noqa: E402


class Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


CASES = {
    "safe_log": lambda x: torch.where(x > 0, torch.log(x), 0.0),                 # NaN in the branch not taken
    "neg_inf_fill": lambda x: x.masked_fill(x < 0, float("-inf")),
    "inf_scalars": lambda x: torch.where(x > 0, float("inf"), float("-inf")),
    "inf_tensor_branch": lambda x: torch.where(x > 0, x, x / 0.0),                # +-inf where not taken
    "broadcast_cond": lambda x: torch.where(x[:, :1] > 0, x, -x),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", list(CASES))
def test_where_selects_exactly(case, dtype):
    x = torch.tensor([[-2.0, -0.5, 0.0, 0.5, 3.0], [1.0, -1.0, 2.0, -3.0, 0.25]])
    model = Fn(CASES[case])
    out = tt.compile(model, (x,), dtype=dtype, check=False).last_run.outputs
    ref = model(x.to(dtype))
    assert out.dtype == x.dtype          # outputs come back in the model's (eager) dtype
    out = out.to(ref.dtype)              # exact: the device computed in `dtype`
    assert torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(torch.nan_to_num(out, nan=7.0), torch.nan_to_num(ref, nan=7.0)), (out, ref)
