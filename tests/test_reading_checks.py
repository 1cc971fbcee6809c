"""The computed reading's trend checks on hand-made result rows (each verdict can go either way)."""

from __future__ import annotations

from analyses.reading import _ioi_above_pkr, _ioi_vpp_beats_svit


def _rows(vpp55, svit55, vpp40, svit40):
    out = []
    for goal, method, (ioi, pkr) in ((55, "VPP", vpp55), (55, "SViT", svit55), (40, "VPP", vpp40),
                                     (40, "SViT", svit40)):
        out.append({"goal_PKR": goal, "method": method, "IoI": ioi, "PKR": pkr})
    return {"rows": out}


def test_ioi_above_pkr_is_selectivity():
    paper_like = _rows((77.3, 55.0), (63.1, 55.0), (66.7, 40.0), (54.9, 40.0))  # Table 8, YouTube-VIS 2019
    assert _ioi_above_pkr(paper_like)[0] is True
    background_first = _rows((28.7, 53.9), (60.9, 54.2), (21.2, 30.7), (44.9, 35.0))
    verdict, text = _ioi_above_pkr(background_first)
    assert verdict is False and "VPP 55 %: IoI 28.7 vs PKR 53.9" in text
    assert _ioi_above_pkr({"rows": []})[0] is None


def test_ioi_vpp_beats_svit():
    assert _ioi_vpp_beats_svit(_rows((77.3, 55.0), (63.1, 55.0), (66.7, 40.0), (54.9, 40.0)))[0] is True
    assert _ioi_vpp_beats_svit(_rows((60.0, 55.0), (63.1, 55.0), (66.7, 40.0), (54.9, 40.0)))[0] is False


def test_instances_matter_more():
    from analyses.reading import _instances_matter_more

    def rows(fg, bg):
        return {"rows": [{"fraction": 0.5, "condition": "dense", "AP": 50.0},
                         {"fraction": 0.5, "condition": "drop_instance", "AP": fg},
                         {"fraction": 0.5, "condition": "drop_background", "AP": bg}]}

    verdict, text = _instances_matter_more(rows(20.2, 32.8))
    assert verdict is True and "50 % dropped: AP 20.2 (instance) vs 32.8 (background)" in text
    assert _instances_matter_more(rows(64.2, 55.8))[0] is False


def test_oracle_drop_masks_drop_equal_counts_from_the_block_on():
    import pytest
    import torch

    from experiments.oracle import drop_masks, settings_for

    fg = torch.zeros(3, 20, dtype=torch.bool)
    fg[0, :8] = True
    fg[1, :15] = True  # fewer background (5) than half the instance patches (7.5 -> 8): capped at 5
    masks = drop_masks(fg, 0.5, 2, 4, torch.Generator().manual_seed(0))
    assert masks["dense"].all()
    for c in ("drop_instance", "drop_background"):
        assert masks[c][:, :2].all()                             # blocks before the start run dense
        assert torch.equal(masks[c][:, 2], masks[c][:, 3])       # the same patches skip every later block
    dropped_fg = (~masks["drop_instance"][:, 2]).sum(1).tolist()
    dropped_bg = (~masks["drop_background"][:, 2]).sum(1).tolist()
    assert dropped_fg == dropped_bg == [4, 5, 0]
    assert not (~masks["drop_instance"][:, 2] & ~fg).any() and not (~masks["drop_background"][:, 2] & fg).any()
    with pytest.raises(ValueError, match="fractions"):
        settings_for({"oracle": {"fractions": [1.5]}})
    with pytest.raises(ValueError, match="unknown"):
        settings_for({"oracle": {"fraction": 0.5}})


def _fgs(**curves):
    """An FGS result with one backbone per keyword: name -> list of FGS values x_0, x_1, ..."""
    return {"backbones": {name: {"layers": [{"feature": f"x_{i}", "fgs": v} for i, v in enumerate(vals)]}
                          for name, vals in curves.items()}}


def test_fgs_x0_floor():
    from analyses.reading import _fgs_x0_floor

    verdict, text = _fgs_x0_floor(_fgs(dense=[0.9, 0.95], random=[0.531, 0.54]))
    assert verdict is True and "x_0 0.531" in text
    assert _fgs_x0_floor(_fgs(random=[0.887, 0.9]))[0] is False     # generator v2: colour gives objects away
    assert _fgs_x0_floor(_fgs(random=[0.65]))[0] is True              # the bar is inclusive
    assert _fgs_x0_floor(_fgs(dense=[0.6, 0.8]))[0] is None


def test_fgs_rise_trained():
    from analyses.reading import _fgs_rise_trained

    # best layer, not the last: 0.60 -> 0.80 at x_2 is a rise of 0.20 although x_12 falls back
    verdict, text = _fgs_rise_trained(_fgs(dense=[0.60, 0.70, 0.80, 0.62], random=[0.5, 0.5, 0.5, 0.5]))
    assert verdict is True and "x_0 0.600 → x_2 0.800 (rise +0.200" in text and "random" not in text
    assert _fgs_rise_trained(_fgs(dense=[0.899, 0.91, 0.93]))[0] is False   # v2's dense model: +0.031
    assert _fgs_rise_trained(_fgs(random=[0.5, 0.9]))[0] is None            # random init is not a trained model


def test_dense_ap():
    from analyses.reading import _dense_ap

    rows = [{"variant": "dense", "AP_track": 41.25}, {"variant": "vpp55", "AP_track": 30.0}]
    verdict, text = _dense_ap({"rows": rows})
    assert verdict is True and "dense AP_track 41.2" in text
    assert _dense_ap({"rows": [{"variant": "dense", "AP_track": 39.9}]})[0] is False
    assert _dense_ap({"rows": [{"variant": "vpp55", "AP_track": 50.0}]})[0] is None


def test_instances_matter_more_at_each_fraction():
    from analyses.reading import _instances_matter_more

    rows = [{"fraction": f, "condition": c, "AP": ap} for f, c, ap in (
        (0.25, "drop_instance", 40.0), (0.25, "drop_background", 45.0),
        (0.5, "drop_instance", 30.0), (0.5, "drop_background", 28.0))]
    verdict, text = _instances_matter_more({"rows": rows})
    assert verdict is False  # holds at 25 % only: the bar needs both fractions
    assert "25 % dropped: AP 40.0 (instance) vs 45.0 (background)" in text and "50 % dropped" in text
