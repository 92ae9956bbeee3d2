"""Where the commands write: output names that never collide, output folders that are never silently reused.

Rules shared by ``lsb translate``, ``lsb restore`` and ``lsb generate`` (issue 16 item 1):

* :func:`expand_inputs` lists the input images; a folder that an lsb command wrote (it holds our
  ``settings.json``) contributes its results but not its ``grid.png``, so an output folder can be translated again;
  the same file named twice is read once.
* :func:`output_names` gives each input its own output name: ``<stem>.png`` when the stems are unique, else the
  input's folder relative to the inputs' common folder is kept (``a/x.png`` and ``b/x.png`` -> ``a/x.png``,
  ``b/x.png``) and files of one folder that share a stem keep their suffix (``x.png``, ``x.jpg`` -> ``x.png.png``,
  ``x.jpg.png``); the tool's own names (``grid.png``, ``settings.json``) are never produced for an input.
* :class:`OutputFolder` refuses an output folder inside (or equal to) an input folder, one that holds an input
  file, and a non-empty folder unless ``--overwrite``; with ``--overwrite`` (only on a folder an lsb command wrote)
  the run is written into a staging folder next to it, which replaces the old folder when the run completes, so the
  old run's files (settings.json included) are gone as a whole and an interrupted run leaves the old one intact.
* :func:`check_output_file` does the same for a single output file (``lsb generate``).

Nothing here imports torch: the checks run before any model is loaded.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

from ..io.images import IMAGE_SUFFIXES, ImageInputError, list_images

#: files an lsb command writes next to its outputs
GRID_NAME = "grid.png"
SETTINGS_NAME = "settings.json"
RESERVED = {GRID_NAME, SETTINGS_NAME}


class OutputPathError(ValueError):
    """An output path that cannot be used; the message names it and says why."""


def is_lsb_output(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a ``settings.json`` written by an lsb command."""
    p = Path(folder) / SETTINGS_NAME
    if not p.is_file():
        return False
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and ("lsb_command" in data or {"method", "nfe"} <= data.keys())


def expand_inputs(inputs) -> list[Path]:
    """Image files of ``inputs`` (files and folders, as :func:`lsb.io.images.list_images`), without the
    ``grid.png`` of folders an lsb command wrote and without repeats of one file."""
    files: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir() and is_lsb_output(p):
            found = [
                q
                for q in sorted(p.iterdir())
                if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES and q.name != GRID_NAME
            ]
            if not found:
                raise ImageInputError(f"{p}: lsb output folder contains no images besides its {GRID_NAME}")
        else:
            found = list_images([p])
        for q in found:
            key = q.resolve()
            if key not in seen:
                seen.add(key)
                files.append(q)
    return files


def output_names(files, suffix: str = ".png") -> list[Path]:
    """One distinct relative output path per input file (see the module docstring)."""
    files = [Path(f) for f in files]
    stems = Counter(f.stem for f in files)
    if all(n == 1 for n in stems.values()) and not any(f"{f.stem}{suffix}" in RESERVED for f in files):
        return [Path(f"{f.stem}{suffix}") for f in files]
    parents = [f.resolve().parent for f in files]
    common = Path(os.path.commonpath([str(p) for p in parents]))
    per_folder = Counter((p, f.stem) for p, f in zip(parents, files))
    names = []
    for p, f in zip(parents, files):
        name = f"{f.stem}{suffix}"
        if per_folder[(p, f.stem)] > 1 or name in RESERVED:
            name = f"{f.name}{suffix}"
        names.append(p.relative_to(common) / name)
    return names


def _writable_folder(path: Path) -> Path:
    """The nearest existing folder at or above ``path``, which must be writable."""
    q = path
    while not q.exists():
        q = q.parent
    if not q.is_dir():
        raise OutputPathError(f"{path}: cannot create it, {q} is a file")
    if not os.access(q, os.W_OK | os.X_OK):
        raise OutputPathError(f"{path}: cannot write there ({q} is not writable)")
    return q


