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
- DynamicViT: predictors at 3/6/9 with fixed-count keep ratios ρ, ρ², ρ³ (inference keeps ⌊N ρ^s⌋ by top-k),
  **ρ = 0.6 (goal 55 %) and 0.4 (goal 40 %)** (:data:`BASELINE_RHO`): the paper's DynVit points sit at PKR 54.4 %
  and 40.6 % on both datasets (vpp-notes §9.2, Fig. 4 read off the plot), which are exactly the nominal PKRs of
  fixed-count top-k at these ρ with three dense blocks: (3 + 3(ρ + ρ² + ρ³)) / 12 = 54.4 % / 40.6 %
  (issue 13). (Before: ρ solved for nominal 55.0 % / 40.0 %, 0.607 / 0.389.)
- SViT: blocks 0-2 dense, gates at 3..11 with targets ρ, ρ², ρ³ per stage of three blocks, the **same ρ**
  (0.6 / 0.4; nominal 54.4 % / 40.6 %). Neither the paper's text nor the official code says how SViT was set;
  the official port gives each selective module a ``keep_ratio`` list of the same shape as DynVit's
  (``InteractionBlockWithSelection`` / ``InteractionBlockWithDynVitSelection``, commit 95c4ee7), and the reported
  SViT PKRs (2021: 54.2 % / 39.6 %) sit just below these nominal values, as dynamic gates that undershoot their
  targets do (VPP's SMs undershoot too, vpp-notes §11.3) [inferred]. (Before: ρ solved for nominal 55 % / 40 %.)
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
from vppkit.models.pruning.svit import svit_stage_targets
from vppkit.models.vit import build_backbone

log = logging.getLogger("vppkit.experiments")

GOALS = (55, 40)


#: Per-stage keep ratio ρ of the DynamicViT and SViT baselines per goal PKR (module docstring: the paper's
#: DynVit points, PKR 54.4 % / 40.6 %, are fixed-count top-k at ρ = 0.6 / 0.4).
BASELINE_RHO = {55: 0.6, 40: 0.4}


def _svit_pruning(goal: int) -> dict:
    """SViT section of goal ``goal``: targets ρ^s per stage of three gated blocks (3..11), ρ = BASELINE_RHO."""
    targets = svit_stage_targets(BASELINE_RHO[goal])
    return {"method": "svit", "targets": [round(t, 6) for t in targets]}


def _dynamicvit_pruning(goal: int) -> dict:
    """DynamicViT section of goal ``goal``: predictors before blocks 3/6/9 keeping ⌊N ρ^s⌋, ρ = BASELINE_RHO."""
    return {"method": "dynamicvit", "rho": BASELINE_RHO[goal]}


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
    return _trained(ctx, name, cfg, stage, init)


def dense_config(ctx: Context, dense: dict) -> dict:
    """The profile's config with ``dense`` merged into ``train.dense`` (e.g. ``{"steps": 375, "feature_cache":
    True}``): another dense model of the same profile (:func:`dense_checkpoint`)."""
    cfg = copy.deepcopy(ctx.cfg)
    cfg["train"]["dense"] = {**cfg["train"]["dense"], **dense}
    return cfg


def dense_checkpoint(ctx: Context, cfg: dict) -> Path:
    """Final checkpoint of the dense model trained with ``cfg`` (:func:`dense_config`), training it if needed. Its
    run folder is named as the profile's dense model's (``dense-<run_key>``), so a ``cfg`` whose training part
    equals the profile's is that model."""
    return _trained(ctx, "dense", cfg, "dense", None)


def is_profile_dense(ctx: Context, cfg: dict) -> bool:
    """Whether ``cfg`` trains the profile's own dense model (same :func:`vppkit.engine.train.run_key`)."""
    return run_key(cfg, "dense") == run_key(ctx.cfg, "dense")


def _trained(ctx: Context, name: str, cfg: dict, stage: str, init: Path | None) -> Path:
    """Final checkpoint of a zoo run, ``results/<profile>/runs/<name>-<run_key>/model_final.pt``; trained (resumed
    from its last checkpoint unless ``ctx.force``) when missing."""
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


#: Inference modes of a pruned model: Gumbel noise kept at inference (the official code; supplementary §B calls it
#: essential) or deterministic (argmax / noise-free top-k). Noise is seeded per video (repeatable).
MODES = ("noise", "deterministic")


def profile_mode(ctx: Context) -> str:
    """The profile's inference mode (``eval.inference_noise``): "noise" or "deterministic"."""
    return "noise" if ctx.cfg["eval"]["inference_noise"] else "deterministic"


def _eval_name(name: str, mode: str, pruned: bool) -> str:
    """Saved-result / folder name of an evaluation: ``<variant>`` (noise; dense: the only one) or
    ``<variant>_deterministic``."""
    return name if not pruned or mode == "noise" else f"{name}_deterministic"


def evaluate(ctx: Context, name: str, mode: str | None = None) -> dict:
    """Evaluation of variant ``name`` on the held-out split in inference ``mode`` (cached as
    ``results/<profile>/eval_<name>.json`` for "noise" and the dense model, ``eval_<name>_deterministic.json``).

    Args:
        ctx: the run context.
        name: a :func:`variants` name.
        mode: "noise" | "deterministic" (:data:`MODES`); None = the profile's (:func:`profile_mode`). The dense
            model has no pruner, so its evaluation is the same in both modes (computed once, ``noise`` False).

    Returns:
        dict with ``AP`` .. ``AR10`` (video AP, fractions), ``mAP_bbox``, ``mAP_segm``, ``pkr`` (fractions for
        all / first / later frames), ``density`` (12 per-block fractions, all frames), ``density_later``,
        ``ioi`` (IoI table row: IoI, IoI_S, IoI_M, IoI_L, counts; fractions), ``records`` (path of the per-frame
        keep records), ``noise`` (inference Gumbel noise on/off), ``mode``,
        ``seconds_per_frame``, ``backbone`` (the checkpoint's backbone record).

    Raises:
        ValueError: unknown ``mode``.
    """
    mode = profile_mode(ctx) if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"inference mode must be one of {MODES}, got {mode!r}")
    spec = variants()[name]
    pruned = spec["pruning"] is not None
    return _evaluate_cached(ctx, name, spec, checkpoint(ctx, name), _eval_name(name, mode, pruned),
                            pruned and mode == "noise")


