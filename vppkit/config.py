"""Profiles: load ``configs/<name>.yaml`` (or any yaml path), apply ``key=value`` overrides, hash.

A profile is a plain nested dict with the sections ``data``, ``model``, ``train``, ``pruning``, ``eval``
(DESIGN.md §5). A profile may start from another one with ``base: <profile name>``; the child's keys are
merged into the base recursively (dicts merge, everything else replaces).

Overrides are ``dotted.key=value`` strings; the value is parsed as YAML (``train.steps=10``,
``pruning.method=vpp``, ``model.img_size=[96,96]``, ``data.root=null``).

:func:`config_hash` is a stable short hash of the resolved config (sorted-key JSON), used to reuse a saved
result or checkpoint only when the config that produced it is unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import yaml

from vppkit.utils.provenance import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "configs"


class ConfigError(ValueError):
    """A profile or override is malformed; the message names the file or the key at fault."""


def list_profiles() -> list[str]:
    """Names of the profiles shipped in ``configs/`` (file stems)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _resolve_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    cand = CONFIG_DIR / f"{name_or_path}.yaml"
    if cand.exists():
        return cand
    raise ConfigError(f"no profile or yaml file {str(name_or_path)!r} (profiles: {', '.join(list_profiles())})")


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a profile must be a mapping at top level, got {type(data).__name__}")
    return data


def merge(base: dict, child: dict) -> dict:
    """Recursive merge: dict values merge, others replace. Returns a new dict (inputs untouched)."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path.resolve() in seen:
        raise ConfigError(f"{path}: circular 'base:' chain {[str(s) for s in seen]}")
    data = _read_yaml(path)
    base_name = data.pop("base", None)
    if base_name is None:
        return data
    base = _load_with_bases(_resolve_path(base_name), seen + (path.resolve(),))
    return merge(base, data)


def set_dotted(cfg: dict, key: str, value: Any) -> None:
    """Set ``cfg[a][b][c] = value`` for ``key = "a.b.c"`` (creating intermediate dicts)."""
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {key!r}: {'.'.join(parts[:i + 1])!r} is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def get_dotted(cfg: dict, key: str, default: Any = None) -> Any:
    """``cfg["a"]["b"]`` for ``"a.b"``; ``default`` when any part is missing."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """Return a copy of ``cfg`` with ``key=value`` overrides applied (values parsed as YAML).

    Raises:
        ConfigError: an override without ``=`` or with an empty key.
    """
    out = copy.deepcopy(cfg)
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.steps=10)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc
        set_dotted(out, key, value)
    return out


def load_config(name_or_path: str | Path, overrides: Iterable[str] = ()) -> dict:
    """Load a profile by name (``configs/<name>.yaml``) or a yaml path, then apply overrides.

    The returned dict carries ``profile`` (the profile name, or the file stem for a path) unless the yaml sets it.

    Raises:
        ConfigError: unknown profile, invalid YAML, circular ``base:`` chain or a malformed override.
    """
    path = _resolve_path(name_or_path)
    cfg = _load_with_bases(path)
    cfg.setdefault("profile", path.stem)
    return apply_overrides(cfg, overrides)


def img_size_hw(img_size) -> tuple[int, int]:
    """A config's ``model.img_size`` as (H, W) px; an int means a square input.

    Raises:
        ValueError: a list / tuple that is not (H, W).
    """
    if isinstance(img_size, (list, tuple)):
        if len(img_size) != 2:
            raise ValueError(f"img_size must be an int or (H, W), got {img_size!r}")
        return int(img_size[0]), int(img_size[1])
    return int(img_size), int(img_size)


#: Keys that change how fast a run goes, never what it computes; :func:`config_hash` leaves them out so that,
#: e.g., more data-loader workers reuse the trained models (``train.workers``: tests/test_engine_loaders.py shows
#: the batches and the trained weights do not depend on it).
RUNTIME_KEYS = frozenset({"workers"})


def _without_runtime_keys(obj):
    if isinstance(obj, dict):
        return {k: _without_runtime_keys(v) for k, v in obj.items() if k not in RUNTIME_KEYS}
    if isinstance(obj, (list, tuple)):
        return [_without_runtime_keys(v) for v in obj]
    return obj


def config_hash(cfg: dict, length: int = 12) -> str:
    """Stable short SHA-256 hex digest of ``cfg`` (sorted-key JSON; order of dict keys does not matter;
    :data:`RUNTIME_KEYS` at any level are left out)."""
    text = json.dumps(_without_runtime_keys(cfg), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]
