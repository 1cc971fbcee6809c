"""Which data a profile trains / evaluates on: the config's ``data`` section -> a YouTube-VIS json + frames folder.

- ``source: synthetic``: generated on first use under ``cache_dir()/synthetic/<split>-<hash>`` with
  :func:`vppkit.data.synthetic.generate_synthetic` (train: ``data.seed``, val: ``data.val_seed``);
- ``source: davis``: ``data.root`` (or :func:`vppkit.utils.paths.davis_root`) converted once with
  :func:`vppkit.data.davis.davis_to_ytvis` (class-agnostic) to ``cache_dir()/davis/<split>-<hash>.json``;
- ``source: ytvis``: ``data.<split>_json`` and ``data.<split>_frames`` (paths, relative to ``data.root``).
"""

from __future__ import annotations

from pathlib import Path

from vppkit.config import config_hash
from vppkit.data.davis import davis_to_ytvis
from vppkit.data.synthetic import GENERATOR_VERSION, JSON_NAME, generate_synthetic
from vppkit.data.ytvis import save_ytvis
from vppkit.utils.paths import cache_dir, davis_root

__all__ = ["resolve_split"]


def resolve_split(dcfg: dict, split: str, progress: bool = False) -> tuple[Path, Path]:
    """(json path, frames root) of ``split`` ("train" / "val") for the ``data`` config section.

    ``dcfg``: a resolved ``data`` section (:class:`vppkit.config.DataConfig`; every key present).

    Raises:
        ValueError: unknown ``data.source``.
        FileNotFoundError: a configured path does not exist (named).
    """
    source = dcfg["source"]
    if source == "synthetic":
        key = "num_videos" if split == "train" else "num_val_videos"
        args = dict(num_videos=int(dcfg[key]), seed=int(dcfg["seed"] if split == "train" else dcfg["val_seed"]),
                    num_frames=int(dcfg["num_frames"]), height=int(dcfg["height"]), width=int(dcfg["width"]),
                    style=str(dcfg.get("synthetic_style", "hues")))  # absent in configs saved before v3
        if args["style"] == "mixed":     # only then part of the key (hues / pool keys stay as they were)
            args["pool_fraction"] = float(dcfg.get("pool_fraction", 0.5))
        # the generator version is part of the key: a changed generator never reuses stale cached frames
        out = cache_dir() / "synthetic" / f"{split}-{config_hash({**args, 'generator': GENERATOR_VERSION})}"
        js = out / JSON_NAME
        if not js.exists():
            generate_synthetic(out, progress=progress, **args)
        return js, out / "JPEGImages"
    if source == "davis":
        root = Path(dcfg["root"] or davis_root())
        if not (root / "JPEGImages").is_dir():
            raise FileNotFoundError(f"DAVIS folder {root} has no JPEGImages/ (set data.root or DATA=...)")
        res = dcfg["res"]
        dsplit = dcfg[f"{split}_split"]
        js = cache_dir() / "davis" / f"{dsplit}-{config_hash({'root': str(root.resolve()), 'res': res})}.json"
        if not js.exists():
            ds = davis_to_ytvis(root, dsplit, res=res, progress=progress)
            ds.setdefault("info", {})["frames_root"] = str((root / "JPEGImages" / res).resolve())
            save_ytvis(ds, js)
        return js, root / "JPEGImages" / res
    if source == "ytvis":
        root = Path(dcfg["root"] or ".")
        js, frames = root / dcfg[f"{split}_json"], root / dcfg[f"{split}_frames"]
        for p in (js, frames):
            if not p.exists():
                raise FileNotFoundError(f"YouTube-VIS {split} path {p} not found (data.root={root})")
        return js, frames
    raise ValueError(f"unknown data.source {source!r} (synthetic, davis, ytvis)")
