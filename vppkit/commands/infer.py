"""``vppkit infer``: online inference of a trained VIS model over a YouTube-VIS set (vppkit.engine.infer).

Examples::

    vppkit infer --checkpoint run/model_final.pt --data val --out run/infer_val --evaluate
    vppkit infer --checkpoint run/model_final.pt --data /data/ytvis/valid.json --frames /data/ytvis/valid/JPEGImages \
        --out out/

``--data`` is ``train`` / ``val`` (that split of the checkpoint's own data config) or a YouTube-VIS json path.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vppkit.engine.infer import evaluate_run, infer_checkpoint


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``infer`` sub-command."""
    p = subparsers.add_parser("infer", help="online VIS inference: results.json + per-frame KeepRecords",
                              description="Run a trained VIS model frame by frame over every video of a set.")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--data", default="val", help="train | val (the checkpoint's data config) or a YTVIS json")
    p.add_argument("--frames", default=None, help="frames folder for a json --data (default: info.frames_root)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--dense", action="store_true", help="run the backbone dense even for a sparse checkpoint")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--noise", dest="noise", action="store_true", default=None,
                      help="keep Gumbel noise at inference, seeded per video (official VPP; default: the config's "
                           "eval.inference_noise, on unless a profile turns it off)")
    mode.add_argument("--deterministic", dest="noise", action="store_false",
                      help="no Gumbel noise at inference (argmax / noise-free top-k)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the inference noise (per video; default: the checkpoint config's seed)")
    p.add_argument("--visualize", action="store_true", help="write per-frame overlays to <out>/vis")
    p.add_argument("--evaluate", action="store_true", help="also compute video AP (GT must have annotations)")
    p.add_argument("--max-videos", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=None,
                   help="processes decoding frames ahead of the model (default: the config's eval.workers, else 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    summary = infer_checkpoint(args.checkpoint, args.data, args.out, frames_root=args.frames, dense=args.dense,
                               noise=args.noise, visualize=args.visualize, max_videos=args.max_videos,
                               device=args.device, workers=args.workers, seed=args.seed)
    if args.evaluate:
        summary["ap"] = evaluate_run(args.out, summary["gt_json"])
    print(json.dumps({k: v for k, v in summary.items() if k not in ("results", "records")}, indent=2, default=str))
    return 0
