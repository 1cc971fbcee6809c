"""Render saved results into tables/figures and write ``reports/<profile>/index.md`` and ``reports/index.md``.

Renderers (``analyses.tables.TABLES`` and ``analyses.figures.FIGURES``) map an artifact name to a function
``fn(ctx, result) -> list[Entry]``; each entry is one table or figure with its files and a caption. The
entries of every rendered artifact are kept in ``reports/<profile>/manifest.json`` so the index links
everything that was produced, with the provenance (profile, seed, commit, time) and code version of the result
behind it. The index flags results computed by another commit than ``HEAD``, with uncommitted changes, or by code
that has changed since (possible after `make tables` on old results; `make reports` recomputes those).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from analyses.caveats import IMGFOCUS_CAVEAT
from analyses.figures import FIGURES
from analyses.paper_values import PAPER_SETUP, PAPER_SETUP_SOURCE
from analyses.reading import write_reading
from analyses.render import Entry
from analyses.tables import TABLES
from experiments.common import ARTIFACTS, REPORTS_ROOT, Context
from vppkit.config import img_size_hw
from vppkit.engine.train import stage_config
from vppkit.models.vit import patch_grid
from vppkit.utils.io import atomic_write_json, atomic_write_text
from vppkit.utils.provenance import code_changed, git_commit, same_commit


def _manifest_path(ctx: Context) -> Path:
    return ctx.reports_dir / "manifest.json"


def _load_manifest(ctx: Context) -> dict:
    path = _manifest_path(ctx)
    return json.loads(path.read_text()) if path.exists() else {}


def render_artifact(ctx: Context, name: str, result: dict, kinds: tuple[str, ...] = ("tables", "figures")) -> None:
    """Render one artifact's tables and/or figures and record them in the manifest."""
    entries: list[Entry] = []
    if "tables" in kinds and name in TABLES:
        entries += TABLES[name](ctx, result)
    if "figures" in kinds and name in FIGURES:
        entries += FIGURES[name](ctx, result)
    manifest = _load_manifest(ctx)
    kept = [e for e in manifest.get(name, {}).get("entries", [])
            if (e["kind"] == "table" and "tables" not in kinds) or (e["kind"] == "figure" and "figures" not in kinds)]
    manifest[name] = {"entries": kept + [asdict(e) for e in entries], "provenance": result.get("provenance", {}),
                      "code_version": result.get("code_version"), "code": result.get("code")}
    atomic_write_json(_manifest_path(ctx), manifest)


def render_saved(ctx: Context, kind: str) -> None:
    """Render ``kind`` ("tables" or "figures") for every artifact whose result is saved."""
    for name in ARTIFACTS:
        result = ctx.load_result(name)
        if result is not None:
            render_artifact(ctx, name, result, kinds=(kind,))


def _provenance_line(prov: dict) -> str:
    keys = ("profile", "seed", "commit", "time_utc", "device", "seconds")
    return ", ".join(f"{k} `{prov[k]}`" for k in keys if prov.get(k) is not None)


def _stage_line(ctx: Context, stage: str) -> str:
    t = stage_config(ctx.cfg, stage)
    frames = int(t["clip_frames"])
    amount = f"{t['epochs']} epochs ({t['sample_unit']} samples)" if t["epochs"] is not None \
        else f"{t['steps']} steps (one sample per {t['sample_unit']})"
    cached = ", on cached backbone features (train.dense.feature_cache)" if t.get("feature_cache") else ""
    return f"{amount}, batch {t['batch']} per process (clips of {frames} frames), lr {t['lr']}{cached}"


def _weights(tcfg: dict) -> str:
    """A stage's segmentation-loss weights per chain frame, e.g. ``x0.0 / x0.5 / x1.0``."""
    return " / ".join(f"x{w}" for w in tcfg["frame_loss_weights"])


def _host_line(m: dict) -> str:
    """``model.host`` in words, with the adapter's sizes (the ``model.adapter`` section) where it is used."""
    if m["host"] != "adapter":
        return "`plain`: ViT -> simple pyramid -> query decoder (CPU-sized; no spatial-prior path)"
    a = m["adapter"]
    return (f"`adapter`: ViT-Adapter (spatial prior conv_inplane {a['conv_inplane']}, interactions "
            f"{[list(r) for r in a['interaction_indexes']]} + {a['extra_extractors']} extra extractors, deformable "
            f"attention {a['deform_heads']} heads x {a['deform_points']} points, cffn {a['cffn_ratio']:g}) "
            "-> Mask2Former")


