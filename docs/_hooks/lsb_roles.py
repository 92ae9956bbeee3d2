"""A griffe extension: the Sphinx roles of lsb's docstrings (``:class:`lsb.LSBScheduler```, ``:func:`translate```)
become checked cross-references on the site.

Every docstring of every package the site loads is scanned (``lsb`` and ``lsb_pipelines`` always, whole), not only
the rendered ones, so a stale role anywhere in the code fails the build. A role's target is resolved like Python would:
as a public ``lsb.<name>``, as an absolute path, or relative to the object (its members, then its parents'
members and imports). Then

- a target that the site documents (a public name or one of its rendered members) becomes a link,
- one that exists but has no page (a helper, a module, another library) becomes inline code,
- one that does not exist is reported as a warning, which ``mkdocs build --strict`` turns into a failed build.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from pathlib import Path

import griffe

sys.path.insert(0, str(Path(__file__).parent))
from lsb_docs_public import public_api  # noqa: E402

logger = logging.getLogger("mkdocs.plugins.lsb_roles")  # mkdocs counts warnings under "mkdocs": --strict fails
ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|attr|data|obj|exc|const):`(~?)([^`<>]+)`")
PACKAGES = ("lsb", "lsb_pipelines")


def _member(obj, path: str):
    """``obj``'s member at a dotted ``path`` (inherited members and imports included), or None."""
    for part in path.split("."):
        try:
            members = obj.all_members if obj.is_class else obj.members
        except Exception:  # an alias that cannot be resolved (another library not loaded), a failed inheritance walk
            try:
                members = obj.members
            except Exception:
                return None
        if part not in members:
            return None
        obj = members[part]
    return obj


def _path(obj) -> str:
    return obj.target_path if obj.is_alias else obj.path


def resolve(target: str, obj, collection) -> str | None:
    """The canonical path of a role's target seen from ``obj``, or None if it does not exist."""
    api = public_api()
    head = target.split(".", 1)[0]
    if head == "lsb" and target.split(".")[1] in api:  # lsb.LSBScheduler, lsb.DDMScheduler.add_noise
        name, _, rest = target[4:].partition(".")
        if not rest:
            return api[name]
        owner, _, inner = api[name].partition(".")
        found = _member(collection[owner], f"{inner}.{rest}") if owner in collection.members else None
        return _path(found) if found is not None else None
    if head in PACKAGES:
        found = _member(collection[head], target.split(".", 1)[1]) if "." in target else collection[head]
        return _path(found) if found is not None else None
    scope = obj
    while scope is not None:  # the object itself, its class, its module, the parent packages
        found = _member(scope, target)
        if found is not None:
            return _path(found)
        scope = scope.parent
    if target in api:  # a bare public name (``DIRformer``) where no closer one exists
        return api[target]
    if head not in PACKAGES and importlib.util.find_spec(head) is not None:
        return target  # another library's object (torch, diffusers): not checked further, not linked
    return None


def documented(collection) -> set[str]:
    """Paths that have an anchor on the site: the public names and their rendered members (public, documented)."""
    out = set()
    for path in public_api().values():
        out.add(path)
        head, _, rest = path.partition(".")
        obj = _member(collection[head], rest) if head in collection.members else None
        if obj is None or obj.is_alias or not obj.is_class:
            continue
        for name, member in obj.members.items():
            if (not name.startswith("_") or name == "__call__") and not member.is_alias and member.docstring:
                out.add(member.path)
    return out


def _objects(obj):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


class SphinxRoles(griffe.Extension):
    def __init__(self) -> None:
        super().__init__()
        self._pending: list[str] = []
        self._done: set[str] = set()
        self._linked: set[str] | None = None

    def on_package(self, *, pkg, loader, **kwargs) -> None:
        """Scan ``pkg`` (any package the site renders), once ``lsb`` and ``lsb_pipelines`` are loaded too: a role in
        one package may name the other."""
        collection = loader.modules_collection
        self._pending.append(pkg.name)
        for name in PACKAGES:
            if name not in collection.members and name not in self._pending:
                loader.load(name)  # its own on_package call lands here first, and waits for the rest
        if not all(name in collection.members for name in PACKAGES):
            return
        if self._linked is None:
            self._linked = documented(collection)
        while self._pending:
            name = self._pending.pop()
            if name in self._done:
                continue
            self._done.add(name)
            for obj in _objects(collection[name]):
                if obj.docstring is not None and ":" in obj.docstring.value:
                    obj.docstring.value = ROLE.sub(
                        lambda m, o=obj: self._rewrite(m, o, collection, self._linked), obj.docstring.value
                    )

    @staticmethod
    def _rewrite(match, obj, collection, linked) -> str:
        _, tilde, target = match.groups()
        target = target.strip().removesuffix("()")
        shown = target.rsplit(".", 1)[-1] if tilde else target
        path = resolve(target, obj, collection)
        if path is None:
            where = f"{obj.relative_filepath}:{obj.lineno}" if obj.lineno else obj.path
            logger.warning(
                f"lsb docs: broken cross-reference {match.group(0)} in the docstring of {obj.path} ({where})"
            )
            return f"`{shown}`"
        return f"[`{shown}`][{path}]" if path in linked else f"`{shown}`"
