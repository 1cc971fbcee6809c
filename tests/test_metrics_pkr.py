"""PKR and per-block density: nominal schedules, fixed masks, first/later split, global sums."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vppkit.metrics.pkr import PKRAccumulator, frame_pkr, nominal_pkr
from vppkit.models.pruning.schedules import VPPSchedule
from vppkit.models.records import KeepRecord


def _record(counts_per_frame: list[list[int]], grid: tuple[int, int]) -> KeepRecord:
    """Record whose block b of frame f keeps the first counts[f][b] tokens."""
    n = grid[0] * grid[1]
    c = torch.tensor(counts_per_frame)
    masks = torch.arange(n)[None, None, :] < c[:, :, None]
    return KeepRecord.from_masks(masks, grid)


def test_nominal_vpp_schedules():
    f055 = [1, .7, .7] + [.56] * 3 + [.448] * 3 + [.3584] * 3
    assert VPPSchedule(0.7, 0.8).block_keep_fractions() == pytest.approx(f055)
    assert nominal_pkr(f055) == pytest.approx(6.4992 / 12)
    assert round(100 * nominal_pkr(f055), 2) == 54.16
    f04 = [1, .6, .6] + [.42] * 3 + [.294] * 3 + [.2058] * 3
    assert VPPSchedule(0.6, 0.7).block_keep_fractions() == pytest.approx(f04)
    assert round(100 * nominal_pkr(VPPSchedule(0.6, 0.7).block_keep_fractions()), 2) == 41.33
    assert nominal_pkr([1.0] * 12) == 1.0
    with pytest.raises(ValueError):
        nominal_pkr([1.0, 1.2])
    with pytest.raises(ValueError):
        nominal_pkr([])


def test_fixed_masks_pkr_and_density():
    counts = [100, 70, 70, 56, 56, 56, 45, 45, 45, 36, 36, 36]
    acc = PKRAccumulator()
    acc.update(_record([counts], (10, 10)))
    assert acc.block_density() == pytest.approx(np.array(counts) / 100)
    assert acc.pkr() == pytest.approx(651 / 1200)
    assert frame_pkr(_record([counts], (10, 10))).tolist() == [pytest.approx(651 / 1200)]


def test_first_vs_later_split():
    first = [100] * 3 + [56] * 3 + [45] * 3 + [36] * 3        # no temporal prior: blocks 1-2 dense
    later = [100, 70, 70] + [56] * 3 + [45] * 3 + [36] * 3
    acc = PKRAccumulator()
    acc.update(_record([first, later], (10, 10)), is_first=[True, False])
    acc.update(_record([later], (10, 10)), is_first=False)
    assert acc.num_frames("first") == 1 and acc.num_frames("later") == 2 and acc.num_frames() == 3
    assert acc.pkr("first") == pytest.approx(711 / 1200)
    assert acc.pkr("later") == pytest.approx(651 / 1200)
    assert acc.pkr("all") == pytest.approx((711 + 2 * 651) / 3600)
    assert acc.block_density("all")[1] == pytest.approx((100 + 70 + 70) / 300)


def test_global_sums_not_mean_of_means_on_unequal_n():
    # frame A: N = 4, blocks keep [4, 0] -> 0.5 ; frame B: N = 16, keeps [16, 16] -> 1.0
    a, b = _record([[4, 0]], (2, 2)), _record([[16, 16]], (4, 4))
    acc = PKRAccumulator()
    acc.update(a)
    acc.update(b)
    mean_of_means = float(torch.cat([frame_pkr(a), frame_pkr(b)]).mean())
    assert mean_of_means == pytest.approx(0.75)
    assert acc.block_density().tolist() == pytest.approx([1.0, 16 / 20])
    assert acc.pkr() == pytest.approx(0.9)


def test_counts_not_mask_sums_are_used():
    # merging methods: counts differ from mask sums; PKR follows the counts
    masks = torch.ones(1, 2, 4, dtype=torch.bool)
    rec = KeepRecord(masks, torch.tensor([[4, 2]]), (2, 2), torch.zeros(1, dtype=torch.float64))
    acc = PKRAccumulator()
    acc.update(rec)
    assert acc.pkr() == pytest.approx(0.75)


def test_serialisation_merge_and_empty_split():
    acc1, acc2, both = PKRAccumulator(), PKRAccumulator(), PKRAccumulator()
    r1, r2 = _record([[4, 1]], (2, 2)), _record([[9, 3], [9, 9]], (3, 3))
    acc1.update(r1, True)
    acc2.update(r2, [False, True])
    both.update(r1, True)
    both.update(r2, [False, True])
    acc1.merge(acc2)
    assert acc1.pkr() == pytest.approx(both.pkr())
    d = json.loads(json.dumps(both.to_dict()))
    assert d["pkr"] == pytest.approx(both.pkr()) and d["frames"] == 3 and d["frames_first"] == 2
    back = PKRAccumulator.from_state_dict(d["sums"])
    assert back.block_density("later").tolist() == pytest.approx(both.block_density("later").tolist())
    only_later = PKRAccumulator()
    only_later.update(r1, False)
    assert np.isnan(only_later.pkr("first")) and only_later.to_dict()["pkr_first"] is None
    df = both.to_frame()
    assert list(df.columns) == ["split", "block", "layer", "density", "frames"] and len(df) == 3 * 2


def test_bad_input_errors():
    acc = PKRAccumulator()
    acc.update(_record([[4, 1]], (2, 2)))
    with pytest.raises(ValueError, match="video 3: .*depth 3"):
        acc.update(_record([[4, 1, 1]], (2, 2)), source="video 3")
    bad = KeepRecord(torch.ones(1, 2, 4, dtype=torch.bool), torch.tensor([[5, 1]]), (2, 2),
                     torch.zeros(1, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"video 4: .*\[0, N=4\]"):
        acc.update(bad, source="video 4")
    with pytest.raises(ValueError, match="2 flags for a batch of 1"):
        acc.update(_record([[4, 1]], (2, 2)), is_first=[True, False])
