"""The tree passes `ruff check` with the project's configuration (pyproject.toml [tool.ruff])."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_passes():
    exe = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(exe).exists():
        pytest.fail("ruff is not installed (it is in the test extras)")
    res = subprocess.run(
        [exe, "check", "--no-cache", "--output-format", "concise", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]


def test_ruff_config_is_the_projects():
    text = (ROOT / "pyproject.toml").read_text()
    assert "[tool.ruff]" in text and "line-length = 120" in text


def test_benchmarks_are_modules_without_sys_path_edits():
    assert (ROOT / "benchmarks" / "__init__.py").is_file()
    edits = [p.name for p in (ROOT / "benchmarks").rglob("*.py") if "sys.path.insert" in p.read_text()]
    assert not edits, f"benchmarks edit sys.path: {edits}"
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.lsb_failures", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )  # imports a sibling benchmark (benchmarks.translation)
    assert res.returncode == 0 and "usage" in res.stdout, res.stderr[-2000:]
