"""The trained models every VPP artifact shares, and their one evaluation each.

A profile trains ONE dense VIS model and fine-tunes one sparse model per *variant* (method x goal PKR,
plus the κ_init ablation) from it. Each model is evaluated once on the held-out split; the evaluation
stores everything the artifacts need (video AP, mAP_bbox/mAP_segm, realised PKR split by first/later
frames, per-block patch density, IoI by object size, the per-frame keep records). The artifacts
(``results``, ``ioi``, ``density``, ``kappa``, ``curves``, ``qualitative``) only select
and render from these evaluations, so `make ioi` after `make results` trains and evaluates nothing new.

Reuse: a checkpoint is reused when its run folder (named by :func:`vppkit.engine.train.run_key`: the training
config and the training code's version) holds ``model_final.pt``; an evaluation when its saved result has the
same config hash and code version (:mod:`experiments.common`; ``FORCE=1`` redoes both).

Variants and their keep schedules (goal PKR 55 % / 40 %); a profile can add method settings that hold for
all variants of a method with ``pruning_overrides: {vpp: {...}, svit: {...}}`` (e.g. Map-SM's smoothing
radius for small patch grids):
- VPP: presets ``pkr55`` (m = 0.7, ρ = 0.8, nominal 54.16 %) and ``pkr40`` (m = 0.6, ρ = 0.7, nominal
  41.33 %), κ_init 0.5 (Table 6); the κ_init ablation (Table 7) varies κ_init ∈ {0.3, 0.7} at pkr55.
- SViT: blocks 0-2 dense, gates at 3..11 with targets ρ, ρ², ρ³ per stage solved for the goal PKR
  (:func:`vppkit.models.pruning.svit.svit_targets_for_pkr`; the paper does not say how it set SViT).
- DynamicViT: predictors at 3/6/9 with keep ratios ρ, ρ², ρ³, ρ solved the same way (same block layout).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch

from experiments.common import Context, result_ref
from vppkit.config import img_size_hw
from vppkit.data.video import VideoFrames
from vppkit.engine.infer import evaluate_run, infer_checkpoint
from vppkit.engine.train import run_key, train
from vppkit.flops.analytic import ViTSpec
from vppkit.flops.measure import macs_from_records
from vppkit.metrics.ioi import IoIAccumulator
from vppkit.metrics.patch_labels import patch_labels
from vppkit.metrics.pkr import PKRAccumulator
from vppkit.models.pruning.svit import svit_targets_for_pkr
from vppkit.models.vit import build_backbone

log = logging.getLogger("vppkit.experiments")

GOALS = (55, 40)


def _svit_pruning(goal: int) -> dict:
    targets, _ = svit_targets_for_pkr(goal / 100)
    return {"method": "svit", "targets": [round(t, 6) for t in targets]}


def _dynamicvit_pruning(goal: int) -> dict:
    # same layout as SViT (3 dense blocks, stages of 3 blocks at rho, rho^2, rho^3): same rho
    _, rho = svit_targets_for_pkr(goal / 100)
    return {"method": "dynamicvit", "rho": round(rho, 6)}


def variants() -> dict[str, dict]:
    """Variant name -> {method, goal_pkr, pruning section, label}. ``dense`` has no pruning section."""
    out: dict[str, dict] = {"dense": {"method": "dense", "goal_pkr": 100, "pruning": None, "label": "dense"}}
    for goal in GOALS:
        out[f"vpp{goal}"] = {"method": "VPP", "goal_pkr": goal, "label": f"VPP {goal} %",
                             "pruning": {"method": "vpp", "schedule": f"pkr{goal}", "kappa_init": 0.5}}
        out[f"svit{goal}"] = {"method": "SViT", "goal_pkr": goal, "label": f"SViT {goal} %",
                              "pruning": _svit_pruning(goal)}
        out[f"dynamicvit{goal}"] = {"method": "DynamicViT", "goal_pkr": goal, "label": f"DynamicViT {goal} %",
                                    "pruning": _dynamicvit_pruning(goal)}
    for kappa in (0.3, 0.7):
        out[f"vpp55_kappa{kappa}"] = {"method": "VPP", "goal_pkr": 55, "label": f"VPP 55 % κ_init={kappa}",
                                      "kappa_init": kappa,
                                      "pruning": {"method": "vpp", "schedule": "pkr55", "kappa_init": kappa}}
    out["vpp55"]["kappa_init"] = 0.5
    return out


def checkpoint(ctx: Context, name: str) -> Path:
    """Final checkpoint of variant ``name``, training it (and the dense model it starts from) if needed."""
    spec = variants()[name]
    cfg = copy.deepcopy(ctx.cfg)
    if spec["pruning"] is None:
        stage, init = "dense", None
    else:
        stage, init = "sparse", checkpoint(ctx, "dense")
        # the variant's own pruning section, plus the profile's per-method settings (``pruning_overrides``)
        extra = cfg["pruning_overrides"].get(spec["pruning"]["method"], {})
        cfg["pruning"] = {**extra, **spec["pruning"]}
    # named by what training reads (not by analysis settings such as fgs / selectors / oracle / eval)
    out = ctx.results_dir / "runs" / f"{name}-{run_key(cfg, stage, init)}"
    final = out / "model_final.pt"
    if final.exists() and not ctx.force:
        return final
    if ctx.force and final.exists():
        final.unlink()
    log.info("training %s (%s stage) -> %s", name, stage, out)
    summary = train(cfg, stage=stage, out_dir=out, init=init, resume=not ctx.force, progress=True)
    return Path(summary["checkpoint"])


def dense_analysis(ctx: Context, artifact: str, settings: dict, path: str | Path | None = None) -> tuple[Path, dict]:
    """For an analysis run on the trained dense model (selectors, oracle): the checkpoint (``path``, or the shared
    dense model, trained if needed) and the config its saved result depends on (settings, checkpoint and its
    mtime, the profile's data / model / eval sections)."""
    ckpt = Path(path) if path is not None else checkpoint(ctx, "dense")
    config = {"artifact": artifact, "settings": settings, "checkpoint": str(ckpt),
              "checkpoint_mtime": ckpt.stat().st_mtime, "data": ctx.cfg["data"], "model": ctx.cfg["model"],
              "eval": ctx.cfg["eval"]}
    return ckpt, config


def evaluate(ctx: Context, name: str) -> dict:
    """Evaluation of variant ``name`` on the held-out split (cached as ``results/<profile>/eval_<name>.json``).

    Returns:
        dict with ``AP`` .. ``AR10`` (video AP, fractions), ``mAP_bbox``, ``mAP_segm``, ``pkr`` (fractions for
        all / first / later frames), ``density`` (12 per-block fractions, all frames), ``density_later``,
        ``ioi`` (IoI table row: IoI, IoI_S, IoI_M, IoI_L, counts; fractions), ``fg_bg`` (kept-budget shares),
        ``records`` (path of the per-frame keep records), ``noise`` (inference Gumbel noise on/off),
        ``seconds_per_frame``, ``backbone`` (the checkpoint's backbone record).
    """
    spec = variants()[name]
    ckpt = checkpoint(ctx, name)
    ecfg = ctx.cfg["eval"]
    config = {"variant": name, "spec": spec, "checkpoint": str(ckpt.relative_to(ctx.results_dir)),
              "checkpoint_mtime": ckpt.stat().st_mtime, "eval": ecfg, "data": ctx.cfg["data"],
              "patch_rule": ecfg["patch_rule"]}
    return ctx.cached(f"eval_{name}", config, lambda: _evaluate(ctx, name, ckpt))


def evaluate_many(ctx: Context, artifact: str, names) -> tuple[dict, dict]:
    """Evaluations of several variants and the config an artifact built from them depends on.

    Returns:
        (``{name: evaluation}``, ``{"artifact": artifact, "evals": {name: result_ref(evaluation)}}``: each
        evaluation's config hash and code version, :func:`experiments.common.result_ref`).
    """
    evals = {name: evaluate(ctx, name) for name in names}
    return evals, {"artifact": artifact, "evals": {name: result_ref(e) for name, e in evals.items()}}


def _evaluate(ctx: Context, name: str, ckpt: Path) -> dict:
    out_dir = ctx.results_dir / "eval" / name
    res = infer_checkpoint(ckpt, "val", out_dir, progress=True, eval_cfg=ctx.cfg["eval"])
    ap = evaluate_run(out_dir, res["gt_json"])

    cfg = ctx.cfg
    frames = VideoFrames(res["gt_json"], None, cfg["model"]["img_size"], cache=False)
    rule = cfg["eval"]["patch_rule"]
    pkr, ioi = PKRAccumulator(), IoIAccumulator()
    id_to_index = {v["id"]: i for i, v in enumerate(frames.videos)}
    patch = None
    for vid, record in res["records"].items():
        vi = id_to_index[vid]
        grid = record.grid
        patch = patch or cfg["model"]["img_size"][0] // grid[0]
        first = torch.zeros(record.batch, dtype=torch.bool)
        first[0] = True
        pkr.update(record, first, source=f"video {vid}")
        labels = [patch_labels(frames.instances(vi, t)[1], patch, rule, source=f"video {vid} frame {t}")
                  for t in range(record.batch)]
        ioi.update_record(record, labels, sources=[f"video {vid} frame {t}" for t in range(record.batch)])
    ioi_row = ioi.to_frame().iloc[0].to_dict()
    macs = _macs(cfg, list(res["records"].values()))
    return {
        **{k: float(v) for k, v in ap.items()},
        "gt_json": str(res["gt_json"]),
        "pkr": {split: pkr.pkr(split) for split in ("all", "first", "later")},
        "density": pkr.block_density("all").tolist(),
        "density_later": pkr.block_density("later").tolist(),
        "ioi": {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in ioi_row.items()},
        "ioi_per_block": ioi.per_block_frame().to_dict(orient="records"),
        "backbone_GMACs": macs.backbone / 1e9,
        "overhead_GMACs": macs.overhead / 1e9,
        "records": str((out_dir / "keep_records.npz").relative_to(ctx.results_dir)),
        "noise": res["noise"],
        "frames": res["frames"],
        "seconds_per_frame": res["sec_per_frame"],
        # which backbone the model used, for the report index: the checkpoint's ``backbone`` record (``source``
        # imgfocus_vits14 / checkpoint / scratch, ``arch``, ``fallback``: pretrained asked for but missing, ...)
        "backbone": {k: res["backbone"].get(k) for k in ("source", "arch", "fallback", "frozen", "reason")},
    }


def _macs(cfg: dict, records: list):
    """Analytic backbone GMACs averaged over the evaluated frames from their own per-block token counts
    (:func:`vppkit.flops.measure.macs_from_records`; pruner overhead = the records' mean overhead)."""
    size = cfg["model"]["img_size"]
    vit = build_backbone(cfg["model"]["arch"], img_size=img_size_hw(size)).vit
    return macs_from_records(ViTSpec.from_timm(vit, cfg["model"]["arch"]), records)
