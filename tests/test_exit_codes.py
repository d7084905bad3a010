"""Exit codes, the same for every ``cavmae`` command (cavmae/cli.py): 0 success, 1 the command ran and failed (an
input missing or unusable, an output in the way), 2 the command line is wrong in itself (a bad flag, a config
error, options that contradict each other). One table row per command and kind of error; each error is one logged
line, no traceback."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from train_helpers import REPO, TINY, micro_overrides

import cavmae
from cavmae.cli import COMMANDS, main
from cavmae.eval.retrieval import EmbeddingSet

TINY_FT = REPO / "configs" / "tiny_finetune.yaml"


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> SimpleNamespace:
    """A pre-training model, an embedding set, a plain file and a path that does not exist."""
    root = tmp_path_factory.mktemp("codes")
    cfg = cavmae.ModelConfig(
        embed_dim=32, num_heads=2, modality_depth=1, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2
    )
    model = cavmae.save_pretrained(cavmae.create_model(cfg), root / "pretrain_model")
    emb = EmbeddingSet(["a", "b"], torch.eye(2), torch.eye(2)).save(root / "emb.safetensors")
    plain = root / "notes.txt"
    plain.write_text("not a folder")
    return SimpleNamespace(root=root, model=model, emb=emb, file=plain, missing=root / "does-not-exist")


def _usage(p: SimpleNamespace, command: str) -> list:
    """A command line that is wrong in itself (config error, options in conflict, a value the command refuses)."""
    out = p.root / f"out-{command}"
    return {
        "convert": ["convert", p.missing, out, "--from", "mae", "model.no_such_key=1"],
        "demo": ["demo", "--seeds", "0", "--out", out],
        "embed": ["embed", "--model", p.model, "--shards", "x.tar", "--out", out, "--dtype", "fp8"],
        "evaluate": ["evaluate", "--model", p.model, "--shards", "x.tar", "--mode", "no-such-mode"],
        "index": ["index", "--embeddings", p.emb, "--out", out, "--kind", "flat", "--nlist", "4"],
        "crossval": ["crossval", "--config", TINY_FT, "--fold", "1", "--gather"],  # options in conflict
        "info": ["info", "model.no_such_key=1"],
        "predict": ["predict", "clip.mp4", "--model", p.model],  # a pre-training model cannot classify
        "prepare": ["prepare", "--out", out],  # no input given
        "pretrain": ["pretrain", "--config", TINY, "model.num_heads=5"],
        "finetune": ["finetune", "--config", TINY_FT, "model.num_heads=5"],
        "retrieve": ["retrieve", "--top-k", "3"],  # nothing to search
        "synth": ["synth", "--out", out, "--size", "1", "2", "3"],
        "stats": ["stats", "--shards", "x.tar", "--clips", "-1"],
        "verify-shards": ["verify-shards", "x.tar", "--threads", "many"],
    }[command]


def _failure(p: SimpleNamespace, command: str) -> list:
    """A command line that is right but meets a missing input (or an output path under a plain file)."""
    out = p.root / f"out-{command}"
    return {
        "convert": ["convert", p.missing, out],
        "demo": ["demo", "--quick", "--out", p.file / "demo"],
        "embed": ["embed", "--model", p.missing, "--shards", "x.tar", "--out", out],
        "evaluate": ["evaluate", "--model", p.missing, "--shards", "x.tar"],
        "index": ["index", "--embeddings", p.missing, "--out", out],
        "crossval": [
            "crossval",
            "--config",
            TINY_FT,
            "data.synthetic=false",
            f"data.train_shards=[{p.missing}/s-{{000000..000001}}.tar]",
            f"train.out_dir={out}",
        ],
        "info": ["info", "--model", p.missing],
        "predict": ["predict", "clip.mp4", "--model", p.missing],
        "prepare": ["prepare", "--videos", p.missing, "--out", out],
        "pretrain": ["pretrain", "--config", TINY, *micro_overrides(out, f"train.init={p.missing}")],
        "finetune": [
            "finetune",
            "--config",
            TINY_FT,
            *micro_overrides(out, f"train.init={p.missing}", "finetune.average_epochs=null"),
        ],
        "retrieve": ["retrieve", "--embeddings", p.missing],
        "synth": ["synth", "--out", p.file / "synth", "--clips", "1", "--duration", "1", "--size", "32"],
        "stats": ["stats", "--shards", f"{p.missing}/s-{{000000..000001}}.tar"],
        "verify-shards": ["verify-shards", f"{p.missing}/s-{{000000..000001}}.tar"],
    }[command]


def run(caplog, argv: list) -> tuple[int, list[str]]:
    """(exit code, ERROR lines logged) of ``cavmae ARGV``; argparse's exit counts as the exit code."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
    return code, [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


ROWS = [
    pytest.param(
        command,
        kind,
        id=f"{command}-{kind}",
    )
    for command in COMMANDS
    for kind in ("usage", "failure")
]


@pytest.mark.parametrize("command, kind", ROWS)
def test_exit_code(command, kind, paths, caplog, capsys):
    argv = (_usage if kind == "usage" else _failure)(paths, command)
    code, errors = run(caplog, argv)
    want = 2 if kind == "usage" else 1
    assert code == want, (argv, code, errors, capsys.readouterr().err[-500:])
    if errors:  # not argparse's: the command's own line, one line only
        assert len(errors) == 1 and "\n" not in errors[0] and "Traceback" not in errors[0], errors


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_bad_flag_is_2_and_help_is_0(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--no-such-flag"])
    assert e.value.code == 2 and f"cavmae {command}: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0


def test_a_bug_is_not_an_exit_code(monkeypatch):
    """Only errors of bad input become exit codes; anything else (a bug) keeps its traceback."""
    from cavmae.commands import info

    def broken(args):
        raise AttributeError("a bug")

    monkeypatch.setattr(info, "run", broken)
    with pytest.raises(AttributeError, match="a bug"):
        main(["info"])


def test_config_error_from_any_command_is_2(monkeypatch, caplog):
    """ConfigError maps to 2 in cavmae.cli, whichever command lets it escape (ValueError, its base class, is 1)."""
    from cavmae.commands import verify_shards
    from cavmae.config import ConfigError

    def raises(error):
        def run(args):
            raise error

        return run

    monkeypatch.setattr(verify_shards, "run", raises(ConfigError("data.x: bad")))
    assert run(caplog, ["verify-shards", "x.tar"]) == (2, ["data.x: bad"])
    monkeypatch.setattr(verify_shards, "run", raises(ValueError("x.tar: bad")))
    assert run(caplog, ["verify-shards", "x.tar"]) == (1, ["x.tar: bad"])
    monkeypatch.setattr(verify_shards, "run", raises(KeyError("key 'k' is not in the set")))
    assert run(caplog, ["verify-shards", "x.tar"]) == (1, ["key 'k' is not in the set"])
