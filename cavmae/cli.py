"""The ``cavmae`` command: one subcommand per job, each a thin call into the library.

Each entry of ``COMMANDS`` names a module that defines ``add_arguments(parser)`` and ``run(args) -> int``. Modules
are imported only when their subcommand runs, so ``cavmae --help`` stays fast and a missing optional dependency of
one job does not break the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("cavmae.commands.demo", "the whole pipeline on synthetic videos in minutes on a CPU, with a report"),
    "convert": ("cavmae.commands.convert", "convert checkpoints: ours <-> official CAV-MAE, MAE ImageNet -> CAV-MAE"),
    "info": ("cavmae.commands.info", "print the resolved config and parameter counts of a recipe or model"),
    "pretrain": ("cavmae.commands.pretrain", "CAV-MAE pre-training on CPU, one or many GPUs (Accelerate)"),
    "finetune": ("cavmae.commands.finetune", "fine-tune a classifier from a pre-trained model (Accelerate)"),
    "retrieve": ("cavmae.commands.retrieve", "audio<->video retrieval: embed shards, R@k / ranks, query files or keys"),
    "predict": ("cavmae.commands.predict", "top-k classes of raw video / audio files with a fine-tuned model"),
    "prepare": ("cavmae.commands.prepare", "turn videos + AudioSet/VGGSound metadata into WebDataset shards"),
    "verify-shards": ("cavmae.commands.verify_shards", "check shards against their manifests (size and sha256)"),
    "synth": ("cavmae.commands.synth", "write a synthetic audio-visual dataset (H.264 + AAC files and CSVs)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; the arguments of ``command`` (and only those) are added, importing just its module."""
    parser = argparse.ArgumentParser(prog="cavmae", description="CAV-MAE pre-training, fine-tuning and retrieval")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The subcommand is the first word that is not an option of the top-level parser.
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
