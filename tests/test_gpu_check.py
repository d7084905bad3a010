"""scripts/gpu_check.sh --dry-run: the GPU machine's first check runs end to end on CPU (tiny shapes, interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_passes_and_writes_results(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTHONPATH")}
    env["PYTHON"] = sys.executable
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
        cwd=tmp_path,  # the script finds the checkout itself
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((tmp_path / "gpu_check_dryrun.json").read_text())
    assert report["ok"] and report["dry_run"] and report["env"]["kernels"] == "interpreted"
    assert report["correctness"] and all(c["ok"] for c in report["correctness"])
    errors = [e for c in report["correctness"] for e in c["errors"].values()]
    assert errors and all(set(e) >= {"max_abs", "max_rel", "l2_rel", "nan"} for e in errors)
    assert report["determinism"][0]["ok"]
    timed = {(t["impl"], t["pass"]) for t in report["timings"]}
    assert timed >= {("triton", "forward+backward"), ("torch path", "forward")}
    assert {m["backbone"] for m in report["models"]} == {"vit", "mamba", "vit-sync"}
    assert "PASS" in (tmp_path / "gpu_check_dryrun.md").read_text()


def test_gpu_check_without_a_gpu_says_so(tmp_path: Path) -> None:
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("this machine has a GPU")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTHONPATH")}
    env["PYTHON"] = sys.executable
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--out", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
