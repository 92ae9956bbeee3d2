"""No function of the project runs over 80 lines of code, outside the pipelines' ``__call__``s (which keep diffusers'
check_inputs / encode_prompt / prepare_latents / loop / decode rhythm in one place) and a short allow-list.

A function's length is ``end_lineno - lineno`` (from its ``def`` to its last line) less its docstring: argument
documentation is not code, and moving it elsewhere would make ``help()`` worse, not the function shorter.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("lsb", "pipelines", "benchmarks", "examples", "app.py")
MAX_LINES = 80
#: (path, qualified name) -> why it may still be longer. Keep it short.
ALLOWED = {}


def code_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """``end_lineno - lineno`` of ``fn`` less the lines of its docstring."""
    n = fn.end_lineno - fn.lineno
    first = fn.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        n -= first.end_lineno - first.lineno + 1
    return n


def functions(path: Path):
    """(qualified name, function node) of every function and method in ``path``, nested ones included."""

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield prefix + child.name, child
                yield from walk(child, prefix)
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, prefix + child.name + ".")
            else:
                yield from walk(child, prefix)

    yield from walk(ast.parse(path.read_text()), "")


def is_pipeline_call(rel: str, name: str) -> bool:
    return rel.startswith("pipelines/") and rel.endswith("/pipeline.py") and name.endswith(".__call__")


def long_functions() -> dict[tuple[str, str], int]:
    found = {}
    for entry in SCANNED:
        base = ROOT / entry
        for path in [base] if base.is_file() else sorted(base.rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for name, fn in functions(path):
                n = code_lines(fn)
                if n > MAX_LINES and not is_pipeline_call(rel, name):
                    found[(rel, name)] = n
    return found


def test_no_function_over_80_lines():
    over = {k: n for k, n in long_functions().items() if k not in ALLOWED}
    assert not over, "split these functions (at most 80 lines of code each): " + ", ".join(
        f"{path}:{name} ({n})" for (path, name), n in sorted(over.items())
    )


def test_allow_list_is_current():
    """An allowed function that got short (or was renamed) leaves the list."""
    stale = set(ALLOWED) - set(long_functions())
    assert not stale, f"no longer long (or renamed): remove from ALLOWED: {sorted(stale)}"


def test_measure_counts_code_not_docstring():
    src = 'def f(a):\n    """doc\n\n    more doc\n    """\n    x = a\n    return x\n'
    (fn,) = [fn for _, fn in functions_from_source(src)]
    assert code_lines(fn) == 2


def functions_from_source(src: str):
    tree = ast.parse(src)
    return [(n.name, n) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
