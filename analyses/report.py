"""Render saved results into tables/figures and write ``reports/<profile>/index.md`` and ``reports/index.md``.

Renderers (``analyses.tables.TABLES`` and ``analyses.figures.FIGURES``) map an artifact name to a function
``fn(ctx, result) -> list[Entry]``; each entry is one table or figure with its files and a caption. The
entries of every rendered artifact are kept in ``reports/<profile>/manifest.json`` so the index links
everything that was produced, with the provenance (profile, seed, commit, time) of the result behind it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from experiments.common import REPORTS_ROOT, Context
from vppkit.utils.io import atomic_write_json, atomic_write_text


@dataclass
class Entry:
    """One rendered table or figure.

    Attributes:
        kind: "table" or "figure".
        title: heading in the index (paper artifact name, e.g. "IoI by object size (Table 8)").
        files: format -> path (md/csv/tex or png/pdf), relative to the profile's report folder.
        caption: what is shown, with units; says which numbers are the paper's and which are ours.
        inline: Markdown shown in the index (e.g. the table itself, or the figure image link).
    """

    kind: str
    title: str
    files: dict[str, str]
    caption: str = ""
    inline: str = ""
    extra: dict = field(default_factory=dict)


def _manifest_path(ctx: Context) -> Path:
    return ctx.reports_dir / "manifest.json"


def _load_manifest(ctx: Context) -> dict:
    path = _manifest_path(ctx)
    return json.loads(path.read_text()) if path.exists() else {}


def relative(ctx: Context, paths: dict) -> dict[str, str]:
    """Paths relative to the profile's report folder (for links in index.md)."""
    return {fmt: str(Path(p).resolve().relative_to(ctx.reports_dir.resolve())) for fmt, p in paths.items()}


def render_artifact(ctx: Context, name: str, result: dict, kinds: tuple[str, ...] = ("tables", "figures")) -> None:
    """Render one artifact's tables and/or figures and record them in the manifest."""
    from analyses.figures import FIGURES
    from analyses.tables import TABLES

    entries: list[Entry] = []
    if "tables" in kinds and name in TABLES:
        entries += TABLES[name](ctx, result)
    if "figures" in kinds and name in FIGURES:
        entries += FIGURES[name](ctx, result)
    manifest = _load_manifest(ctx)
    kept = [e for e in manifest.get(name, {}).get("entries", [])
            if (e["kind"] == "table" and "tables" not in kinds) or (e["kind"] == "figure" and "figures" not in kinds)]
    manifest[name] = {"entries": kept + [asdict(e) for e in entries], "provenance": result.get("provenance", {})}
    atomic_write_json(_manifest_path(ctx), manifest)


def render_saved(ctx: Context, kind: str) -> None:
    """Render ``kind`` ("tables" or "figures") for every artifact whose result is saved."""
    from experiments.run import ARTIFACTS

    for name in ARTIFACTS:
        result = ctx.load_result(name)
        if result is not None:
            render_artifact(ctx, name, result, kinds=(kind,))


def _provenance_line(prov: dict) -> str:
    keys = ("profile", "seed", "commit", "time_utc", "device", "seconds")
    return ", ".join(f"{k} `{prov[k]}`" for k in keys if prov.get(k) is not None)


def _stage_line(ctx: Context, stage: str) -> str:
    from vppkit.engine.train import stage_config

    t = stage_config(ctx.cfg, stage)
    frames = int(t.get("clip_frames", 3 if stage == "sparse" else 2))
    amount = f"{t['epochs']} epochs ({t.get('sample_unit', 'video')} samples)" if t.get("epochs") is not None \
        else f"{t.get('steps')} steps (one sample per {t.get('sample_unit', 'video')})"
    return f"{amount}, batch {t.get('batch', 1)} per process (clips of {frames} frames), lr {t.get('lr')}"


def setup_section(ctx: Context) -> list[str]:
    """Markdown lines: this profile's setup next to the paper's (what was scaled down for the CPU).

    Our column is read from the resolved profile config (``ctx.cfg``); the paper's column is quoted
    (:data:`analyses.paper_values.PAPER_SETUP`).
    """
    from analyses.paper_values import PAPER_SETUP, PAPER_SETUP_SOURCE
    from vppkit.config import img_size_hw
    from vppkit.models.vit import patch_grid

    cfg, m, d = ctx.cfg, ctx.cfg["model"], ctx.cfg["data"]
    size = img_size_hw(m["img_size"])
    grid = patch_grid(m["arch"], size)
    source = d.get("source", "synthetic")
    if source == "synthetic":
        data = (f"synthetic YouTube-VIS-format videos: {d.get('num_videos')} train / {d.get('num_val_videos')} "
                f"val, {d.get('num_frames')} frames of {d.get('height')}x{d.get('width')} px")
    elif source == "davis":
        data = (f"DAVIS-2016 {d.get('res', '240p')}, class-agnostic: ImageSets `{d.get('train_split', 'train')}` "
                f"-> train, `{d.get('val_split', 'val')}` -> evaluation (every frame)")
    else:
        data = f"YouTube-VIS json {d.get('train_json')} / {d.get('val_json')}"
    pretrained = m.get("pretrained") or m.get("backbone_checkpoint")
    frozen = bool(cfg.get("train", {}).get("freeze_backbone", False))
    lr_mult = cfg.get("train", {}).get("backbone_lr_mult")
    points = int(cfg.get("loss", {}).get("num_points", 0))
    ours = {
        "data": data,
        "backbone": f"plain ViT `{m['arch']}` (no adapter), "
                    + (f"pretrained `{pretrained}`" if pretrained else "trained from scratch"),
        "backbone training": "frozen (pruner modules, pyramid and decoder train)" if frozen
                             else f"trained, lr x{lr_mult} (sparse stage: "
                                  f"x{cfg.get('train', {}).get('sparse', {}).get('backbone_lr_mult', lr_mult)})",
        "input": f"{size[0]}x{size[1]} px, N = {grid[0]}x{grid[1]} tokens (frames resized, no padding)",
        "VIS head": f"MinVIS-style: simple pyramid + masked-attention decoder, {m.get('dim')}-d, "
                    f"{m.get('num_queries')} queries, {m.get('dec_layers')} decoder layers (docs/vis_model.md)",
        "mask loss": f"BCE + Dice on {points} sampled points" if points else "BCE + Dice on every stride-4 pixel",
        "dense stage": _stage_line(ctx, "dense"),
        "sparse stage": _stage_line(ctx, "sparse"),
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
    from analyses.caveats import IMGFOCUS_CAVEAT

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


def write_index(ctx: Context) -> Path:
    """Write ``reports/<profile>/index.md`` (every table and figure) and the top-level ``reports/index.md``."""
    from experiments.run import ARTIFACTS

    from analyses.reading import write_reading

    write_reading(ctx)
    manifest = _load_manifest(ctx)
    lines = [f"# vppkit report — profile `{ctx.profile}`", "",
             "Every number below was computed by the run named under it (profile, seed, commit, time), "
             "except values labelled **paper**, which are quoted from the source documents.", ""]
    lines += ["See also: [reading of the results](reading.md) (which of the paper's trends hold in this run).", ""]
    lines += setup_section(ctx)
    lines += models_section(ctx)
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
