"""What every experiment shares: the run context and saved-result reuse.

An experiment computes a result dict from a config. :meth:`Context.cached` stores it as
``results/<profile>/<name>.json`` together with the config, its hash and the provenance (profile, seed,
commit, time), and returns the saved result instead of recomputing when the config is unchanged
(``FORCE=1`` / ``--force`` recomputes). Reports read only these files.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vppkit.config import config_hash, load_config
from vppkit.utils.io import atomic_write_json
from vppkit.utils.provenance import REPO_ROOT, provenance

log = logging.getLogger("vppkit.experiments")

RESULTS_ROOT = REPO_ROOT / "results"
REPORTS_ROOT = REPO_ROOT / "reports"


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


@dataclass
class Context:
    """One `make` invocation: the profile, its resolved config, the data root and the output folders.

    Attributes:
        profile: profile name (``configs/<profile>.yaml``).
        cfg: the resolved profile config (with ``data.root`` set from ``--data`` when given).
        force: recompute results even when a saved result has the same config hash.
        results_dir: ``results/<profile>`` (json/csv results, checkpoints, per-frame records).
        reports_dir: ``reports/<profile>`` (tables and figures).
    """

    profile: str
    cfg: dict
    force: bool = False
    results_dir: Path = field(default=None)  # type: ignore[assignment]
    reports_dir: Path = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.results_dir = Path(self.results_dir or RESULTS_ROOT / self.profile)
        self.reports_dir = Path(self.reports_dir or REPORTS_ROOT / self.profile)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.reports_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def create(cls, profile: str, data: str | None = None, force: bool = False,
               overrides: tuple[str, ...] = (), **kw) -> "Context":
        """Load the profile config; ``data`` overrides ``data.root``."""
        ov = list(overrides)
        if data:
            ov.append(f"data.root={Path(data).resolve()}")
        return cls(profile=profile, cfg=load_config(profile, ov), force=force, **kw)

    @property
    def seed(self) -> int:
        return int(self.cfg["seed"])

    def provenance(self, **extra: Any) -> dict:
        return provenance(self.profile, self.seed, **extra)

    def result_path(self, name: str) -> Path:
        return self.results_dir / f"{name}.json"

    def load_result(self, name: str) -> dict | None:
        """The saved result ``name``, or None when it has not been computed."""
        path = self.result_path(name)
        return json.loads(path.read_text()) if path.exists() else None

    def cached(self, name: str, config: dict, compute: Callable[[], dict]) -> dict:
        """Return the saved result ``name`` if it was made from ``config``; else compute, stamp and save it.

        Args:
            name: result name (file ``results/<profile>/<name>.json``).
            config: everything the result depends on (JSON-serialisable); its hash decides reuse.
            compute: function returning the result dict (JSON-serialisable).
        """
        digest = config_hash(config)
        saved = self.load_result(name)
        if saved is not None and not self.force and saved.get("config_hash") == digest:
            log.info("reusing %s (config %s)", self.result_path(name), digest)
            return saved
        start = time.perf_counter()
        result = finite_or_none(compute())
        result = {**result, "config": config, "config_hash": digest,
                  "provenance": self.provenance(seconds=round(time.perf_counter() - start, 1))}
        atomic_write_json(self.result_path(name), result)
        return result
