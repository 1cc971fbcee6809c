"""``vppkit flops`` (ViT backbone GMACs under a pruning schedule) and ``vppkit evtp-flops`` (InstructSeg TFLOPs).

Examples::

    vppkit flops --arch deit_small --img-size 224 --method dynamicvit --rho 0.7 --include-head
    vppkit flops --arch deit_tiny --img-size 480 640 --method vpp --keep 0.7 --rho 0.8 --counter torch
    vppkit flops --arch deit_small --img-size 640 --method svit --block-ratios runs/svit/macs.json
    vppkit evtp-flops --format md
    vppkit evtp-flops --interpretation I3 --breakdown --format csv --out reports/evtp_breakdown.csv

``flops`` units: GMACs (1 multiply-add = 1, fvcore convention). ``evtp-flops`` units: TFLOPs in the
supplementary's convention (a multiply-accumulate counts as one FLOP; ``--flop-factor 2`` for true FLOPs).
Every table is printed with the options that produced it; ``--out`` writes it atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vppkit.flops.analytic import ARCHS, METHODS, backbone_macs, get_spec, method_schedule
from vppkit.flops.instructseg import (
    BENCHMARKS,
    KEEP_TOKENS,
    PAPER_REPORTED,
    FlopsOptions,
    evtp_breakdown_long,
    evtp_flops_table,
    get_benchmark,
    named_interpretation,
    paper_comparison,
)
from vppkit.flops.measure import measure_schedule_macs
from vppkit.utils.io import atomic_write_text


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``flops`` and ``evtp-flops`` sub-commands."""
    p = subparsers.add_parser("flops", help="GMACs of a ViT backbone under a pruning method's token schedule",
                              description="GMACs (1 multiply-add = 1) of a ViT backbone for one frame, pruner "
                                          "overhead shown separately.")
    p.add_argument("--arch", required=True, choices=sorted(ARCHS))
    p.add_argument("--img-size", required=True, type=int, nargs="+", metavar="H [W]",
                   help="input height (and width; default square)")
    p.add_argument("--method", default="dense", choices=METHODS)
    p.add_argument("--keep", type=float, default=None,
                   help="VPP: Map-SM keep fraction m (0.7); EViT: keep rate (0.7)")
    p.add_argument("--rho", type=float, default=None,
                   help="VPP: SM decay (0.8); SViT / DynamicViT: per-stage keep ratio (0.7)")
    p.add_argument("--tome-r", type=int, default=None, help="ToMe: tokens merged per block (13)")
    p.add_argument("--counter", default="analytic", choices=("analytic", "fvcore", "torch"),
                   help="analytic closed form, or measured on a plain timm ViT run on the schedule's token "
                        "subsets (attention fusion off while counting)")
    p.add_argument("--block-ratios", type=Path, default=None,
                   help="json with measured per-block keep ratios: a list of depth floats or an object with "
                        "'block_ratios' (e.g. MeasuredMacs.summary()); dynamic methods use it instead of the "
                        "nominal schedule")
    p.add_argument("--include-head", action="store_true",
                   help="count the ImageNet classifier head (published DeiT numbers include it)")
    p.add_argument("--per-block", action="store_true", help="also print the per-block token counts and GMACs")
    p.add_argument("--format", default="md", choices=("md", "csv", "json"))
    p.add_argument("--out", type=Path, default=None, help="also write the output to this file (atomic)")
    p.set_defaults(func=run_flops)

    q = subparsers.add_parser("evtp-flops", help="EVTP-IVS / InstructSeg TFLOPs per benchmark and keep ratio",
                              description="TFLOPs of InstructSeg per benchmark and V' (EVTP-IVS supplementary "
                                          "§C.2 closed forms; multiply-accumulate = 1 FLOP unless --flop-factor 2).")
    q.add_argument("--format", default="md", choices=("md", "csv", "json"))
    q.add_argument("--benchmarks", nargs="+", default=None, help="subset of the Table 4 benchmarks")
    q.add_argument("--keep-tokens", type=int, nargs="+", default=None, help="V' values (default 729 146 73 36)")
    q.add_argument("--interpretation", default=None, choices=("I1", "I2", "I3", "I4", "I5", "I6"),
                   help="a named option set of evtp-notes §3.3 (individual options below override it)")
    q.add_argument("--video-seq", dest="video_tokens_in_sequence", choices=("all_frames", "key_frame"), default=None,
                   help="video sequence length uses V' x F (all_frames, default) or V' (key_frame)")
    q.add_argument("--vision-passes", choices=("once", "per_frame", "key_plus_refs"), default=None)
    q.add_argument("--temporal-on-images", dest="temporal_on_images", action=argparse.BooleanOptionalAction,
                   default=None, help="charge the temporal module on images (default: yes)")
    q.add_argument("--temporal-frames", choices=("table", "reference"), default=None)
    q.add_argument("--t-eff", choices=("T", "T+1", "T+T_fixed", "S"), default=None)
    q.add_argument("--prune-at-full-keep", action=argparse.BooleanOptionalAction, default=None)
    q.add_argument("--prune-per-frame", action=argparse.BooleanOptionalAction, default=None)
    q.add_argument("--heads-tokens", choices=("per_frame", "all_frames"), default=None)
    q.add_argument("--flop-factor", type=int, choices=(1, 2), default=None)
    q.add_argument("--breakdown", action="store_true", help="print the per-component breakdown (long format)")
    q.add_argument("--paper", action="store_true",
                   help="print computed ratios next to the paper's quoted speed-ups (labelled by source)")
    q.add_argument("--out", type=Path, default=None, help="also write the output to this file (atomic)")
    q.set_defaults(func=run_evtp_flops)


