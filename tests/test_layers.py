"""The package's layers and the absence of import cycles, as declared in pyproject.toml ([tool.importlinter])."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports not found: install the test extras (pip install -e '.[test]')")
    res = subprocess.run([exe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_import_cavmae_loads_no_torch():
    code = "import sys, cavmae; assert 'torch' not in sys.modules, 'import cavmae loaded torch'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_the_deprecated_checkpoint_alias_is_gone():
    # cavmae.checkpoint was a one-release alias of cavmae.models.weights. Looked up without site-packages (-S), so
    # that an editable install of another checkout cannot answer for this one.
    code = "import importlib.util; print(importlib.util.find_spec('cavmae.checkpoint'))"
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=REPO, env={"PYTHONPATH": str(REPO)}, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == "None", out.stdout + out.stderr
