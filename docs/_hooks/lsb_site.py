"""mkdocs hooks of the lsb site: the pages that are generated from the code at build time, so they cannot drift.

- ``reference/api/``: one page per name of ``lsb.__all__`` (a mkdocstrings ``:::`` block at the name's real module
  path, see ``lsb_docs_public``), grouped by kind, plus an index table. Each page also carries the anchor
  ``lsb.<name>``, so prose and docstrings can cross-reference ``[lsb.LSBScheduler][]``.
- ``reference/cli/``: one page per ``lsb`` subcommand, and one per trainer module with a parser
  (``python -m lsb.training.<name>``), from the argparse parsers themselves. An option or subcommand without help
  text stops the build (:func:`check_help`).
- ``benchmarks/results/``: every ``benchmarks/results/*.md`` table (and ``*.png`` plot), as the scripts wrote it;
  ``benchmarks/scripts.md``: ``benchmarks/README.md`` (every script, what it measures, its command).
- ``guides/``: any ``docs/guides/*.md`` not listed in ``mkdocs.yml``'s nav is appended to the Guides section.
"""

from __future__ import annotations

import argparse
import html
import importlib
import os
import re
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).parent))
from lsb_docs_public import SECTIONS, kind, public_api  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
#: trainer modules run as ``python -m <module>``, each with a ``build_parser()``
TRAINERS = ["lsb.training.bridge", "lsb.training.ddm", "lsb.training.diffir"]


# ---------------------------------------------------------------------------------------------------------- CLI
def lsb_parser() -> argparse.ArgumentParser:
    from lsb.surfaces.cli import build_parser

    return build_parser()


def subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    """``{name: (subparser, its help line)}`` of a parser's subcommands (empty if it has none)."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                out[name] = (sub, helps.get(name))
    return out


def check_help(parser: argparse.ArgumentParser, prog: str) -> None:
    """Every option, positional and subcommand of ``parser`` (recursively) has help text; else a ``ValueError``
    naming the first one without."""
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
            what = "/".join(action.option_strings) or action.dest
            raise ValueError(f"`{prog}`: option {what} has no help text (the CLI reference is generated from it)")
    for name, (sub, text) in subcommands(parser).items():
        if not (text or "").strip():
            raise ValueError(f"`{prog} {name}` has no help text (the CLI reference is generated from it)")
        check_help(sub, f"{prog} {name}")


def _cell(text) -> str:
    return html.escape(str(text), quote=False)


def _usage(parser: argparse.ArgumentParser) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix the width so the page is reproducible
    try:
        return parser.format_usage().strip()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _default(action: argparse.Action) -> str:
    d = action.default
    if (
        d is None
        or d is argparse.SUPPRESS
        or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
    ):
        return ""
    return " ".join(map(str, d)) if isinstance(d, (list, tuple)) else str(d)


def options_table(parser: argparse.ArgumentParser) -> str:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            name = ", ".join(action.option_strings)
            if action.nargs != 0:
                name += " " + (action.metavar or action.dest.upper())
        else:
            name = action.metavar or action.dest
        text = action.help % {"default": action.default, "prog": parser.prog} if "%(" in action.help else action.help
        extra = []
        if action.choices:
            extra.append("choices: " + ", ".join(map(str, action.choices)))
        if action.required and action.option_strings:
            extra.append("required")
        if _default(action):
            extra.append(f"default: {_default(action)}")
        rows.append(
            f"<tr><td><code>{_cell(name)}</code></td><td>{_cell(text)}"
            + (f"<br><small>{_cell('; '.join(extra))}</small>" if extra else "")
            + "</td></tr>"
        )
    if not rows:  # a parser with subcommands only (lsb train)
        return ""
    return (
        "<table>\n<thead><tr><th>argument</th><th>what it does</th></tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + ("\n</tbody>\n</table>\n")
    )


def command_section(parser: argparse.ArgumentParser, level: int = 2) -> str:
    """Usage, description and the option table of one parser; its subcommands as subsections."""
    parts = [f"```text\n{_usage(parser)}\n```\n"]
    if parser.description:
        parts.append(_cell(parser.description) + "\n")
    parts.append(options_table(parser))
    for sub, text in subcommands(parser).values():
        parts.append(f"{'#' * level} `{sub.prog}`\n\n{_cell(text)}\n")
        parts.append(command_section(sub, level + 1))
    return "\n".join(parts)


def cli_pages() -> dict[str, str]:
    """``{page path: markdown}`` of the CLI reference."""
    parser = lsb_parser()
    check_help(parser, "lsb")
    subs = subcommands(parser)
    pages = {}
    index = [
        "# CLI reference\n",
        "Generated at build time from the argparse parsers (`lsb.surfaces.cli.build_parser` and the trainers' "
        "`build_parser`), so every option below is the one the code accepts. `lsb <command> --help` prints the same.\n",
        f"```text\n{_usage(parser)}\n```\n",
        "| command | what it does |",
        "|---|---|",
    ]
    for name, (sub, text) in subs.items():
        index.append(f"| [`lsb {name}`]({name}.md) | {_cell(text)} |")
        pages[f"reference/cli/{name}.md"] = f"# `lsb {name}`\n\n{_cell(text)}\n\n" + command_section(sub)
    index += ["", "Trainers run as modules (`accelerate launch -m ...` for several processes):", ""]
    index += ["| module | what it trains |", "|---|---|"]
    for module in TRAINERS:
        p = importlib.import_module(module).build_parser()
        check_help(p, p.prog)
        slug = module.rsplit(".", 1)[1]
        index.append(f"| [`python -m {module}`](training-{slug}.md) | {_cell(p.description)} |")
        pages[f"reference/cli/training-{slug}.md"] = f"# `python -m {module}`\n\n" + command_section(p)
    pages["reference/cli/index.md"] = "\n".join(index) + "\n"
    return pages


# ---------------------------------------------------------------------------------------------------------- API
def _summary(name: str) -> str:
    """The first sentence of a public name's docstring, for the index table."""
    import inspect

    import lsb

    obj = getattr(lsb, name)
    doc = inspect.getdoc(obj) if inspect.isclass(obj) or inspect.isfunction(obj) else None
    if doc is None:  # a constant: its docstring is in the source, next to the assignment
        doc = {"MINI_SD": "Path of the embedded mini Stable Diffusion.", "MINI_SD3": "Path of the embedded mini SD3."}
        doc = doc.get(name, "")
    first = re.sub(r":(?:py:)?\w+:`~?([^`]+)`", r"\1", doc.strip().split("\n\n")[0].replace("\n", " "))
    first = first.split(". ")[0].rstrip(".") + "."
    return _cell(first).replace("|", "\\|").replace("`", "")