# ----------------------------------------------------------------------------------------------------------------
def _render(df, fmt: str, header: list[str], meta: dict) -> str:
    if fmt == "csv":
        return "".join(f"{h}\n" for h in header) + df.to_csv(index=False)
    if fmt == "json":
        return json.dumps({**meta, "rows": json.loads(df.to_json(orient="records"))}, indent=2) + "\n"
    return "\n".join(header) + "\n\n" + df.to_markdown(index=False, floatfmt=".4g") + "\n"


def _emit(text: str, out: Path | None) -> None:
    sys.stdout.write(text)
    if out is not None:
        atomic_write_text(out, text)


def _read_block_ratios(path: Path) -> list[float]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read block ratios from {path}: {exc}") from None
    if isinstance(data, dict):
        if "block_ratios" not in data:
            raise ValueError(f"{path}: json object has no 'block_ratios' key (keys: {sorted(data)})")
        data = data["block_ratios"]
    if not isinstance(data, list) or not all(isinstance(v, (int, float)) for v in data):
        raise ValueError(f"{path}: block ratios must be a list of numbers, got {type(data).__name__}")
    return [float(v) for v in data]


def flops_table(args: argparse.Namespace):
    """Compute the ``vppkit flops`` result. Returns (summary DataFrame, per-block DataFrame, header lines, meta)."""
    import pandas as pd

    spec = get_spec(args.arch)
    size = tuple(args.img_size) if len(args.img_size) == 2 else (args.img_size[0], args.img_size[0])
    if len(args.img_size) > 2:
        raise ValueError(f"--img-size takes H [W], got {args.img_size}")
    grid = spec.grid(size)
    ratios = _read_block_ratios(args.block_ratios) if args.block_ratios is not None else None
    if ratios is not None and len(ratios) != spec.depth:
        raise ValueError(f"{args.block_ratios}: {len(ratios)} block ratios, {args.arch} has {spec.depth} blocks")
    sched, overhead, note = method_schedule(args.method, spec, grid, keep=args.keep, rho=args.rho,
                                            tome_r=args.tome_r, block_ratios=ratios)
    ana = backbone_macs(spec, sched, overhead_macs=overhead, include_head=args.include_head)
    dense_sched = method_schedule("dense", spec, grid)[0]
    if args.counter == "analytic":
        backbone = ana.backbone
        dense = backbone_macs(spec, dense_sched, include_head=args.include_head).backbone
    else:
        import timm

        vit = timm.create_model(spec.timm_name, pretrained=False, img_size=size,
                                num_classes=spec.num_classes if args.include_head else 0)
        backbone = measure_schedule_macs(vit, sched, size, counter=args.counter, include_head=args.include_head)
        dense = measure_schedule_macs(vit, dense_sched, size, counter=args.counter, include_head=args.include_head)
    summary = pd.DataFrame([{
        "arch": args.arch, "img_size": f"{size[0]}x{size[1]}", "grid": f"{grid[0]}x{grid[1]}",
        "method": args.method, "counter": args.counter, "PKR": sched.pkr,
        "backbone_GMACs": backbone / 1e9, "overhead_GMACs": overhead / 1e9, "total_GMACs": (backbone + overhead) / 1e9,
        "dense_GMACs": dense / 1e9,
    }])
    summary["reduction_pct"] = 100.0 * (1.0 - summary["total_GMACs"] / summary["dense_GMACs"])
    per_block = pd.DataFrame([{"block": b, "attn_tokens": a + spec.num_prefix, "mlp_tokens": m + spec.num_prefix,
                               "keep_fraction": a / sched.num_patches, "analytic_GMACs": blk["total"] / 1e9}
                              for b, (a, m, blk) in enumerate(zip(sched.attn, sched.mlp, ana.blocks))])
    header = [f"# vppkit flops: {args.arch} at {size[0]}x{size[1]} ({grid[0]}x{grid[1]} patches + "
              f"{spec.num_prefix} prefix), method {args.method}, counter {args.counter}",
              "# units: GMACs (1 multiply-add = 1, fvcore convention); backbone = patch embed + blocks"
              + (" + head" if args.include_head else "") + "; overhead = pruner's own cost (analytic)",
              f"# {note}"]
    meta = {"units": "GMACs", "arch": args.arch, "img_size": list(size), "method": args.method,
            "counter": args.counter, "note": note, "schedule": {"attn": list(sched.attn), "mlp": list(sched.mlp),
                                                                 "params": sched.params}}
    return summary, per_block, header, meta


