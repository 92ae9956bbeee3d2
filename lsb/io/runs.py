"""A run's claim on its output folder, its manifest, and names that every file system and terminal accepts.

Used by the commands that write folders (``lsb translate``, ``lsb restore``, ``lsb learn-domain``) and by
:func:`lsb.training.prompt_optimization.learn_domain`; nothing here imports torch.

* :class:`FolderClaim`: an exclusive, advisory lock (``flock``) on the output folder itself, taken when a run starts
  and held until the process ends. A second run into the same folder is refused at once instead of mixing its files
  with the first; the kernel drops the lock when the holder dies (``kill -9`` included), so a folder is never left
  locked by a dead run. Creating a new folder uses ``mkdir`` without ``exist_ok``: of two runs racing for one new
  folder, exactly one creates it (and only that one may remove it again on failure).
* :func:`write_json_atomic`: a manifest written to a temporary file and renamed, so a reader (or a run after a crash)
  sees the old or the new manifest, never half of one.
* :func:`fit_name`: an output file name shortened with a stable hash suffix when it would be too long for the file
  system (``NAME_MAX``, usually 255 bytes), so a long input name never fails at saving time.
* :func:`shown`: a path as text any terminal can print, whatever bytes the name holds (a Latin-1 name on a UTF-8
  system reaches Python as surrogate escapes, which ``print`` cannot encode).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import signal
from pathlib import Path

from .files import TEMP_PREFIX, write_json_atomic


class FolderInUseError(ValueError):
    """Another run holds the output folder; the message names it."""


class RunInterrupted(Exception):
    """A run stopped by SIGINT (Ctrl-C) or SIGTERM after it kept what it had finished; ``code`` is the exit status
    (130 / 143) and the message says how to continue."""

    def __init__(self, message: str, code: int = 130):
        super().__init__(message)
        self.code = code


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM while :func:`terminate_as_exception` is in effect (like
    ``KeyboardInterrupt`` for SIGINT), so that ``finally`` blocks and the run's bookkeeping still run."""


_signalled: list[int] = []


def _raise_terminated(signum, frame):  # noqa: ARG001
    _signalled.append(143)
    raise Terminated()


def _raise_interrupt(signum, frame):  # noqa: ARG001
    _signalled.append(130)
    raise KeyboardInterrupt()


def signalled() -> int | None:
    """The exit status of the first SIGINT (130) / SIGTERM (143) received since :func:`terminate_as_exception`, or
    None: a signal that cut an import short can surface as another exception, which is still an interruption."""
    return _signalled[0] if _signalled else None


def terminate_as_exception():
    """From now on SIGTERM raises :class:`Terminated` and SIGINT ``KeyboardInterrupt`` in the main thread, and
    :func:`signalled` remembers them (a no-op outside the main thread; an ignored SIGINT stays ignored). Returns the
    previous handlers, for :func:`restore_terminate`."""
    _signalled.clear()
    try:
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_terminated)}
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, _raise_interrupt)
        return previous
    except ValueError:  # not the main thread
        return None


def restore_terminate(previous) -> None:
    """Put back the handlers :func:`terminate_as_exception` replaced."""
    for sig, handler in (previous or {}).items():
        try:
            signal.signal(sig, handler)
        except ValueError:
            pass


def interrupt_code(exc: BaseException) -> int:
    """The exit status of an interruption: 143 (128 + SIGTERM) for :class:`Terminated`, else 130 (128 + SIGINT)."""
    return 143 if isinstance(exc, Terminated) else 130


# ------------------------------------------------------------------------------------------------ claiming a folder
class FolderClaim:
    """An exclusive claim on the folder ``path`` (see the module docstring). :meth:`take` creates the folder when it
    is missing (recording in :attr:`created` that this run did) and locks it; :meth:`release` unlocks it."""

    def __init__(self, path, flag: str = "-o/--output"):
        self.path = Path(path)
        self.flag = flag
        self.created = False
        self._fd: int | None = None

    def take(self) -> FolderClaim:
        p = self.path
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(p)  # no exist_ok: of two runs creating it, one wins
            self.created = True
        except FileExistsError:
            if not p.is_dir():
                raise FolderInUseError(f"{self.flag} {shown(p)} is a file, not a folder") from None
        except OSError as e:
            raise FolderInUseError(f"{self.flag} {shown(p)}: cannot create it ({e.strerror})") from None
        self._fd = lock_folder(p, self.flag)
        return self

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


