"""The install and config files agree with each other and with the sources (a drifting lock is a bug users hit
first; a paper-scale profile that drifts from the official schedule is one they find after days of GPU time)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lock_pins():
    pins = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_lock_pins_torch_stack():
    pins = _lock_pins()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert "timm" in pins and "pycocotools" in pins and "fvcore" in pins


def test_environment_yml_mirrors_lock():
    env = (ROOT / "environment.yml").read_text()
    env_pins = {m.group(1).lower().replace("_", "-"): m.group(2)
                for m in re.finditer(r"^\s+- ([A-Za-z0-9_.\-]+)==(\S+)$", env, re.M)}
    assert env_pins == _lock_pins()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and re.search(r"^make test$", ci, re.M)


@pytest.mark.parametrize("profile", ["ytvis19_tiny", "ytvis19_small", "ytvis21_tiny", "ytvis21_small"])
def test_paper_scale_profiles_follow_the_official_schedule(profile):
    """vpp-notes §7: 6 epochs per stage over annotated key frames, refs within +-5, 1 sample / GPU, lr 2.5e-5,
    backbone lr x0.1, grad clip 0.01, decay at epoch 4; steps derived from the epochs (none hard-coded)."""
    from vppkit.config import load_config
    from vppkit.engine.train import stage_config, steps_for

    cfg = load_config(profile)
    for stage, frames in (("dense", 2), ("sparse", 3)):
        t = stage_config(cfg, stage)
        assert t["sample_unit"] == "frame" and t["epochs"] == 6 and t["steps"] is None, (stage, t)
        assert t["ref_window"] == 5 and t["ref_order"] == "random" and int(t["clip_frames"]) == frames
        assert t["batch"] == 1 and t["lr"] == 2.5e-5 and t["backbone_lr_mult"] == 0.1 and t["grad_clip"] == 0.01
        assert abs(t["decay_at"] - 4 / 6) < 1e-3
        assert steps_for(t, 1000, 8) == 750  # ceil(6 x 1000 / 8)
