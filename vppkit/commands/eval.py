"""``vppkit eval-ytvis``: YouTube-VIS video AP (and optionally frame-level COCO AP) of a results json.

Example::

    vppkit eval-ytvis --gt cache/davis/val.json --results runs/x/results.json --json runs/x/ap.json --frames

Prints a small table (values in %, -1 = undefined) and, with ``--json``, writes the raw fractions with keys
AP, AP50, AP75, APs, APm, APl, AR1, AR10 (+ mAP_bbox, mAP_segm with ``--frames``) plus the inputs and the
provenance, atomically (``vppkit.utils.io``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vppkit.metrics._ytvis_eval import EvalInputError, parse_gt
from vppkit.metrics.coco_frames import evaluate_frame_ap
from vppkit.metrics.ytvis_ap import evaluate_video_ap
from vppkit.utils.io import atomic_write_json
from vppkit.utils.provenance import provenance


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval-ytvis`` sub-command."""
    p = subparsers.add_parser("eval-ytvis", help="YouTube-VIS video AP (+ frame-level COCO AP) of a results json",
                              description="YouTube-VIS video AP (and optionally frame-level COCO AP) of a results json.")
    p.add_argument("--gt", required=True, type=Path, help="YouTube-VIS ground-truth json")
    p.add_argument("--results", required=True, type=Path,
                   help="YouTube-VIS results json: list of {video_id, category_id, score, segmentations}")
    p.add_argument("--json", type=Path, default=None, help="write the metrics (fractions 0..1) to this json")
    p.add_argument("--frames", action="store_true", help="also compute frame-level COCO mAP_bbox / mAP_segm")
    p.add_argument("--verbose", action="store_true", help="show pycocotools' own prints")
    p.set_defaults(func=run)


def format_table(metrics: dict[str, float]) -> str:
    """Markdown table of the metrics in % (two decimals); -1 (undefined) printed as ``-``."""
    keys = list(metrics)
    cells = [("-" if metrics[k] < 0 else f"{100 * metrics[k]:.2f}") for k in keys]
    widths = [max(len(k), len(c)) for k, c in zip(keys, cells)]
    head = "| " + " | ".join(k.rjust(w) for k, w in zip(keys, widths)) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    row = "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([head, rule, row])


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table, optionally write json; returns 0, or 2 on bad input (message on stderr)."""
    try:
        gt = parse_gt(args.gt)  # parsed once, shared by both metrics
        metrics = evaluate_video_ap(gt, args.results, verbose=args.verbose)
        if args.frames:
            metrics.update(evaluate_frame_ap(gt, args.results, verbose=args.verbose))
    except (EvalInputError, ValueError, OSError) as exc:  # YTVISFormatError is a ValueError
        print(f"vppkit eval-ytvis: error: {exc}", file=sys.stderr)
        return 2
    print("YouTube-VIS video AP (%)" + (" + frame-level COCO AP" if args.frames else ""))
    print(format_table(metrics))
    if args.json is not None:
        payload = dict(metrics)
        payload["units"] = "fraction in [0, 1]; -1 = undefined (no ground truth)"
        payload["gt"] = str(args.gt)
        payload["results"] = str(args.results)
        payload["provenance"] = provenance(metric="youtube-vis video AP (vppkit.metrics.ytvis_ap)")
        atomic_write_json(args.json, payload)
        print(f"wrote {args.json}")
    return 0
