"""Artifact `training`: the training curves of every trained model of the zoo (:mod:`experiments.zoo`).

For each model (the dense model and every sparse fine-tune) this reads its run folder's ``metrics.csv``
(:func:`vppkit.engine.train.train`; one row per optimizer step) and keeps, against the step:

- ``loss_seg``: the task (segmentation) loss as optimised, frame-weighted (:func:`vppkit.engine.train.chain_loss`);
- ``loss_sparse``: the pruner's sparsity loss summed over the chain's frames (sparse stage);
- ``keep_b<b>``: the realised keep ratio of block b (fraction of the N patch tokens it processed, mean over the
  batch and the chain frames that have a previous frame) at each *pruning block*: a block whose nominal keep
  fraction differs from the block before (VPP: Map-SM at 1, SMs at 3/6/9; SViT: the first gate of each stage,
  3/6/9; DynamicViT: 3/6/9), with the keep target there (the pruner's nominal schedule,
  :meth:`vppkit.models.pruning.base.Pruner.nominal_counts`, divided by N).

Long runs are binned to at most :data:`MAX_POINTS` points (the mean of each equal run of steps), so the saved
result stays small at paper scale. ``final`` is the mean over the last 10 % of the steps. Runs trained before
per-block keep ratios were logged have no ``keep_b`` series (``keep_logged`` False).

docs/reading.md argues that short fine-tuning leaves the gates untrained; these curves show, run by run, whether
the realised keep ratios reached their targets and whether the task loss recovered.

``cost`` (:func:`step_cost`): what a training step cost in that run (issue 15: users budget fine-tuning runs with
it): wall ms per step (median, IQR), CPU ms, the load while it ran, and the run's wall time. Sparse runs train in
masked execution (every block runs all N tokens, pruned ones masked), so their cost is not the pruned inference's.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import zoo
from experiments.common import Context
from vppkit.config import img_size_hw
from vppkit.models.vis.model import build_pruner
from vppkit.models.vit import build_backbone

#: At most this many points per series in the saved result (equal runs of steps averaged).
MAX_POINTS = 400
#: Series kept besides the per-block keep ratios (when the run logged them).
LOSSES = ("loss", "loss_seg", "loss_sparse")


def bin_rows(df: pd.DataFrame, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """``df`` (one row per step, numeric columns) with at most ``max_points`` rows: consecutive runs of
    ``ceil(len / max_points)`` steps averaged (``step`` = the mean step of the run); unchanged when short enough.

    Raises:
        ValueError: ``max_points`` < 1.
    """
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    if len(df) <= max_points:
        return df.reset_index(drop=True)
    size = math.ceil(len(df) / max_points)
    return df.groupby(np.arange(len(df)) // size).mean().reset_index(drop=True)


@functools.lru_cache(maxsize=None)
def _geometry(arch: str, img_size: tuple[int, int]) -> tuple[int, int, int]:
    """(N patch tokens, depth, width C) of backbone ``arch`` at ``img_size`` (built once per pair)."""
    vit = build_backbone(arch, img_size=img_size)
    grid = vit.vit.patch_embed.grid_size
    return int(grid[0] * grid[1]), len(vit.vit.blocks), int(vit.embed_dim)


def schedule_targets(run_cfg: dict) -> tuple[list[int], dict[int, float]]:
    """Pruning blocks and their keep targets of a sparse run (``config.json`` of its run folder).

    The pruner is built from the run's ``pruning`` section at the width and patch grid of the run's backbone;
    its nominal schedule (:meth:`~vppkit.models.pruning.base.Pruner.nominal_counts`) gives the target keep
    fraction of every block; the pruning blocks are those whose target differs from the block before.

    Returns:
        (pruning blocks, 0-based, ascending; {block: target keep fraction of N}).
    """
    cfg = run_cfg["config"]
    mcfg = (run_cfg.get("backbone") or {}).get("model") or cfg["model"]
    n, depth, dim = _geometry(mcfg["arch"], img_size_hw(mcfg["img_size"]))
    pruner = build_pruner(cfg["pruning"], dim)
    fractions = [c / n for c in pruner.nominal_counts(n, depth).attn]
    blocks = [b for b in range(1, depth) if not math.isclose(fractions[b], fractions[b - 1])]
    return blocks, {b: fractions[b] for b in blocks}


def step_cost(df: pd.DataFrame) -> dict:
    """Training cost of one run from its ``metrics.csv`` rows: per optimizer step, the median and interquartile
    range of the wall time ``sec`` (waiting for the batch + forward + backward + update; ms), the median
    ``cpu_sec`` of the training process (all its threads; ms), the median 1-minute load average while it ran
    (``load1``, logged since issue 15; None for older runs), and the run's total wall time (s) over its steps.
    Empty dict when the run logged no ``sec``."""
    if "sec" not in df:
        return {}
    sec = df["sec"].astype(float) * 1000.0
    out = {"ms_median": float(sec.median()), "ms_q25": float(sec.quantile(0.25)), "ms_q75": float(sec.quantile(0.75)),
           "wall_s": float(df["sec"].astype(float).sum()), "steps_timed": int(len(df))}
    out["cpu_ms_median"] = float(df["cpu_sec"].astype(float).median() * 1000.0) if "cpu_sec" in df else None
    out["load1_median"] = float(df["load1"].astype(float).median()) if "load1" in df else None
    return out


def run_curves(run_dir: Path, spec: dict) -> dict:
    """The curves of one run folder (``metrics.csv`` + ``config.json``) as a JSON-ready dict (module docstring)."""
    df = pd.read_csv(run_dir / "metrics.csv")
    run_cfg = json.loads((run_dir / "config.json").read_text())
    sparse = run_cfg["stage"] == "sparse"
    blocks, targets = schedule_targets(run_cfg) if sparse else ([], {})
    keep_cols = [f"keep_b{b}" for b in blocks if f"keep_b{b}" in df]
    cols = ["step"] + [c for c in LOSSES if c in df] + (["keep_ratio"] if "keep_ratio" in df else []) + keep_cols
    binned = bin_rows(df[cols].astype(float))
    tail = df[cols].astype(float).iloc[-max(1, len(df) // 10):].mean()
    return {
        "stage": run_cfg["stage"], "method": spec["method"], "label": spec["label"], "run": run_dir.name,
        "steps": int(df["step"].max()), "points": len(binned), "binned": len(binned) < len(df),
        "pruning_blocks": blocks, "targets": {str(b): t for b, t in targets.items()},
        "keep_logged": bool(keep_cols) or not sparse,
        "series": {c: [float(v) for v in binned[c]] for c in cols},
        "final": {c: float(tail[c]) for c in cols if c != "step"},
        "cost": step_cost(df),
    }


def run(ctx: Context) -> dict:
    runs = {name: zoo.checkpoint(ctx, name).parent for name in zoo.variants()}
    config = {"artifact": "training", "max_points": MAX_POINTS,
              "runs": {name: {"run": d.name, "metrics_mtime": (d / "metrics.csv").stat().st_mtime}
                       for name, d in runs.items()}}

    def compute() -> dict:
        specs = zoo.variants()
        return {"runs": {name: run_curves(d, specs[name]) for name, d in runs.items()}}

    return ctx.cached("training", config, compute)
