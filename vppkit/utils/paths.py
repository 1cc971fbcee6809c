"""Where vppkit finds data and puts generated files.

- ``VPPKIT_DAVIS_ROOT``: the DAVIS-2016 folder used by tests and the ``davis`` profile; default
  ``<repo>/../shared/data/davis2016-240p`` (the real subset shipped beside the repository).
- ``VPPKIT_CACHE``: generated data (synthetic videos, converted json) and trained checkpoints;
  default ``<repo>/cache``.
"""

from __future__ import annotations

import os
from pathlib import Path

from vppkit.utils.provenance import REPO_ROOT


def davis_root() -> Path:
    """Path of the DAVIS folder (may not exist: callers check and skip or raise with a clear reason)."""
    env = os.environ.get("VPPKIT_DAVIS_ROOT")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data" / "davis2016-240p")


def cache_dir() -> Path:
    """Folder for generated data and checkpoints (created on demand)."""
    env = os.environ.get("VPPKIT_CACHE")
    path = Path(env) if env else REPO_ROOT / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path