def api_pages() -> dict[str, str]:
    """``{page path: markdown}`` of the API reference: one page per name of ``lsb.__all__``."""
    api = public_api()
    groups: dict[str, list[str]] = {s: [] for s in SECTIONS}
    pages = {}
    for name, path in api.items():
        groups[kind(name)].append(name)
        pages[f"reference/api/{name}.md"] = (
            f"# lsb.{name}\n\n[](){{#lsb.{name}}}\n\n`lsb.{name}` is defined in `{path.rsplit('.', 1)[0]}`.\n\n"
            f"::: {path}\n    options:\n      show_root_heading: false\n      heading_level: 2\n"
        )
    index = [
        "# API reference\n",
        "Every public name of `lsb` (`lsb.__all__`), generated at build time from the docstrings. "
        "`import lsb` is cheap: the classes are imported on first use (`lsb.LSBScheduler`).\n",
    ]
    for section, names in groups.items():
        if names:
            index += [f"## {section}\n", "| name | what it is | defined in |", "|---|---|---|"]
            index += [f"| [`lsb.{n}`]({n}.md) | {_summary(n)} | `{api[n].rsplit('.', 1)[0]}` |" for n in names]
            index.append("")
    pages["reference/api/index.md"] = "\n".join(index)
    return pages, groups


# ---------------------------------------------------------------------------------------------------------- hooks
_GENERATED: dict[str, str] = {}
_NAV: dict[str, list] = {}


def on_config(config):
    try:
        api, groups = api_pages()
        cli = cli_pages()
    except Exception as e:  # an unresolvable public name, an option without help: the build fails, naming it
        raise PluginError(f"lsb docs: {e}") from e
    _GENERATED.clear()
    _GENERATED.update(api)
    _GENERATED.update(cli)
    _GENERATED["benchmarks/scripts.md"] = (ROOT / "benchmarks" / "README.md").read_text()
    for md in sorted(RESULTS.glob("*.md")):
        _GENERATED[f"benchmarks/results/{md.name}"] = md.read_text()
    api_nav = ["reference/api/index.md"] + [
        {section: [f"reference/api/{n}.md" for n in names]} for section, names in groups.items() if names
    ]
    cli_nav = ["reference/cli/index.md"] + [p for p in cli if p != "reference/cli/index.md"]
    results_nav = [f"benchmarks/results/{Path(p).name}" for p in _GENERATED if p.startswith("benchmarks/results/")]
    docs = Path(config["docs_dir"])
    _fill_nav(config["nav"], api_nav, cli_nav, results_nav, sorted(p.name for p in (docs / "guides").glob("*.md")))
    return config


def _fill_nav(nav, api_nav, cli_nav, results_nav, guides) -> None:
    for i, item in enumerate(nav):
        if not isinstance(item, dict):
            continue
        ((title, value),) = item.items()
        if value == "reference/api/index.md":
            nav[i] = {title: api_nav}
        elif value == "reference/cli/index.md":
            nav[i] = {title: cli_nav}
        elif title == "Guides" and isinstance(value, list):
            listed = {v if isinstance(v, str) else next(iter(v.values())) for v in value}
            value += [f"guides/{g}" for g in guides if f"guides/{g}" not in listed]
        elif title == "Benchmarks" and isinstance(value, list):
            value.append({"Result tables": results_nav})
        if isinstance(nav[i], dict):
            inner = next(iter(nav[i].values()))
            if isinstance(inner, list):
                _fill_nav(inner, api_nav, cli_nav, results_nav, guides)


def on_files(files, config):
    for path, text in _GENERATED.items():
        files.append(File.generated(config, path, content=text))
    for png in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"benchmarks/results/{png.name}", abs_src_path=str(png)))
    return files
