"""The install files agree with each other (a drifting lock is a bug users hit first)."""

import re
from pathlib import Path

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
