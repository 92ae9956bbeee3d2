"""The documentation site (mkdocs.yml, docs/) builds with ``mkdocs build --strict``: no broken link, no missing
reference; every public name of ``lsb`` has an API page and every ``lsb`` subcommand a CLI page; a CLI option without
help text or a docstring with a broken cross-reference fails the build."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lsb

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ROOT / "docs" / "_hooks"
pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("mkdocs", "material", "mkdocstrings_handlers")),
    reason="the docs extra is not installed (pip install -e '.[docs]')",
)


def mkdocs_build(config: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=config.parent)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = mkdocs_build(ROOT / "mkdocs.yml", out)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return out


def _hooks():
    sys.path.insert(0, str(HOOKS))
    try:
        import lsb_site

        return lsb_site
    finally:
        sys.path.remove(str(HOOKS))


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string of ``parser`` and of its nested subcommands."""
    out = [s for a in parser._actions if not isinstance(a, argparse._HelpAction) for s in a.option_strings]
    for sub in _subcommands(parser).values():
        out += _options(sub)
    return out


def test_every_public_name_has_an_api_entry(site):
    for name in lsb.__all__:
        page = site / "reference" / "api" / name / "index.html"
        assert page.is_file(), f"lsb.{name} has no API page"
        text = page.read_text()
        obj = getattr(lsb, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):  # the docstring rendered at the real module path
            assert f'id="{obj.__module__}.{obj.__qualname__}"' in text, f"lsb.{name}: no rendered docstring"
        assert f'id="lsb.{name}"' in text  # the anchor that [lsb.NAME][] cross-references land on
        assert f"lsb.{name}" in (site / "reference" / "api" / "index.html").read_text()


def test_every_subcommand_has_a_cli_page(site):
    from lsb.surfaces.cli import build_parser

    subs = _subcommands(build_parser())
    assert {"translate", "learn-domain", "generate", "train", "restore", "demo", "export"} <= set(subs)
    index = (site / "reference" / "cli" / "index.html").read_text()
    for name, parser in subs.items():
        page = site / "reference" / "cli" / name / "index.html"
        assert page.is_file(), f"lsb {name} has no CLI page"
        text = page.read_text()
        for option in _options(parser):  # every option, nested subcommands (lsb train mini-sd ...) included
            assert re.search(rf"<code>[^<]*{re.escape(option)}\b", text), f"lsb {name}: {option} missing from its page"
        assert f'href="{name}/"' in index


def test_site_pages_are_there(site):
    for page in (
        "quickstart",
        "guides/parameters",
        "guides/real-models",
        "methods/lsb",
        "benchmarks",
        "embedded-models",
    ):
        assert (site / page / "index.html").is_file(), page
    for table in (ROOT / "benchmarks" / "results").glob("*.md"):  # every result table, as its script wrote it
        assert (site / "benchmarks" / "results" / table.stem / "index.html").is_file(), table.name


def test_new_guides_join_the_nav(site):
    site_hooks = _hooks()
    nav = [{"Guides": ["guides/parameters.md"]}, {"API": "reference/api/index.md"}]
    site_hooks._fill_nav(nav, ["reference/api/index.md"], [], [], ["parameters.md", "safe-runs.md"])
    assert nav[0]["Guides"] == ["guides/parameters.md", "guides/safe-runs.md"]  # a guide mkdocs.yml does not list
    assert nav[1] == {"API": ["reference/api/index.md"]}
    home = (site / "index.html").read_text()
    for guide in (ROOT / "docs" / "guides").glob("*.md"):  # every guide on disk is built and in the navigation
        assert (site / "guides" / guide.stem / "index.html").is_file(), guide.name
        assert f'href="guides/{guide.stem}/"' in home, f"{guide.name} is not in the navigation"


def test_readme_links_exist():
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert local, "the README links to the docs"
    for link in local:
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"


def test_readme_figure_script(tmp_path, capsys):
    """The script behind the README's picture runs (short: NFE 2) and reads its outputs back."""
    from benchmarks.readme_figure import main

    out = tmp_path / "figure.png"
    assert main(["--nfe", "2", "--scale", "1", "--out", str(out)]) == 0
    from PIL import Image

    with Image.open(out) as im:
        assert im.width > 64 * 3 and im.height > 64 * 3  # input, 1 state, output per row; 3 rows
    assert capsys.readouterr().out.count("read back a") == 3


def test_option_without_help_fails_the_build(monkeypatch):
    from mkdocs.exceptions import PluginError

    site_hooks = _hooks()
    parser = argparse.ArgumentParser(prog="lsb")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("translate", help="translate images")
    p.add_argument("--nfe", type=int, help="network calls per image")
    p.add_argument("--seed", type=int, default=0)  # no help text
    monkeypatch.setattr(site_hooks, "lsb_parser", lambda: parser)
    with pytest.raises(PluginError, match=r"lsb translate.*--seed has no help text"):
        site_hooks.on_config({"nav": [], "docs_dir": str(ROOT / "docs")})
    p._actions[-1].help = "seed"
    sub.add_parser("undocumented")  # a subcommand without help
    with pytest.raises(PluginError, match=r"lsb undocumented. has no help text"):
        site_hooks.on_config({"nav": [], "docs_dir": str(ROOT / "docs")})


def test_broken_docstring_reference_fails_the_build(tmp_path):
    """A small site rendering one module whose docstring names an object that does not exist."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "lsb_docs_probe.py").write_text(
        '"""A probe."""\n\n\ndef ok():\n    """Calls :func:`lsb.helpers.translation.decode_latents` (exists)."""\n\n\n'
        'def broken():\n    """Calls :func:`lsb.helpers.translation.no_such_function` (does not exist)."""\n'
    )
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Probe\n\n::: lsb_docs_probe\n")
    (tmp_path / "mkdocs.yml").write_text(
        "site_name: probe\nplugins:\n  - mkdocstrings:\n      handlers:\n        python:\n"
        f"          paths: [src]\n          options:\n            extensions:\n"
        f"              - {HOOKS / 'lsb_roles.py'}:SphinxRoles\n"
    )
    proc = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0
    assert "broken cross-reference :func:`lsb.helpers.translation.no_such_function`" in proc.stderr
    assert "lsb_docs_probe.broken" in proc.stderr and "decode_latents" not in proc.stderr