def lock_folder(path, flag: str = "-o/--output") -> int:
    """Lock the existing folder ``path`` for this process (``flock`` on the folder itself, no lock file); a
    :class:`FolderInUseError` when another process holds it. Returns the descriptor that holds the lock."""
    fd = os.open(path, os.O_RDONLY)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no protection against concurrent runs
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return fd  # a file system without locks (some network mounts): no protection against concurrent runs
        os.close(fd)
        raise FolderInUseError(
            f"{flag} {shown(path)} is in use by another lsb run; wait for it to finish, or choose another folder"
        ) from None
    return fd


# ------------------------------------------------------------------------------------------------ files
def remove_temporaries(folder) -> int:
    """Remove the temporary files an interrupted writer left below ``folder`` (:data:`TEMP_PREFIX`); their count."""
    n = 0
    for p in Path(folder).rglob(f"{TEMP_PREFIX}*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


# ------------------------------------------------------------------------------------------------ names
def name_max(folder) -> int:
    """The longest file name (bytes) the file system of ``folder`` (or its nearest existing parent) accepts."""
    q = Path(folder)
    while q != q.parent:
        try:
            if q.is_dir():
                break
        except OSError:  # e.g. a name too long to look up
            pass
        q = q.parent
    try:
        return int(os.pathconf(q, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


#: room kept below NAME_MAX in every output name (temporary names, a suffix a later command may add)
NAME_RESERVE = 16


def fit_name(name: str, limit: int = 255 - NAME_RESERVE) -> str:
    """``name`` itself if its encoded form has at most ``limit`` bytes, else its start, ``-``, ten hex digits of the
    SHA-1 of the whole name, and its suffix (``.png``): the same long name always gives the same short one, and two
    long names differing only at their end still give different ones."""
    raw = os.fsencode(name)
    if len(raw) <= limit:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or len(suffix) > 8:
        stem, suffix = name, ""
    tail = ("." + suffix if suffix else "").encode()
    digest = hashlib.sha1(raw).hexdigest()[:10]
    keep = os.fsencode(stem)[: max(1, limit - len(tail) - len(digest) - 1)]
    while keep and (keep[-1] & 0xC0) == 0x80:  # do not cut a UTF-8 character in two
        keep = keep[:-1]
    if keep and keep[-1] >= 0xC0:
        keep = keep[:-1]
    return os.fsdecode(keep) + "-" + digest + (("." + suffix) if suffix else "")


def fit_relative(path, limit: int = 255 - NAME_RESERVE) -> Path:
    """:func:`fit_name` applied to every part of the relative path ``path``."""
    return Path(*(fit_name(part, limit) for part in Path(path).parts))


def shown(path) -> str:
    """``path`` as printable text on one line: bytes that are not valid in the file system's encoding, and control
    characters (a newline, a terminal escape sequence in a hostile name), appear as ``\\xNN``."""
    raw = os.fsencode(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else str(path).encode()
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else f"\\x{ord(c):02x}" for c in text)


@contextlib.contextmanager
def signals_held():
    """SIGINT and SIGTERM ignored for the ``with`` block (a run's last bookkeeping after an interruption: a second
    Ctrl-C must not cut the manifest short); the previous handlers come back afterwards."""
    saved = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            saved[sig] = signal.signal(sig, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


__all__ = [
    "FolderClaim",
    "FolderInUseError",
    "NAME_RESERVE",
    "RunInterrupted",
    "TEMP_PREFIX",
    "Terminated",
    "fit_name",
    "fit_relative",
    "interrupt_code",
    "lock_folder",
    "name_max",
    "remove_temporaries",
    "restore_terminate",
    "shown",
    "signalled",
    "signals_held",
    "terminate_as_exception",
    "write_json_atomic",
]
