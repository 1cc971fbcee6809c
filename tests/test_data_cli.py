"""``vppkit data synth | davis | validate``."""

from __future__ import annotations

import json

import pytest

from vppkit.cli import main
from vppkit.data.ytvis import load_ytvis
from vppkit.utils.paths import davis_root


def test_synth_pool_style(tmp_path, capsys):
    """``--style pool`` writes the shared-appearance-pool set (generator v3) and records the style."""
    out = tmp_path / "p"
    assert main(["data", "synth", "--out", str(out), "--videos", "2", "--frames", "4", "--size", "64", "64",
                 "--style", "pool"]) == 0
    ds = load_ytvis(out / "instances.json")
    assert ds["info"]["generator"]["style"] == "pool" and ds["categories"][0]["name"] == "rimmed_disc"
    capsys.readouterr()


def test_synth_then_validate(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["data", "synth", "--out", str(out), "--videos", "2", "--seed", "7", "--frames", "5",
                 "--size", "64", "80"]) == 0
    ds = load_ytvis(out / "instances.json")
    assert len(ds["videos"]) == 2 and ds["videos"][0]["length"] == 5
    assert (ds["videos"][0]["height"], ds["videos"][0]["width"]) == (64, 80)
    assert ds["info"]["generator"]["seed"] == 7
    capsys.readouterr()
    assert main(["data", "validate", str(out / "instances.json"), "--frames", str(out / "JPEGImages")]) == 0
    assert capsys.readouterr().out.startswith("OK")
    # break it: an annotation for an unknown video -> exit 1 and the id in the message
    bad = json.loads((out / "instances.json").read_text())
    bad["annotations"][0]["video_id"] = 999
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["data", "validate", str(tmp_path / "bad.json")]) == 1
    err = capsys.readouterr().err
    assert "bad.json" in err and "unknown video id 999" in err
    # missing frames folder content -> exit 1
    assert main(["data", "validate", str(out / "instances.json"), "--frames", str(tmp_path / "nowhere")]) == 1
    assert "missing frame file" in capsys.readouterr().err


def test_davis_command(tmp_path, capsys):
    root = davis_root()
    if not (root / "ImageSets" / "240p" / "val.txt").is_file():
        pytest.skip(f"DAVIS subset not found at {root} (set VPPKIT_DAVIS_ROOT)")
    out = tmp_path / "val.json"
    assert main(["data", "davis", "--root", str(root), "--split", "val", "--out", str(out)]) == 0
    ds = load_ytvis(out, frames_root=root / "JPEGImages" / "240p")
    assert sum(v["length"] for v in ds["videos"]) == 434
    assert main(["data", "davis", "--root", str(tmp_path), "--split", "val", "--out", str(tmp_path / "x.json")]) == 1
    assert "not found" in capsys.readouterr().err
