"""The install and config files agree with each other and with the sources (a drifting lock is a bug users hit
first; a paper-scale profile that drifts from the official schedule is one they find after days of GPU time)."""

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines: list[str], where: str) -> dict[str, Version]:
    """{canonical name: version} of ``name==version`` requirement lines (exact pins only)."""
    pins = {}
    for line in lines:
        req = Requirement(line)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"{where}: {line!r} is not an exact pin"
        name = canonicalize_name(req.name)
        assert name not in pins, f"{where}: {name} pinned twice"
        pins[name] = Version(spec[0].version)
    return pins


def _lock_lines() -> list[str]:
    text = (ROOT / "requirements" / "lock.txt").read_text()
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _lock_python() -> str:
    """The Python version the lock was resolved for, from its header ("... (Python 3.11, ...)")."""
    m = re.search(r"Python (\d+\.\d+)", (ROOT / "requirements" / "lock.txt").read_text())
    assert m, "requirements/lock.txt: the header must name the Python version of the tested set"
    return m.group(1)


def _environment() -> tuple[str, list[str]]:
    """(conda python version, pip requirement lines) of environment.yml."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = [d for d in deps if isinstance(d, str) and re.fullmatch(r"python\s*=+\s*\S+", d)]
    pip = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(python) == 1 and len(pip) == 1, "environment.yml: one python=X.Y and one pip: section"
    return re.split(r"=+", python[0].replace(" ", ""))[1], pip[0]


def test_pyproject_ranges_admit_the_lock():
    """Every requirement of pyproject.toml (core and every extra: the lock includes them all) is pinned in the lock
    at a version its range admits, and requires-python admits the lock's Python."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (the suite's interpreter); optional on 3.10
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins(_lock_lines(), "lock.txt")
    python = _lock_python()
    reqs = list(project["dependencies"]) + [r for extra in project.get("optional-dependencies", {}).values()
                                            for r in extra]
    assert reqs
    env = {"python_version": python, "python_full_version": f"{python}.0"}
    for line in reqs:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"pyproject.toml requires {line!r}, which requirements/lock.txt does not pin"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"lock pins {name}=={pins[name]}, outside pyproject.toml's {line!r}")
    assert SpecifierSet(project["requires-python"]).contains(python), (
        f"lock resolved for Python {python}, outside requires-python {project['requires-python']!r}")


def test_environment_yml_mirrors_lock():
    """environment.yml installs exactly the lock's pins, for the lock's Python."""
    python, pip = _environment()
    assert python == _lock_python()
    assert _pins(pip, "environment.yml") == _pins(_lock_lines(), "lock.txt")


def test_lock_pairs_torch_with_its_torchvision():
    """torchvision 0.N is built against torch 2.(N - 15) (0.19 <-> 2.4, ..., 0.29 <-> 2.14); another pair fails
    at import (binary ops) or silently mixes kernels."""
    pins = _pins(_lock_lines(), "lock.txt")
    torch_v, tv = pins["torch"], pins["torchvision"]
    assert (torch_v.major, torch_v.minor) == (2, tv.minor - 15) and tv.major == 0, (torch_v, tv)


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
    # the paper's host (ViT-Adapter + Mask2Former, issue 13) with Mask2Former's point-sampled losses
    assert cfg["model"]["host"] == "adapter" and cfg["model"]["tracker"] == "rovis" and cfg["model"]["dec_layers"] == 9 and cfg["model"]["num_queries"] == 100
    assert cfg["loss"]["num_points"] == 12544 and cfg["loss"]["importance_sample_ratio"] == 0.75
