"""What every experiment shares: the run context and saved-result reuse.

An experiment computes a result dict from a config. :meth:`Context.cached` stores it as
``results/<profile>/<name>.json`` together with the config, its hash, the version of the code it depends on and
the provenance (profile, seed, commit, time), and returns the saved result instead of recomputing when both the
config hash and the code version are unchanged (``FORCE=1`` / ``--force`` recomputes). Reports read only these
files.

Code versions (:func:`vppkit.utils.provenance.code_version`) are content hashes of the source of the packages a
result depends on, listed below (:data:`RESULT_CODE`). A fix to a metric, the evaluator or an experiment thus
recomputes every result it can change, and nothing else. Each list is transitive: it includes the code of the
saved results the artifact is built from (evaluations, the trained models through ``vppkit.engine``), so the
report index (:func:`analyses.report.write_index`) can tell a stale result from its own record alone.
Packages are named, not files, so files may move inside a package; a name that no longer exists raises.

====================  ==============================================================================================
result                code (packages / modules) its key includes
====================  ==============================================================================================
``eval_<variant>``    M, ``experiments.zoo`` (:func:`experiments.zoo.evaluate`)
``results``           M, ``experiments.zoo``, ``experiments.results``
``ioi``               M, ``experiments.zoo``, ``experiments.ioi``
``density``           M, ``experiments.zoo``, ``experiments.density``
``kappa``             M, ``experiments.zoo``, ``experiments.kappa``
``curves``            M, ``experiments.zoo``, ``experiments.curves``
``qualitative``       M, ``experiments.zoo``, ``experiments.qualitative``
``fgs``               M, ``experiments.zoo``, ``experiments.fgs``
``selectors``         M, ``experiments.zoo``, ``experiments.selectors``
``oracle``            M, ``experiments.zoo``, ``experiments.selectors``, ``experiments.oracle``
``training``          M, ``experiments.zoo``, ``experiments.training`` (the runs' ``metrics.csv``)
``featcache``         M, ``experiments.zoo``, ``experiments.featcache`` (two dense runs' ``metrics.csv``, their
                      feature-cache records and evaluations)
``flops``             M, ``experiments.zoo``, ``experiments.flops`` + the benchmark's code (it shows its rows)
``bench``             ``vppkit.models``, ``vppkit.flops``, ``vppkit.bench``, ``experiments.bench`` (shared result)
``evtp``              ``vppkit.flops``, ``experiments.evtp``
any other name        M, ``experiments.zoo``, the module that defines ``compute``
====================  ==============================================================================================

M = :data:`MODEL_CODE` = ``vppkit.data``, ``vppkit.models``, ``vppkit.weights``, ``vppkit.engine``,
``vppkit.metrics``, ``vppkit.flops``: everything that turns data and a trained model into numbers. Trained models
are keyed separately, by the training code only (:data:`vppkit.engine.train.TRAINING_CODE`), so they stay
reusable when analysis code (metrics, experiments, analyses) changes. Rendering code (``analyses``) is in no
key: `make tables` re-renders every time.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vppkit.config import config_hash, load_config
from vppkit.utils.io import atomic_write_json, finite_or_none
from vppkit.utils.provenance import REPO_ROOT, code_stamp, provenance

log = logging.getLogger("vppkit.experiments")

RESULTS_ROOT = REPO_ROOT / "results"
REPORTS_ROOT = REPO_ROOT / "reports"

#: Packages that turn data and a trained model into numbers (inference, metrics, cost); see the module docstring.
MODEL_CODE: tuple[str, ...] = ("vppkit.data", "vppkit.models", "vppkit.weights", "vppkit.engine", "vppkit.metrics",
                               "vppkit.flops")
_FROM_MODELS = MODEL_CODE + ("experiments.zoo",)
_BENCH_CODE = ("vppkit.models", "vppkit.flops", "vppkit.bench", "experiments.bench")  # the benchmark's code

#: The artifacts, in the order of ``make reports`` (the shared models are trained by the first artifact that needs
#: them and reused by the others). Artifact ``name`` is ``make <name>``, computed by the module ``experiments.<name>``
#: (its ``run(ctx) -> dict``) and rendered by ``analyses`` under the same name.
ARTIFACTS: tuple[str, ...] = ("evtp", "bench", "flops", "fgs", "results", "ioi", "density", "kappa", "curves",
                              "qualitative", "selectors", "oracle", "training", "featcache")


def artifact_module(name: str) -> str:
    """The module that computes artifact ``name`` (``experiments.<name>``).

    Raises:
        KeyError: ``name`` is not an artifact (:data:`ARTIFACTS`).
    """
    if name not in ARTIFACTS:
        raise KeyError(f"unknown artifact {name!r}; choose from {', '.join(ARTIFACTS)}")
    return f"experiments.{name}"


#: What each artifact's result is built from besides its own module (:func:`artifact_module`).
_INPUTS: dict[str, tuple[str, ...]] = {
    **{name: _FROM_MODELS for name in ("results", "ioi", "density", "kappa", "curves", "qualitative", "fgs",
                                       "selectors", "training", "featcache")},
    "oracle": _FROM_MODELS + ("experiments.selectors",),
    "flops": _FROM_MODELS + _BENCH_CODE,
    "bench": _BENCH_CODE,
    "evtp": ("vppkit.flops",),
}

#: Result name -> the code its cache key includes (module docstring: the table and why). ``eval_<variant>``
#: results use the entry ``eval``.
RESULT_CODE: dict[str, tuple[str, ...]] = {
    "eval": _FROM_MODELS,
    **{name: tuple(dict.fromkeys(_INPUTS[name] + (artifact_module(name),))) for name in ARTIFACTS},
}


def result_code(name: str, compute: Callable | None = None) -> tuple[str, ...]:
    """The packages / modules whose source keys result ``name`` (:data:`RESULT_CODE`; ``eval_<variant>`` ->
    ``eval``). A name not in the table gets :data:`MODEL_CODE`, ``experiments.zoo`` and the module that defines
    ``compute`` (when known): too much rather than too little."""
    key = "eval" if name.startswith("eval_") else name
    if key in RESULT_CODE:
        return RESULT_CODE[key]
    module = getattr(compute, "__module__", None)
    return _FROM_MODELS + ((module,) if module and module != "__main__" else ())


def result_ref(result: dict) -> dict:
    """What a result built from another saved result records about it: ``{"config_hash", "code_version"}`` (the
    input changes when either does)."""
    return {"config_hash": result.get("config_hash"), "code_version": result.get("code_version")}


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

    def cached(self, name: str, config: dict, compute: Callable[[], dict],
               code: tuple[str, ...] | None = None) -> dict:
        """Return the saved result ``name`` if it was made from ``config`` by the current code; else compute,
        stamp and save it.

        Args:
            name: result name (file ``results/<profile>/<name>.json``).
            config: everything the result depends on (JSON-serialisable); its hash decides reuse.
            compute: function returning the result dict (JSON-serialisable).
            code: packages / modules whose source the result depends on (default :func:`result_code`); their
                :func:`~vppkit.utils.provenance.code_version` must match the saved one too.

        Returns:
            the result dict plus ``config``, ``config_hash``, ``code_version``, ``code`` (the names hashed) and
            ``provenance`` (:meth:`provenance`, with ``seconds`` of compute time).

        Raises:
            ModuleNotFoundError: a name in ``code`` cannot be found.
        """
        digest = config_hash(config)
        stamp = code_stamp(code if code is not None else result_code(name, compute))
        saved = self.load_result(name)
        if saved is not None and not self.force and saved.get("config_hash") == digest \
                and saved.get("code_version") == stamp["code_version"]:
            log.info("reusing %s (config %s, code %s)", self.result_path(name), digest, stamp["code_version"])
            return saved
        if saved is not None and not self.force and saved.get("config_hash") == digest:
            log.info("recomputing %s: its code changed (%s -> %s)", self.result_path(name),
                     saved.get("code_version"), stamp["code_version"])
        start = time.perf_counter()
        result = finite_or_none(compute())
        result = {**result, "config": config, "config_hash": digest, **stamp,
                  "provenance": self.provenance(seconds=round(time.perf_counter() - start, 1))}
        atomic_write_json(self.result_path(name), result)
        return result
