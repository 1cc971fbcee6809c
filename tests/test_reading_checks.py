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
