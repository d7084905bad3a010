import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cavmae
from cavmae.cli import COMMANDS, build_parser, main, parse_args

REPO = Path(__file__).resolve().parents[1]


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


def _python(*args: str) -> subprocess.CompletedProcess:
    """A fresh interpreter running this checkout's cavmae (not whatever copy is installed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO)


HELP_IMPORTS = """
import sys
from cavmae.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "timm", "torchvision", "torchaudio", "accelerate") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


@pytest.mark.parametrize("command", ["", *sorted(COMMANDS)])
def test_help_imports_no_torch(command):
    out = _python("-c", HELP_IMPORTS, *([command] if command else []), "--help")
    assert out.returncode == 0, out.stderr
    assert "usage: cavmae" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "HEAVY:", out.stdout.splitlines()[-1]


def test_python_dash_m_version():
    out = _python("-m", "cavmae", "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"cavmae {cavmae.__version__}"


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 4)" in out  # --workers, with help text
    assert "default: 1000" in out  # --samples-per-shard, without
    with pytest.raises(SystemExit):
        main(["info", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--kind {auto,pretrain,classifier}" in out and "(default: auto)" in out


def test_overrides_anywhere_after_the_subcommand():
    _, args = parse_args(["pretrain", "--config", "x.yaml", "--resume", "auto", "train.max_steps=2"])
    assert (args.config, args.resume, args.overrides) == ("x.yaml", "auto", ["train.max_steps=2"])
    _, args = parse_args(["finetune", "a.b=1", "--config", "x.yaml", "c.d=2", "-v"])
    assert args.overrides == ["a.b=1", "c.d=2"] and args.config == "x.yaml" and args.verbose
    _, args = parse_args(["-v", "convert", "in.pth", "--to", "cavmae", "out", "model.embed_dim=64"])
    assert (args.input, args.output, args.to, args.overrides) == ("in.pth", "out", "cavmae", ["model.embed_dim=64"])
    assert args.verbose


def test_convert_to_follows_the_output_name():
    from cavmae.commands.convert import output_layout

    assert output_layout("auto", "out/model") == "cavmae"
    assert output_layout("auto", "cav-mae.pth") == "official"
    assert output_layout("cavmae", "weird.pth") == "cavmae"


def test_a_word_beginning_with_dash_gets_a_hint_saying_how_to_pass_it(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["retrieve", "--embeddings", "e.safetensors", "--query-key", "-0DLPzsiXXE_30000"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and err.endswith(
        "argument --query-key: expected at least one argument "
        "(a value that begins with '-' joins its option: --query-key=-0DLPzsiXXE_30000)"
    )
    with pytest.raises(SystemExit):
        parse_args(["predict", "--model", "m", "-0DLPzsiXXE_30000.mp4"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "'-0DLPzsiXXE_30000.mp4' is no option: names that begin with '-' go after '--'" in err
    assert "cavmae predict ... -- -0DLPzsiXXE_30000.mp4" in err
    with pytest.raises(SystemExit):  # a mistyped long option is not taken for a name
        parse_args(["predict", "--model", "m", "--topk", "3", "a.mp4"])
    assert "go after '--'" not in capsys.readouterr().err


def test_words_after_double_dash_are_positional_with_options_anywhere():
    _, args = parse_args(["predict", "--model", "m", "--", "-0DL_30000.mp4", "--top-k"])
    assert args.files == ["-0DL_30000.mp4", "--top-k"] and args.model == "m" and args.top_k == 5
    _, args = parse_args(["predict", "a.mp4", "--top-k", "2", "--model", "m", "--", "-b.mp4"])
    assert args.files == ["a.mp4", "-b.mp4"] and args.top_k == 2
    _, args = parse_args(["retrieve", "--embeddings", "e", "--query-key=-a", "--query-key", "b", "c", "--query-key=-d"])
    assert args.query_key == ["-a", "b", "c", "-d"]
    _, args = parse_args(["verify-shards", "--size-only", "--", "-s.tar"])
    assert args.shards == ["-s.tar"] and args.size_only


def _options(command: str) -> dict[str, argparse.Action]:
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {option: action for action in sub._actions for option in action.option_strings}


def test_one_option_name_for_the_label_index_in_every_command():
    """A label index CSV is --label-csv (the config's data.label_csv) wherever a command takes one."""
    takes_index = set()
    for command in COMMANDS:
        options = _options(command)
        about_index = {o for o, a in options.items() if "label index" in (a.help or "")}
        assert about_index <= {"--label-csv"}, (command, about_index)
        assert "--labels" not in options, command
        if "--label-csv" in options:
            takes_index.add(command)
    assert takes_index == {"prepare", "evaluate", "predict"}


def test_an_override_repeated_by_the_shells_brace_expansion_is_warned_about(caplog):
    """bash turns data.train_shards=[s-{000000..000002}.tar] into three overrides; the last would win silently."""
    expanded = subprocess.run(
        ["bash", "-c", "printf '%s\\n' data.train_shards=[s-{000000..000002}.tar] train.epochs=2 data.synthetic=false"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert len(expanded) == 5
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["info", "--config", str(REPO / "configs" / "tiny.yaml"), *expanded]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(
        "data.train_shards is set 3 times; the last wins ([s-000002.tar]). If a brace pattern was meant, the shell "
        "expanded it: quote the override"
    )
