"""The prepared GPU check (scripts/gpu_check.sh -> vppkit.bench.gpu_check): its CPU path runs with tiny sizes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from vppkit.bench import gpu_check

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_tiny_cpu_path(tmp_path):
    assert gpu_check.main(["--device", "cpu", "--tiny", "--train-steps", "1", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["setting"] for s in res["speed"]] == ["fp32", "bf16 autocast"]
    for s in res["speed"]:
        assert {r["variant"] for r in s["rows"]} == {"dense", "real", "ceiling"}
        assert all(r["ms_per_frame"] > 0 for r in s["rows"])
    assert [(t["host"], t["stage"]) for t in res["train"]][:2] == [("vit", "dense"), ("vit", "sparse")]
    assert all(t["ms_per_step"] > 0 and t["peak_MiB"] > 0 for t in res["train"])
    assert "Training steps" in (tmp_path / "gpu_check.md").read_text()


def test_gpu_check_paper_scale_case_and_script():
    (case,) = gpu_check.speed_cases(tiny=False)
    assert case.arch == "vit_small" and case.img_size == (544, 960) and case.batches == (1, 8)   # 34 x 60 = 2040
    script = (ROOT / "scripts" / "gpu_check.sh").read_text()
    assert "vppkit.bench.gpu_check" in script and "timeout" in script
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "gpu_check.sh")]).returncode == 0


def test_gpu_check_refuses_cuda_without_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert gpu_check.main(["--device", "cuda", "--out", str(tmp_path)]) == 2
