"""Atomic file writes: a file appears whole or not at all, so an interrupted run never leaves half a file.

THE home of the project's atomic writes: :func:`atomic_path` (a temporary file in the same folder, renamed over the
target when the block succeeds, removed when it fails) and the JSON / text writers built on it. Images
(:func:`lsb.io.images.save_image`), learned domains, safetensors caches and run records all go through it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:  # Linux: read without changing it
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: the prefix of every temporary file lsb writes (short, so that any name the file system takes also saves; an
#: interrupted writer's leftovers are found by it, :func:`lsb.io.runs.remove_temporaries`)
TEMP_PREFIX = ".lsb-tmp-"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` to write to; when the block ends without error it replaces ``path``
    (``os.replace``: readers see the old file or the new one, never a partial one), otherwise it is removed.

    The folder is created if needed. The temporary name is unique (``mkstemp``) and short (:data:`TEMP_PREFIX`), so
    processes writing the same file at once do not clash and any name the file system takes also saves; the file
    gets the permissions of any file the user writes (mkstemp's 0600 relaxed to ``0666 & ~umask``). A failed write
    whose error names no file is raised naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=path.suffix)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None and e.filename is None:  # a failed write names no file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data, **dumps_kwargs) -> Path:
    """Write ``data`` as JSON (``indent=2`` unless ``dumps_kwargs`` say otherwise; values JSON cannot hold are
    written as ``str``) to ``path`` atomically; returns the path."""
    dumps_kwargs = {"indent": 2, "default": str, **dumps_kwargs}
    return write_text_atomic(path, json.dumps(data, **dumps_kwargs))


__all__ = ["TEMP_PREFIX", "atomic_path", "write_json_atomic", "write_text_atomic"]
