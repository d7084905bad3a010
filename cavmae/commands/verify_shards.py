"""``cavmae verify-shards``: check shards against their manifests (size and sha256); exit 1 naming each bad one."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shards", nargs="+", help="shard paths or brace patterns (data-{000000..000009}.tar)")
    p.add_argument("--size-only", action="store_true", help="check sizes only, do not hash (fast)")
    p.add_argument("--threads", type=int, default=4, help="shards hashed at once")


def run(args: argparse.Namespace) -> int:
    from cavmae.data.verify import verify_shards

    report = verify_shards(args.shards, hash_it=not args.size_only, threads=args.threads)
    for problem in report.problems:
        print(f"BAD  {problem}")
    print(f"{report.checked} shard(s) ok, {len(report.problems)} bad")
    return 0 if report.ok else 1
