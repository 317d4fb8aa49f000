"""`trnlab` checks every argument before any simulation: one line on stderr naming the option, the value
and the valid values, exit code 2, no traceback. Also: --version, model --list, help on every option,
`run` handing everything after the script path to the script, missing optional extras."""
import sys
import textwrap

import pytest
import typer
from typer.testing import CliRunner

from trnlab.cli import app


def invoke(*args, **kw):
    return CliRunner().invoke(app, list(args), **kw)


@pytest.fixture
def no_simulation(monkeypatch):
    """Any simulation started by a command fails the test."""
    import trnlab.profile.cli as pcli
    import trnlab.bench.calibrate as cal

    def boom(*a, **k):
        raise AssertionError("a simulation started before the arguments were checked")
    monkeypatch.setattr(pcli, "profile_builtin", boom)
    monkeypatch.setattr(pcli, "profile_script", boom)
    monkeypatch.setattr(cal, "calibrate", boom)
    monkeypatch.setattr("trnlab.torch.cli.compile_builtin", boom)


@pytest.mark.parametrize("args, needles", [
    (["demo", "--target", "foo"], ["--target", "'foo'", "trn1|gen2"]),
    (["model", "llama-tiny", "--target", "foo"], ["--target", "'foo'", "trn2"]),
    (["profile", "add", "--target", "foo"], ["--target", "'foo'", "trn3"]),
    (["run", "--target", "foo", "x.py"], ["--target", "'foo'", "trn1"]),
    (["model", "llama-tiny", "--batch", "0"], ["--batch", ">= 1", "0"]),
    (["model", "llama-tiny", "--seq", "-1"], ["--seq", ">= 1", "-1"]),
    (["model", "llama-tiny", "--decode", "-3"], ["--decode", ">= 0", "-3"]),
    (["model", "llama-tiny", "--dtype", "fp64"], ["--dtype", "'fp64'", "bf16|fp32"]),
    (["model", "llama-tiny", "--max-instructions", "0"], ["--max-instructions", ">= 1"]),
    (["calibrate", "--tolerance", "nan"], ["--tolerance", "nan", ">= 0"]),
    (["calibrate", "--tolerance", "-0.1"], ["--tolerance", "-0.1"]),
    (["model", "llama-nope"], ["unknown model", "'llama-nope'", "llama-tiny", "gpt2-tiny"]),
    (["model", "llama-8b-layer", "--decode", "2"], ["--decode", "'llama-8b-layer'", "llama-tiny"]),
    (["model", "hf-bert", "--decode", "2"], ["--decode", "'hf-bert'", "gpt2-tiny"]),
    (["model", "gpt2-tiny", "--seq", "510", "--decode", "4"], ["gpt2-tiny has 512 learned positions", "514"]),
])
def test_bad_argument_is_one_line_exit_2(no_simulation, args, needles):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"trnlab {args[0]}:"), result.stderr
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["profile", "add"], ["model", "llama-tiny"], ["demo"]])
def test_out_that_is_a_file_is_refused(no_simulation, tmp_path, command):
    target = tmp_path / "report.txt"
    target.write_text("keep me")
    result = invoke(*command, "--out", str(target))
    assert result.exit_code == 2
    assert "existing file" in result.stderr and str(target) in result.stderr
    assert target.read_text() == "keep me"


def test_out_in_unwritable_place_is_refused(no_simulation, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke("profile", "add", "--out", str(blocker / "sub"))       # parent is a file
    assert result.exit_code == 2 and "cannot create" in result.stderr


def test_out_foreign_nonempty_folder_is_refused(no_simulation, tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    result = invoke("profile", "add", "--out", str(tmp_path))
    assert result.exit_code == 2 and "not a trnlab output" in result.stderr
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_version():
    from trnlab import __version__
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"trnlab {__version__}"


def test_model_list():
    from trnlab.torch.models import CONFIGS
    result = invoke("model", "--list")
    assert result.exit_code == 0
    listed = result.stdout.split()
    assert "llama-tiny" in listed and "hf-llama" in listed and set(CONFIGS) <= set(listed)


def test_every_option_of_every_command_has_help():
    group = typer.main.get_command(app)
    missing = []
    for name, command in group.commands.items():
        assert command.help, name
        for param in command.params:      # typer vendors its own click: no isinstance on click's classes
            assert param.param_type_name in ("option", "argument")
            if not param.help:
                missing.append(f"{name} {param.opts}")
    assert not missing


def test_run_gives_everything_after_the_script_to_the_script(tmp_path, capsys):
    script = tmp_path / "s.py"
    script.write_text("import sys\nprint('ARGV', sys.argv[1:])\n")
    result = invoke("run", str(script), "--target", "X", "--help")
    assert result.exit_code == 0, result.output
    assert "ARGV ['--target', 'X', '--help']" in capsys.readouterr().out + result.output


def test_run_options_before_the_script_are_trnlab_s(tmp_path, capsys):
    script = tmp_path / "s.py"
    script.write_text(textwrap.dedent("""
        import sys
        import nki.language as nl
        print('ARGV', sys.argv[1:], nl.tile_size.pmax)
    """))
    result = invoke("run", "--target", "trn1", str(script), "a")
    assert result.exit_code == 0, result.output
    assert "ARGV ['a']" in capsys.readouterr().out + result.output


@pytest.mark.parametrize("args, module, extra", [
    (["pytest", "-q"], "pytest", "trnlab[test]"),
    (["model", "hf-llama", "--timing-only", "--seq", "8"], "transformers", "trnlab[hf]"),
])
def test_missing_extra_names_the_pip_extra(monkeypatch, args, module, extra):
    monkeypatch.setitem(sys.modules, module, None)        # `import module` now raises ImportError
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert f"pip install '{extra}'" in result.stderr and "Traceback" not in result.output


def test_missing_torch_names_the_torch_extra(monkeypatch):
    for name in [n for n in sys.modules if n == "trnlab.torch" or n.startswith("trnlab.torch.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)
    result = invoke("model", "llama-tiny")
    assert result.exit_code == 2 and "pip install 'trnlab[torch]'" in result.stderr


def test_max_instructions_reaches_config_only_during_the_command(monkeypatch, tmp_path):
    from trnlab import config
    monkeypatch.delenv("TRNLAB_MAX_INSTRUCTIONS", raising=False)
    seen = []
    script = tmp_path / "s.py"
    script.write_text("")
    monkeypatch.setattr("trnlab.compat.run_script", lambda *a, **k: seen.append(config.max_instructions()) or 0)
    assert invoke("run", "--max-instructions", "1234", str(script)).exit_code == 0
    assert seen == [1234] and config.max_instructions() is None


def test_piped_tables_are_not_cut_at_80_columns():
    result = invoke("chips")            # CliRunner output is not a terminal
    assert result.exit_code == 0
    header = next(line for line in result.stdout.splitlines() if "SBUF/partition" in line)
    assert "DMA queues" in header and len(header) > 80

