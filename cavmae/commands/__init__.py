"""Subcommands of the `cavmae` command (see cavmae/cli.py)."""
