"""Backbone features of the dense stage's training frames, computed once and kept on disk (issue 15).

In the dense stage on a frozen backbone (``train.freeze_backbone``, the ``davis`` profile) the backbone runs under
``torch.no_grad()`` and never changes, so its output for frame t of video v, flipped or not, is the same at every
step. With ``train.dense.feature_cache: true`` the training loop (:func:`vppkit.engine.train.train`) computes the
output of every (frame, flip) its steps will visit once, before the first step, stores it here, and trains the
pyramid + decoder on the stored outputs: the step's batches, flips, seeds and loss are those of the uncached run
(:class:`vppkit.engine.train.StepBatches` with a :class:`FeatureCache`), so both give the same weights up to float
tolerance (tests/test_feature_cache.py).

What one entry holds (plain host; :meth:`vppkit.models.vis.model.VISModel.run_backbone` in training mode, i.e.
masked execution with the dense pruner, as the uncached step runs it):

- ``tokens``: (N, C) float32 patch tokens after the final norm (N = H_p · W_p, C the ViT width);
- ``prefix``: (P, C) float32 CLS / register tokens after the final norm;
- ``grid``: (H_p, W_p); ``depth``: the ViT depth (for the dense keep record);
- ``seconds`` / ``cpu_seconds``: its share of the wall / process-CPU time of the batch that built it (frame
  decoding and resizing, flip, the backbone forward, the write), so a run can report what its cache cost even when
  another run built it (:meth:`FeatureCache.cost`).

Random augmentation: the dense batches' only random augmentation is the horizontal flip
(:func:`vppkit.engine.train._batch`; :class:`vppkit.data.video.VideoFrames` resizes deterministically, without
crops or colour jitter), so a frame has at most 2 entries. A backbone that is itself random in training mode
(drop path, dropout, patch dropout > 0) gives another output at every visit and is refused
(:func:`stochastic_modules`).

Key (the folder name): sha256 over the backbone's weights (every tensor of ``backbone.`` except the pruner's,
so the pretrained checkpoint, a ``--init`` checkpoint or a random init are told apart by what they hold),
``model.arch``, the input size (H, W), the data json's bytes, the frames folder with the size and mtime of every
frame file the json names, the version of the code that computes the features (:data:`FEATURE_CODE`) and the torch
/ timm versions. The flip, the video id and the frame index name the entry inside the folder.

Layout: ``cache_dir()/features/<key>/meta.json`` (what the key hashes) and ``<key>/<video id>/<t>_<flip>.pt``
(:func:`torch.save` of a dict of tensors, written atomically: a killed build leaves whole entries only). Size: N · C
· 4 bytes per entry (DAVIS train at 168x294 with ViT-S/14: 252 · 384 · 4 B = 0.39 MB, at most 2 x 932 entries =
0.72 GB); stored in float32 so that a cached run matches the uncached one (no float16 rounding of the features).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Iterable, Sequence

import timm
import torch
from timm.layers import DropPath, PatchDropout
from torch import nn
from tqdm import tqdm

from vppkit.config import img_size_hw
from vppkit.data.video import VideoFrames
from vppkit.models.records import BackboneOutput, KeepRecord
from vppkit.utils.io import atomic_path, atomic_write_json
from vppkit.utils.paths import cache_dir
from vppkit.utils.provenance import code_version

#: The code that turns a frame into its cached features: frame reading and resizing, the VIS model's
#: normalisation and backbone call, the ViT, its blocks and records, the dense pruner. Part of the cache key.
FEATURE_CODE = ("vppkit.data.video", "vppkit.data.ytvis", "vppkit.models.vis.model", "vppkit.models.vit",
                "vppkit.models.blocks", "vppkit.models.records", "vppkit.models.pruning.base",
                "vppkit.engine.feature_cache")

#: One cache entry: (video index in the json, frame index, flipped).
Entry = tuple[int, int, bool]


def check_feature_cache(cfg: dict, stage: str, tcfg: dict) -> bool:
    """Whether the stage asks for the feature cache (``train.<stage>.feature_cache``), refusing settings where the
    backbone's output is not fixed.

    Args:
        cfg: resolved profile; stage: "dense" / "sparse"; tcfg: the stage's ``train`` section
            (:func:`vppkit.engine.train.stage_config`).

    Raises:
        ValueError: the cache is asked for in the sparse stage (the pruner inside the backbone trains and its keep
            masks change the features), with ``freeze_backbone`` false (the backbone trains), or with the
            adapter host (the ViT-Adapter, part of the backbone, trains in the dense stage and feeds the ViT).
    """
    if not bool(tcfg.get("feature_cache", False)):
        return False
    key = f"train.{stage}.feature_cache"
    if stage != "dense":
        raise ValueError(f"{key}: the feature cache serves the dense stage only; in the {stage} stage the pruner "
                         "runs inside the backbone (its gates train, its keep masks change the features)")
    if not bool(tcfg["freeze_backbone"]):
        raise ValueError(f"{key} needs a frozen backbone (train.freeze_backbone / train.dense.freeze_backbone "
                         "true): a trained backbone changes its output at every step")
    host = str(cfg["model"].get("host") or "plain")
    if host != "plain":
        raise ValueError(f"{key}: model.host {host!r} is not supported; the adapter host trains the ViT-Adapter "
                         "(spatial prior, injectors, extractors) in the dense stage, so the ViT's output is not "
                         "fixed; use model.host: plain or feature_cache: false")
    return True


def stochastic_modules(module: nn.Module) -> list[str]:
    """Names of the sub-modules of ``module`` that draw random numbers in training mode: dropout with p > 0,
    timm ``DropPath`` with ``drop_prob`` > 0, timm ``PatchDropout`` with ``prob`` > 0 (their output cannot be
    cached)."""
    out = []
    for name, m in module.named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            out.append(f"{name} (dropout p={m.p})")
        elif isinstance(m, DropPath) and m.drop_prob:
            out.append(f"{name} (drop path {m.drop_prob})")
        elif isinstance(m, PatchDropout) and m.prob > 0:
            out.append(f"{name} (patch dropout {m.prob})")
    return out


def backbone_digest(model: nn.Module) -> str:
    """sha256 (hex) of the backbone's weights: every parameter and buffer of ``model.backbone`` except the pruner's
    (name, dtype, shape and bytes, names sorted)."""
    h = hashlib.sha256()
    for name, t in sorted(model.backbone.state_dict().items()):
        if ".pruner." in f".{name}":
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _frames_digest(frames: VideoFrames) -> str:
    """sha256 of the data json's bytes and of (path, size, mtime) of every frame file it names."""
    h = hashlib.sha256(frames.json_path.read_bytes())
    h.update(str(Path(frames.frames_root).resolve()).encode())
    for video in frames.videos:
        for name in video["file_names"]:
            path = Path(frames.frames_root) / name
            st = path.stat() if path.exists() else None
            h.update(f"{name}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n".encode())
    return h.hexdigest()


