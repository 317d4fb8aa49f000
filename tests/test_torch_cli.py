"""Tests of trnlab.torch.cli."""
import trnlab.torch  # noqa: F401  (registers the backend)


def test_model_command_unknown_model_message(capsys):
    """An unknown model name is one clear line (it used to print the KeyError repr with extra quotes)."""
    from trnlab.torch.cli import model_command
    assert model_command("no-such-model") == 1
    out = capsys.readouterr()
    text = " ".join((out.out + out.err).split())
    assert "KeyError: unknown model 'no-such-model'; built-ins:" in text and "llama-tiny" in text