def evaluate_dense(ctx: Context, label: str, cfg: dict) -> dict:
    """Evaluation of the dense model trained with ``cfg`` (:func:`dense_config`), as :func:`evaluate` (saved as
    ``eval_<label>.json``); the profile's own dense model (:func:`is_profile_dense`) is ``evaluate(ctx, "dense")``,
    reused, not evaluated twice."""
    if is_profile_dense(ctx, cfg):
        return evaluate(ctx, "dense")
    spec = {"method": "dense", "goal_pkr": 100, "pruning": None, "label": label, "train_dense": cfg["train"]["dense"]}
    return _evaluate_cached(ctx, label, spec, dense_checkpoint(ctx, cfg), label, False)


def _evaluate_cached(ctx: Context, name: str, spec: dict, ckpt: Path, label: str, noise: bool) -> dict:
    ecfg = {**ctx.cfg["eval"], "inference_noise": noise}
    config = {"variant": name, "spec": spec, "checkpoint": str(ckpt.relative_to(ctx.results_dir)),
              "checkpoint_mtime": ckpt.stat().st_mtime, "eval": ecfg, "seed": ctx.seed, "data": ctx.cfg["data"],
              "patch_rule": ecfg["patch_rule"]}
    return ctx.cached(f"eval_{label}", config, lambda: _evaluate(ctx, label, ckpt, ecfg))


def evaluate_many(ctx: Context, artifact: str, names, mode: str | None = None) -> tuple[dict, dict]:
    """Evaluations of several variants in one inference ``mode`` (None: the profile's) and the config an
    artifact built from them depends on.

    Returns:
        (``{name: evaluation}``, ``{"artifact": artifact, "mode": mode, "evals": {name: result_ref(evaluation)}}``:
        the mode and each evaluation's config hash and code version, :func:`experiments.common.result_ref`).
        Renderers state the mode from ``result["config"]["mode"]``.
    """
    mode = profile_mode(ctx) if mode is None else mode
    evals = {name: evaluate(ctx, name, mode) for name in names}
    return evals, {"artifact": artifact, "mode": mode, "evals": {name: result_ref(e) for name, e in evals.items()}}


def _evaluate(ctx: Context, label: str, ckpt: Path, ecfg: dict) -> dict:
    out_dir = ctx.results_dir / "eval" / label
    res = infer_checkpoint(ckpt, "val", out_dir, progress=True, eval_cfg=ecfg, seed=ctx.seed)
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
        "mode": "noise" if res["noise"] else "deterministic",
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
