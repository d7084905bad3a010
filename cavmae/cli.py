"""The ``cavmae`` command: one subcommand per job, each a thin call into the library.

Each entry of ``COMMANDS`` names a module that defines ``add_arguments(parser)`` and ``run(args) -> int``. Modules
are imported only when their subcommand runs, and ``add_arguments`` imports nothing heavy (torch, timm and the
library are imported inside ``run``), so ``cavmae --help`` and ``cavmae <command> --help`` answer at once and a
missing optional dependency of one job does not break the others.

Options and dotted overrides mix freely after the subcommand: ``cavmae pretrain --config x.yaml --resume auto
train.max_steps=2`` (each subparser is read with ``parse_intermixed_args``). Everything after ``--`` is positional,
so clip names that begin with '-' (YouTube ids such as ``-0DLPzsiXXE_30000``) can be passed:
``cavmae predict --model M -- -0DLPzsiXXE_30000.mp4``; an option's value joins it: ``--query-key=-0DLPzsiXXE_30000``.

Exit codes, the same for every command: 0 success; 1 the command ran and failed (an input missing, unreadable or
unusable, nothing to write, an output in the way that ``--overwrite`` would replace, a missing optional package,
training stopped); 2 the command line is wrong in itself (a bad flag or value, a config error, options that
contradict each other). Errors are one line; ``-v`` adds the traceback. A :class:`~cavmae.config.ConfigError`
escaping a command is exit 2 here, in one place; the other errors of bad input (``ValueError``, ``KeyError``,
``OSError``, ``ImportError``) are exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys

from cavmae import __version__

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("cavmae.commands.demo", "the whole pipeline on synthetic videos on a CPU, with a report"),
    "convert": ("cavmae.commands.convert", "convert checkpoints: ours <-> official CAV-MAE, MAE ImageNet -> CAV-MAE"),
    "info": ("cavmae.commands.info", "print the resolved config and parameter counts of a recipe or model"),
    "pretrain": ("cavmae.commands.pretrain", "CAV-MAE pre-training on CPU, one or many GPUs (Accelerate)"),
    "finetune": ("cavmae.commands.finetune", "fine-tune a classifier from a pre-trained model (Accelerate)"),
    "crossval": ("cavmae.commands.crossval", "k-fold cross-validation (ESC-50): one fine-tuning per fold, gathered"),
    "evaluate": (
        "cavmae.commands.evaluate",
        "score a model on shards the paper's way: mAP / top-1 (ten frames) or R@k",
    ),
    "retrieve": ("cavmae.commands.retrieve", "audio<->video retrieval: embed shards, R@k / ranks, query files or keys"),
    "embed": ("cavmae.commands.embed", "embed a shard set into embedding shards (resumable; Accelerate for GPUs)"),
    "index": ("cavmae.commands.index", "build FAISS indexes (exact flat or approximate IVF) over embeddings"),
    "predict": ("cavmae.commands.predict", "top-k classes of raw video / audio files with a fine-tuned model"),
    "prepare": ("cavmae.commands.prepare", "turn videos + AudioSet/VGGSound metadata into WebDataset shards"),
    "verify-shards": ("cavmae.commands.verify_shards", "check shards against their manifests (size and sha256)"),
    "synth": ("cavmae.commands.synth", "write a synthetic audio-visual dataset (H.264 + AAC files and CSVs)"),
    "stats": ("cavmae.commands.stats", "fbank mean and std of a shard set, as the data.fbank_mean / _std overrides"),
}


def _nothing_to_show(default: object) -> bool:
    return default is None or default is False or default == argparse.SUPPRESS or default == []


class Parser(argparse.ArgumentParser):
    """argparse's parser whose error line, when the command line holds a word that begins with '-' and is no
    option (a clip name such as ``-0DLPzsiXXE_30000``), also says how to pass that word."""

    seen: list[str] = []  # the words being parsed (set by parse_args)

    def error(self, message: str):  # type: ignore[override]
        word = next((w for w in self.seen if _dash_word(w) and w not in self._option_string_actions), None)
        if word is not None:
            option = re.match(r"argument (\S+): expected", message)  # "argument -k/--key: expected one argument"
            if option is not None:
                message += f" (a value that begins with '-' joins its option: {option[1].split('/')[-1]}={word})"
            else:
                message += (
                    f" ({word!r} is no option: names that begin with '-' go after '--', "
                    f"as in cavmae {self.prog.split()[-1]} ... -- {word})"
                )
        super().error(message)


def _dash_word(word: str) -> bool:
    """A word that argparse takes for an option but that may be a name: '-' then anything but a letter after '--'
    (``--modle`` is a mistyped option; ``-0DLPzsiXXE_30000`` a YouTube id)."""
    return len(word) > 2 and word.startswith("-") and not (word.startswith("--") and word[2:3].isalpha())


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
    parser = Parser(
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
    words = argv[index + 1 :]
    subparser.seen = words
    if "--" not in words:
        return parser, subparser.parse_intermixed_args(words, namespace=args)
    # parse_intermixed_args drops '--' between its two passes, so the words after it would be read as options
    # again: stand-ins that cannot look like options take their place and are swapped back afterwards.
    cut = words.index("--")
    after = {f"\0{i}": word for i, word in enumerate(words[cut + 1 :])}
    args = subparser.parse_intermixed_args([*words[:cut], *after], namespace=args)
    for name, value in vars(args).items():
        if isinstance(value, list):
            setattr(args, name, [after.get(v, v) if isinstance(v, str) else v for v in value])
        elif isinstance(value, str) and value in after:
            setattr(args, name, after[value])
    return parser, args


def warn_repeated_overrides(overrides: list[str], log: logging.Logger) -> None:
    """A key set by several overrides: the last wins, as it should for a script that appends its own; but an
    unquoted brace pattern (``data.train_shards=[a-{000000..000099}.tar]``) reaches us expanded by the shell into
    one override per shard, and training would read only the last shard. Say so."""
    values: dict[str, list[str]] = {}
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep:
            values.setdefault(key.strip(), []).append(value)
    for key, given in values.items():
        if len(given) > 1:
            log.warning(
                "%s is set %d times; the last wins (%s). If a brace pattern was meant, the shell expanded it: "
                "quote the override, '%s=[...{000000..000099}.tar]'",
                key,
                len(given),
                given[-1],
                key,
            )


def exit_code(error: BaseException) -> int | None:
    """The exit code of an error that escaped a command: 2 for a config error, 1 for bad input (a file missing,
    damaged or unusable: ``ValueError``, ``KeyError``, ``OSError``, ``ImportError``); None for anything else (a
    bug: its traceback is shown)."""
    from cavmae.config import ConfigError

    if isinstance(error, ConfigError):
        return EXIT_USAGE
    if isinstance(error, (ValueError, KeyError, OSError, ImportError)):
        return EXIT_FAILURE
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, args = parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return EXIT_OK
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    log = logging.getLogger(args._module)  # errors under the command's name, as the command's own are
    warn_repeated_overrides(getattr(args, "overrides", None) or [], log)
    try:
        return int(importlib.import_module(args._module).run(args) or EXIT_OK)
    except Exception as error:
        code = exit_code(error)
        if code is None:
            raise
        # str(KeyError) quotes its message: log the message itself
        log.error("%s", error.args[0] if isinstance(error, KeyError) and error.args else error)
        log.debug("the error's traceback:", exc_info=True)
        return code


if __name__ == "__main__":
    sys.exit(main())
