import subprocess
import sys

import pytest

from cavmae.cli import COMMANDS, main


def test_help_lists_every_subcommand(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_subcommand_help_shows_its_options(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: cavmae {command}" in out
    # the module's own arguments are listed, not just -h
    assert len([line for line in out.splitlines() if line.strip().startswith(("-", "--"))]) >= 2 or (
        "positional arguments" in out
    )


def test_unknown_subcommand_fails():
    out = subprocess.run([sys.executable, "-m", "cavmae.cli", "frobnicate"], capture_output=True, text=True)
    assert out.returncode == 2 and "invalid choice" in out.stderr
