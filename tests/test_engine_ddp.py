"""The training command under torchrun: two CPU processes (gloo) train one DDP model; rank 0 writes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vppkit.engine.checkpoint import load_checkpoint


@pytest.mark.slow
def test_torchrun_two_processes_train_one_model(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        torchrun = shutil.which("torchrun")
    if not torchrun:
        pytest.skip("torchrun not found next to the interpreter")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VPPKIT_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "run"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "vppkit", "train", "--config", "smoke",
           "--stage", "dense", "--out", str(out), "--no-progress", "train.dense.steps=2", "train.dense.ckpt_every=2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = load_checkpoint(out / "model_final.pt")
    assert ck["step"] == 2
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert not any(k.startswith("module.") for k in ck["model"]), "checkpoint must hold the unwrapped model"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "checkpoint_last.pt", "config.json", "metrics.csv", "model_final.pt"]
