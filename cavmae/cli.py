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
    "convert": ("cavmae.commands.convert", "convert checkpoints: ours <-> official CAV-MAE, MAE ImageNet -> CAV-MAE"),
    "info": ("cavmae.commands.info", "print the resolved config and parameter counts of a recipe or model"),
    "prepare": ("cavmae.commands.prepare", "turn videos + AudioSet/VGGSound metadata into WebDataset shards"),
    "synth": ("cavmae.commands.synth", "write a synthetic audio-visual dataset (H.264 + AAC files and CSVs)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cavmae", description="CAV-MAE pre-training, fine-tuning and retrieval")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse the subcommand name first, then let its module add its own arguments.
    args, _ = parser.parse_known_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(args._module)
    sub_parser = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr]
    module.add_arguments(sub_parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
