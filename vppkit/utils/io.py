"""Atomic file writes: a reader never sees a half-written result.

Every result, table, figure, checkpoint and dataset file of vppkit goes through these helpers:
the content is written to a temporary file in the destination folder and moved into place with
``os.replace`` (atomic on POSIX and Windows when source and target share a file system).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``.

    Use it for writers that want a file name (``torch.save``, ``fig.savefig``, ``PIL.Image.save``).
    The temporary file keeps ``path``'s suffix (or ``suffix``) so format detection by extension works.
    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix,
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp creates 0600; give the file the usual permissions (umask applied)
            os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Serialise ``obj`` as JSON and write it atomically; returns the path.

    Raises:
        TypeError / ValueError: ``obj`` is not JSON-serialisable (nothing is written then).
    """
    text = json.dumps(obj, indent=indent, allow_nan=False, default=_json_default)
    return atomic_write_text(path, text + "\n")


def _json_default(o: Any) -> Any:
    # numpy scalars / arrays and paths are common in results; convert them explicitly.
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"object of type {type(o).__name__} is not JSON serialisable")


def finite_or_none(obj: Any) -> Any:
    """Copy of ``obj`` with NaN / inf floats (undefined metrics, e.g. IoI_S without small instances) as None.

    JSON has no NaN; results store "undefined" as null and tables show it as "--".
    """
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalars
        return finite_or_none(obj.item())
    return obj
