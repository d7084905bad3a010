"""Shared test fixtures: paths to ../shared, tiny configs, tiny synthetic shards."""

from __future__ import annotations

import logging
import os

# Without a GPU the Triton kernels are tested on Triton's CPU interpreter, which Triton configures when it is
# first imported; test modules that import accelerate / torch's compiler pull Triton in during collection, before
# tests/test_scan.py runs. conftest.py is loaded before any test module, so decide here (without importing torch).
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Real media files (a few AudioSet / VGGSound clips and a film) live outside the repository, in a folder `shared/`
# beside the clone (CI and developer machines have it; a fresh clone does not) or wherever CAVMAE_SHARED points.
# Tests that need them skip when it is absent, unless CAVMAE_REQUIRE_SHARED=1 (set by .ci/run) makes that a failure.
SHARED = Path(os.environ.get("CAVMAE_SHARED", REPO.parent / "shared"))
REQUIRE_SHARED = os.environ.get("CAVMAE_REQUIRE_SHARED", "") not in ("", "0")
SHARED_FIXTURES = ("shared_dir", "media_dir", "media_shards")


def _missing_shared(what: str) -> None:
    """Skip (a user's clone) or fail (CI, or CAVMAE_SHARED set to a wrong path) when the real media are absent."""
    reason = (
        f"real media not found: {what}; set CAVMAE_SHARED to the folder holding media/ "
        "(CI keeps it as shared/ beside the clone)"
    )
    if REQUIRE_SHARED or "CAVMAE_SHARED" in os.environ:
        pytest.fail(reason + (" [CAVMAE_REQUIRE_SHARED=1]" if REQUIRE_SHARED else ""), pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        _missing_shared(f"no folder {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def media_dir(shared_dir: Path) -> Path:
    media = shared_dir / "media"
    if not media.is_dir():
        _missing_shared(f"no folder {media}")
    return media


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if any(name in SHARED_FIXTURES for name in getattr(item, "fixturenames", ())):
            item.add_marker("shared_media")


_shared_outcomes: dict[str, int] = {}


def pytest_runtest_logreport(report) -> None:
    if "shared_media" in report.keywords and (report.when == "call" or report.outcome != "passed"):
        outcome = "error" if report.failed and report.when != "call" else report.outcome
        _shared_outcomes[outcome] = _shared_outcomes.get(outcome, 0) + 1


def pytest_sessionfinish(session, exitstatus) -> None:
    # CI must run every shared-media test: any that skipped (for whatever reason) fails the run
    if REQUIRE_SHARED and _shared_outcomes.get("skipped") and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """One line that says whether the real-media tests ran (with CAVMAE_REQUIRE_SHARED=1 none may skip)."""
    if _shared_outcomes:
        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(_shared_outcomes.items()))
        required = "; CAVMAE_REQUIRE_SHARED=1: a skip fails the run" if REQUIRE_SHARED else ""
        terminalreporter.write_line(f"shared-media tests ({SHARED}): {summary}{required}")


# ---------------------------------------------------------------------------------------------------------------
# tiny synthetic audio-visual data and shards (open_clip style: built once per session, in a temporary folder)


@dataclass
class TinyShards:
    """Shards prepared from a tiny synthetic dataset."""

    dir: Path
    pattern: str  # brace pattern over all shards
    urls: list[str]
    manifest: dict
    synth: object  # cavmae.data.synth.SyntheticDataset

    @property
    def keys(self) -> set[str]:
        return {c.file.rsplit(".", 1)[0].replace(".", "") for c in self.synth.clips}


def build_tiny_shards(
    root: Path,
    *,
    num_clips: int = 8,
    num_classes: int = 4,
    samples_per_shard: int = 2,
    duration: float = 2.0,
    size: int = 64,
    fps: float = 8.0,
    seed: int = 0,
    layout: str = "audioset",
    workers: int = 0,
    **prepare_options,
) -> TinyShards:
    """Synthetic clips (small and short: ~0.05 s each to write) -> prepared shards under `root`."""
    from cavmae.data.clips import make_synthetic_dataset
    from cavmae.data.prepare import PrepareOptions, prepare_shards
    from cavmae.data.shards import expand_shards
    from cavmae.data.sources import plan_inputs

    synth = make_synthetic_dataset(
        root / "synth",
        num_clips=num_clips,
        num_classes=num_classes,
        duration=duration,
        size=size,
        fps=fps,
        seed=seed,
        layout=layout,
    )
    plan = plan_inputs(videos=synth.videos, csv=synth.csv, label_csv=synth.label_csv)
    out = root / "shards"
    manifest = prepare_shards(
        plan,
        out,
        name="tiny",
        samples_per_shard=samples_per_shard,
        workers=workers,
        options=PrepareOptions(**prepare_options),
    )
    n = len(manifest["shards"])
    pattern = str(out / f"tiny-{{000000..{n - 1:06d}}}.tar")
    return TinyShards(out, pattern, expand_shards(pattern), manifest, synth)


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> TinyShards:
    """8 synthetic clips (4 classes, 2 s, 64 px, AudioSet layout) in 4 shards of 2."""
    return build_tiny_shards(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def make_tiny_shards():
    """The builder behind `tiny_shards`, for tests that need their own variant (other options, a fresh folder)."""
    return build_tiny_shards


@pytest.fixture(scope="session")
def media_shards(media_dir, tmp_path_factory):
    """The real files of ../shared/media prepared as a plain video folder: (shard folder, manifest)."""
    from cavmae.data.prepare import prepare_shards
    from cavmae.data.sources import plan_inputs

    out = tmp_path_factory.mktemp("media_shards")
    manifest = prepare_shards(plan_inputs(videos=media_dir), out, name="media", samples_per_shard=1)
    return out, manifest


# ---------------------------------------------------------------------------------------------------------------
# a pre-trained tiny model, trained once per session (the learning test and fine-tuning tests share it)

PRETRAIN_SMALL_INPUTS = [  # the tiny model on smaller inputs than the recipe, to keep the test suite short
    "model.audio_length=256",
    "model.num_mel_bins=64",
    "model.image_size=64",
]


@pytest.fixture(scope="session")
def pretrained_tiny(tmp_path_factory) -> Path:
    """Run directory of 200 pre-training steps of the tiny model on the synthetic data (model in ``model/``)."""
    from cavmae.config import load_config
    from cavmae.train import train

    out = tmp_path_factory.mktemp("pretrained_tiny") / "run"
    cfg = load_config(
        REPO / "configs" / "tiny.yaml",
        [
            f"train.out_dir={out}",
            *PRETRAIN_SMALL_INPUTS,
            "train.max_steps=200",
            "train.ckpt_every=0",
            "train.image_every=0",
            "train.log_every=50",
            "train.val_every=200",
            "train.progress_bar=false",
        ],
    )
    return train(cfg)


@pytest.fixture
def keep_logging():
    """A script's main() configures logging (basicConfig, quieter 'cavmae'): undo it for the tests that follow."""
    root, package = logging.getLogger(), logging.getLogger("cavmae")
    saved = root.level, list(root.handlers), package.level
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    package.setLevel(saved[2])
