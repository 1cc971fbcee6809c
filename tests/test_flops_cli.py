"""``vppkit flops`` command."""

from __future__ import annotations

import json

import pytest

from vppkit.cli import main


def test_flops_dense_deit_small_md(capsys):
    assert main(["flops", "--arch", "deit_small", "--img-size", "224", "--include-head"]) == 0
    out = capsys.readouterr().out
    assert "GMACs (1 multiply-add = 1" in out
    assert "| deit_small" in out and "4.599" in out  # DeiT-S 4.6 GMACs


def test_flops_json_measured_matches_analytic(tmp_path, capsys):
    outs = {}
    for counter in ("analytic", "torch"):
        target = tmp_path / f"{counter}.json"
        assert main(["flops", "--arch", "deit_tiny", "--img-size", "64", "96", "--method", "vpp", "--keep", "0.6",
                     "--rho", "0.7", "--counter", counter, "--format", "json", "--out", str(target)]) == 0
        outs[counter] = json.loads(target.read_text())
    capsys.readouterr()
    a, t = outs["analytic"]["rows"][0], outs["torch"]["rows"][0]
    assert a["grid"] == "4x6" and a["overhead_GMACs"] > 0 and a["overhead_GMACs"] == t["overhead_GMACs"]
    # measured on rounded token counts of the nominal schedule: close to the fractional analytic count
    assert t["backbone_GMACs"] == pytest.approx(a["backbone_GMACs"], rel=0.05)
    assert a["total_GMACs"] < a["dense_GMACs"]
    assert outs["analytic"]["schedule"]["params"]["map_keep"] == 0.6


def test_flops_block_ratios_file(tmp_path, capsys):
    ratios = [1.0, 0.8, 0.8] + [0.5] * 9
    f = tmp_path / "ratios.json"
    f.write_text(json.dumps({"block_ratios": ratios}))
    assert main(["flops", "--arch", "deit_tiny", "--img-size", "224", "--method", "svit", "--block-ratios", str(f),
                 "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert row["PKR"] == pytest.approx(sum(ratios) / 12)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([0.5] * 5))
    assert main(["flops", "--arch", "deit_tiny", "--img-size", "224", "--method", "svit",
                 "--block-ratios", str(bad)]) == 2
    assert "5 block ratios" in capsys.readouterr().err


def test_flops_errors(capsys):
    assert main(["flops", "--arch", "deit_tiny", "--img-size", "100"]) == 2
    assert "not a multiple of the patch size" in capsys.readouterr().err
