"""The ``cavmae`` command: one subcommand per job, each a thin call into the library.

Each entry of ``COMMANDS`` names a module that defines ``add_arguments(parser)`` and ``run(args) -> int``. Modules
are imported only when their subcommand runs, and ``add_arguments`` imports nothing heavy (torch, timm and the
library are imported inside ``run``), so ``cavmae --help`` and ``cavmae <command> --help`` answer at once and a
missing optional dependency of one job does not break the others.

Options and dotted overrides mix freely after the subcommand: ``cavmae pretrain --config x.yaml --resume auto
train.max_steps=2`` (each subparser is read with ``parse_intermixed_args``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from cavmae import __version__

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("cavmae.commands.demo", "the whole pipeline on synthetic videos in minutes on a CPU, with a report"),
    "convert": ("cavmae.commands.convert", "convert checkpoints: ours <-> official CAV-MAE, MAE ImageNet -> CAV-MAE"),
    "info": ("cavmae.commands.info", "print the resolved config and parameter counts of a recipe or model"),
    "pretrain": ("cavmae.commands.pretrain", "CAV-MAE pre-training on CPU, one or many GPUs (Accelerate)"),
    "finetune": ("cavmae.commands.finetune", "fine-tune a classifier from a pre-trained model (Accelerate)"),
    "evaluate": (
        "cavmae.commands.evaluate",
        "score a model on shards the paper's way: mAP / top-1 (ten frames) or R@k",
    ),
    "retrieve": ("cavmae.commands.retrieve", "audio<->video retrieval: embed shards, R@k / ranks, query files or keys"),
    "embed": ("cavmae.commands.embed", "embed a shard set into embedding shards (resumable; Accelerate for GPUs)"),
    "index": ("cavmae.commands.index", "build FAISS indexes (exact flat or approximate IVF) over embeddings"),
    "predict": ("cavmae.commands.predict", "top-k classes of raw video / audio files with a fine-tuned model"),
    "prepare": ("cavmae.commands.prepare", "turn videos + AudioSet/VGGSound metadata into WebDataset shards"),
    "synth": ("cavmae.commands.synth", "write a synthetic audio-visual dataset (H.264 + AAC files and CSVs)"),
}


def _nothing_to_show(default: object) -> bool:
    return default is None or default is False or default == argparse.SUPPRESS or default == []


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is nothing to show (None, False, an empty list) or the
    help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or _nothing_to_show(default)
            or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
        ):
            return text
        if isinstance(default, (list, tuple)):
            return f"{text} (default: {' '.join(str(d) for d in default)})".strip()
        return super()._get_help_string(action)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; the arguments of ``command`` (and only those) are added, importing just its module."""
    parser = argparse.ArgumentParser(
        prog="cavmae", description="CAV-MAE pre-training, fine-tuning and retrieval", formatter_class=HelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"cavmae {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        p.set_defaults(_module=module)
        if name == command:
            # also accepted after the subcommand; SUPPRESS keeps a -v given before it
            p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
            importlib.import_module(module).add_arguments(p)
            for action in p._actions:  # an option without help text still shows its default
                if action.help is None and not _nothing_to_show(action.default):
                    action.help = "default: %(default)s"
    return parser


def parse_args(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The top-level options before the subcommand, then the subcommand's options and positionals in any order."""
    # The subcommand is the first word that is not an option of the top-level parser.
    index = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    command = argv[index] if index is not None else None
    if command not in COMMANDS:  # no or an unknown subcommand: argparse prints the help or the error
        parser = build_parser()
        return parser, parser.parse_args(argv)
    parser = build_parser(command)
    args = parser.parse_args(argv[:index])
    subparser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    args.command = command
    return parser, subparser.parse_intermixed_args(argv[index + 1 :], namespace=args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, args = parse_args(argv)
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
