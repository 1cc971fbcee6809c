"""``vppkit data``: make and check YouTube-VIS format datasets.

Examples::

    vppkit data synth --out cache/synth --videos 24 --seed 0 --frames 16 --size 192 192
    vppkit data davis --root ../shared/data/davis2016-240p --split val --out cache/davis/val.json --res 240p
    vppkit data validate cache/davis/val.json --frames ../shared/data/davis2016-240p/JPEGImages/240p

``validate`` prints ``OK`` and the counts, or the error (naming file and video / annotation id) on
stderr and exits 1. ``synth`` and ``davis`` validate what they write.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vppkit.data.davis import davis_to_ytvis
from vppkit.data.synthetic import STYLES, generate_synthetic, size_bin_stats
from vppkit.data.ytvis import load_ytvis, save_ytvis


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` with its sub-commands ``synth``, ``davis``, ``validate``."""
    p = subparsers.add_parser("data", help="make / convert / validate YouTube-VIS format datasets",
                              description="Make, convert and validate YouTube-VIS format datasets.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    s = sub.add_parser("synth", help="generate the synthetic video set (frames + instances.json)")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--videos", type=int, default=24, help="number of videos (default 24)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--frames", type=int, default=16, help="frames per video (default 16)")
    s.add_argument("--size", type=int, nargs=2, default=(192, 192), metavar=("H", "W"),
                   help="frame height and width in pixels (default 192 192)")
    s.add_argument("--format", choices=("jpg", "png"), default="jpg", help="frame image format (default jpg)")
    s.add_argument("--style", choices=STYLES, default="hues",
                   help="appearance style: hues (per-category hue families, v2) or pool (one shared appearance pool, "
                        "v3; vppkit.data.synthetic); default hues")
    s.set_defaults(func=run_synth)

    d = sub.add_parser("davis", help="convert a DAVIS split to a class-agnostic YouTube-VIS json")
    d.add_argument("--root", required=True, type=Path, help="DAVIS folder (JPEGImages, Annotations, ImageSets)")
    d.add_argument("--split", required=True, choices=("train", "val"), help="image set")
    d.add_argument("--out", required=True, type=Path, help="output json")
    d.add_argument("--res", default="240p", help="resolution folder (default 240p)")
    d.set_defaults(func=run_davis)

    v = sub.add_parser("validate", help="check a YouTube-VIS json (and its frames)")
    v.add_argument("json", type=Path, help="YouTube-VIS json")
    v.add_argument("--frames", type=Path, default=None, help="frames folder that file_names are relative to")
    v.set_defaults(func=run_validate)


def _counts(ds: dict) -> str:
    frames = sum(int(v["length"]) for v in ds["videos"])
    masks = sum(sum(s is not None for s in a["segmentations"]) for a in ds["annotations"])
    return (f"{len(ds['videos'])} videos, {frames} frames, {len(ds['annotations'])} instances, "
            f"{masks} masks, {len(ds['categories'])} categories")


def run_synth(args: argparse.Namespace) -> int:
    try:
        path = generate_synthetic(args.out, num_videos=args.videos, seed=args.seed, num_frames=args.frames,
                                  height=args.size[0], width=args.size[1], image_format=args.format,
                                  style=args.style)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    ds = load_ytvis(path)
    stats = size_bin_stats(ds)
    print(f"wrote {path}: {_counts(ds)}; instances per size bin {stats['instances']}, "
          f"{stats['empty_frames']} frames without objects")
    return 0


def run_davis(args: argparse.Namespace) -> int:
    try:
        ds = davis_to_ytvis(args.root, args.split, res=args.res)
        save_ytvis(ds, args.out)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {_counts(ds)}")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    try:
        ds = load_ytvis(args.json, frames_root=args.frames)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"OK {args.json}: {_counts(ds)}")
    return 0
