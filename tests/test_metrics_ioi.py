"""IoI by size bin and fg/bg density on constructed masks with known kept patches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vppkit.metrics.ioi import IoIAccumulator, fg_bg_density, instance_ioi, size_bin
from vppkit.metrics.patch_labels import patch_labels
from vppkit.models.records import KeepRecord

P = 2  # patch size; 20 x 20 frame -> 10 x 10 grid, N = 100, frame area 400 px


def _tok(r0, r1, c0, c1) -> list[int]:
    return [r * 10 + c for r in range(r0, r1) for c in range(c0, c1)]


S_TOK, M_TOK, L_TOK = _tok(0, 2, 0, 2), _tok(0, 4, 4, 8), _tok(5, 10, 0, 6)   # 4, 16 and 30 patches
BG_TOK = sorted(set(range(100)) - set(S_TOK) - set(M_TOK) - set(L_TOK))      # 50 patches


def _frame_masks() -> torch.Tensor:
    m = torch.zeros(4, 20, 20, dtype=torch.bool)
    m[0, 0:4, 0:4] = True        # S: 16 px = 4 % of the frame
    m[1, 0:8, 8:16] = True       # M: 64 px = 16 %
    m[2, 10:20, 0:12] = True     # L: 120 px = 30 %
    m[3, 19, 19] = True          # tiny: 1 px, no patch under "half" -> skipped
    return m


def _keep() -> torch.Tensor:
    keep = torch.zeros(3, 100, dtype=torch.bool)
    keep[0] = True                                   # block 0 dense
    keep[1, S_TOK[:2] + M_TOK + L_TOK[:15] + BG_TOK[:7]] = True
    keep[2, M_TOK[:8] + L_TOK[15:]] = True
    return keep


def test_constructed_frame_by_hand():
    labels = patch_labels(_frame_masks(), P)
    assert labels.instances.sum(1).tolist() == [4, 16, 30, 0]
    assert labels.area_share.tolist() == pytest.approx([0.04, 0.16, 0.30, 1 / 400])
    per = instance_ioi(_keep(), labels.instances)
    assert per[:3].tolist() == [pytest.approx([1, .5, 0]), pytest.approx([1, 1, .5]), pytest.approx([1, .5, .5])]
    assert torch.isnan(per[3]).all()

    acc = IoIAccumulator()
    acc.update(_keep(), labels, source="vid0/00000")
    assert acc.ioi("S") == pytest.approx(0.5)
    assert acc.ioi("M") == pytest.approx(2.5 / 3)
    assert acc.ioi("L") == pytest.approx(2 / 3)
    assert acc.ioi() == pytest.approx((0.5 + 2.5 / 3 + 2 / 3) / 3)
    assert acc.per_block(None, "pooled").tolist() == pytest.approx([1.0, 33 / 50, 23 / 50])
    assert acc.ioi(pooling="pooled") == pytest.approx((1 + 33 / 50 + 23 / 50) / 3)
    assert acc.count() == 3 and acc.num_skipped() == 1 and acc.num_skipped("S") == 1

    fb = acc.fg_bg()
    assert fb["fg_share_of_kept"].tolist() == pytest.approx([0.5, 33 / 40, 1.0])
    assert fb["density_fg"].tolist() == pytest.approx([1.0, 33 / 50, 23 / 50])
    assert fb["density_bg"].tolist() == pytest.approx([1.0, 7 / 50, 0.0])
    assert fb["fg_ratio"] == pytest.approx(0.5)
    assert fg_bg_density(_keep(), labels.foreground)["fg_share_of_kept"].tolist() == pytest.approx([.5, 33 / 40, 1])


def test_pooling_over_frames_and_record_update():
    lab1 = patch_labels(_frame_masks(), P)
    m2 = torch.zeros(1, 20, 20, dtype=torch.bool)
    m2[0, :, :10] = True                                   # L instance, 50 % of the frame, 50 patches
    lab2 = patch_labels(m2, P)
    keep2 = torch.ones(3, 100, dtype=torch.bool)           # everything kept -> IoI 1
    rec = KeepRecord.from_masks(torch.stack([_keep(), keep2]), (10, 10))
    acc = IoIAccumulator()
    acc.update_record(rec, [lab1, lab2], sources=["a/0", "b/0"])
    assert acc.frames == 2 and acc.count("L") == 2
    assert acc.ioi("L") == pytest.approx((2 / 3 + 1) / 2)            # mean over (instance, frame) pairs
    assert acc.ioi("L", "pooled") == pytest.approx(np.mean([1, (15 + 50) / 80, (15 + 50) / 80]))
    assert acc.ioi() == pytest.approx((0.5 + 2.5 / 3 + 2 / 3 + 1) / 4)

    df = acc.to_frame()
    for col in ("IoI", "IoI_S", "IoI_M", "IoI_L", "n_S", "n_M", "n_L", "skipped"):
        assert col in df.columns
    assert df.loc[0, "n_L"] == 2 and df.loc[0, "skipped"] == 1
    assert len(acc.per_block_frame()) == 3
    d = json.loads(json.dumps(acc.to_dict()))
    back = IoIAccumulator.from_state_dict(d["sums"])
    assert back.ioi("L") == pytest.approx(acc.ioi("L"))
    split = IoIAccumulator()
    split.update(_keep(), lab1)
    other = IoIAccumulator()
    other.update(keep2, lab2)
    assert split.merge(other).ioi() == pytest.approx(acc.ioi())


def test_size_bin_boundaries_and_empty_bins():
    assert [size_bin(a) for a in (0.0, 0.05, 0.10, 0.1001, 0.20, 0.2001, 1.0)] == ["S", "S", "S", "M", "M", "L", "L"]
    with pytest.raises(ValueError):
        size_bin(1.5)
    acc = IoIAccumulator()
    m = torch.zeros(1, 20, 20, dtype=torch.bool)
    m[0, :4, :4] = True
    acc.update(torch.ones(2, 100, dtype=torch.bool), patch_labels(m, P))
    assert acc.ioi("S") == 1.0 and np.isnan(acc.ioi("M")) and acc.to_dict()["IoI_M"] is None


def test_mismatch_names_the_frame():
    acc = IoIAccumulator()
    with pytest.raises(ValueError, match="vid9/00004: keep masks have N=64"):
        acc.update(torch.ones(3, 64, dtype=torch.bool), patch_labels(_frame_masks(), P), source="vid9/00004")
    acc.update(_keep(), patch_labels(_frame_masks(), P))
    with pytest.raises(ValueError, match="depth 2"):
        acc.update(torch.ones(2, 100, dtype=torch.bool), patch_labels(_frame_masks(), P))
    rec = KeepRecord.dense(2, 3, (10, 10))
    with pytest.raises(ValueError, match="1 patch labels for a batch of 2"):
        acc.update_record(rec, [patch_labels(_frame_masks(), P)])


def test_random_keeping_on_real_davis_masks_gives_ioi_near_keep_ratio(davis_dir):
    """Uniformly random keep masks of ratio r: IoI is r in expectation, fg share of kept = fg ratio."""
    g = torch.Generator().manual_seed(0)
    acc = IoIAccumulator()
    n, depth, r = 15 * 27, 12, 0.4
    for seq in ("blackswan", "camel", "cows"):
        for frame in (0, 10, 20):
            m = np.zeros((1, 240, 432), dtype=bool)
            m[0, :, :427] = np.asarray(Image.open(davis_dir / "Annotations" / "240p" / seq / f"{frame:05d}.png")
                                       .convert("L")) > 127
            keep = torch.rand(depth, n, generator=g).argsort(1) < int(r * n)
            acc.update(keep, patch_labels(m, 16, image_hw=(240, 427)), source=f"{seq}/{frame:05d}")
    assert acc.count() == 9
    assert acc.ioi() == pytest.approx(r, abs=0.04)
    assert acc.ioi(pooling="pooled") == pytest.approx(r, abs=0.04)
    fb = acc.fg_bg()
    assert np.mean(fb["fg_share_of_kept"]) == pytest.approx(fb["fg_ratio"], abs=0.03)
