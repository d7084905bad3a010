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


def test_old_checkpoint_module_still_imports_with_a_warning():
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "try:\n    import cavmae.checkpoint\nexcept DeprecationWarning as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "cavmae.models.weights" in out.stdout, out.stderr
    import cavmae.models.weights as weights

    with pytest.warns(DeprecationWarning):
        import importlib

        import cavmae.checkpoint as old

        importlib.reload(old)
    assert old.load_model is weights.load_model