def setup_section(ctx: Context) -> list[str]:
    """Markdown lines: this profile's setup next to the paper's (what was scaled down for the CPU).

    Our column is read from the resolved profile config (``ctx.cfg``); the paper's column is quoted
    (:data:`analyses.paper_values.PAPER_SETUP`).
    """
    cfg, m, d = ctx.cfg, ctx.cfg["model"], ctx.cfg["data"]
    size = img_size_hw(m["img_size"])
    grid = patch_grid(m["arch"], size)
    source = d["source"]
    if source == "synthetic":
        data = (f"synthetic YouTube-VIS-format videos: {d['num_videos']} train / {d['num_val_videos']} "
                f"val, {d['num_frames']} frames of {d['height']}x{d['width']} px")
    elif source == "davis":
        data = (f"DAVIS-2016 {d['res']}, class-agnostic: ImageSets `{d['train_split']}` "
                f"-> train, `{d['val_split']}` -> evaluation (every frame)")
    else:
        data = f"YouTube-VIS json {d['train_json']} / {d['val_json']}"
    pretrained = m["pretrained"] or m["backbone_checkpoint"]
    dense_cfg, sparse_cfg = stage_config(cfg, "dense"), stage_config(cfg, "sparse")
    frozen = bool(dense_cfg["freeze_backbone"]) and bool(sparse_cfg["freeze_backbone"])
    lr_mult = dense_cfg["backbone_lr_mult"]
    sparse_lr_mult = sparse_cfg["backbone_lr_mult"]
    sparse_training = ("frozen" if sparse_cfg["freeze_backbone"] else f"x{sparse_lr_mult}")
    points = int(cfg["loss"]["num_points"])
    ours = {
        "data": data,
        "host": _host_line(m),
        "backbone": (f"ViT-Adapter around ViT `{m['arch']}`, " if m["host"] == "adapter"
                     else f"plain ViT `{m['arch']}` (no adapter), ")
                    + (f"pretrained `{pretrained}`" if pretrained else "trained from scratch"),
        "backbone training": "frozen (pruner modules, pyramid and decoder train)" if frozen
                             else ("frozen" if dense_cfg["freeze_backbone"] else f"trained, lr x{lr_mult}")
                             + f" (sparse stage: {sparse_training})",
        "input": f"{size[0]}x{size[1]} px, N = {grid[0]}x{grid[1]} tokens (frames resized, no padding)",
        "VIS head": (f"Mask2Former: MSDeformAttn pixel decoder ({m['adapter']['pixel_decoder_layers']} layers) + "
                     if m["host"] == "adapter" else "MinVIS-style: simple pyramid + ")
                    + f"masked-attention decoder, {m['dim']}-d, {m['num_queries']} queries, {m['dec_layers']} "
                    "decoder layers (docs/vis_model.md)",
        "mask loss": (f"BCE + Dice on {points} sampled points"
                      + (f" (importance sampling {cfg['loss']['importance_sample_ratio']:g})"
                         if cfg["loss"]["importance_sample_ratio"] else " (uniform)")
                      if points else "BCE + Dice on every stride-4 pixel"),
        "dense stage": _stage_line(ctx, "dense"),
        "sparse stage": _stage_line(ctx, "sparse"),
        "tracker": ("ROVIS track queries (the previous frame's decoded queries decoded with the static ones; "
                    f"keep thresholds {cfg['eval']['rovis_new_score']:g} / {cfg['eval']['rovis_keep_score']:g})"
                    if m["tracker"] == "rovis" else
                    "query-embedding matching at inference (MinVIS style; no track queries in training)"),
        "segmentation loss per frame": (f"dense {_weights(dense_cfg)}; sparse {_weights(sparse_cfg)} (chain "
                                        "order, last = key)"
                                        + (f"; + key with track queries x{dense_cfg['key_track_weight']:g}"
                                           if m["tracker"] == "rovis" else "; no track queries")),
        "drop path": f"{float((m.get('backbone_kwargs') or {}).get('drop_path_rate', 0.0)):g}",
        "inference": ("Gumbel noise kept, seeded per video (results table: both modes)"
                      if cfg["eval"]["inference_noise"] else "deterministic (results table: both modes)"),
    }
    lines = [f"## Setup of this run vs the paper (what `{ctx.profile}` scales down)", "",
             "| setting | this run (from the profile config) | paper (quoted) |", "|---|---|---|"]
    lines += [f"| {k} | {ours[k]} | {PAPER_SETUP[k]} |" for k in PAPER_SETUP]
    lines += ["", f"<sub>paper column: {PAPER_SETUP_SOURCE}; full settings: `configs/{ctx.profile}.yaml`.</sub>", ""]
    return lines


