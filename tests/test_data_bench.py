"""scripts/bench_data.py runs end to end at a tiny size (the speed figure itself comes from running the script:
timing thresholds do not belong in tests)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_data.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_both_loaders(bench, tmp_path):
    data = bench.make_data(tmp_path, clips=4, classes=2, size=(160, 120), workers=0)
    result = bench.run_benchmark(data, rounds=1, batch_size=2)
    assert result["load_errors"] == 0
    assert result["ours_samples_per_s"] > 0 and result["baseline_samples_per_s"] > 0
    assert math.isfinite(result["ratio"]) and result["ratio"] > 0


def test_tar_benchmark_counts_the_same_samples(bench, tiny_shards):
    result = bench.run_tar_benchmark(tiny_shards.urls, rounds=1, repeat=1)
    assert result["errors"] == 0 and result["ours_samples_per_s"] > 0 and result["wds_samples_per_s"] > 0
    assert result["samples"] == {"ours": 8, "theirs": 8}


def test_main_prints_ranges_and_writes_raw_rounds(bench, keep_logging, tmp_path, capsys):
    out = tmp_path / "data.json"
    argv = ["--root", str(tmp_path / "d"), "--clips", "4", "--classes", "2", "--size", "160", "120", "--rounds", "2"]
    assert bench.main([*argv, "--batch-size", "2", "--workers", "0", "--tar", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "load average (1/5/15 min): start" in printed and "ratio ours / baseline" in printed
    record = json.loads(out.read_text())
    assert record["machine_start"]["cores"] >= 1 and len(record["machine_end"]["load_avg"]) == 3
    runs = record["raw"]["loaders"]
    assert set(runs) == {"ours", "baseline"} and all(len(r) == 2 for r in runs.values())
    assert all(run["value"] == 4 for r in runs.values() for run in r)  # every clip in every pass
    ratio = record["summary"]["loaders"]["ratio_per_cpu_s"]
    assert ratio["min"] <= ratio["median"] <= ratio["max"]
    assert set(record["raw"]["tar"]) == {"ours", "wds"} and record["summary"]["tar_errors"] == 0
