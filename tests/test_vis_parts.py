"""VIS model parts on random tensors: decoder shapes, matcher optimality, losses, tracker identities, config."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from vppkit.config import ConfigError, apply_overrides, config_hash, load_config, list_profiles
from vppkit.models.vis.decoder import MaskDecoder
from vppkit.models.vis.losses import SetCriterion
from vppkit.models.vis.matcher import batch_dice_cost, hungarian_match
from vppkit.models.vis.pyramid import SimplePyramid
from vppkit.models.vis.tracker import VideoTrackAccumulator, match_queries, track_step


def test_pyramid_and_decoder_shapes():
    pyr = SimplePyramid(48, 32)
    dec = MaskDecoder(32, num_classes=3, num_queries=5, num_layers=3, heads=2)
    tokens = torch.randn(2, 6 * 8, 48)
    mf, levels = pyr(tokens, (6, 8))
    assert mf.shape == (2, 32, 24, 32)
    assert [tuple(l.shape[-2:]) for l in levels] == [(3, 4), (6, 8), (12, 16)]
    out = dec(mf, levels)
    assert out["pred_logits"].shape == (2, 5, 4)
    assert out["pred_masks"].shape == (2, 5, 24, 32)
    assert out["embeds"].shape == (2, 5, 32)
    assert len(out["aux_outputs"]) == 3
    with pytest.raises(ValueError, match="grid"):
        pyr(tokens, (5, 8))


def test_hungarian_match_is_optimal_against_brute_force():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 3, generator=g)
    masks = torch.randn(4, 8, 8, generator=g)
    gt_masks = torch.rand(2, 8, 8, generator=g) > 0.5
    labels = torch.tensor([0, 1])
    qi, gi = hungarian_match(logits, masks, labels, gt_masks)
    # brute force over all injective assignments of the 2 GT instances to 4 queries
    from vppkit.models.vis.matcher import batch_bce_cost, mask_targets_on
    pm, tm = mask_targets_on(masks, gt_masks)
    cost = (-2 * logits.softmax(-1)[:, labels] + 5 * batch_bce_cost(pm, tm) + 5 * batch_dice_cost(pm, tm))
    best = min(itertools.permutations(range(4), 2), key=lambda p: float(cost[p[0], 0] + cost[p[1], 1]))
    got = {int(g): int(q) for q, g in zip(qi, gi)}
    assert (got[0], got[1]) == best
    with pytest.raises(ValueError, match="queries"):
        hungarian_match(logits[:1], masks[:1], labels, gt_masks)


def test_criterion_prefers_correct_prediction():
    crit = SetCriterion(num_classes=2)
    gt = torch.zeros(1, 16, 16, dtype=torch.bool)
    gt[0, 4:12, 4:12] = True
    targets = [{"labels": torch.tensor([1]), "masks": gt}]
    good_logits = torch.full((1, 3, 3), -5.0)
    good_logits[0, :, 2] = 5.0  # all queries "no object"
    good_logits[0, 0] = torch.tensor([-5.0, 5.0, -5.0])
    good_masks = torch.full((1, 3, 16, 16), -8.0)
    good_masks[0, 0][gt[0]] = 8.0
    bad_masks = -good_masks
    good = crit({"pred_logits": good_logits, "pred_masks": good_masks}, targets)["loss"]
    bad = crit({"pred_logits": -good_logits, "pred_masks": bad_masks}, targets)["loss"]
    assert good < 0.5 < bad
    empty = crit({"pred_logits": good_logits, "pred_masks": good_masks},
                 [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 16, 16, dtype=torch.bool)}])
    assert torch.isfinite(empty["loss"])


def test_tracker_keeps_identities_through_a_crossing():
    """Two objects cross (their positions swap and the decoder emits them in swapped query slots); identity
    embeddings drift slightly. The tracker must keep each track on the same object."""
    torch.manual_seed(0)
    q, d, frames = 4, 16, 8
    identity = torch.randn(q, d)
    state, owners = None, []
    for t in range(frames):
        order = torch.randperm(q) if t > 0 else torch.arange(q)  # query slot -> object, shuffled each frame
        if 3 <= t <= 5:  # crossing: objects 0 and 1 become very similar, and slots swap
            mix = 0.35
            emb = identity.clone()
            emb[0], emb[1] = (1 - mix) * identity[0] + mix * identity[1], (1 - mix) * identity[1] + mix * identity[0]
        else:
            emb = identity.clone()
        emb = emb + 0.05 * torch.randn(q, d)
        cur = emb[order]
        perm, state = track_step(state, cur)
        owners.append(order[perm].tolist())
    assert all(o == list(range(q)) for o in owners), owners
    # a slot permutation is undone exactly
    ref = torch.randn(5, 8)
    p = torch.tensor([3, 0, 4, 1, 2])
    assert torch.equal(ref[p][match_queries(ref, ref[p])], ref)


def test_accumulator_topk_and_rle_roundtrip():
    from pycocotools import mask as mask_utils

    acc = VideoTrackAccumulator(video_id=7, num_frames=2, category_ids=[3, 5], top_k=2)
    masks = torch.zeros(3, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:7] = True
    masks[1, 0:2, 0:2] = True
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    acc.add_frame(0, probs, masks)
    acc.add_frame(1, probs, torch.zeros_like(masks))
    res = acc.results()
    assert [(r["category_id"], round(r["score"], 3)) for r in res] == [(3, 0.9), (5, 0.6)]
    rle = res[0]["segmentations"][0]
    assert np.array_equal(mask_utils.decode({**rle, "counts": rle["counts"].encode()}).astype(bool), masks[0].numpy())
    assert res[0]["segmentations"][1] is None
    with pytest.raises(ValueError, match="video 7"):
        acc.add_frame(5, probs, masks)


def test_profiles_load_override_and_hash():
    assert {"smoke", "default", "davis", "ytvis19_tiny", "ytvis19_small", "ytvis21_tiny",
            "ytvis21_small"} <= set(list_profiles())
    for name in list_profiles():
        cfg = load_config(name)
        for section in ("data", "model", "train", "pruning", "eval"):
            assert section in cfg, (name, section)
    smoke = load_config("smoke", ["train.dense.steps=3", "model.img_size=[64,64]", "pruning.method=svit"])
    assert smoke["train"]["dense"]["steps"] == 3 and smoke["model"]["img_size"] == [64, 64]
    assert smoke["train"]["weight_decay"] == 0.05  # inherited from default
    assert config_hash(smoke) == config_hash(dict(reversed(list(smoke.items()))))
    assert config_hash(smoke) != config_hash(apply_overrides(smoke, ["seed=1"]))
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(smoke, ["train.steps"])
    with pytest.raises(ConfigError, match="no profile"):
        load_config("does_not_exist")
