"""Artifact `featcache`: dense AP at equal wall time, backbone features cached vs not (issue 15).

On a frozen backbone the dense stage can train its pyramid + decoder on backbone outputs computed once per
(training frame, flip) (``train.dense.feature_cache``, :mod:`vppkit.engine.feature_cache`). A cached step costs the
head only; building the cache costs one backbone forward per distinct (frame, flip) the steps visit. This artifact
trains the profile's dense model twice through the model zoo (:func:`experiments.zoo.dense_checkpoint`; results
reused):

- ``uncached``: ``featcache.uncached_steps`` (null: ``train.dense.steps``) steps, backbone run at every step;
- ``cached``: ``featcache.cached_steps`` steps on cached features; the step count is chosen so that the run's
  total time, cache build included, is about the uncached run's (measured with ``scripts/featcache_cost.py``,
  configs/davis.yaml says the numbers);

evaluates both on the held-out split (:func:`experiments.zoo.evaluate_dense`: video AP, mAP_segm, as every dense
evaluation) and reports, per run, the wall and process-CPU seconds of its training steps (``metrics.csv``: sum of
``sec`` / ``cpu_sec``) plus the cache build (``feature_cache.json``: ``build_seconds`` / ``build_cpu_seconds``, what
building the run's entries cost when they were built, whoever built them); model building and data loading before
the first step, the same for both, are not counted. An arm equal to the profile's dense model (``train.dense``) is
that model, trained and evaluated once.

Skipped, with the reason stored under ``skipped``, when the profile's dense backbone is not frozen (the cache is
refused there), when the host is not ``plain``, or when the pretrained backbone is unavailable (the freeze is then
ignored: :func:`vppkit.models.vis.model.resolve_backbone`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from experiments import zoo
from experiments.common import Context, result_ref
from vppkit.engine.train import stage_config
from vppkit.models.vis.model import resolve_backbone

log = logging.getLogger("vppkit.experiments")

ARMS = ("uncached", "cached")


def skip_reason(cfg: dict) -> str | None:
    """Why profile ``cfg`` has no cached-vs-uncached comparison, or None when it has one."""
    tcfg = stage_config(cfg, "dense")
    if not bool(tcfg["freeze_backbone"]):
        return ("the dense backbone trains in this profile (train.dense.freeze_backbone false), so its features "
                "change every step and cannot be cached")
    host = str(cfg["model"].get("host") or "plain")
    if host != "plain":
        return f"model.host {host!r}: the ViT-Adapter trains in the dense stage, its features cannot be cached"
    if (cfg["model"].get("backbone_kwargs") or {}).get("drop_path_rate"):
        return "the backbone uses drop path in training mode: its features are random, they cannot be cached"
    _, info = resolve_backbone(cfg["model"])
    if info["fallback"]:
        return f"the pretrained backbone is unavailable, so the freeze is ignored ({info['reason']})"
    return None


def arm_settings(cfg: dict) -> dict[str, dict]:
    """Arm -> its ``train.dense`` overrides: ``steps`` (``featcache.<arm>_steps``, null: ``train.dense.steps``) and
    ``feature_cache``; ``epochs`` null only when the profile's dense schedule is in epochs and steps are given (so
    that an arm equal to the profile's dense stage has its run key)."""
    fc, tcfg = cfg["featcache"], stage_config(cfg, "dense")
    out = {}
    for arm, key in (("uncached", "uncached_steps"), ("cached", "cached_steps")):
        out[arm] = {"steps": fc[key] if fc[key] is not None else tcfg["steps"], "feature_cache": arm == "cached"}
        if fc[key] is not None and tcfg.get("epochs") is not None:
            out[arm]["epochs"] = None
    return out


def run_costs(run_dir: Path) -> dict:
    """Seconds of one run folder: ``train_seconds`` / ``train_cpu_seconds`` (sum over its steps of ``metrics.csv``
    ``sec`` / ``cpu_sec``), ``cache_seconds`` / ``cache_cpu_seconds`` (``feature_cache.json``: the build cost of its
    entries; 0 without a cache), their totals ``seconds`` / ``cpu_seconds``, ``steps``, ``entries``."""
    df = pd.read_csv(run_dir / "metrics.csv")
    fc_path = run_dir / "feature_cache.json"
    fc = json.loads(fc_path.read_text()) if fc_path.exists() else {}
    used = bool(fc.get("used"))
    out = {"steps": int(df["step"].max()), "train_seconds": float(df["sec"].sum()),
           "train_cpu_seconds": float(df["cpu_sec"].sum()), "feature_cache": used,
           "cache_seconds": float(fc["build_seconds"]) if used else 0.0,
           "cache_cpu_seconds": float(fc["build_cpu_seconds"]) if used else 0.0,
           "entries": int(fc["entries"]) if used else None, "cache_note": fc.get("reason")}
    out["seconds"] = out["train_seconds"] + out["cache_seconds"]
    out["cpu_seconds"] = out["train_cpu_seconds"] + out["cache_cpu_seconds"]
    return out


def run(ctx: Context) -> dict:
    reason = skip_reason(ctx.cfg)
    if reason is not None:
        log.info("featcache skipped: %s", reason)
        return ctx.cached("featcache", {"artifact": "featcache", "skipped": reason},
                          lambda: {"skipped": reason, "rows": []})
    arms = arm_settings(ctx.cfg)
    cfgs = {arm: zoo.dense_config(ctx, dense) for arm, dense in arms.items()}
    evals, runs = {}, {}
    for arm in ARMS:
        evals[arm] = zoo.evaluate_dense(ctx, f"dense_{arm}", cfgs[arm])
        runs[arm] = zoo.dense_checkpoint(ctx, cfgs[arm]).parent
    config = {"artifact": "featcache", "arms": arms, "evals": {a: result_ref(e) for a, e in evals.items()},
              "runs": {a: {"run": d.name, "metrics_mtime": (d / "metrics.csv").stat().st_mtime}
                       for a, d in runs.items()}}

    def compute() -> dict:
        rows = []
        for arm in ARMS:
            e = evals[arm]
            rows.append({"arm": arm, **arms[arm], **run_costs(runs[arm]), "run": runs[arm].name,
                         "profile_dense": zoo.is_profile_dense(ctx, cfgs[arm]),
                         "AP": 100 * e["AP"], "AP50": 100 * e["AP50"], "AP75": 100 * e["AP75"],
                         "mAP_segm": 100 * e["mAP_segm"], "mAP_bbox": 100 * e["mAP_bbox"]})
        best = max(rows, key=lambda r: r["AP"])
        return {"skipped": None, "rows": rows, "better": best["arm"],
                "profile_dense": next((r["arm"] for r in rows if r["profile_dense"]), None)}

    return ctx.cached("featcache", config, compute)
