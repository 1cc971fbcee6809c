"""``vppkit train``: dense training or sparse fine-tuning of the VIS model (vppkit.engine.train).

Examples::

    vppkit train --config smoke
    vppkit train --config default --stage sparse --init cache/runs/.../model_final.pt pruning.schedule=pkr40
    torchrun --nproc_per_node=8 -m vppkit train --config ytvis21_tiny data.root=/data/ytvis21
"""

from __future__ import annotations

import argparse
import json

from vppkit.config import load_config
from vppkit.engine.train import train


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    p = subparsers.add_parser("train", help="train the VIS model (dense) or fine-tune it with a pruner (sparse)",
                              description="Train the VIS model: --stage dense, or --stage sparse from --init.")
    p.add_argument("--config", required=True, help="profile name (configs/<name>.yaml) or a yaml path")
    p.add_argument("--stage", choices=("dense", "sparse"), default="dense")
    p.add_argument("--init", default=None, help="checkpoint to start from (the dense model for --stage sparse)")
    p.add_argument("--out", default=None, help="run folder (default cache/runs/<profile>-<stage>-<hash>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint_last.pt")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.dense.steps=50")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    summary = train(cfg, args.stage, out_dir=args.out, init=args.init, resume=args.resume, device=args.device,
                    progress=not args.no_progress)
    print(json.dumps({k: v for k, v in summary.items() if k != "last"}, indent=2))
    print("last step:", json.dumps(summary["last"]))
    return 0
