"""The training command under torchrun: two CPU processes (gloo) train one DDP model, and it is the model a single
process trains at twice the batch on the same samples; rank 0 writes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vppkit.config import load_config
from vppkit.data.ytvis import encode_mask, save_ytvis
from vppkit.engine.checkpoint import load_checkpoint
from vppkit.engine.train import train

SIZE = 96  # the smoke profile's model.img_size: frames are not resized


def _two_video_set(root: Path) -> Path:
    """Two videos of two frames, one instance visible in every frame (textured box on a noisy background).

    Built so that the data-parallel and the single-process batch are the same computation:
    - 2 frames per video and clips of 2 frames: ``sample_clip`` can only return [0, 1], so the per-rank random
      draws of the clip do not matter (flips are switched off in the overrides);
    - one instance in every frame: the losses are normalised per process batch (CE over the queries weighted by the
      no-object coefficient, mask losses / number of GT masks), so the mean of the two ranks' losses equals the
      loss of the joint batch only when every frame has the same number of instances.
    """
    rng = np.random.default_rng(0)
    videos, annotations = [], []
    for vi in range(2):
        names, segs = [], []
        for t in range(2):
            img = rng.integers(0, 90, size=(SIZE, SIZE, 3), dtype=np.uint8)
            m = np.zeros((SIZE, SIZE), dtype=bool)
            top, left = 10 + 20 * vi + 6 * t, 15 + 30 * vi
            m[top:top + 40, left:left + 36] = True
            img[m] = rng.integers(150, 256, size=(int(m.sum()), 3), dtype=np.uint8)
            name = f"v{vi}/{t:05d}.png"
            (root / "frames" / f"v{vi}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / "frames" / name)
            names.append(name)
            segs.append(encode_mask(m))
        videos.append({"id": vi + 1, "name": f"v{vi}", "file_names": names, "height": SIZE, "width": SIZE,
                       "length": 2})
        annotations.append({"id": vi + 1, "video_id": vi + 1, "category_id": 1, "iscrowd": 0, "segmentations": segs,
                            "areas": [40.0 * 36] * 2, "bboxes": [None, None]})
    ds = {"info": {}, "licenses": [], "videos": videos, "annotations": annotations,
          "categories": [{"id": 1, "name": "box", "supercategory": "shape"}]}
    return save_ytvis(ds, root / "instances.json")


def _overrides(root: Path, batch: int) -> list[str]:
    return [f"data.root={root}", "data.source=ytvis", "data.train_json=instances.json", "data.train_frames=frames",
            f"train.batch={batch}", "train.flip=false", "train.dense.steps=2", "train.dense.ckpt_every=2"]


def _diff(a: dict, b: dict) -> tuple[float, float]:
    """(max |a - b|, share of elements with |a - b| > 1e-6) over the floating-point tensors of two state dicts."""
    assert a.keys() == b.keys()
    d = torch.cat([(a[k].double() - b[k].double()).abs().flatten() for k in a if a[k].is_floating_point()])
    return float(d.max()), float((d > 1e-6).double().mean())


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process_at_twice_the_batch(tmp_path, monkeypatch):
    """DistributedSampler splits one epoch's permutation over the ranks (rank r takes positions r, r + 2, ...),
    so with 2 samples, world 2 x batch 1 and world 1 x batch 2 see the same two clips at every step; DDP averages
    the ranks' gradients, which for these clips equals the gradient of the joint batch. Same weights, up to float
    summation order."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        torchrun = shutil.which("torchrun")
    if not torchrun:
        pytest.skip("torchrun not found next to the interpreter")
    data = tmp_path / "data"
    _two_video_set(data)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", VPPKIT_CACHE=str(tmp_path / "cache"))
    out = tmp_path / "ddp"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "vppkit", "train", "--config", "smoke",
           "--stage", "dense", "--out", str(out), "--no-progress", *_overrides(data, batch=1)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = load_checkpoint(out / "model_final.pt")
    assert ck["step"] == 2
    assert not any(k.startswith("module.") for k in ck["model"]), "checkpoint must hold the unwrapped model"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "checkpoint_last.pt", "config.json", "metrics.csv", "model_final.pt"]

    monkeypatch.setenv("VPPKIT_CACHE", str(tmp_path / "cache"))
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    torch.set_num_threads(1)
    single = train(load_config("smoke", _overrides(data, batch=2)), stage="dense", out_dir=tmp_path / "single",
                   device="cpu", progress=False)
    ref = load_checkpoint(single["checkpoint"])["model"]
    # Equal up to float summation order. AdamW's first steps are ~lr g / (|g| + eps): parameters whose gradient is
    # zero in exact arithmetic (attention key biases: softmax ignores a shift shared by all keys) get rounding noise
    # of ~1e-10 scaled to steps of ~1e-5 (lr 1e-3), different in each run; so all elements within 1e-4 (a tenth of
    # one full step) and at most 0.1 % of them beyond 1e-6.
    worst, share = _diff(ck["model"], ref)
    assert worst < 1e-4 and share < 1e-3, (worst, share)
    # the check discriminates: one process at the per-rank batch (one clip per step) ends elsewhere
    half = train(load_config("smoke", _overrides(data, batch=1)), stage="dense", out_dir=tmp_path / "half",
                 device="cpu", progress=False)
    worst, share = _diff(load_checkpoint(half["checkpoint"])["model"], ref)
    assert worst > 1e-3 and share > 0.5, (worst, share)
