"""Tests of trnlab.torch.dynamo."""
import torch

import trnlab.torch  # noqa: F401  (registers the backend)


def test_dynamo_backend_handles_new_input_shapes():
    """The dynamic graph dynamo builds on the 2nd distinct shape is called with further shapes; the
    backend used to reuse the Program specialised to the first call and fail with OutOfBoundsError."""
    torch.manual_seed(0)
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU())
    compiled = torch.compile(model, backend="trnlab", options={"dtype": "fp32"})
    for n in (4, 8, 16):
        x = torch.randn(n, 64)
        with torch.no_grad():
            got, ref = compiled(x), model(x)
        assert got.shape == ref.shape
        assert float((got - ref).abs().max()) <= 1e-3 * float(ref.abs().max())   # fp32 bound of the report
