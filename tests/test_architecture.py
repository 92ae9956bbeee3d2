"""The house rules: the layers of DESIGN.md are folders, and imports point down them (import-linter)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_lsb_root_holds_only_the_package_entry_points():
    modules = sorted(p.name for p in (ROOT / "lsb").glob("*.py"))
    assert modules == ["__init__.py", "__main__.py"], f"modules outside a layer folder: {modules}"


def test_imports_point_down_the_layers():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.fail("import-linter is not installed (it is in the test extras)")
    res = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