def models_section(ctx: Context) -> list[str]:
    """Markdown lines: the backbone behind every evaluated model of the profile (``eval_<variant>.json``).

    Says for each variant whether its backbone is pretrained (e.g. ``imgfocus_vits14``, with its provenance
    caveat) or trained from scratch, frozen or not, and flags a pretrained backbone that fell back to random
    init (missing ``[pretrained]`` extra), whose numbers are not comparable. Empty when nothing was evaluated.
    """
    rows, sources, fallbacks = [], set(), []
    for path in sorted(ctx.results_dir.glob("eval_*.json")):
        name = path.stem.removeprefix("eval_")
        info = json.loads(path.read_text()).get("backbone")
        if not info:
            rows.append(f"| {name} | not recorded (evaluated before this field existed; `FORCE=1` re-evaluates) "
                        "| | | |")
            continue
        sources.add(info.get("source"))
        if info.get("fallback"):
            fallbacks.append(name)
        rows.append(f"| {name} | {info.get('source')} | {info.get('arch')} | "
                    f"{'frozen' if info.get('frozen') else 'trained'} | "
                    f"{'**yes**' if info.get('fallback') else 'no'} |")
    if not rows:
        return []
    lines = ["## Models and their backbones", "",
             "| variant | backbone weights | arch | backbone | fallback to random init |",
             "|---|---|---|---|---|", *rows, ""]
    if fallbacks:
        lines += [f"**Warning:** {', '.join(fallbacks)} asked for a pretrained backbone that was not available "
                  "(install `vppkit[pretrained]`) and trained it from scratch; their numbers are not "
                  "comparable with a pretrained run.", ""]
    if "imgfocus_vits14" in sources:
        lines += [f"Backbone provenance: {IMGFOCUS_CAVEAT}", ""]
    return lines


def result_flags(info: dict, head: str) -> list[str]:
    """Why a rendered result (its manifest entry: ``provenance``, ``code_version``, ``code``) may not be what the
    current code computes; empty when it is current.

    Args:
        info: the artifact's manifest entry (:func:`render_artifact`).
        head: the current commit (:func:`vppkit.utils.provenance.git_commit`, maybe with ``+dirty``).

    Returns:
        Markdown phrases: computed by another commit than ``head``; computed with uncommitted changes; code
        version missing or different from today's sources (:func:`vppkit.utils.provenance.code_changed`).
    """
    commit = info.get("provenance", {}).get("commit")
    flags = []
    if head.startswith("unknown"):
        flags.append("the current commit is unknown (no git checkout), so the result's commit cannot be checked")
    elif not same_commit(commit, head):
        flags.append(f"computed by commit `{commit}`, not the current `{head.split('+')[0]}` (HEAD)")
    elif "+dirty" in str(commit):
        flags.append(f"computed with uncommitted changes on top of `{commit.split('+')[0]}`")
    reason = code_changed(info)
    if reason:
        flags.append(reason)
    return flags


