"""Options of trnlab.torch.compile and torch.compile(backend="trnlab"): every name and value checked
against the documented set (trnlab.torch.api.OPTIONS); anything else is an OptionError."""
import pytest

torch = pytest.importorskip("torch")

import trnlab.torch as tt  # noqa: E402
from trnlab.errors import OptionError, TrnlabError  # noqa: E402
from trnlab.torch.dynamo import last_compiled, last_training  # noqa: E402


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU())


def test_misspelt_torch_compile_option_is_refused_listing_valid_names():
    torch._dynamo.reset()
    compiled = torch.compile(model(), backend="trnlab", options={"tagret": "trn1"})
    with pytest.raises(OptionError) as info:
        compiled(torch.randn(4, 16))
    msg = str(info.value)
    assert "'tagret'" in msg and "'target'" in msg and "'fallback'" in msg


@pytest.mark.parametrize("options, words", [
    ({"fallback": "gpu"}, ["fallback='gpu'", "'cpu'"]),
    ({"dtype": "int8"}, ["dtype='int8'", "bf16"]),
    ({"check": "yes"}, ["check='yes'", "True or False"])])
def test_bad_option_values_are_refused(options, words):
    torch._dynamo.reset()
    compiled = torch.compile(model(), backend="trnlab", options=options)
    with pytest.raises(OptionError) as info:
        compiled(torch.randn(4, 16))
    assert all(w in str(info.value) for w in words), str(info.value)


def test_torch_compile_mode_is_refused():
    torch._dynamo.reset()
    compiled = torch.compile(model(), backend="trnlab", mode="max-autotune-no-cudagraphs")
    with pytest.raises(OptionError, match="mode='max-autotune-no-cudagraphs'"):
        compiled(torch.randn(4, 16))


def test_bad_target_is_a_typed_error():
    torch._dynamo.reset()
    compiled = torch.compile(model(), backend="trnlab", options={"target": "trn9"})
    with pytest.raises(TrnlabError, match="trn9"):
        compiled(torch.randn(4, 16))


def test_trnlab_compile_refuses_bad_fallback_and_dtype():
    x = torch.randn(4, 16)
    with pytest.raises(OptionError, match="fallback='gpu'"):
        tt.compile(model(), (x,), fallback="gpu")
    with pytest.raises(OptionError, match="torch.int8"):
        tt.compile(model(), (x,), dtype=torch.int8)


def test_documented_options_are_accepted():
    torch._dynamo.reset()
    m = model()
    options = {"target": "trn1", "dtype": "fp32", "fallback": "cpu", "numerics": True, "check": True,
               "name": "tiny mlp"}
    compiled = torch.compile(m, backend="trnlab", options=options)
    x = torch.randn(4, 16)
    with torch.no_grad():                   # inference (with grad enabled the call is a training capture)
        out = compiled(x)
        ref = m(x)
    assert out.dtype == torch.float32 and float((out - ref).abs().max()) <= 1e-3 * float(ref.abs().max())
    rep = last_compiled().report
    assert rep.model == "tiny mlp" and rep.target == "trn1" and rep.numerics_ok
    compiled(x).sum().backward()            # training: the same options reach the forward/backward graphs
    step = last_training()
    assert step.forward.model == "tiny mlp" and step.backward.target == "trn1" and step.backward.numerics_ok


def test_every_documented_option_is_in_the_docstring():
    from trnlab.torch import api
    for name in api.OPTIONS:
        assert f"\n  {name} " in api.__doc__, name
