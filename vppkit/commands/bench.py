"""``vppkit bench``: dense vs pruned speed (ms/frame, measured vs ideal speed-up), per-block breakdown, memory.

Examples::

    vppkit bench                                   # the `make bench` suite (DeiT-S 384x640 + profile model)
    vppkit bench --quick --out /tmp/bench          # tiny suite (seconds)
    vppkit bench --arch vit_small --img-size 384 640 --batch 1 8 --methods dense vpp-pkr40 svit --repeats 3
    vppkit bench --device cuda                     # same command on a GPU (synchronised timings)

Writes ``<out>/bench.json`` and ``<out>/bench.md`` (atomic). Pruned rows run each method's nominal keep schedule;
see :mod:`vppkit.bench` for what ``schedule`` and ``real`` rows include. Gumbel noise is off (deterministic).
The Markdown is rendered by :mod:`analyses.bench`.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from analyses.bench import render_markdown, write_report
from vppkit.bench import ModelCase, default_suite, run_suite
from vppkit.config import load_config
from vppkit.utils.provenance import REPO_ROOT


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` sub-command."""
    p = subparsers.add_parser("bench", help="speed benchmark: dense vs pruned ms/frame, realized vs ideal speed-up",
                              description="Time dense vs pruned ViT backbones (gathered execution) at each method's "
                                          "nominal keep schedule; report ms/frame, measured and ideal (GMACs) "
                                          "speed-ups, a per-block breakdown and peak memory vs video length.")
    p.add_argument("--profile", default="default", help="profile whose model is benchmarked (configs/<profile>.yaml)")
    p.add_argument("--arch", default=None, help="benchmark only this backbone arch (default: the make-bench suite)")
    p.add_argument("--img-size", type=int, nargs="+", default=None, metavar="H [W]", help="input size for --arch")
    p.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default 1 8)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="dense, vpp, vpp-pkr55, vpp-pkr40, svit, dynamicvit, evit, tome, or <method>@<pkr>")
    p.add_argument("--pkr", type=float, nargs="+", default=None,
                   help="goal PKRs (fractions) for baselines named without @ (default: VPP presets' nominal PKRs)")
    p.add_argument("--variants", nargs="+", default=None, choices=("schedule", "real"),
                   help="schedule = forced nominal masks only; real = real pruner modules (default both)")
    p.add_argument("--parts", nargs="+", default=None, choices=("backbone", "whole"),
                   help="backbone only and/or whole model (backbone + VIS head)")
    p.add_argument("--repeats", type=int, default=None, help="timed forwards per row and batch (median reported)")
    p.add_argument("--warmup", type=int, default=None, help="untimed forwards per row and batch first (default 1)")
    p.add_argument("--no-breakdown", action="store_true", help="skip the per-block timing breakdown")
    p.add_argument("--no-memory", action="store_true", help="skip the memory-vs-video-length check")
    p.add_argument("--memory-frames", type=int, nargs="+", default=None, help="video lengths (default 100 1000)")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (torch.set_num_threads; on a shared CPU 1 avoids OpenMP barrier stalls)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny model and sizes, one repeat (smoke test)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default results/bench)")
    p.set_defaults(func=run)


def build_suite(args: argparse.Namespace, cfg: dict) -> dict:
    """The suite from :func:`vppkit.bench.default_suite` with the command-line overrides applied."""
    suite = default_suite(cfg, quick=args.quick)
    if args.arch:
        img = tuple(args.img_size or (224,))
        img = (img[0], img[-1])
        suite["cases"] = [ModelCase(f"{args.arch}, {img[0]}x{img[1]} input", args.arch, img,
                                    parts=("backbone",), head={k: cfg["model"][k] for k in
                                                               ("dim", "num_queries", "dec_layers", "heads")
                                                               if k in cfg["model"]})]
        if suite.get("breakdown"):
            suite["breakdown"] = {**suite["breakdown"], "arch": args.arch, "img_size": img}
    over = {}
    if args.batch:
        over["batches"] = tuple(args.batch)
        over["repeats_by_batch"] = {}
    if args.methods:
        over["methods"] = tuple(args.methods)
    if args.pkr:
        over["goal_pkrs"] = tuple(args.pkr)
    if args.variants:
        over["variants"] = tuple(args.variants)
        over["variants_by_family"] = {}
    if args.parts:
        over["parts"] = tuple(args.parts)
    if args.repeats is not None:
        over["repeats"] = args.repeats
        over["repeats_by_batch"] = {}
    if args.warmup is not None:
        over["warmup"] = args.warmup
    suite["cases"] = [replace(c, **over) for c in suite["cases"]]
    if suite.get("breakdown"):
        if args.no_breakdown:
            suite["breakdown"] = None
        else:
            if args.batch:
                suite["breakdown"]["batches"] = tuple(args.batch)
            if args.repeats is not None:
                suite["breakdown"]["repeats"] = args.repeats
    if args.no_memory:
        suite["memory"] = None
    elif args.memory_frames and suite.get("memory"):
        suite["memory"]["lengths"] = tuple(args.memory_frames)
    return suite


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    cfg = load_config(args.profile)
    suite = build_suite(args, cfg)
    out = Path(args.out) if args.out else REPO_ROOT / "results" / "bench"
    result = run_suite(suite, device=device, profile=args.profile, seed=args.seed,
                       pruning=cfg.get("pruning"), log=lambda s: print(s, flush=True))
    write_report(result, out / "bench.json", out / "bench.md")
    print(render_markdown(result))
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0