class FeatureCache:
    """The stored backbone outputs of one (backbone weights, input size, data set, code) combination.

    Build it with :meth:`for_model`; :meth:`ensure` computes the missing entries; :meth:`output` stacks entries
    into the :class:`~vppkit.models.records.BackboneOutput` the model's head consumes.

    Args:
        folder: ``<root>/<key>``; frames: the training frames (video ids name the entry folders); key: the hash;
            meta: what the key hashes (written to ``meta.json``).
    """

    def __init__(self, folder: Path, frames: VideoFrames, key: str, meta: dict) -> None:
        self.folder, self.frames, self.key, self.meta = Path(folder), frames, key, meta

    @classmethod
    def for_model(cls, model: nn.Module, frames: VideoFrames, mcfg: dict, root: str | Path | None = None
                  ) -> "FeatureCache":
        """The cache of ``model``'s backbone on ``frames`` (module docstring: the key).

        Args:
            model: the VIS model (:class:`~vppkit.models.vis.model.VISModel`, plain host) as it will train.
            frames: the training frames at ``mcfg["img_size"]``.
            mcfg: the config's ``model`` section (``arch``, ``img_size``).
            root: parent folder (default ``cache_dir()/features``).

        Raises:
            ValueError: a host other than plain, or a backbone that is random in training mode
                (:func:`stochastic_modules`).
        """
        if getattr(model, "host", "plain") != "plain":
            raise ValueError(f"feature cache: model.host {model.host!r} is not supported (plain host only)")
        noisy = stochastic_modules(model.backbone)
        if noisy:
            raise ValueError("feature cache: the backbone is random in training mode, its output cannot be cached: "
                             + ", ".join(noisy[:4]) + (" ..." if len(noisy) > 4 else "")
                             + " (set model.backbone_kwargs drop_path_rate / drop_rate 0, or feature_cache false)")
        meta = {"format": 1, "weights_sha256": backbone_digest(model), "arch": str(mcfg["arch"]),
                "img_size": list(img_size_hw(mcfg["img_size"])), "data_json": str(frames.json_path),
                "frames_root": str(frames.frames_root), "frames_sha256": _frames_digest(frames),
                "code_version": code_version(*FEATURE_CODE), "torch": torch.__version__, "timm": timm.__version__,
                "mode": "training mode (masked execution, dense pruner), torch.no_grad", "dtype": "float32"}
        key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
        folder = Path(root) if root is not None else cache_dir() / "features"
        return cls(folder / key, frames, key, meta)

    def path(self, entry: Entry) -> Path:
        """File of ``entry`` = (video index, frame index, flip): ``<key>/<video id>/<t>_<0|1>.pt``."""
        vi, t, flip = entry
        return self.folder / str(self.frames.videos[vi]["id"]) / f"{int(t)}_{int(bool(flip))}.pt"

    def missing(self, entries: Iterable[Entry]) -> list[Entry]:
        """The entries not stored yet, sorted."""
        return sorted(e for e in set(entries) if not self.path(e).is_file())

    def ensure(self, model: nn.Module, entries: Iterable[Entry], device: str | torch.device = "cpu",
               batch: int = 8, progress: bool = False) -> dict:
        """Compute and store the missing ``entries`` with ``model``'s backbone, ``batch`` frames per forward.

        The backbone runs as in an uncached training step: the model in training mode,
        :meth:`~vppkit.models.vis.model.VISModel.run_backbone` under ``torch.no_grad()``, uint8 frames from
        :meth:`VideoFrames.frame` flipped along W when the entry says so. The model's train / eval mode is
        restored afterwards.

        Returns:
            ``{"entries": n asked, "built": n computed now, "seconds": wall s, "cpu_seconds": process CPU s}``.
        """
        entries = sorted(set(entries))
        todo = self.missing(entries)
        atomic_write_json(self.folder / "meta.json", self.meta)
        t0, c0 = time.perf_counter(), time.process_time()
        was_training = model.training
        model.train()
        bar = tqdm(total=len(todo), desc="feature cache", unit="frame", disable=not progress)
        try:
            for i in range(0, len(todo), batch):
                chunk = todo[i:i + batch]
                ts, cs = time.perf_counter(), time.process_time()
                imgs = []
                for vi, t, flip in chunk:
                    img = self.frames.frame(vi, t)
                    imgs.append(img.flip(-1) if flip else img)
                with torch.no_grad():
                    bb = model.run_backbone(torch.stack(imgs).to(device))
                tokens, prefix = bb.tokens.float().cpu(), bb.prefix.float().cpu()
                depth = int(bb.keep.depth)
                per_wall = (time.perf_counter() - ts) / len(chunk)
                per_cpu = (time.process_time() - cs) / len(chunk)
                for j, entry in enumerate(chunk):
                    item = {"tokens": tokens[j].clone(), "prefix": prefix[j].clone(),
                            "grid": torch.tensor(bb.grid, dtype=torch.int64), "depth": torch.tensor(depth),
                            "seconds": torch.tensor(per_wall, dtype=torch.float64),
                            "cpu_seconds": torch.tensor(per_cpu, dtype=torch.float64)}
                    with atomic_path(self.path(entry)) as tmp:
                        torch.save(item, tmp)
                bar.update(len(chunk))
        finally:
            bar.close()
            model.train(was_training)
        return {"entries": len(entries), "built": len(todo), "seconds": time.perf_counter() - t0,
                "cpu_seconds": time.process_time() - c0}

    def load(self, entry: Entry) -> dict:
        """The stored dict of ``entry`` (module docstring).

        Raises:
            FileNotFoundError: not built (names the file, video id, frame and flip).
            ValueError: unreadable file (names it).
        """
        path = self.path(entry)
        if not path.is_file():
            vi, t, flip = entry
            raise FileNotFoundError(f"feature cache entry missing: {path} (video id {self.frames.videos[vi]['id']}, "
                                    f"frame {t}, flip {bool(flip)}); FeatureCache.ensure builds it")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a foreign or damaged file: say which
            raise ValueError(f"feature cache entry {path} cannot be read ({exc}); delete it to rebuild") from exc

    def output(self, entries: Sequence[Entry]) -> BackboneOutput:
        """The backbone output of a batch of B frames, as :meth:`VISModel.run_backbone` returns it in a dense
        training step: ``tokens`` (B, N, C), ``prefix`` (B, P, C), ``grid``, a dense keep record (every block
        processes all N tokens), ``state`` None, ``aux_loss`` 0, no intermediates."""
        items = [self.load(e) for e in entries]
        grid = tuple(int(v) for v in items[0]["grid"])
        tokens = torch.stack([it["tokens"] for it in items])
        keep = KeepRecord.dense(len(items), int(items[0]["depth"]), grid)
        keep.meta["execution"] = "masked"
        return BackboneOutput(tokens=tokens, grid=grid, prefix=torch.stack([it["prefix"] for it in items]),
                              intermediates=None, keep=keep, state=None, aux_loss=tokens.new_zeros(()))

    def cost(self, entries: Iterable[Entry]) -> dict:
        """What building ``entries`` cost when they were built (sum of their stored ``seconds`` / ``cpu_seconds``),
        whoever built them; ``missing``: entries not stored (not counted)."""
        wall = cpu = 0.0
        missing = 0
        for e in set(entries):
            if not self.path(e).is_file():
                missing += 1
                continue
            item = torch.load(self.path(e), map_location="cpu", weights_only=True, mmap=True)  # scalars only
            wall += float(item["seconds"])
            cpu += float(item["cpu_seconds"])
        return {"seconds": wall, "cpu_seconds": cpu, "missing": missing}
