"""scripts/bench_data.py: the shard loader is at least 2x a CAV-MAE-style loader per worker."""

import importlib.util
import logging
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_data.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_loader_beats_official_style_baseline_2x(bench, tmp_path, caplog):
    data = bench.make_data(tmp_path, clips=12, classes=4, size=(320, 240), workers=0)
    result = bench.run_benchmark(data, rounds=5, batch_size=4)
    logging.getLogger(__name__).warning(
        "bench: ours %.0f samples/s, baseline %.0f samples/s per worker, ratio %.2fx",
        result["ours_samples_per_s"],
        result["baseline_samples_per_s"],
        result["ratio"],
    )
    assert result["load_errors"] == 0
    assert result["ratio"] >= 2.0, result
