"""The README's snippets work as pasted: every python block runs in a fresh interpreter, and every
`trnlab ...` command line names an existing subcommand and existing options."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from trnlab.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_block_runs_as_pasted(index, tmp_path):
    code = blocks("python")[index]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"README python block {index}:\n{code}\n{proc.stderr}"


def test_readme_has_python_blocks():
    assert len(blocks("python")) >= 2


def command_lines() -> list[list[str]]:
    lines = []
    for block in blocks("bash"):
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            words = shlex.split(line) if line else []
            while words and "=" in words[0]:             # VAR=value trnlab ...
                words = words[1:]
            if words[:1] == ["trnlab"]:
                lines.append(words[1:])
    return lines


def test_command_lines_name_real_commands_and_options():
    group = typer.main.get_command(app)
    lines = command_lines()
    assert len(lines) >= 8
    for words in lines:
        if not words or words[0].startswith("-"):
            continue
        assert words[0] in group.commands, words
        params = group.commands[words[0]].params
        known = {o for p in params for o in [*p.opts, *getattr(p, "secondary_opts", [])]}
        if words[0] in ("run", "pytest"):                 # after the script/path: the script's own arguments
            continue
        for word in words[1:]:
            if word.startswith("--"):
                assert word.split("=")[0] in known, (words, word)
