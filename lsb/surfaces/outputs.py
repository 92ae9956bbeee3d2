"""Where the commands write: output names that never collide, output folders that are never silently reused.

Rules shared by ``lsb translate``, ``lsb restore`` and ``lsb generate`` (issue 16 item 1):

* :func:`expand_inputs` lists the input images; a folder that an lsb command wrote (it holds our
  ``settings.json``) contributes its results, in its subfolders too, but not its ``grid.png``, so an output folder
  can be translated again (with ``keep_tree`` its tree is mirrored); the same file named twice is read once.
* :func:`output_names` gives each input its own output name: ``<stem>.png`` when the stems are unique, else the
  input's folder relative to the inputs' common folder is kept (``a/x.png`` and ``b/x.png`` -> ``a/x.png``,
  ``b/x.png``) and files of one folder that share a stem keep their suffix (``x.png``, ``x.jpg`` -> ``x.png.png``,
  ``x.jpg.png``); the tool's own names (``grid.png``, ``settings.json``) are never produced for an input; a name too
  long for the file system is shortened with a stable hash suffix (:func:`lsb.io.runs.fit_name`).
* :class:`OutputFolder` makes a run a transaction (issue 22; docs/guides/safe-runs.md): it refuses an output folder
  inside (or equal to) an input folder or holding an input anywhere below it, and a non-empty folder unless it holds
  an lsb run to continue (same settings) or ``--overwrite`` replaces it (only an lsb folder without files lsb did not
  write); the run claims the folder (a lock: a second run is refused), records each finished output in the manifest,
  keeps them on Ctrl-C / SIGTERM and continues them when rerun. With ``--overwrite`` the run is written into a
  staging folder next to it, which replaces the old folder when the run completes.
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
from ..io.runs import (
    NAME_RESERVE,
    TEMP_PREFIX,
    FolderClaim,
    RunInterrupted,
    fit_relative,
    interrupt_code,
    name_max,
    remove_temporaries,
    shown,
    signals_held,
    write_json_atomic,
)

#: files an lsb command writes next to its outputs
GRID_NAME = "grid.png"
SETTINGS_NAME = "settings.json"
RESERVED = {GRID_NAME, SETTINGS_NAME}


class OutputPathError(ValueError):
    """An output path that cannot be used; the message names it and says why."""


def is_lsb_output(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a ``settings.json`` written by an lsb command (a finished or an interrupted run)."""
    return read_manifest(folder) is not None


def expand_inputs(inputs) -> list[Path]:
    """Image files of ``inputs`` (files and folders, as :func:`lsb.io.images.list_images`), without repeats of one
    file. A folder an lsb command wrote contributes its outputs, in its subfolders too (their structure is kept by
    :func:`output_names` with ``keep_tree``), but not its ``grid.png``, manifest or temporary files."""
    files: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir() and is_lsb_output(p):
            found = lsb_output_images(p)
            if not found:
                raise ImageInputError(f"{shown(p)}: lsb output folder contains no images besides its {GRID_NAME}")
        else:
            found = list_images([p])
        for q in found:
            key = q.resolve()
            if key not in seen:
                seen.add(key)
                files.append(q)
    return files


def lsb_output_images(folder) -> list[Path]:
    """The output images of an lsb output folder (subfolders included; not its grid, hidden or temporary files)."""
    root = Path(folder)
    return [
        q
        for q in sorted(root.rglob("*"))
        if q.is_file()
        and q.suffix.lower() in IMAGE_SUFFIXES
        and q.relative_to(root) != Path(GRID_NAME)
        and not any(part.startswith(".") for part in q.relative_to(root).parts)
    ]


def nested_lsb_inputs(inputs) -> bool:
    """Whether an input is an lsb output folder whose outputs sit in subfolders (its tree is then mirrored)."""
    for item in inputs:
        p = Path(item)
        if p.is_dir() and is_lsb_output(p) and any(q.parent != p for q in lsb_output_images(p)):
            return True
    return False


def output_names(files, suffix: str = ".png", keep_tree: bool = False, limit: int | None = None) -> list[Path]:
    """One distinct relative output path per input file (see the module docstring); ``keep_tree``: always keep each
    input's folder relative to the inputs' common folder (an lsb output folder with subfolders, translated again).
    Every part longer than ``limit`` bytes (default: what the file system allows, less
    :data:`lsb.io.runs.NAME_RESERVE`) is shortened with a stable hash suffix (:func:`lsb.io.runs.fit_name`)."""
    files = [Path(f) for f in files]
    limit = limit or 255 - NAME_RESERVE
    stems = Counter(f.stem for f in files)
    flat = all(n == 1 for n in stems.values()) and not any(f"{f.stem}{suffix}" in RESERVED for f in files)
    if flat and not keep_tree:
        return _distinct([fit_relative(f"{f.stem}{suffix}", limit) for f in files])
    parents = [f.resolve().parent for f in files]
    common = Path(os.path.commonpath([str(p) for p in parents]))
    per_folder = Counter((p, f.stem) for p, f in zip(parents, files))
    names = []
    for p, f in zip(parents, files):
        name = f"{f.stem}{suffix}"
        if per_folder[(p, f.stem)] > 1 or name in RESERVED:
            name = f"{f.name}{suffix}"
        names.append(fit_relative(p.relative_to(common) / name, limit))
    return _distinct(names)


