"""The numerics check (trnlab.torch.api.compare / check_output): NaN and inf compared position by
position with eager PyTorch. Oracle: hand-written tensors and eager PyTorch."""
import math

import pytest

torch = pytest.importorskip("torch")

import trnlab.torch as tt  # noqa: E402
from trnlab.torch.api import check_output  # noqa: E402

NAN, INF = float("nan"), float("inf")


def test_nan_input_matching_eager_passes():
    """Eager gives NaN where the input is NaN; the check used to fail although outputs matched."""
    class Scale(torch.nn.Module):
        def forward(self, x):
            return x * 2 + 1
    x = torch.randn(4, 8)
    x[1, 3] = NAN
    x[2, 0] = INF
    fn, rep = tt.compile(Scale(), (x,), dtype=torch.float32)
    out = fn.last_run.outputs
    assert math.isnan(out[1, 3]) and out[2, 0] == INF
    assert rep.numerics_ok, rep.numerics
    assert rep.numerics[0].nonfinite_mismatches == 0


def test_same_nan_and_inf_positions_pass_and_error_ignores_them():
    ref = torch.tensor([1.0, NAN, INF, -INF, 4.0])
    got = torch.tensor([1.0005, NAN, INF, -INF, 4.0])
    c = check_output("o", got, ref, 1e-3)
    assert c.ok and c.nonfinite_mismatches == 0
    assert c.max_abs_err == pytest.approx(0.0005, rel=1e-3)
    assert c.max_rel_err == pytest.approx(0.0005 / 4.0, rel=1e-3)      # scale: largest finite |ref|


@pytest.mark.parametrize("got, ref", [
    ([NAN, 2.0, 3.0], [1.0, 2.0, 3.0]),        # NaN where eager has a number
    ([1.0, INF, 3.0], [1.0, 2.0, 3.0]),        # inf where eager has a number
    ([1.0, 2.0, -INF], [1.0, 2.0, INF]),       # inf of the wrong sign
    ([1.0, 2.0, 3.0], [1.0, 2.0, INF]),        # a number where eager has inf
    ([1.0, 2.0, 3.0], [1.0, NAN, 3.0])])       # a number where eager has NaN
def test_nonfinite_where_eager_differs_fails(got, ref):
    c = check_output("o", torch.tensor(got), torch.tensor(ref), 1e-3)
    assert not c.ok and c.nonfinite_mismatches == 1


def test_nan_where_eager_is_nan_but_different_elsewhere_still_fails_on_error():
    ref = torch.tensor([NAN, 1.0, 2.0])
    got = torch.tensor([NAN, 1.0, 2.5])
    c = check_output("o", got, ref, 1e-3)
    assert not c.ok and c.nonfinite_mismatches == 0 and c.max_abs_err == pytest.approx(0.5)


def test_shape_mismatch_fails_instead_of_broadcasting():
    c = check_output("o", torch.ones(1, 3), torch.ones(2, 3), 1e-3)
    assert not c.ok and "[1, 3]" in c.output
