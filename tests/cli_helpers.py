"""Command lines for the tests of ``lsb`` commands, examples and benchmarks, built from keywords."""

from __future__ import annotations


def options(**values) -> list[str]:
    """Command-line options from keywords, in order: ``nfe=2`` -> ``--nfe 2``, ``batch_size=1`` -> ``--batch-size 1``,
    ``overwrite=True`` -> ``--overwrite``; a list or tuple gives several values (``methods=("a", "b")`` ->
    ``--methods a b``). Values go through ``str``."""
    argv = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def translate_argv(*inputs, model, out=None, source="a circle", target="a square", **opts) -> list[str]:
    """``lsb translate INPUTS --source S --target T --model M [options] [-o OUT]`` as argv words, with the tests'
    usual prompts (a circle -> a square); ``opts`` as in :func:`options`."""
    argv = ["translate", *map(str, inputs), *options(source=source, target=target, model=model, **opts)]
    return argv if out is None else [*argv, "-o", str(out)]
