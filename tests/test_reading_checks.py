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
