"""Provenance stamped on every result: profile, seed, git commit, time, versions.

Reports show what ran (DEVELOPERS.md, "Honest results only"): every experiment result json carries
the dict returned by :func:`provenance`.
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def git_commit(short: bool = True) -> str:
    """The commit of the working tree (with ``+dirty`` when it has uncommitted changes), or ``"unknown"``."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short" if short else "--verify", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(profile: str | None = None, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """Return a JSON-ready dict: profile, seed, commit, UTC time, host, python/torch versions, plus ``extra``."""
    info: dict[str, Any] = {
        "profile": profile,
        "seed": seed,
        "commit": git_commit(),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": platform.node(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["device"] = "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        pass
    info.update(extra)
    return info
