"""Every command resolves its target the same way: --target, else $NEURON_PLATFORM_TARGET_OVERRIDE, else trn2."""
import json

import pytest
from typer.testing import CliRunner

from trnlab.cli import app


def model_target(*args):
    result = CliRunner().invoke(app, ["model", "gpt2-tiny", "--seq", "8", "--timing-only", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["target"]


def test_model_honours_the_target_override(monkeypatch):
    monkeypatch.setenv("NEURON_PLATFORM_TARGET_OVERRIDE", "trn1")
    assert model_target() == "trn1"
    assert model_target("--target", "gen4") == "trn3"          # an explicit --target wins


def test_model_default_is_trn2(monkeypatch):
    monkeypatch.delenv("NEURON_PLATFORM_TARGET_OVERRIDE", raising=False)
    monkeypatch.delenv("NKI_NC_VERSION", raising=False)
    assert model_target() == "trn2"


class Stop(Exception):
    pass


@pytest.mark.parametrize("env, expected", [("trn1", "trn1"), ("gen4", "trn3"), (None, "trn2")])
def test_demo_honours_the_target_override(monkeypatch, tmp_path, env, expected):
    if env is None:
        monkeypatch.delenv("NEURON_PLATFORM_TARGET_OVERRIDE", raising=False)
    else:
        monkeypatch.setenv("NEURON_PLATFORM_TARGET_OVERRIDE", env)
    monkeypatch.delenv("NKI_NC_VERSION", raising=False)
    seen = []

    def spy(name, *, target, **kw):
        from trnlab.hw import get_chip
        seen.append(get_chip(target).name)
        raise Stop
    monkeypatch.setattr("trnlab.torch.cli.compile_builtin", spy)
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d")])
    assert isinstance(result.exception, Stop)
    assert seen == [expected]
    assert f"simulated {expected} NeuronCore" in " ".join(result.stdout.split())
