"""Review: torch.compile(backend="trnlab") with shape changes (dynamo recompiles a dynamic-shape graph)."""
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


def test_model_command_unknown_model_message(capsys):
    """An unknown model name is one clear line (it used to print the KeyError repr with extra quotes)."""
    from trnlab.torch.cli import model_command
    assert model_command("no-such-model") == 1
    out = capsys.readouterr()
    text = " ".join((out.out + out.err).split())
    assert "KeyError: unknown model 'no-such-model'; built-ins:" in text and "llama-tiny" in text
