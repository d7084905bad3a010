"""cavmae prepare --engine ray: the local engine's bytes, resume after a killed driver, failed tasks recorded."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cavmae.cli import main
from cavmae.data.clips import make_synthetic_dataset
from cavmae.data.prepare import prepare_shards, process_clip
from cavmae.data.sources import plan_inputs

ray = pytest.importorskip("ray", reason='the ray extra is not installed (pip install "cavmae[ray]")')

from cavmae.data.engines import RayEngine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for this module; yields its address (for a second driver to join)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}},
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """11 synthetic clips and a file that is not media, with the local engine's shards as the reference."""
    root = tmp_path_factory.mktemp("ray_clips")
    ds = make_synthetic_dataset(root / "syn", num_clips=11, num_classes=3, duration=1.0, size=32, seed=5)
    (Path(ds.videos) / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    plan = plan_inputs(videos=ds.videos)
    reference = prepare_shards(plan, root / "local", name="d", samples_per_shard=3, workers=2)
    assert any(f["input"] == "broken.mp4" for f in reference["failed"])  # a failure shifts the shard boundaries
    return ds, plan, root / "local", reference


def same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert sorted(p.name for p in b.iterdir()) == names
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_ray_engine_gives_the_local_engines_bytes(ray_cluster, clips, tmp_path, caplog):
    ds, _, local_dir, reference = clips
    caplog.set_level(logging.INFO)
    cmd = ["prepare", "--videos", str(ds.videos), "--out", str(tmp_path / "ray"), "--name", "d"]
    assert main([*cmd, "--samples-per-shard", "3", "--engine", "ray", "--ray-address", ray_cluster]) == 0
    same_files(local_dir, tmp_path / "ray")  # shards, manifest and label file, byte for byte
    progress = [r.getMessage() for r in caplog.records if r.name == "cavmae.data.engines"]
    assert any("4/4 shard tasks done, 12 clips decoded" in m and "clips/s" in m for m in progress)


def test_a_task_that_always_fails_ends_in_the_manifest(ray_cluster, clips, tmp_path):
    _, plan, _, _ = clips
    bad = plan.inputs[4].key

    def fails_on_one_clip(inp, opts):  # defined here, so Ray ships it to the workers by value
        if inp.key == bad:
            raise RuntimeError(f"simulated worker failure on {inp.key}")
        return process_clip(inp, opts)

    engine = RayEngine(block_size=3, max_retries=1, clip_fn=fails_on_one_clip)
    manifest = prepare_shards(plan, tmp_path / "out", name="d", samples_per_shard=3, engine=engine)
    failed = {f["input"]: f["reason"] for f in manifest["failed"]}
    assert failed[plan.inputs[4].rel] == (
        f"ray task failed after 2 tries: RuntimeError: simulated worker failure on {bad}"
    )
    assert manifest["num_samples"] == len(plan.inputs) - 2  # all but the broken file and the failing clip


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from cavmae.data.engines import RayEngine
    from cavmae.data.prepare import prepare_shards
    from cavmae.data.sources import plan_inputs

    def progress(event, shard, count):
        # the driver dies without cleanup in the middle of the third shard (two finished, one partial on disk)
        if event == "sample" and shard == 2 and count == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    plan = plan_inputs(videos=sys.argv[1])
    engine = RayEngine(address=sys.argv[3], block_size=3)
    prepare_shards(plan, sys.argv[2], name="d", samples_per_shard=3, engine=engine, progress=progress)
    """
)


def test_a_killed_driver_resumes_to_the_same_bytes(ray_cluster, clips, tmp_path):
    ds, plan, local_dir, reference = clips
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", KILL_SCRIPT, str(ds.videos), str(out), ray_cluster]
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "d-000000.tar",
        "d-000001.tar",
        "d-000002.tar.tmp",
        "d-progress.json",
    ]
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("d-00000[01].tar")}

    calls = []
    resumed = prepare_shards(
        plan,
        out,
        name="d",
        samples_per_shard=3,
        engine=RayEngine(block_size=3),
        progress=lambda *a: calls.append(a),
    )
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("d-00000[01].tar")} == finished  # kept, not redone
    assert calls[0] == ("sample", 2, 1)  # restarted at the third shard
    assert resumed == reference
    same_files(local_dir, out)


def test_without_ray_the_error_names_the_extra(tmp_path, monkeypatch, caplog):
    ds = make_synthetic_dataset(tmp_path / "syn", num_clips=1, num_classes=1, duration=1.0, size=32)
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["prepare", "--videos", str(ds.videos), "--out", str(tmp_path / "o"), "--engine", "ray"]) == 1
    assert 'pip install "cavmae[ray]"' in caplog.text