def run_flops(args: argparse.Namespace) -> int:
    """``vppkit flops``: print the table; returns 0, or 2 on bad input (message on stderr)."""
    try:
        summary, per_block, header, meta = flops_table(args)
    except (ValueError, KeyError) as exc:
        print(f"vppkit flops: error: {exc}", file=sys.stderr)
        return 2
    text = _render(summary, args.format, header, meta)
    if args.per_block:
        text += "\n" + _render(per_block, args.format, ["# per block (analytic)"], {"per_block": True})
    _emit(text, args.out)
    return 0


# ----------------------------------------------------------------------------------------------------------------
def evtp_options(args: argparse.Namespace):
    """FlopsOptions from the parsed arguments (named interpretation first, explicit options override it)."""
    from dataclasses import replace

    opts = named_interpretation(args.interpretation) if args.interpretation else FlopsOptions()
    overrides = {k: getattr(args, k) for k in ("video_tokens_in_sequence", "vision_passes", "temporal_on_images",
                                               "temporal_frames", "t_eff", "prune_at_full_keep", "prune_per_frame",
                                               "heads_tokens", "flop_factor") if getattr(args, k) is not None}
    return replace(opts, **overrides)


def run_evtp_flops(args: argparse.Namespace) -> int:
    """``vppkit evtp-flops``: print the TFLOPs table; returns 0, or 2 on bad input."""
    try:
        opts = evtp_options(args)
        benches = [get_benchmark(b) for b in args.benchmarks] if args.benchmarks else list(BENCHMARKS)
        keep = tuple(args.keep_tokens) if args.keep_tokens else KEEP_TOKENS
        if args.breakdown:
            df = evtp_breakdown_long(benches, keep, options=opts).drop(columns="options")
        else:
            df = evtp_flops_table(benches, keep, options=opts).drop(columns="options")
    except (ValueError, KeyError) as exc:
        print(f"vppkit evtp-flops: error: {exc}", file=sys.stderr)
        return 2
    unit = "TFLOPs (1e12 multiply-accumulates" + (" x 2" if opts.flop_factor == 2 else "") + ")"
    header = ["# EVTP-IVS InstructSeg FLOPs (supplementary §C.2 closed forms), one forward pass",
              f"# units: {unit}; reduction_pct / speedup vs V' = V of the same benchmark",
              f"# options: {opts.describe()}" + (f" (interpretation {args.interpretation})"
                                                  if args.interpretation else "")]
    meta = {"units": unit, "options": opts.as_dict(), "interpretation": args.interpretation}
    text = _render(df, args.format, header, meta)
    if args.paper:
        cmp = paper_comparison(options=opts)
        text += "\n" + _render(cmp, args.format, [f"# computed vs paper; paper values are quoted "
                                                  f"({PAPER_REPORTED['metric']})"], {"paper": PAPER_REPORTED})
    _emit(text, args.out)
    return 0