class OutputFolder:
    """The output folder of one run: checked on creation, written through :attr:`path`, finished by :meth:`commit`."""

    def __init__(self, out, inputs=(), files=(), overwrite: bool = False, flag: str = "-o/--output"):
        self.final = Path(out)
        check_not_inside_inputs(out, inputs, files, flag)
        check_output_folder_writable(out, flag)
        self.replacing = self.final.is_dir() and any(self.final.iterdir())
        if self.replacing and not overwrite:
            raise OutputPathError(
                f"{flag} {out} is not empty; choose a new folder, or pass --overwrite to replace the previous run in it"
            )
        if self.replacing and not is_lsb_output(self.final):
            raise OutputPathError(
                f"{flag} {out} is not empty and was not written by lsb (no lsb {SETTINGS_NAME}); "
                f"--overwrite replaces only lsb output folders, choose a new folder"
            )
        self.path = self.final.with_name(f".{self.final.name}.lsb-staging") if self.replacing else self.final

    def prepare(self) -> Path:
        """Create the folder to write into (a fresh staging folder when replacing)."""
        self.created = not self.path.exists()
        if self.replacing:
            shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path

    def abort(self) -> None:
        """After a failed run: remove the staging folder, or the output folder this run created (the previous run,
        if any, stays as it was)."""
        if self.replacing or getattr(self, "created", False):
            shutil.rmtree(self.path, ignore_errors=True)

    def write_settings(self, command: str, settings: dict) -> Path:
        dest = self.path / SETTINGS_NAME
        dest.write_text(json.dumps({"lsb_command": command, **settings}, indent=2))
        return dest

    def commit(self) -> Path:
        """Put the finished run in place: the staging folder replaces the old run (nothing to do otherwise)."""
        if self.replacing:
            old = self.final.with_name(f".{self.final.name}.lsb-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.final, old)
            os.replace(self.path, self.final)
            shutil.rmtree(old, ignore_errors=True)
        return self.final


def check_not_inside_inputs(out, inputs, files=(), flag: str = "-o/--output") -> None:
    """Refuse an output folder equal to or inside an input folder, or holding an input file."""
    final = Path(out).resolve()
    for item in inputs:
        folder = Path(item).resolve()
        if folder.is_dir() and (final == folder or folder in final.parents):
            raise OutputPathError(
                f"{flag} {out} is inside the input folder {item}: outputs would mix with the "
                f"inputs; choose a folder outside it"
            )
    for f in files:
        if Path(f).resolve().parent == final:
            raise OutputPathError(f"{flag} {out} holds the input {f}; choose another output folder")


def check_output_folder_writable(out, flag: str = "-o/--output") -> Path:
    """An output folder path that is not a file and can be created or written."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{flag} {out} is a file, not a folder")
    _writable_folder(p)
    return p


def check_output_file(out, overwrite: bool = False, inputs=(), flag: str = "-o/--output") -> Path:
    """Check a single output image path before any compute: an image suffix, not a folder, not an input, an
    existing file only with ``overwrite``, and a writable parent folder."""
    p = Path(out)
    if p.is_dir():
        raise OutputPathError(f"{flag} {out} is a folder; give a file name such as {p / 'out.png'}")
    if p.suffix.lower() not in {".png", ".jpg", ".jpeg", ".webp"}:
        raise OutputPathError(f"{flag} {out}: give an image file name ending in .png, .jpg or .webp")
    if any(Path(i).resolve() == p.resolve() for i in inputs):
        raise OutputPathError(f"{flag} {out} is also an input")
    if p.exists() and not overwrite:
        raise OutputPathError(f"{flag} {out} exists; choose another name, or pass --overwrite to replace it")
    _writable_folder(p.parent if str(p.parent) else Path("."))
    return p


__all__ = [
    "GRID_NAME",
    "SETTINGS_NAME",
    "OutputFolder",
    "OutputPathError",
    "check_not_inside_inputs",
    "check_output_file",
    "check_output_folder_writable",
    "expand_inputs",
    "is_lsb_output",
    "output_names",
]
