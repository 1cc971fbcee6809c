"""Patch-level labels from pixel masks: membership rules on a hand-built mask."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
import torch

from vppkit.metrics.patch_labels import (DEFAULT_RULE, foreground_patches, instance_area_share, patch_coverage,
                                         patch_labels, patch_membership, rule_threshold, valid_patches)


def _hand_masks() -> torch.Tensor:
    """8x8 frame, patch 4 -> 2x2 grid. A fills patch (0,0); B: 3 px in patch (0,1), 8 px (half) in patch (1,1)."""
    m = torch.zeros(2, 8, 8, dtype=torch.bool)
    m[0, 0:4, 0:4] = True
    m[1, 0, 4:7] = True          # 3 / 16 of patch (0, 1)
    m[1, 4:6, 4:8] = True        # 8 / 16 of patch (1, 1)
    return m


def test_coverage_by_hand():
    cov = patch_coverage(_hand_masks(), 4)
    assert cov.shape == (2, 2, 2)
    assert torch.allclose(cov[0], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert torch.allclose(cov[1], torch.tensor([[0.0, 3 / 16], [0.0, 0.5]]))


@pytest.mark.parametrize("rule, expected_b", [
    ("any", [0, 1, 0, 1]),
    ("half", [0, 0, 0, 1]),
    (0.2, [0, 0, 0, 1]),
    (3 / 16, [0, 1, 0, 1]),
    (0.6, [0, 0, 0, 0]),
])
def test_membership_rules(rule, expected_b):
    member = patch_membership(_hand_masks(), 4, rule, flatten=True)
    assert member.shape == (2, 4) and member.dtype == torch.bool
    assert member[0].tolist() == [True, False, False, False]
    assert member[1].int().tolist() == expected_b


def test_default_rule_is_half_and_documented_thresholds():
    assert DEFAULT_RULE == "half"
    assert rule_threshold("half") == 0.5 and rule_threshold("any") == 0.0
    with pytest.raises(ValueError, match="unknown patch membership rule"):
        rule_threshold("most")
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        rule_threshold(1.5)


def test_foreground_uses_union_of_pixels():
    # two instances cover 5 px each of the same patch: neither is a member under "half", the union (10/16) is.
    m = torch.zeros(2, 4, 4, dtype=torch.bool)
    m[0].view(-1)[:5] = True
    m[1].view(-1)[5:10] = True
    assert not patch_membership(m, 4, "half").any()
    assert foreground_patches(m, 4, "half").tolist() == [[True]]
    # no instance: all background
    assert not foreground_patches(torch.zeros(0, 8, 8, dtype=torch.bool), 4).any()


def test_token_order_is_timm_row_major():
    m = torch.zeros(2, 8, 12, dtype=torch.bool)  # grid 2 x 3
    m[0, 0:4, 4:8] = True    # row 0, col 1 -> token 1
    m[1, 4:8, 0:4] = True    # row 1, col 0 -> token 3 (= Wp)
    member = patch_membership(m, 4, flatten=True)
    assert member[0].nonzero().flatten().tolist() == [1]
    assert member[1].nonzero().flatten().tolist() == [3]


def test_area_share_valid_and_labels_with_padding():
    m = np.zeros((1, 8, 8), dtype=bool)
    m[0, :2, :3] = True  # 6 px of an unpadded 6x4 image
    share = instance_area_share(m, image_hw=(6, 4))
    assert share.tolist() == [pytest.approx(6 / 24)]
    v = valid_patches((8, 8), (6, 4), 4)
    assert v.tolist() == [[True, False], [True, False]]
    lab = patch_labels(m, 4, rule="any", image_hw=(6, 4))
    assert lab.grid == (2, 2) and lab.num_instances == 1 and lab.num_patches == 4
    assert lab.instances.tolist() == [[True, False, False, False]]
    assert lab.foreground.tolist() == [True, False, False, False]
    assert lab.valid.tolist() == [True, False, True, False]


def test_errors_name_the_frame():
    with pytest.raises(ValueError, match="video 7 frame 3: .*not a multiple of patch size"):
        patch_labels(torch.zeros(1, 10, 8, dtype=torch.bool), 4, source="video 7 frame 3")
    m = torch.zeros(1, 8, 8, dtype=torch.bool)
    m[0, 7, 7] = True
    with pytest.raises(ValueError, match="video 2 frame 0: .*cover padding"):
        patch_labels(m, 4, image_hw=(6, 6), source="video 2 frame 0")
    with pytest.raises(ValueError, match="fit in the input"):
        valid_patches((8, 8), (9, 8), 4)


def _davis_mask(davis_dir, seq: str, frame: int) -> np.ndarray:
    """(1, 240, 432) bool: a real DAVIS mask (240 x 427) padded bottom/right to a multiple of 16."""
    path = davis_dir / "Annotations" / "240p" / seq / f"{frame:05d}.png"
    m = np.asarray(Image.open(path).convert("L")) > 127
    out = np.zeros((1, 240, 432), dtype=bool)
    out[0, :, :427] = m
    return out


def test_real_davis_mask_rules_are_nested(davis_dir):
    m = _davis_mask(davis_dir, "blackswan", 0)
    any_, half, full = (patch_labels(m, 16, rule=r, image_hw=(240, 427)) for r in ("any", "half", 1.0))
    assert any_.grid == (15, 27)
    assert (half.instances <= any_.instances).all() and (full.instances <= half.instances).all()
    assert half.instances.sum() < any_.instances.sum()             # boundary patches differ
    # "half" keeps roughly the pixel area: patch area within 20 % of the pixel area
    px = float(m.sum())
    assert abs(float(half.instances.sum()) * 256 - px) / px < 0.2
    assert half.area_share.item() == pytest.approx(px / (240 * 427))
    assert half.valid.all()                                         # 427 px reach into the last patch column
