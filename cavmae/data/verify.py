"""Shard integrity against the manifests: size and sha256 of every shard, before training or on demand.

``cavmae prepare`` records each shard's ``bytes`` and ``sha256`` in ``<name>-manifest.json``. :func:`verify_shards`
checks the shards of a shard list against them (``cavmae verify-shards`` and ``data.verify=true`` before training)
and names every shard that is missing, empty, of the wrong size, of the wrong digest, or has no manifest entry.
Hashing reads every byte, so it takes time in proportion to the shards' size; sizes are checked first, so a
truncated shard is named without hashing it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cavmae.data.shards import expand_shards, file_sha256, manifest_path

log = logging.getLogger(__name__)


@dataclass
class ShardProblem:
    url: str
    reason: str

    def __str__(self) -> str:
        return f"{self.url}: {self.reason}"


@dataclass
class VerifyReport:
    checked: int = 0  # shards whose size and digest match their manifest
    problems: list[ShardProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class ShardVerifyError(ValueError):
    """Shards that do not match their manifests; the message names each one."""


def _entries(urls: list[str]) -> dict[str, dict]:
    """Manifest entry of each local shard path (keyed by the path as the manifest places it)."""
    entries: dict[str, dict] = {}
    seen: set[Path] = set()
    for url in urls:
        p = manifest_path(url)
        if p is None or p in seen or not p.is_file():
            continue
        seen.add(p)
        try:
            manifest = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            log.warning("cannot read manifest %s: %s", p, e)
            continue
        for sh in manifest.get("shards", []):
            entries[str(p.parent / sh["file"])] = sh
    return entries


def _check(url: str, entry: dict | None, hash_it: bool) -> ShardProblem | None:
    path = Path(url)
    if "://" in url or url.startswith("pipe:"):
        return ShardProblem(url, "remote shard: cannot be checked here")
    try:
        size = path.stat().st_size
    except OSError as e:
        return ShardProblem(url, f"missing or unreadable ({e.strerror or e})")
    if entry is None:
        return ShardProblem(url, "no manifest entry (<name>-manifest.json beside it does not list it)")
    if size == 0:
        return ShardProblem(url, "empty file (0 bytes)")
    if size != entry.get("bytes", size):
        return ShardProblem(url, f"{size} bytes, the manifest says {entry['bytes']} (truncated or replaced)")
    if hash_it and entry.get("sha256"):
        try:
            digest = file_sha256(path)
        except OSError as e:
            return ShardProblem(url, f"unreadable ({e.strerror or e})")
        if digest != entry["sha256"]:
            return ShardProblem(url, f"sha256 {digest[:16]}... differs from the manifest's {entry['sha256'][:16]}...")
    return None


def verify_shards(shards: str | Sequence[str], *, hash_it: bool = True, threads: int = 4) -> VerifyReport:
    """Check every shard of `shards` (brace patterns / lists / '::'-joined) against its manifest.

    Remote shards (``pipe:``, ``http(s)://``) cannot be checked here and are reported as problems.
    """
    urls = expand_shards(shards, missing_ok=True)  # a missing shard is one of the problems reported
    entries = _entries(urls)
    report = VerifyReport()
    with ThreadPoolExecutor(max(1, threads)) as pool:  # hashlib releases the GIL on large buffers
        results = list(pool.map(lambda u: _check(u, entries.get(str(Path(u))), hash_it), urls))
    for problem in results:
        if problem is None:
            report.checked += 1
        else:
            report.problems.append(problem)
    return report


def require_valid_shards(shards: str | Sequence[str], what: str = "data.train_shards") -> VerifyReport:
    """:func:`verify_shards`, raising :class:`ShardVerifyError` that names every bad shard."""
    report = verify_shards(shards)
    if not report.ok:
        lines = "\n  ".join(str(p) for p in report.problems)
        raise ShardVerifyError(f"{len(report.problems)} shard(s) of {what} fail verification:\n  {lines}")
    log.info("verified %d shard(s) of %s against their manifests (size and sha256)", report.checked, what)
    return report
