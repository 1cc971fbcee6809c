"""``make bench``: the speed benchmark (issue 5 "Cost") -> results/<profile>/bench.json + reports/bench.md.

Runs :func:`vppkit.bench.default_suite` (DeiT-S shape at 384x640 and the profile's model, batches 1 and 8,
per-block breakdown, memory vs video length) on CUDA when available, else on the CPU. The result is reused
(:meth:`Context.cached`) only when the suite, the commit, the device, torch and the thread count are unchanged
(``FORCE=1`` re-times). The Markdown report is rewritten from the result every time.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

import torch

from experiments.common import REPORTS_ROOT, Context

log = logging.getLogger("vppkit.experiments")


def run(ctx: Context) -> dict:
    """Compute (or reuse) the benchmark result and write ``reports/bench.md``. Returns the result dict."""
    from vppkit.bench import default_suite, render_markdown, run_suite
    from vppkit.utils.io import atomic_write_text
    from vppkit.utils.provenance import git_commit

    device = "cuda" if torch.cuda.is_available() else "cpu"
    suite = default_suite(ctx.cfg)
    config = {"suite": {"cases": [asdict(c) for c in suite["cases"]], "breakdown": suite["breakdown"],
                        "memory": suite["memory"]},
              "model": ctx.cfg.get("model"), "pruning": ctx.cfg.get("pruning"), "seed": ctx.seed,
              "commit": git_commit(), "device": device, "torch": torch.__version__,
              "threads": torch.get_num_threads()}
    result = ctx.cached("bench", config, lambda: run_suite(suite, device=device, profile=ctx.profile, seed=ctx.seed,
                                                           pruning=ctx.cfg.get("pruning"), log=log.info))
    atomic_write_text(REPORTS_ROOT / "bench.md", render_markdown(result))
    return result
