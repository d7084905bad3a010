"""How cavmae is installed and found, without symlinks: kernels/, data/*.csv and configs/*.yaml become cavmae.kernels,
cavmae/data/label_files and cavmae/configs in a wheel and in the (strict) editable install, and a plain checkout on
PYTHONPATH (how scripts/gpu_check.sh runs) finds them in place. Each install is made from a copy of this checkout in a
temporary folder named ``cavmae`` (as a clone would be), so nothing is written into the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What a script sees: the package, the kernels (a submodule too), the bundled label index and the recipes, where a
# recipe lookup looks (the installed cavmae/configs, else the checkout's configs/).
PROBE = """
import json, sys
from pathlib import Path
import cavmae, cavmae.kernels, cavmae.kernels.torch_scan
from cavmae.data.labels import bundled_label_csv
package = Path(cavmae.__file__).parent
recipes = package / "configs" if (package / "configs").is_dir() else package.parent / "configs"
print(json.dumps({
    "cavmae": cavmae.__file__,
    "kernels": cavmae.kernels.__file__,
    "torch_scan": cavmae.kernels.torch_scan.__file__,
    "labels": str(bundled_label_csv("vggsound")),
    "recipes": sorted(p.name for p in recipes.glob("*.yaml")),
}))
"""
RECIPES = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))


def probe(python: str | Path, cwd: Path, pythonpath: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    proc = subprocess.run([str(python), "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["recipes"] == RECIPES
    assert Path(found["labels"]).read_bytes() == (REPO / "data" / "class_labels_indices_vgg.csv").read_bytes()
    return found


def resolved(path: str) -> Path:
    return Path(path).resolve()


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of this checkout at <tmp>/holder/cavmae: a clone whose folder has the package's name."""
    target = tmp_path_factory.mktemp("holder") / "cavmae"
    ignore = shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", "runs", "wandb"
    )
    shutil.copytree(REPO, target, ignore=ignore, symlinks=True)
    return target


def test_the_repository_holds_no_symlinks() -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(["git", "ls-files", "-s"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert not [line for line in listed.splitlines() if line.startswith("120000")]


def test_a_plain_checkout_on_pythonpath_finds_kernels_labels_and_recipes(tmp_path: Path) -> None:
    found = probe(sys.executable, tmp_path, pythonpath=REPO)
    assert resolved(found["cavmae"]) == REPO / "cavmae" / "__init__.py"
    assert resolved(found["kernels"]) == REPO / "kernels" / "__init__.py"
    assert resolved(found["torch_scan"]) == REPO / "kernels" / "torch_scan.py"
    assert resolved(found["labels"]) == REPO / "data" / "class_labels_indices_vgg.csv"


@pytest.mark.slow
def test_a_wheel_ships_kernels_labels_and_recipes_inside_the_package(clone: Path, tmp_path: Path) -> None:
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    subprocess.run([*build, str(clone)], check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("cavmae-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    kernels = {f"cavmae/kernels/{p.name}" for p in (REPO / "kernels").glob("*.py")}
    labels = {f"cavmae/data/label_files/{p.name}" for p in (REPO / "data").glob("*.csv")}
    recipes = {f"cavmae/configs/{name}" for name in RECIPES}
    assert kernels and labels and recipes and kernels | labels | recipes <= names
    assert not [name for name in names if "compile_gate" in name or "kernel_sass" in name or name.endswith(".md")]
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=600)
    found = probe(sys.executable, tmp_path, pythonpath=site)
    assert Path(found["kernels"]) == site / "cavmae" / "kernels" / "__init__.py"
    assert Path(found["labels"]) == site / "cavmae" / "data" / "label_files" / "class_labels_indices_vgg.csv"


@pytest.mark.slow
def test_python_m_cavmae_runs_from_the_folder_holding_an_editable_clone(clone: Path, tmp_path: Path) -> None:
    # The folder holding the clone comes first on sys.path; the clone (named cavmae, no __init__.py) is a namespace
    # package there. A lenient editable install (setuptools' default) is searched after it and loses: ImportError.
    # pyproject.toml asks for a strict one, whose link tree is a path entry, and a regular package beats a namespace.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(clone)]
    subprocess.run(install, check=True, capture_output=True, timeout=600)
    holder = clone.parent
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    version = subprocess.run(
        [str(python), "-m", "cavmae", "--version"], cwd=holder, env=env, capture_output=True, text=True, timeout=120
    )
    assert version.returncode == 0 and version.stdout.strip().startswith("cavmae "), version.stderr[-3000:]
    found = probe(python, holder)
    assert clone / "build" in Path(found["cavmae"]).parents  # the link tree, not the namespace package
    assert resolved(found["kernels"]) == clone / "kernels" / "__init__.py"
    assert resolved(found["torch_scan"]) == clone / "kernels" / "torch_scan.py"
    assert resolved(found["labels"]) == clone / "data" / "class_labels_indices_vgg.csv"
