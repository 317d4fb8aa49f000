"""Environment flags accept only their documented values (trnlab.config); anything else is a typed error
naming the variable, the value and the valid values, and the CLI refuses it before running anything."""
import pytest
from typer.testing import CliRunner

from trnlab import config
from trnlab.cli import app
from trnlab.errors import ConfigError, TrnlabError

FLAGS = ["NEURON_PLATFORM_TARGET_OVERRIDE", "TRNLAB_TARGET", "NKI_NC_VERSION", "NKI_PRECISE_FP", "TRNLAB_STRICT",
         "TRNLAB_FORCE_COMPAT", "TRNLAB_MAX_INSTRUCTIONS"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in FLAGS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("name, value, read, valid", [
    ("TRNLAB_STRICT", "yes", config.strict_uninitialized, "0|1"),
    ("NKI_PRECISE_FP", "banana", config.precise_fp, "0|1"),
    ("TRNLAB_FORCE_COMPAT", "yes", config.force_compat, "0|1"),
    ("TRNLAB_STRICT", "true", config.strict_uninitialized, "0|1"),
    ("NEURON_PLATFORM_TARGET_OVERRIDE", "trn9", config.env_target, "trn1|gen2"),
    ("TRNLAB_TARGET", "h100", config.env_target, "trn3|gen4"),
    ("NKI_NC_VERSION", "7", config.env_target, "2|3|4"),
    ("TRNLAB_MAX_INSTRUCTIONS", "-5", config.max_instructions, "positive integer"),
    ("TRNLAB_MAX_INSTRUCTIONS", "1e6", config.max_instructions, "positive integer"),
])
def test_bad_value_is_refused_naming_variable_value_and_valid_values(monkeypatch, name, value, read, valid):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        read()
    message = str(info.value)
    assert name in message and repr(value) in message and valid in message
    assert isinstance(info.value, TrnlabError)


@pytest.mark.parametrize("name, value, read, expected", [
    ("TRNLAB_STRICT", "1", config.strict_uninitialized, True),
    ("TRNLAB_STRICT", "0", config.strict_uninitialized, False),
    ("TRNLAB_STRICT", "", config.strict_uninitialized, False),         # empty = unset
    ("TRNLAB_FORCE_COMPAT", "1", config.force_compat, True),
    ("NKI_PRECISE_FP", "0", config.precise_fp, False),
    ("NEURON_PLATFORM_TARGET_OVERRIDE", "gen2", config.env_target, "gen2"),
    ("NEURON_PLATFORM_TARGET_OVERRIDE", " TRN3 ", config.env_target, "trn3"),
    ("NKI_NC_VERSION", "v3", config.env_target, "trn2"),
    ("NKI_NC_VERSION", "gen4", config.env_target, "trn3"),
    ("TRNLAB_MAX_INSTRUCTIONS", "1000", config.max_instructions, 1000),
])
def test_documented_values_are_read(monkeypatch, name, value, read, expected):
    monkeypatch.setenv(name, value)
    assert read() == expected


def test_unset_defaults():
    assert config.env_target() is None and config.max_instructions() is None
    assert config.precise_fp() and not config.strict_uninitialized() and not config.force_compat()


def test_bad_target_override_is_not_taken_for_the_default_chip(monkeypatch):
    from trnlab.hw import get_chip
    monkeypatch.setenv("NEURON_PLATFORM_TARGET_OVERRIDE", "trn9")
    with pytest.raises(ConfigError, match="NEURON_PLATFORM_TARGET_OVERRIDE"):
        get_chip(None)
    assert get_chip("trn1").name == "trn1"         # an explicit target does not need the variable


@pytest.mark.parametrize("name, value", [("TRNLAB_STRICT", "yes"), ("NKI_PRECISE_FP", "banana"),
                                         ("TRNLAB_FORCE_COMPAT", "yes"),
                                         ("NEURON_PLATFORM_TARGET_OVERRIDE", "trn9")])
def test_cli_refuses_bad_flag_before_running(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["chips"])
    assert result.exit_code == 2
    assert name in result.stderr and value in result.stderr and "Traceback" not in result.output
    assert "trn2" not in result.stdout              # the chip table was not printed