def _distinct(names: list[Path]) -> list[Path]:
    """``names``, checked distinct (shortened names keep a hash of the whole name, so they stay apart)."""
    seen = Counter(names)
    dup = next((n for n, c in seen.items() if c > 1), None)
    if dup is not None:
        raise OutputPathError(f"two inputs would be written to the same output {shown(dup)}; rename one of them")
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
    """The output folder of one run, as a transaction (issue 22 item 1).

    Created with the run's ``command``, ``settings`` and ``planned`` outputs (output name -> input file); checks the
    folder without writing anything (:meth:`__init__`). :meth:`claim` then locks it (a second run into it is refused),
    writes the manifest (``settings.json``: the settings, ``"status": "running"``, the planned outputs) and returns the
    folder to write into; :meth:`record` adds each finished output to the manifest (atomically), :meth:`commit`
    marks the run complete. The plain rerun with the same settings (or ``--resume``) continues an interrupted run,
    skipping the outputs :attr:`finished` names; ``--overwrite`` writes a new run next to the folder and swaps it in
    when it completes. See docs/guides/safe-runs.md.
    """

    def __init__(
        self,
        out,
        inputs=(),
        files=(),
        overwrite: bool = False,
        flag: str = "-o/--output",
        *,
        resume: bool = False,
        command: str | None = None,
        settings: dict | None = None,
        planned: dict | None = None,
    ):
        if overwrite and resume:
            raise OutputPathError("give --overwrite or --resume, not both")
        self.final = Path(out)
        self.flag, self.overwrite, self.resume = flag, overwrite, resume
        self.command, self.settings = command, dict(settings or {})
        self.planned = {str(k): str(Path(v).resolve()) for k, v in (planned or {}).items()}
        check_not_inside_inputs(out, inputs, files, flag)
        check_output_folder_writable(out, flag)
        self.claims: list[FolderClaim] = []
        self.finished: dict[str, str] = {}
        self._evaluate()

    # -------------------------------------------------------------------------------------------- checks
    def _evaluate(self) -> None:
        """Decide what this run does with the folder: ``new``, ``resume`` or ``replace`` (or refuse, one line)."""
        out, flag = self.final, self.flag
        self.replacing = False
        self.mode = "new"
        self.path = self.final
        self.finished = {}
        if not (out.is_dir() and any(out.iterdir())):
            return
        old = read_manifest(out)
        if old is None:
            if self.overwrite:
                raise OutputPathError(
                    f"{flag} {shown(out)} is not empty and was not written by lsb (no lsb {SETTINGS_NAME}); "
                    f"--overwrite replaces only lsb output folders, choose a new folder"
                )
            raise OutputPathError(
                f"{flag} {shown(out)} is not empty; choose a new folder, or pass --overwrite to replace the previous "
                f"run in it"
            )
        if self.overwrite:
            foreign = foreign_files(out, old)
            if foreign:
                raise OutputPathError(
                    f"{flag} {shown(out)} holds files lsb did not write ({', '.join(shown(f) for f in foreign[:3])}"
                    f"{', ...' if len(foreign) > 3 else ''}); --overwrite would delete them: move them out, or "
                    f"choose a new folder"
                )
            self.replacing, self.mode = True, "replace"
            self.path = self.final.with_name(f".{self.final.name}.lsb-staging")
            staged = read_manifest(self.path) if self.path.is_dir() else None
            if staged is not None and staged.get("status") != "complete" and not self._differences(staged):
                self.finished = _finished(self.path, staged)  # an interrupted --overwrite run: continue it
            return
        diff = self._differences(old)
        complete = old.get("status", "complete") == "complete"
        if diff:
            what = "a finished" if complete else "an interrupted"
            raise OutputPathError(
                f"{flag} {shown(out)} holds {what} lsb run with other settings ({diff}); "
                + ("rerun it with its settings to continue it, or " if not complete else "choose a new folder, or ")
                + "pass --overwrite to replace it"
            )
        if complete and not self.resume:
            raise OutputPathError(
                f"{flag} {shown(out)} is not empty: it holds a finished lsb run with these settings; choose a new "
                f"folder, or pass --overwrite to replace the previous run in it (--resume: nothing left to do)"
            )
        self.mode = "resume"
        self.finished = _finished(out, old)

    def _differences(self, old: dict) -> str:
        """What differs between this run and the manifest ``old`` ('' when it can be continued)."""
        if self.command is None:
            return "unknown settings"
        changes = []
        if old.get("lsb_command") != self.command:
            changes.append(f"command: {old.get('lsb_command')} -> {self.command}")
        for k, v in self.settings.items():
            if k in old and _jsonable(old[k]) != _jsonable(v):
                changes.append(f"{k}: {old[k]!r} -> {v!r}")
        planned = old.get("planned")
        if planned is None:
            planned = {k: str(Path(v).resolve()) for k, v in (old.get("inputs") or {}).items()}
        if planned != self.planned:
            changes.append(f"inputs: {len(planned)} planned -> {len(self.planned)} (other files or names)")
        return "; ".join(changes)

    # -------------------------------------------------------------------------------------------- the run
    def claim(self) -> Path:
        """Lock the folder (refusing when another run holds it), check it again under the lock, write the manifest;
        returns the folder to write into. A run that resumes keeps the finished outputs (:attr:`finished`)."""
        first = FolderClaim(self.final, self.flag).take()
        self.claims.append(first)
        try:
            if not first.created:
                self._evaluate()  # under the lock: what another run did in between counts
            if self.replacing:
                if not self.finished:
                    shutil.rmtree(self.path, ignore_errors=True)
                self.claims.append(FolderClaim(self.path, self.flag).take())
            remove_temporaries(self.path)
            self._write("running")
        except BaseException:
            self._undo_claim()
            raise
        return self.path

    def prepare(self) -> Path:
        """:meth:`claim` (the name of earlier versions)."""
        return self.claim()

    def record(self, name, source) -> None:
        """Output ``name`` (relative to the folder) is written: add it to the manifest, atomically."""
        self.finished[str(name)] = str(source)
        self._write("running")

    def _write(self, status: str) -> None:
        data = {
            "lsb_command": self.command,
            **self.settings,
            "status": status,
            "planned": self.planned,
            "inputs": dict(self.finished),
        }
        write_json_atomic(self.path / SETTINGS_NAME, data)

    def commit(self) -> Path:
        """Mark the run complete and put it in place (with --overwrite the new folder replaces the old one)."""
        self._write("complete")
        if self.replacing:
            old = self.final.with_name(f".{self.final.name}.lsb-old")
            shutil.rmtree(old, ignore_errors=True)
            with signals_held():  # the two renames are not cut apart by Ctrl-C: -o is never missing
                os.replace(self.final, old)
                os.replace(self.path, self.final)
            shutil.rmtree(old, ignore_errors=True)
        self.release()
        return self.final

    def interrupted(self, exc: BaseException, rerun: str = "rerun the same command") -> RunInterrupted:
        """After Ctrl-C / SIGTERM: the manifest says ``interrupted`` (finished outputs stay recorded); the
        :class:`RunInterrupted` to raise, whose one line says how to continue."""
        done, total, where = len(self.finished), len(self.planned), shown(self.final)
        with signals_held():  # a second Ctrl-C does not cut the bookkeeping short
            if not done:
                self.abort()
                kept = "no output was finished" + (f" ({where} keeps the previous run)" if self.replacing else "")
                return RunInterrupted(f"{kept}; {rerun} to start again", interrupt_code(exc))
            if self.claims:
                self._write("interrupted")
            self.release()
        if self.replacing:
            how = f"{rerun} (with --overwrite) to continue; {where} keeps the previous run until this one completes"
        else:
            how = f"{rerun} (or add --resume) to continue, skipping the finished ones"
        return RunInterrupted(f"{done} of {total} output(s) finished and kept in {where}; {how}", interrupt_code(exc))

    def is_own_write_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a file-system error on a file of this run's folder (disk full, permissions, ...)."""
        if not isinstance(exc, OSError) or exc.errno is None or not exc.filename:
            return False
        try:
            return Path(os.fsdecode(exc.filename)).resolve().is_relative_to(self.path.resolve())
        except (TypeError, ValueError, OSError):
            return False

    def failed(self, exc: OSError) -> OutputPathError:
        """After a file-system error while writing (disk full, permissions changed, ...): what is finished stays
        recorded; the one-line error to raise, naming the file and how to continue."""
        self.abort()
        what = shown(exc.filename) if exc.filename else shown(self.path)
        kept = (
            f"; {len(self.finished)} finished output(s) are kept in {shown(self.final)}: rerun the same command "
            f"to continue"
            if self.finished
            else ""
        )
        return OutputPathError(f"cannot write {what} ({exc.strerror or exc}){kept}")

    def abort(self) -> None:
        """After a failed run: with finished outputs, keep them (the manifest says ``interrupted``, a rerun continues);
        without, remove what this run made (the staging folder, the folder it created, its manifest)."""
        if not self.claims:
            return
        if self.finished:
            self._write("interrupted")
        elif self.replacing:
            shutil.rmtree(self.path, ignore_errors=True)
        elif self.claims[0].created:
            shutil.rmtree(self.path, ignore_errors=True)
        elif self.mode == "new":
            (self.path / SETTINGS_NAME).unlink(missing_ok=True)
        self.release()

    def _undo_claim(self) -> None:
        if self.claims and self.claims[0].created and self.mode == "new":
            shutil.rmtree(self.final, ignore_errors=True)
        self.release()

    def release(self) -> None:
        for c in self.claims:
            c.release()
        self.claims = []


