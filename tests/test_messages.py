"""User errors get one clear line naming the field or file (no traceback), and leave no half-made run behind.

Each case runs the command in this process through ``cavmae.cli.main``: an exception escaping it would be the
traceback a user sees, so a test passing means the command returned an exit code and logged its one line.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import REPO, TINY, micro_overrides

from cavmae.cli import main

TINY_FT = REPO / "configs" / "tiny_finetune.yaml"


def cli(caplog, *argv: str) -> tuple[int, list[str]]:
    """Run ``cavmae ARGV``; returns (exit code, the ERROR lines it logged)."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        code = main([str(a) for a in argv])
    return code, [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def one_error(caplog, *argv: str) -> str:
    code, errors = cli(caplog, *argv)
    assert code != 0 and len(errors) == 1, errors
    assert "\n" not in errors[0]
    return errors[0]


# ---------------------------------------------------------------------------------------------------------------
# cavmae info


def test_info_config_errors_are_one_line(caplog, tmp_path):
    assert "nope.yaml does not exist" in one_error(caplog, "info", "--config", tmp_path / "nope.yaml")
    assert "model.num_heads" in one_error(caplog, "info", "--config", TINY, "model.num_heads=5")
    assert "unknown config key 'model.nope'" in one_error(caplog, "info", "model.nope=1")
    msg = one_error(caplog, "info", "--config", TINY, "model.backbone=transformer")
    assert "model.backbone" in msg and "'transformer'" in msg and "vit" in msg


def test_info_model_errors_are_one_line(caplog, tmp_path):
    (tmp_path / "empty").mkdir()
    assert "model.safetensors is missing" in one_error(caplog, "info", "--model", tmp_path / "empty")
    assert "does not exist" in one_error(caplog, "info", "--model", tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    assert "junk.pth" in one_error(caplog, "info", "--model", tmp_path / "junk.pth")


def test_info_on_a_finetuning_recipe_describes_the_classifier(caplog, capsys):
    code, _ = cli(caplog, "info", "--config", TINY_FT)
    assert code == 0
    assert '"kind": "classifier"' in capsys.readouterr().out
    code, _ = cli(caplog, "info", "--config", TINY_FT, "--kind", "pretrain")
    assert code == 0 and '"kind": "pretrain"' in capsys.readouterr().out
    code, _ = cli(caplog, "info", "--config", TINY)
    assert code == 0 and '"kind": "pretrain"' in capsys.readouterr().out


def test_info_error_in_a_fresh_process_prints_no_traceback():
    out = subprocess.run(
        [sys.executable, "-m", "cavmae", "info", "--config", str(TINY), "model.backbone=nope"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "model.backbone" in out.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------------------------------
# the config is checked before torch loads


CHECK_BEFORE_TORCH = """
import json, sys
from cavmae.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["pretrain", "--config", TINY, "train.epoch=3"],
        ["finetune", "--config", TINY_FT, "train.epoch=3"],
        ["pretrain", "--config", TINY_FT],  # fine-tuning settings given to pre-training
        ["info", "--config", TINY, "train.epoch=3"],
    ],
    ids=["pretrain", "finetune", "pretrain-given-finetune", "info"],
)
def test_a_config_error_answers_before_torch_is_imported(argv):
    """A typo answers in a fraction of a second with exit code 2: torch (seconds to import) is not loaded yet."""
    out = subprocess.run(
        [sys.executable, "-c", CHECK_BEFORE_TORCH, *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"code": 2, "torch": False}, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "train.epoch'; did you mean 'train.epochs'?" in last or "fine-tuning settings" in last, last


def test_a_missing_demo_recipe_answers_before_torch_is_imported(tmp_path):
    """An installed copy without its recipes: the demo says which one is missing before writing anything."""
    script = CHECK_BEFORE_TORCH.replace(
        "from cavmae.cli import main",
        "from cavmae.config import loading\nloading.__file__ = sys.argv.pop(1)\nfrom cavmae.cli import main",
    )
    fake = tmp_path / "site" / "cavmae" / "config" / "loading.py"
    out = subprocess.run(
        [sys.executable, "-c", script, str(fake), "demo", "--out", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"code": 2, "torch": False}, out.stderr
    assert "no shipped recipe 'tiny'" in out.stderr and not (tmp_path / "demo").exists()


# ---------------------------------------------------------------------------------------------------------------
# --resume


def test_resume_auto_into_a_new_folder_warns_and_starts_at_step_zero(caplog, tmp_path):
    """Preemptible jobs pass --resume auto from their first start: a fresh start, but never a quiet one."""
    out = tmp_path / "new_run"
    code, errors = cli(
        caplog, "pretrain", "--config", TINY, "--resume", "auto", *micro_overrides(out, "train.max_steps=1")
    )
    assert code == 0, errors
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "no checkpoint found" in w and str(out.resolve()) in w and "training starts at step 0" in w for w in warnings
    ), warnings
    assert (out / "model" / "model.safetensors").is_file()


def test_resume_from_a_path_that_is_not_a_checkpoint_says_what_it_is(caplog, micro_run, tmp_path):
    run = ["pretrain", "--config", TINY, *micro_overrides(tmp_path / "run", "train.max_steps=4")]
    missing = tmp_path / "ckpt-typo"
    assert one_error(caplog, *run, "--resume", missing) == f"--resume {missing}: {missing} does not exist"
    folder = tmp_path / "folder"
    folder.mkdir()
    msg = one_error(caplog, *run, "--resume", folder)
    assert msg.startswith(f"--resume {folder}: {folder} is not a checkpoint (no meta.json); expected a checkpoint")
    msg = one_error(caplog, *run, "--resume", micro_run)
    assert f"{micro_run} is a run directory; pass --resume auto with train.out_dir={micro_run}" in msg
    assert str(micro_run / "checkpoints" / "ckpt-00000002") in msg


# ---------------------------------------------------------------------------------------------------------------
# train.init


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory) -> Path:
    """A finished two-step pre-training run of the micro model (run directory with model/ and a checkpoint)."""
    from cavmae.config import load_config
    from cavmae.train import train

    out = tmp_path_factory.mktemp("micro") / "run"
    return train(load_config(TINY, micro_overrides(out, "train.max_steps=2", "train.ckpt_every=2")))


def finetune_args(out: Path, *extra: str) -> list[str]:
    overrides = micro_overrides(out, "train.max_steps=1", "finetune.average_epochs=null", *extra)
    return ["finetune", "--config", TINY_FT, *overrides]


def test_init_from_a_run_directory_uses_its_model(caplog, micro_run, tmp_path):
    code, errors = cli(caplog, *finetune_args(tmp_path / "ft", f"train.init={micro_run}"))
    assert code == 0, errors
    assert f"{micro_run} is a run directory: using its final model" in caplog.text
    assert (tmp_path / "ft" / "model" / "model.safetensors").is_file()


def test_init_from_an_unfinished_run_says_what_to_pass(caplog, micro_run, tmp_path):
    import shutil

    unfinished = tmp_path / "unfinished"
    shutil.copytree(micro_run, unfinished)
    shutil.rmtree(unfinished / "model")
    msg = one_error(caplog, *finetune_args(tmp_path / "ft", f"train.init={unfinished}"))
    assert msg.startswith("train.init:") and "without a final model" in msg
    assert str(unfinished / "checkpoints" / "ckpt-00000002") in msg
    assert not (tmp_path / "ft").exists()


def test_init_from_a_truncated_model_names_the_file(caplog, micro_run, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(micro_run / "model", bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    msg = one_error(caplog, *finetune_args(tmp_path / "ft", f"train.init={bad}"))
    assert msg.startswith("train.init:") and str(weights) in msg and "damaged or truncated" in msg
    assert str(weights) in one_error(caplog, "info", "--model", bad)
    assert not (tmp_path / "ft").exists()


# ---------------------------------------------------------------------------------------------------------------
# data set-up errors before the first step


def test_num_classes_mismatch_is_one_line_and_leaves_no_run_directory(caplog, tiny_shards, tmp_path):
    out = tmp_path / "ft"
    msg = one_error(
        caplog,
        *finetune_args(
            out,
            "data.synthetic=false",
            f"data.train_shards=[{tiny_shards.pattern}]",
            "model.num_classes=2",  # the shards hold 4 classes
            "data.batch_size=2",
        ),
    )
    assert "num_classes" in msg and "4 classes" in msg and "tiny-manifest.json" in msg
    assert not out.exists()
    assert f"removed {out}" in caplog.text


def test_a_failed_resume_keeps_the_earlier_run(caplog, micro_run, tmp_path):
    """Clean-up removes only a directory the failed run created itself."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(micro_run, run)
    args = micro_overrides(run, "data.synthetic=false")  # no data at all: fails before the first step
    msg = one_error(caplog, "pretrain", "--config", TINY, "--resume", "auto", *args)
    assert "data." in msg
    assert (run / "model" / "model.safetensors").is_file() and (run / "config.yaml").is_file()
    assert list((run / "checkpoints").glob("ckpt-*"))


# ---------------------------------------------------------------------------------------------------------------
# small things: synth over an earlier dataset, prepare's unmatched files, logger names, query keys


def synth_args(out: Path, *extra: str) -> list[str]:
    return ["synth", "--out", out, "--clips", "2", "--classes", "2", "--duration", "1", "--size", "32", *extra]


def test_synth_refuses_an_earlier_dataset_unless_overwrite(caplog, tmp_path):
    out = tmp_path / "syn"
    assert cli(caplog, *synth_args(out))[0] == 0
    first = sorted(p.name for p in (out / "videos").iterdir())
    assert cli(caplog, *synth_args(out))[0] == 0  # the same dataset again: every file is rewritten, none stale
    msg = one_error(caplog, *synth_args(out, "--seed", "1"))
    assert str(out / "videos") in msg and "already holds 2 file(s)" in msg and "--overwrite" in msg
    assert sorted(p.name for p in (out / "videos").iterdir()) == first  # nothing touched
    assert cli(caplog, *synth_args(out, "--seed", "1", "--overwrite"))[0] == 0
    second = sorted(p.name for p in (out / "videos").iterdir())
    assert len(second) == 2 and not set(second) & set(first)


def test_prepare_log_names_unmatched_files(caplog, tmp_path):
    import shutil

    out = tmp_path / "syn"
    assert cli(caplog, *synth_args(out))[0] == 0
    video = next((out / "videos").iterdir())
    shutil.copy(video, out / "videos" / "stray_clip.mp4")
    code, errors = cli(
        caplog,
        "prepare",
        "--videos",
        out / "videos",
        "--csv",
        out / "audioset.csv",
        "--label-csv",
        out / "class_labels_indices.csv",
        "--out",
        tmp_path / "shards",
        "--workers",
        "0",
    )
    assert code == 0, errors
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("1 media file(s)" in w and "stray_clip.mp4" in w and "left out" in w for w in warnings), warnings


def test_finetune_errors_are_logged_under_finetune(caplog, tmp_path):
    code, _ = cli(caplog, "finetune", "--config", TINY_FT, "model.num_heads=5")
    assert code == 2
    names = {r.name for r in caplog.records if r.levelno >= logging.ERROR}
    assert names == {"cavmae.commands.finetune"}


def test_unknown_query_key_is_printed_without_quotes(caplog, tmp_path):
    import torch

    from cavmae.eval.retrieval import EmbeddingSet

    path = EmbeddingSet(["a", "b"], torch.eye(2), torch.eye(2)).save(tmp_path / "emb.safetensors")
    msg = one_error(caplog, "retrieve", "--embeddings", path, "--query-key", "nope")
    assert msg == "key 'nope' is not in the embedding set (2 clips)"
