"""One short smoke run per benchmark script (scripts/bench_*.py), at tiny sizes.

Timings vary from run to run and thresholds on them do not belong in tests; what is checked is what a script
computes from its timings and could get wrong: every summary is the median / min / max of the raw rounds it names,
every ratio is taken round by round from the same JSON's raw times, counts and sizes are the ones asked for, the
printed figures are those of the JSON, and the machine recorded is this one.
"""

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
TINY = str(SCRIPTS.parent / "configs" / "tiny.yaml")


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def benchtools():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import benchtools
    finally:
        sys.path.remove(str(SCRIPTS))
    return benchtools


def summary_of(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def per_round(numerator: list[float], denominator: list[float]) -> list[float]:
    assert len(numerator) == len(denominator)
    return [a / b for a, b in zip(numerator, denominator)]


def check_machine(record: dict, script: str) -> None:
    assert record["script"] == script
    for key in ("machine_start", "machine_end"):
        assert record[key]["cores"] == os.cpu_count() and record[key]["torch"] == torch.__version__


def test_benchtools_rounds_rotate_and_summaries_are_of_the_rounds(benchtools):
    calls = []
    runs = benchtools.rounds({n: (lambda n=n: calls.append(n) or n) for n in "abc"}, repeats=3, warmup=1)
    assert calls == list("abcbcacababc")  # one call of each per round, order rotating
    assert {n: [r.value for r in rs] for n, rs in runs.items()} == {n: [n] * 3 for n in "abc"}
    assert benchtools.ratios([2.0, 6.0], [1.0, 2.0]) == [2.0, 3.0]
    assert benchtools.ratio_spread([2.0, 6.0, 4.0], [1.0, 2.0, 2.0]) == "2.00x (2.00-3.00)"
    assert benchtools.spread([3.0, 1.0, 2.0], "s", 1) == "2.0 s (1.0-3.0)"
    assert benchtools.summary([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0}


def test_peak_rss_of_a_child_is_its_own_not_its_large_parents():
    # ru_maxrss survives fork + exec on Linux: a child of a 400 MiB parent would report >= 400 MiB
    ballast = b"\x01" * (400 * 2**20)  # touched pages, resident in this process
    code = f"import sys; sys.path.insert(0, {str(SCRIPTS)!r}); import benchtools; print(benchtools.peak_rss_mib())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 1 < child < 300, child
    assert len(ballast) == 400 * 2**20


def test_bench_model(benchtools, tmp_path, capsys):
    import cavmae

    out = tmp_path / "model.json"
    load("bench_model").main(["--config", TINY, "--batch", "1", "--repeats", "2", "--out", str(out)])
    record = json.loads(out.read_text())
    check_machine(record, "bench_model")
    times, s = record["raw"]["seconds_per_step"], record["summary"]
    assert {k: len(v) for k, v in times.items()} == {"sdpa": 2, "math": 2}
    assert s["seconds_per_step"] == {k: summary_of(v) for k, v in times.items()}
    assert s["ratio_explicit_over_sdpa"] == summary_of(per_round(times["math"], times["sdpa"]))
    model = cavmae.create_model(cavmae.load_config(TINY).model)
    assert s["params_m"] == sum(p.numel() for p in model.parameters()) / 1e6
    printed = capsys.readouterr().out
    assert f"ratio explicit / SDPA: {benchtools.ratio_spread(times['math'], times['sdpa'])}" in printed


def test_bench_scaling(benchtools, tmp_path, capsys):
    import cavmae

    prefix = tmp_path / "scaling"
    argv = ["--seconds", "2,3", "--width", "32", "--depth", "2", "--repeats", "2", "--no-memory", "--out", str(prefix)]
    assert load("bench_scaling").main(argv) == 0
    record = json.loads(prefix.with_suffix(".json").read_text())
    check_machine(record, "bench_scaling")
    times = record["raw"]["seconds_per_step"]
    assert {k: len(v) for k, v in times.items()} == {"vit:2": 2, "mamba:2": 2, "vit:3": 2, "mamba:3": 2}
    rows = record["summary"]["rows"]
    for row, seconds in zip(rows, (2, 3), strict=True):
        grid = cavmae.ModelConfig(audio_length=seconds * 1024 // 10).audio_grid
        assert row["seconds"] == seconds and row["tokens"] == grid[0] * grid[1]
        mamba, vit = times[f"mamba:{seconds}"], times[f"vit:{seconds}"]
        assert row["vit"]["time_s"] == summary_of(vit) and row["mamba"]["time_s"] == summary_of(mamba)
        assert row["mamba"]["ratio_vs_vit"] == summary_of(per_round(mamba, vit))
    assert f"mamba/vit {benchtools.ratio_spread(times['mamba:3'], times['vit:3'])}" in capsys.readouterr().out
    assert prefix.with_suffix(".png").stat().st_size > 0


def test_bench_train(tmp_path):
    from cavmae.config import load_config
    from cavmae.train.tasks import PretrainTask

    out = tmp_path / "train.json"
    argv = ["--models", "tiny", "--variants", "fp32", "bf16", "--batch-tiny", "2", "--steps", "1", "--repeats", "2"]
    assert load("bench_train").main([*argv, "--warmup", "1", "--no-memory", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    check_machine(record, "bench_train")
    step_s, cases = record["raw"]["step_s"], record["summary"]["cases"]
    assert {k: len(v) for k, v in step_s.items()} == {"tiny:fp32": 2, "tiny:bf16": 2}
    params = sum(p.numel() for p in PretrainTask().build_model(load_config(TINY)).parameters()) / 1e6
    for name, row in cases.items():
        assert row["params_m"] == params and row["batch"] == 2 and row["steps_per_round"] == 1
        assert row["step_s"] == summary_of(step_s[name])
        assert row["samples_per_s"] == summary_of([2 / s for s in step_s[name]])
    assert cases["tiny:bf16"]["speedup_vs_fp32"] == summary_of(per_round(step_s["tiny:fp32"], step_s["tiny:bf16"]))
    assert "speedup_vs_fp32" not in cases["tiny:fp32"] and record["raw"]["pretrain_s"] == []


def test_bench_index(keep_logging, tmp_path):
    pytest.importorskip("faiss")
    out = tmp_path / "index.json"
    argv = ["--n", "3000", "--dim", "16", "--queries", "20", "--kind", "ivf", "--nprobe", "2", "256"]
    load("bench_index").main([*argv, "--rounds", "2", "--out", str(out)])
    record = json.loads(out.read_text())
    check_machine(record, "bench_index")
    times, query = record["raw"]["query_s"], record["summary"]["query"]
    assert {k: len(v) for k, v in times.items()} == {"flat": 2, "nprobe=2": 2, "nprobe=256": 2}
    for name, row in query.items():
        assert row["seconds"] == summary_of(times[name])
        assert row["queries_per_s"] == summary_of([20 / t for t in times[name]])
        assert row["speedup_vs_flat"] == summary_of(per_round(times["flat"], times[name]))
    assert query["flat"]["recall"] == 1.0 and query["nprobe=256"]["recall"] == 1.0  # every cell probed
    assert record["summary"]["build"]["approx"]["params"]["kind"] == "ivf"


@pytest.mark.slow
def test_bench_prepare(tmp_path):
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
    assert proc.returncode == 0, proc.stderr[-2000:]  # non-zero too when Ray's shards differ from the local ones
    record = json.loads(out.read_text())
    check_machine(record, "bench_prepare")
    rates, runs = record["raw"]["clips_per_s"], record["raw"]["runs"]
    assert rates == {name: [2 / r["value"] for r in rs] for name, rs in runs.items()}  # 2 clips per prepare
    assert {k: len(v) for k, v in rates.items()} == {"localx1": 2, "rayx1": 2}
    table = record["summary"]
    assert table["localx1"]["clips_per_s"] == summary_of(rates["localx1"])
    assert table["rayx1"]["ray_over_local"] == summary_of(per_round(rates["rayx1"], rates["localx1"]))


def test_bench_data(keep_logging, tmp_path, capsys):
    out = tmp_path / "data.json"
    argv = ["--root", str(tmp_path / "d"), "--clips", "4", "--classes", "2", "--size", "160", "120", "--rounds", "2"]
    assert load("bench_data").main([*argv, "--batch-size", "2", "--workers", "0", "--tar", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    check_machine(record, "bench_data")
    runs, s = record["raw"]["loaders"], record["summary"]
    assert {name: [r["value"] for r in rs] for name, rs in runs.items()} == {"ours": [4, 4], "baseline": [4, 4]}
    per_cpu = {name: [r["value"] / r["cpu_s"] for r in rs] for name, rs in runs.items()}
    assert s["loaders"]["ours_per_cpu_s"] == summary_of(per_cpu["ours"])
    assert s["loaders"]["ratio_per_cpu_s"] == summary_of(per_round(per_cpu["ours"], per_cpu["baseline"]))
    assert s["load_errors"] == 0 and s["tar_errors"] == 0
    tar = record["raw"]["tar"]  # 4 clips in one shard, read 20 times per pass, by both readers
    assert {name: [r["value"] for r in rs] for name, rs in tar.items()} == {"ours": [80, 80], "wds": [80, 80]}
    tar_rates = {name: [r["value"] / r["cpu_s"] for r in rs] for name, rs in tar.items()}
    assert s["tar"]["ratio"] == summary_of(per_round(tar_rates["ours"], tar_rates["wds"]))
    assert "ratio ours / baseline" in capsys.readouterr().out


def test_bench_resume(keep_logging, tmp_path, capsys):
    out = tmp_path / "resume.json"
    argv = ["--root", str(tmp_path / "d"), "--clips", "2", "--duration", "1", "--size", "64", "--copies", "3"]
    argv += ["--samples-per-shard", "1", "--batch-size", "1", "--position", "4", "--rounds", "2", "--out", str(out)]
    assert load("bench_resume").main(argv) == 0
    record = json.loads(out.read_text())
    check_machine(record, "bench_resume")
    raw, s = record["raw"], record["summary"]
    assert s["batches_per_epoch"] == 2 * 3  # 2 clips, their shards 3 times, batches of 1
    firsts = [r["value"] for way in ("skip", "decode") for r in raw[way]]
    assert len(firsts) == 4 and all(keys == firsts[0] for keys in firsts) and len(firsts[0]) == 1
    skip_s, decode_s = [r["wall_s"] for r in raw["skip"]], [r["wall_s"] for r in raw["decode"]]
    assert s["skip_s"] == summary_of(skip_s) and s["decode_s"] == summary_of(decode_s)
    assert s["decode_over_skip"] == summary_of(per_round(decode_s, skip_s))
    assert "resume at batch 4 of 6" in capsys.readouterr().out


def test_bench_window_fbank(benchtools, tmp_path, capsys):
    out = tmp_path / "window.json"
    assert load("bench_window_fbank").main(["--rounds", "2", "--calls", "2", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    check_machine(record, "bench_window_fbank")
    whole, window, span = "whole clip (1024)", "one window (416)", "all 16 windows (span 1024)"
    ms = {n: [r["cpu_s"] / 2 * 1e3 for r in runs] for n, runs in record["raw"].items()}
    assert {n: len(v) for n, v in ms.items()} == {whole: 2, window: 2, span: 2}
    for name, values in ms.items():
        assert record["summary"][name]["ms_per_clip"] == summary_of(values)
        assert record["summary"][name]["vs_whole"] == summary_of(per_round(values, ms[whole]))
    assert f"{benchtools.ratio_spread(ms[window], ms[whole])} the whole clip's" in capsys.readouterr().out


def test_bench_window_fbank_leaves_the_callers_thread_count(benchtools, tmp_path):
    """It times with one thread; an in-process caller (this suite: the resume tests compare an in-process run with
    a subprocess one, bit for bit) must get its own thread count back."""
    import torch

    before = torch.get_num_threads()
    load("bench_window_fbank").main(["--rounds", "1", "--calls", "1", "--out", str(tmp_path / "w.json")])
    assert torch.get_num_threads() == before