def plan_outputs(args, command: str, settings: dict) -> tuple[list[Path], list[Path], OutputFolder]:
    """The input files, their output names and the checked :class:`OutputFolder` of a command that writes one
    output per input (``args``: its ``inputs``, ``output``, ``overwrite`` and ``resume``)."""
    files = expand_inputs(args.inputs)
    limit = name_max(args.output) - NAME_RESERVE  # what the output folder's file system accepts
    names = output_names(files, keep_tree=nested_lsb_inputs(args.inputs), limit=limit)
    folder = OutputFolder(
        args.output,
        args.inputs,
        files,
        overwrite=args.overwrite,
        resume=args.resume,
        command=command,
        settings=settings,
        planned={str(n): f for n, f in zip(names, files)},
    )
    return files, names, folder


def read_manifest(folder) -> dict | None:
    """The manifest (``settings.json``) of an lsb output folder, or None when ``folder`` holds none."""
    return _manifest(Path(folder) / SETTINGS_NAME)


def _manifest(p: Path) -> dict | None:
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and ("lsb_command" in data or {"method", "nfe"} <= data.keys())
    return data if ok else None


def _jsonable(v):
    return json.loads(json.dumps(v, default=str))


def _finished(folder: Path, manifest: dict) -> dict[str, str]:
    """The outputs a manifest records as finished whose files are there."""
    done = manifest.get("inputs") or {}
    return {k: v for k, v in done.items() if (folder / k).is_file()}


