"""Per-unit costs of the dense stage with and without the feature cache (issue 15), and the cached step count M
whose total time (cache build included) matches the uncached schedule.

Runs, on a profile whose dense backbone is frozen (default ``davis``), K uncached dense steps and K cached dense steps
(the cache built cold, in a private ``VPPKIT_CACHE`` under ``--work``; the converted pretrained weights are linked
in from the repository's cache), each with the profile's full schedule (``train.dense.steps``) and stopped after K
steps, then reads their ``metrics.csv`` / ``feature_cache.json``:

- ``u``: uncached s per step, ``c``: cached s per step (median over steps 2..K, wall ``sec`` and process CPU
  ``cpu_sec``);
- ``b``: s per cache entry (frame decoding, flip, backbone forward, write), wall and CPU;
- ``U(M)``: distinct (frame, flip) entries of the first M steps (counted from the step draws, exact).

M is the largest step count with ``U(M) * b + M * c <= S * u`` (S = the profile's dense steps), on CPU seconds
(robust on a shared machine) and on wall seconds. Writes ``<work>/featcache_cost.json`` and prints a summary.

Usage (repository root)::

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python scripts/featcache_cost.py --profile davis --steps 20 \\
        --data ../shared/data/davis2016-240p --work /tmp/featcache_cost
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
from pathlib import Path

import pandas as pd
import torch

from vppkit.config import load_config
from vppkit.data.splits import resolve_split
from vppkit.data.video import VideoFrames
from vppkit.engine.distributed import DistInfo
from vppkit.engine.train import StepBatches, StepSampler, stage_config, steps_for, train, training_samples
from vppkit.utils.io import atomic_write_json
from vppkit.utils.paths import cache_dir


def entries_curve(cfg: dict, max_steps: int) -> list[int]:
    """U(m) for m = 0..max_steps: distinct (frame, flip) entries of the first m dense steps."""
    tcfg = stage_config(cfg, "dense")
    js, root = resolve_split(cfg["data"], "train", progress=False)
    frames = VideoFrames(js, root, cfg["model"]["img_size"], cache=False)
    samples = training_samples(frames, str(tcfg["sample_unit"]))
    sampler = StepSampler(len(samples), int(tcfg["batch"]), int(cfg["seed"]), DistInfo())
    batches = StepBatches(frames, samples, sampler, int(tcfg["clip_frames"]), tcfg, int(cfg["seed"]), 0)
    seen: set = set()
    out = [0]
    for m in range(max_steps):
        seen |= batches.entries(m, m + 1)
        out.append(len(seen))
    return out


def per_step(run: Path) -> dict:
    df = pd.read_csv(run / "metrics.csv").iloc[1:]   # the first step carries warm-up
    return {"sec": float(df["sec"].median()), "cpu_sec": float(df["cpu_sec"].median()), "steps": len(df) + 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="davis")
    ap.add_argument("--data", default=None, help="data.root")
    ap.add_argument("--steps", type=int, default=20, help="K: steps timed per variant")
    ap.add_argument("--work", default="/tmp/featcache_cost")
    ap.add_argument("--max-m", type=int, default=3000, help="largest M considered")
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    weights = cache_dir() / "weights"
    os.environ["VPPKIT_CACHE"] = str(work / "cache")
    (work / "cache").mkdir(parents=True)
    if weights.is_dir():
        (work / "cache" / "weights").symlink_to(weights.resolve())
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    ov = [f"data.root={Path(args.data).resolve()}"] if args.data else []
    cfg = load_config(args.profile, ov)
    total = steps_for(stage_config(cfg, "dense"), 1, 1)
    runs = {}
    for name, cache in (("uncached", False), ("cached", True)):
        c = load_config(args.profile, ov + [f"train.dense.feature_cache={str(cache).lower()}"])
        runs[name] = train(c, "dense", out_dir=work / name, stop_at=args.steps, progress=False)
    u, c = per_step(work / "uncached"), per_step(work / "cached")
    fc = json.loads((work / "cached" / "feature_cache.json").read_text())
    b = {"sec": fc["build_seconds"] / fc["entries"], "cpu_sec": fc["build_cpu_seconds"] / fc["entries"]}
    curve = entries_curve(cfg, args.max_m)
    result = {"profile": args.profile, "dense_steps": total, "K": args.steps, "uncached_per_step": u,
              "cached_per_step": c, "per_entry": b, "entries_built": fc["entries"], "loadavg": os.getloadavg(),
              "U": {str(m): curve[m] for m in (100, 200, 300, 500, 750, 1000, 1500, 2000, 3000) if m < len(curve)}}
    for unit in ("cpu_sec", "sec"):
        budget = total * u[unit]
        fits = [m for m in range(1, len(curve)) if curve[m] * b[unit] + m * c[unit] <= budget]
        m = max(fits) if fits else 0
        result[f"M_{unit}"] = {"M": m, "budget": budget, "cached_total": curve[m] * b[unit] + m * c[unit],
                               "entries": curve[m], "cap": m == len(curve) - 1}
    atomic_write_json(work / "featcache_cost.json", result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
