"""trnlab.torch.compile and the torch.compile backend honour AWS's target override, as the CLI does."""
import torch

import trnlab.torch as tt
from trnlab.torch import dynamo


def test_compile_default_target_follows_the_environment(monkeypatch):
    monkeypatch.setenv("NEURON_PLATFORM_TARGET_OVERRIDE", "trn1")
    compiled = tt.compile(torch.nn.Linear(8, 8), (torch.randn(2, 8),), check=False)
    assert compiled.chip.name == "trn1"


def test_backend_default_target_follows_the_environment(monkeypatch):
    monkeypatch.setenv("NEURON_PLATFORM_TARGET_OVERRIDE", "gen4")
    torch._dynamo.reset()
    fn = torch.compile(torch.nn.Linear(8, 8), backend="trnlab", options={"check": False})
    with torch.no_grad():                 # inference (with grad enabled the call is a training capture)
        fn(torch.randn(2, 8))
    assert dynamo.last_compiled().chip.name == "trn3"
