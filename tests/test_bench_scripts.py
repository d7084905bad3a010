"""The benchmark scripts run end to end at tiny sizes and write their raw interleaved rounds as JSON.

Only the structure of what they print and write is checked (every configuration timed in every round, medians
inside their ranges, the machine and load recorded at start and end); the figures themselves come from running
the scripts, and timing thresholds do not belong in tests.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_machine(record: dict) -> None:
    for key in ("machine_start", "machine_end"):
        info = record[key]
        assert info["cores"] >= 1 and len(info["load_avg"]) == 3 and info["cpu"]
    assert record["machine_start"]["time_utc"] <= record["machine_end"]["time_utc"]


def check_summary(s: dict, values: list[float]) -> None:
    assert s["min"] <= s["median"] <= s["max"]
    assert s["min"] == min(values) and s["max"] == max(values)


def test_benchtools_rounds_rotate_and_time_every_variant():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import benchtools
    finally:
        sys.path.remove(str(SCRIPTS))
    calls = []
    runs = benchtools.rounds({n: (lambda n=n: calls.append(n) or n) for n in "abc"}, repeats=3, warmup=1)
    assert calls == list("abcbcacababc")  # one call of each per round, order rotating
    assert {n: [r.value for r in rs] for n, rs in runs.items()} == {n: [n] * 3 for n in "abc"}
    assert all(r.wall_s >= 0 and r.cpu_s >= 0 for rs in runs.values() for r in rs)
    assert benchtools.ratios([2.0, 6.0], [1.0, 2.0]) == [2.0, 3.0]
    assert benchtools.ratio_spread([2.0, 6.0, 4.0], [1.0, 2.0, 2.0]) == "2.00x (2.00-3.00)"
    assert benchtools.spread([3.0, 1.0, 2.0], "s", 1) == "2.0 s (1.0-3.0)"


def test_peak_rss_of_a_child_is_its_own_not_its_large_parents():
    # ru_maxrss survives fork + exec on Linux: a child of a 400 MiB parent would report >= 400 MiB
    ballast = b"\x01" * (400 * 2**20)  # touched pages, resident in this process
    code = f"import sys; sys.path.insert(0, {str(SCRIPTS)!r}); import benchtools; print(benchtools.peak_rss_mib())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 1 < child < 300, child
    assert len(ballast) == 400 * 2**20


def test_bench_model_tiny(tmp_path, capsys):
    out = tmp_path / "model.json"
    config = str(SCRIPTS.parent / "configs" / "tiny.yaml")
    load("bench_model").main(["--config", config, "--batch", "1", "--repeats", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "load average (1/5/15 min): start" in printed and "ratio explicit / SDPA:" in printed
    record = json.loads(out.read_text())
    check_machine(record)
    times = record["raw"]["seconds_per_step"]
    assert set(times) == {"sdpa", "math"} and all(len(t) == 2 for t in times.values())
    check_summary(record["summary"]["seconds_per_step"]["sdpa"], times["sdpa"])


def test_bench_scaling_tiny(tmp_path, capsys):
    prefix = tmp_path / "scaling"
    argv = ["--seconds", "2,3", "--width", "32", "--depth", "2", "--repeats", "2", "--out", str(prefix)]
    assert load("bench_scaling").main([*argv, "--no-memory"]) == 0
    printed = capsys.readouterr().out
    assert "mamba/vit" in printed and "load average" in printed
    record = json.loads(prefix.with_suffix(".json").read_text())
    check_machine(record)
    times = record["raw"]["seconds_per_step"]
    assert set(times) == {"vit:2", "mamba:2", "vit:3", "mamba:3"} and all(len(t) == 2 for t in times.values())
    rows = record["summary"]["rows"]
    assert [r["seconds"] for r in rows] == [2, 3] and rows[0]["tokens"] < rows[1]["tokens"]
    check_summary(rows[1]["mamba"]["time_s"], times["mamba:3"])
    ratio = rows[1]["mamba"]["ratio_vs_vit"]
    assert ratio["min"] <= ratio["median"] <= ratio["max"] and ratio["min"] > 0
    assert prefix.with_suffix(".png").stat().st_size > 0


def test_bench_scaling_memory_only(tmp_path):
    prefix = tmp_path / "scaling"
    argv = ["--memory-only", "--backbones", "mamba", "--seconds", "2", "--width", "32", "--depth", "2"]
    assert load("bench_scaling").main([*argv, "--out", str(prefix)]) == 0  # one child process
    record = json.loads((tmp_path / "scaling_memory.json").read_text())
    check_machine(record)
    assert set(record["raw"]["peak_mib"]) == {"mamba:2"} and record["raw"]["peak_mib"]["mamba:2"] >= 0


@pytest.mark.slow
def test_bench_train_tiny_with_memory_and_whole_pretrain(tmp_path, capsys):
    out = tmp_path / "train.json"
    argv = ["--models", "tiny", "--variants", "fp32", "bf16", "--batch-tiny", "2", "--steps", "1", "--repeats", "2"]
    argv += ["--warmup", "1", "--pretrain-runs", "1", "--out", str(out)]
    for o in ("train.epochs=1", "data.synthetic_size=32", "data.synthetic_val_size=16", "train.val_at_start=false"):
        argv += ["--pretrain-override", o]
    assert load("bench_train").main(argv) == 0
    printed = capsys.readouterr().out
    assert "speed-up vs fp32" in printed and "tiny pretrain" in printed
    record = json.loads(out.read_text())
    check_machine(record)
    cases = record["summary"]["cases"]
    assert set(cases) == {"tiny:fp32", "tiny:bf16"} and "speedup_vs_fp32" in cases["tiny:bf16"]
    assert all(c["peak_gib"] > 0.1 for c in cases.values())  # the child's own RSS: Python + torch at least
    check_summary(cases["tiny:fp32"]["step_s"], record["raw"]["step_s"]["tiny:fp32"])
    assert len(record["raw"]["pretrain_s"]) == 1 and record["summary"]["pretrain_s"]["median"] > 0


def test_bench_index_tiny(keep_logging, tmp_path, capsys):
    pytest.importorskip("faiss")
    out = tmp_path / "index.json"
    argv = ["--n", "3000", "--dim", "16", "--queries", "20", "--kind", "ivf", "--nprobe", "2", "256"]
    load("bench_index").main([*argv, "--rounds", "2", "--out", str(out)])
    assert "speed-up vs flat" in capsys.readouterr().out
    record = json.loads(out.read_text())
    check_machine(record)
    times = record["raw"]["query_s"]
    assert set(times) == {"flat", "nprobe=2", "nprobe=256"} and all(len(t) == 2 for t in times.values())
    query = record["summary"]["query"]
    assert query["flat"]["recall"] == 1.0 and query["nprobe=256"]["recall"] == 1.0  # every cell probed
    check_summary(query["nprobe=2"]["seconds"], times["nprobe=2"])


@pytest.mark.slow
def test_bench_prepare_tiny(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "prepare.json"
    argv = ["--clips", "2", "--duration", "1", "--size", "64", "--samples-per-shard", "1", "--rounds", "2"]
    # a child process: the script starts and stops its own Ray cluster, which must not touch another test's
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_prepare.py"), *argv, "--workers", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ray / local" in proc.stdout
    record = json.loads(out.read_text())
    check_machine(record)
    rates = record["raw"]["clips_per_s"]
    assert set(rates) == {"localx1", "rayx1"} and all(len(r) == 2 for r in rates.values())
    ratio = record["summary"]["rayx1"]["ray_over_local"]
    assert ratio["min"] <= ratio["median"] <= ratio["max"]