def foreign_files(folder, manifest: dict) -> list[Path]:
    """Files below ``folder`` that the run of ``manifest`` did not write (relative paths)."""
    root = Path(folder)
    ours = set(RESERVED) | set(manifest.get("planned") or {}) | set(manifest.get("inputs") or {})
    found = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_dir() or p.name.startswith(TEMP_PREFIX) or str(rel) in ours:
            continue
        found.append(rel)
    return found


def check_not_inside_inputs(out, inputs, files=(), flag: str = "-o/--output") -> None:
    """Refuse an output folder equal to or inside an input folder, or holding an input anywhere below it (paths
    resolved through symbolic links): what a run writes or replaces there must never touch an input."""
    final = Path(out).resolve()
    for item in inputs:
        folder = Path(item).resolve()
        if folder.is_dir() and (final == folder or folder in final.parents):
            raise OutputPathError(
                f"{flag} {shown(out)} is inside the input folder {shown(item)}: outputs would mix with the "
                f"inputs; choose a folder outside it"
            )
    for item in [*inputs, *files]:
        p = Path(item).resolve()
        if final in p.parents:
            raise OutputPathError(f"{flag} {shown(out)} holds the input {shown(item)}; choose another output folder")


def check_output_folder_writable(out, flag: str = "-o/--output") -> Path:
    """An output folder path that is not a file and can be created or written."""
    p = Path(out)
    limit = name_max(p)
    long = next((part for part in p.parts if len(os.fsencode(part)) > limit), None)
    if long is not None:
        raise OutputPathError(
            f"{flag}: the name {shown(long[:40])}... ({len(os.fsencode(long))} bytes) is longer than the file system "
            f"allows ({limit}); choose a shorter one"
        )
    if p.is_symlink() and not p.exists():
        raise OutputPathError(f"{flag} {shown(out)} is a broken symbolic link; remove it or choose another folder")
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{flag} {shown(out)} is a file, not a folder")
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
    "foreign_files",
    "is_lsb_output",
    "lsb_output_images",
    "nested_lsb_inputs",
    "output_names",
    "plan_outputs",
    "read_manifest",
]
