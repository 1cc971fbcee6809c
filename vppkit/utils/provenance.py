"""Provenance stamped on every result: profile, seed, git commit, time, versions; and code versions.

Reports show what ran (DEVELOPERS.md, "Honest results only"): every experiment result json carries
the dict returned by :func:`provenance`. Its ``commit`` is the short hash of ``HEAD`` with ``+dirty``
appended when tracked files had uncommitted changes (untracked files are not looked at).

:func:`code_version` is a content hash of the source of named packages / modules. Saved artifacts (results,
trained models) put it in their cache key next to the config hash, so a change to the code an artifact
depends on invalidates it and a change to other code does not. It is computed from the files, so no
version number has to be bumped by hand. Which code keys which artifact is listed where the keys are made:
:data:`experiments.common.RESULT_CODE` (results) and :data:`vppkit.engine.train.TRAINING_CODE` (models).
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import importlib.util
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterable

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


def same_commit(recorded: str | None, head: str | None) -> bool:
    """Whether a recorded :func:`git_commit` (short or full, maybe ``+dirty``) names the commit ``head``.

    Compares the hashes without the ``+dirty`` suffix, one as a prefix of the other (short hashes may be
    abbreviated to different lengths). ``"unknown"`` / None never match.
    """
    a, b = (str(c or "").split("+")[0] for c in (recorded, head))
    if not a or not b or "unknown" in (a, b):
        return False
    return a.startswith(b) or b.startswith(a)


def source_files(name: str) -> list[tuple[str, Path]]:
    """The Python source files of the importable module or package ``name``, as (label, path) sorted by label.

    A package gives every ``*.py`` file below its folder(s) (sub-packages included, ``__pycache__`` skipped),
    labelled ``name/relative/path.py``; a module gives its one file, labelled ``name``. The files are found
    the way ``import`` would find them (:func:`importlib.util.find_spec`; this imports the parent packages of a
    dotted name, not the module itself).

    Raises:
        ModuleNotFoundError: ``name`` (or a parent package) cannot be found.
        ValueError: ``name`` has no Python source file (extension or built-in module).
    """
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ModuleNotFoundError(f"no module or package named {name!r} (code_version)", name=name)
    if spec.submodule_search_locations:
        out = []
        for folder in spec.submodule_search_locations:
            root = Path(folder)
            out += [(f"{name}/{p.relative_to(root).as_posix()}", p) for p in root.rglob("*.py")
                    if "__pycache__" not in p.parts]
        return sorted(out)
    if not spec.origin or not spec.origin.endswith(".py"):
        raise ValueError(f"{name!r} has no Python source file (origin {spec.origin!r})")
    return [(name, Path(spec.origin))]


def _normalised(path: Path) -> bytes:
    """Source bytes with CRLF / CR line endings as LF (a checkout's line-ending setting is not a code change)."""
    return path.read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n")


@functools.lru_cache(maxsize=None)
def _digest(name: str) -> str:
    h = hashlib.sha256()
    for label, path in source_files(name):
        h.update(label.encode() + b"\0" + _normalised(path) + b"\0")
    return h.hexdigest()


def code_version(*names: str, length: int = 12) -> str:
    """Content hash (hex, ``length`` characters) of the source of the modules / packages ``names``.

    Each name is a dotted import name (``"vppkit.metrics"``, ``"experiments.fgs"``), resolved by
    :func:`source_files`; the hash covers every file's label (name + path inside the package) and its text with
    normalised line endings, over the names sorted and deduplicated (their order does not matter). Naming
    packages rather than files keeps the key valid when files move inside a package; a file added, removed,
    renamed or edited inside a named package changes the version.

    Per-name hashes are cached for the life of the process (the code that runs is the code imported at
    start-up); :func:`clear_code_cache` forgets them (tests).

    Raises:
        ValueError: no names.
        ModuleNotFoundError, ValueError: from :func:`source_files`.
    """
    if not names:
        raise ValueError("code_version needs at least one module or package name")
    h = hashlib.sha256()
    for name in sorted(set(names)):
        h.update(f"{name}={_digest(name)}\n".encode())
    return h.hexdigest()[:length]


def clear_code_cache() -> None:
    """Forget the cached per-package hashes of :func:`code_version` (after sources changed in this process)."""
    _digest.cache_clear()


def code_stamp(names: Iterable[str]) -> dict[str, Any]:
    """``{"code_version": code_version(*names), "code": sorted names}``: what a saved artifact records, so that
    a reader can recompute the version from today's sources (:func:`code_changed`)."""
    names = sorted(set(names))
    return {"code_version": code_version(*names), "code": names}


def code_changed(saved: dict) -> str | None:
    """Why the code behind a saved artifact (a dict holding :func:`code_stamp`'s keys) differs from today's
    sources, or None when it is the same.

    Returns a short reason: ``"no code version recorded"`` (saved before code versions existed), ``"code
    changed"`` with the recorded and current versions, or ``"code not found"`` when a recorded package no longer
    exists (renamed or removed).
    """
    recorded, names = saved.get("code_version"), saved.get("code")
    if not recorded or not names:
        return "no code version recorded"
    try:
        now = code_version(*names)
    except (ModuleNotFoundError, ValueError) as exc:
        return f"code not found ({exc})"
    return None if now == recorded else f"code changed (computed with `{recorded}`, now `{now}`)"
