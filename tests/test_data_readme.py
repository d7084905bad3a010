"""data/README.md names only what exists: its Python names import, its command-line options belong to a cavmae
command, its config keys are fields of the config."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
from pathlib import Path

import pytest

from cavmae.cli import COMMANDS, build_parser
from cavmae.config.tree import DataConfig, EvalConfig, FinetuneConfig, ModelConfig, OptimConfig, TrainConfig

DATA_README = Path(__file__).resolve().parents[1] / "data" / "README.md"


def resolve(dotted: str) -> object:
    """Import the longest module prefix of `dotted`, then follow the rest as attributes (AttributeError if absent)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def command_options() -> set[str]:
    """Every option string of every cavmae subcommand."""
    options = set()
    for name in COMMANDS:
        parser = build_parser(name)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        options |= {s for action in sub._actions for s in action.option_strings}
    return options


@pytest.fixture(scope="module")
def text() -> str:
    return DATA_README.read_text()


def test_python_names_exist(text):
    names = sorted(set(re.findall(r"\bcavmae(?:\.\w+)+", text)))
    missing = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError):
            missing.append(name)
    assert not missing, f"data/README.md names what does not exist: {missing}"
    assert "cavmae.data.clips.make_synthetic_dataset" in names  # the synthetic-data section's entry point


def test_command_line_options_exist(text):
    # options of cavmae commands; other projects' flags (CAV-MAE's --n_class) have underscores and are not matched
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*\b(?!\w)", text))
    assert "--label-csv" in mentioned
    assert not mentioned - command_options(), f"no cavmae command has {sorted(mentioned - command_options())}"


def test_config_keys_exist(text):
    keys = set(re.findall(r"(?<![\w./])(data|model|train|optim|eval|finetune)\.([a-z_]+)", text))
    assert ("data", "frame_mode") in keys
    sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "optim": OptimConfig}
    sections |= {"eval": EvalConfig, "finetune": FinetuneConfig}
    unknown = sorted(f"{s}.{k}" for s, k in keys if k not in {f.name for f in dataclasses.fields(sections[s])})
    assert not unknown, f"data/README.md names config keys that do not exist: {unknown}"