def provenance_section(ctx: Context, manifest: dict, head: str, order: list[str] = ()) -> list[str]:
    """Markdown lines: for each rendered result (manifest entry; ``order`` first, then the rest sorted), the
    commit and time that computed it, its code version and whether it is current (:func:`result_flags`), with a
    warning line when any is not. Empty when nothing was rendered."""
    rows, stale, other = [], [], []
    for name in [n for n in order if n in manifest] + sorted(set(manifest) - set(order)):
        info = manifest[name]
        prov = info.get("provenance", {})
        flags = result_flags(info, head)
        if code_changed(info):
            stale.append(name)
        elif flags:
            other.append(name)
        rows.append(f"| {name} | `{prov.get('commit')}` | {prov.get('time_utc', '')} | `{info.get('code_version')}` "
                    f"| {'; '.join(f'**{f}**' for f in flags) or 'current'} |")
    if not rows:
        return []
    dirty = " (with uncommitted changes)" if "+dirty" in head else ""
    lines = ["## Provenance of the results", "",
             f"Current commit: `{head.split('+')[0]}` (HEAD){dirty}. A result is *current* when the current commit "
             "computed it and the code its key includes (`experiments.common.RESULT_CODE`) is unchanged.", "",
             "| result | computed by commit | time (UTC) | code version | status |", "|---|---|---|---|---|", *rows, ""]
    if stale:
        lines += [f"**Warning:** {', '.join(stale)}: the code behind {'this result' if len(stale) == 1 else 'these'} "
                  "changed since it was computed (or was not recorded), so the numbers may differ from what the "
                  f"current code computes; `make reports PROFILE={ctx.profile}` recomputes them.", ""]
    if other:
        lines += [f"**Note:** {', '.join(other)}: computed by another commit than HEAD (or with uncommitted changes); "
                  "the code their keys include is unchanged, so the current code reuses them (`FORCE=1` recomputes).",
                  ""]
    return lines


def write_index(ctx: Context) -> Path:
    """Write ``reports/<profile>/index.md`` (every table and figure) and the top-level ``reports/index.md``.

    The index opens with the setup, the models' backbones and the provenance of every rendered result
    (:func:`provenance_section`); under each artifact a line names the run that computed it and, in bold, any
    flag of :func:`result_flags`.
    """
    write_reading(ctx)
    manifest = _load_manifest(ctx)
    head = git_commit(short=False)
    lines = [f"# vppkit report — profile `{ctx.profile}`", "",
             "Every number below was computed by the run named under it (profile, seed, commit, time), "
             "except values labelled **paper**, which are quoted from the source documents.", ""]
    lines += ["See also: [reading of the results](reading.md) (which of the paper's trends hold in this run).", ""]
    lines += setup_section(ctx)
    lines += models_section(ctx)
    lines += provenance_section(ctx, manifest, head, list(ARTIFACTS))
    for name in ARTIFACTS:
        if name not in manifest:
            continue
        info = manifest[name]
        for e in info["entries"]:
            links = " · ".join(f"[{fmt}]({path})" for fmt, path in e["files"].items())
            lines += [f"## {e['title']}", "", links, ""]
            if e.get("inline"):
                lines += [e["inline"], ""]
            if e.get("caption"):
                lines += [e["caption"], ""]
        lines += [f"<sub>{name}: {_provenance_line(info.get('provenance', {}))}</sub>", ""]
        flags = result_flags(info, head)
        if flags:
            lines += [f"**Warning ({name}):** " + "; ".join(flags) + ".", ""]
    path = atomic_write_text(ctx.reports_dir / "index.md", "\n".join(lines))
    _write_top_index(ctx.reports_dir.parent)
    return path


def _write_top_index(root: Path = REPORTS_ROOT) -> Path:
    """``<root>/index.md``: every profile report under ``root`` and each of its tables and figures."""
    profiles = sorted(p.parent.name for p in root.glob("*/index.md"))
    lines = ["# vppkit reports", "", "One report per profile that was run (`make reports PROFILE=...`).", ""]
    for prof in profiles:
        lines.append(f"- [{prof}]({prof}/index.md)")
        manifest_path = root / prof / "manifest.json"
        if manifest_path.exists():
            for name, info in json.loads(manifest_path.read_text()).items():
                for e in info["entries"]:
                    links = ", ".join(f"[{fmt}]({prof}/{path})" for fmt, path in e["files"].items())
                    lines.append(f"  - {e['title']}: {links}")
    if (root / "bench.md").exists():
        lines += ["", "- [speed benchmark](bench.md)"]
    return atomic_write_text(root / "index.md", "\n".join(lines) + "\n")
