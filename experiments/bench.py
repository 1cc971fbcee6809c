"""``make bench``: the speed benchmark (issue 5 "Cost") -> results/bench/bench.json (+ reports/bench.md, rendered by
:func:`analyses.bench.bench_report`).

Runs :func:`vppkit.bench.default_suite` on CUDA when available, else on the CPU. The suite is the same for every
profile (issue 5: DeiT-S shape at 384x640 plus the *default* profile's model, batches 1 and 8, per-block
breakdown, memory of online inference at 100 vs 1000 frames of the default model), so its result lives in
``results/bench/bench.json`` and is shared: `make reports PROFILE=davis` reuses the timing that `make bench`
made. It is reused only when the suite, the device, torch and the thread count are unchanged (``FORCE=1``
re-times); the commit it was measured at is recorded and shown. The Markdown report is rewritten from the
result every time the artifact runs (``analyses.tables.TABLES["bench"]``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict

import torch

from experiments.common import Context
from vppkit.bench import default_suite, run_suite
from vppkit.config import load_config

log = logging.getLogger("vppkit.experiments")


def shared_context(ctx: Context, cfg: dict | None = None) -> Context:
    """The context the shared benchmark result lives in: ``results/bench/bench.json``, beside the profiles'
    result folders, whatever profile ``ctx`` is (``cfg``: the default profile's config; loaded when None)."""
    return Context(profile="default", cfg=cfg if cfg is not None else load_config("default"), force=ctx.force,
                   results_dir=ctx.results_dir.parent / "bench", reports_dir=ctx.reports_dir)


def run(ctx: Context) -> dict:
    """Compute (or reuse) the benchmark result. Returns the result dict (rendered to ``reports/bench.md`` by
    ``analyses.bench.bench_report``)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    default_cfg = load_config("default")
    suite = default_suite(default_cfg)
    config = {"suite": {"cases": [asdict(c) for c in suite["cases"]], "breakdown": suite["breakdown"],
                        "memory": suite["memory"]},
              "model": default_cfg.get("model"), "pruning": default_cfg.get("pruning"), "seed": ctx.seed,
              "device": device, "torch": torch.__version__, "threads": torch.get_num_threads()}
    shared = shared_context(ctx, default_cfg)
    result = shared.cached("bench", config, lambda: run_suite(suite, device=device, profile="default",
                                                              seed=ctx.seed, pruning=default_cfg.get("pruning"),
                                                              log=log.info))
    return result
