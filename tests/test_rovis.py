"""model.tracker rovis (ROVIS track queries): decoders with track queries, the inference tracker (thresholds,
identities, memory), the training-time track-query selection and loss, a training step with gradients in the
dense and sparse stages (plain and adapter hosts), and online inference with consistent track ids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vppkit.config import load_config
from vppkit.data.splits import resolve_split
from vppkit.data.video import VideoFrames
from vppkit.engine.checkpoint import load_model
from vppkit.engine.infer import EvalSettings, evaluate_run, infer_checkpoint, infer_video
from vppkit.engine.rovis_loss import RovisLossSettings
from vppkit.engine.train import StepBatches, StepSampler, chain_loss, seed_step, stage_config, train
from vppkit.engine.distributed import DistInfo
from vppkit.models.vis.decoder import MaskDecoder
from vppkit.models.vis.losses import SetCriterion, build_criterion
from vppkit.models.vis.m2f_head import Mask2FormerHead
from vppkit.models.vis.model import build_vis_model
from vppkit.models.vis.rovis import (
    FrameDetections,
    RovisState,
    TrackResultsAccumulator,
    frame_detections,
    mask_nms,
    rovis_track_step,
)
from vppkit.models.vis.track_queries import decode_loss, match_with_tracks, pad_track_queries, select_track_queries

torch.set_num_threads(1)
Q, D = 4, 8


# ------------------------------------------------------------------------------------------------------------------
# decoders
# ------------------------------------------------------------------------------------------------------------------
def test_plain_decoder_appends_track_queries_after_the_static_ones():
    dec = MaskDecoder(dim=16, num_classes=2, num_queries=3, num_layers=2, heads=2).eval()
    mf = torch.randn(2, 16, 12, 12)
    levels = [torch.randn(2, 16, s, s) for s in (3, 6, 12)]
    with torch.no_grad():
        base = dec(mf, levels)
        same = dec(mf, levels, torch.zeros(2, 0, 16))
        out = dec(mf, levels, torch.randn(2, 4, 16))
    assert torch.equal(base["pred_logits"], same["pred_logits"])         # n = 0: the static decoder unchanged
    assert out["pred_logits"].shape == (2, 7, 3) and out["pred_masks"].shape == (2, 7, 12, 12)
    assert out["queries"].shape == (2, 7, 16) and all(a["pred_logits"].shape[1] == 7 for a in out["aux_outputs"])
    # the initial read-out of a track query is its carried feature read out (no positional embedding is added)
    tq = base["queries"][:, :2]
    with torch.no_grad():
        again = dec(mf, levels, tq)
    assert torch.allclose(again["aux_outputs"][0]["pred_logits"][:, 3:], dec.class_embed(dec.decoder_norm(tq)))
    with pytest.raises(ValueError, match="track_queries"):
        dec(mf, levels, torch.randn(1, 2, 16))


def test_adapter_head_forward_equals_transformers_module_and_takes_track_queries():
    head = Mask2FormerHead(48, 3, dim=32, num_queries=5, dec_layers=2, heads=2, enc_layers=1).eval()
    feats = [torch.randn(2, 48, s, s) for s in (16, 8, 4, 2)]
    with torch.no_grad():
        out = head(feats)
        pix = head.pixel_decoder(feats, return_dict=True)
        ref = head.transformer(pix.multi_scale_features, pix.mask_features)
        tracked = head.decode(head.pixel(feats), torch.randn(2, 3, 32))
    assert torch.equal(out["pred_masks"], ref.masks_queries_logits[-1])
    assert torch.equal(out["queries"], ref.last_hidden_state)
    assert tracked["pred_logits"].shape == (2, 8, 4) and tracked["queries"].shape == (2, 8, 32)


# ------------------------------------------------------------------------------------------------------------------
# inference tracker
# ------------------------------------------------------------------------------------------------------------------
def _logit(p):
    return math.log(p / (1 - p))


def test_frame_detections_use_the_official_thresholds():
    # one class; class probability p = sigmoid(a); masks saturated so that the mask score is ~1
    probs = [0.31, 0.29, 0.26, 0.24]                     # static, static, track (query 2 >= num_static 2), track
    logits = torch.tensor([[_logit(p), 0.0] for p in probs])
    masks = torch.full((4, 6, 6), -30.0)
    for i in range(4):
        masks[i, i:i + 2, :3] = 30.0
    det = frame_detections(logits, masks, num_static=2, new_score=0.3, keep_score=0.25)
    assert det.query.tolist() == [0, 2]                  # static > 0.3 kept, 0.29 dropped; track > 0.25 kept
    assert det.scores.tolist() == pytest.approx([0.31, 0.26], abs=1e-4)
    assert torch.equal(det.masks[1], masks[2] > 0)
    # the score is class probability x mean mask probability inside the binary mask (Mask2Former)
    soft = masks.clone()
    soft[0][soft[0] > 0] = 0.5                           # sigmoid(0.5) = 0.62 inside the mask
    det = frame_detections(logits, soft, num_static=2, new_score=0.0, keep_score=0.0)
    assert float(det.scores[det.query == 0]) == pytest.approx(0.31 * torch.sigmoid(torch.tensor(0.5)).item(),
                                                              abs=1e-4)


def _det(query, scores, boxes, size=10):
    masks = torch.zeros(len(query), size, size, dtype=torch.bool)
    for i, (r, c) in enumerate(boxes):
        masks[i, r:r + 3, c:c + 3] = True
    return FrameDetections(torch.tensor(query), torch.zeros(len(query), dtype=torch.long), torch.tensor(scores),
                           masks)


def test_track_state_round_trip_identities_and_memory():
    queries0 = torch.randn(Q, D)
    det0 = _det([1, 3], [0.9, 0.8], [(0, 0), (5, 5)])
    ids0, sel0, s0 = rovis_track_step(None, det0, queries0, Q, frame=0)
    assert ids0.tolist() == [0, 1] and sel0.tolist() == [0, 1]
    assert s0.ids.tolist() == [0, 1] and s0.next_id == 2 and s0.last_frame.tolist() == [0, 0]
    assert torch.equal(s0.feats, queries0[[1, 3]])       # the carried track queries = the detections' queries
    assert torch.equal(s0.track_queries(), queries0[[1, 3]][None])

    # frame 1: memory slot 1 (track id 1) detected by track query Q + 1 keeps id 1; slot 0 undetected;
    # a static detection overlapping track 1 (IoU > 0.4) is a duplicate, a separate one starts track 2
    queries1 = torch.randn(Q + 2, D)
    det1 = _det([Q + 1, 0, 2], [0.7, 0.9, 0.6], [(5, 5), (5, 6), (0, 7)])
    snapshot = (s0.ids.clone(), s0.feats.clone())
    ids1, sel1, s1 = rovis_track_step(s0, det1, queries1, Q, frame=1)
    assert torch.equal(s0.ids, snapshot[0]) and torch.equal(s0.feats, snapshot[1])      # input state not modified
    # (new ids are drawn before the NMS, as the official: the suppressed duplicate used id 2)
    assert ids1.tolist() == [1, 3] and det1.query[sel1].tolist() == [Q + 1, 2]
    assert s1.ids.tolist() == [0, 1, 3] and s1.last_frame.tolist() == [0, 1, 1] and s1.next_id == 4
    assert torch.equal(s1.feats[1], queries1[Q + 1]) and torch.equal(s1.feats[0], queries0[1])

    # a continued track detected below 0.3 keeps its previous query (official query_update_threshold)
    queries2 = torch.randn(Q + 3, D)
    ids2, _, s2 = rovis_track_step(s1, _det([Q + 1], [0.27], [(5, 5)]), queries2, Q, frame=2)
    assert ids2.tolist() == [1] and torch.equal(s2.feats[1], s1.feats[1])
    # an empty frame leaves the memory as it is
    ids3, _, s3 = rovis_track_step(s2, _det([], [], []), torch.randn(Q + 3, D), Q, frame=3)
    assert ids3.numel() == 0 and s3 is s2
    # a track undetected for `retain` frames leaves the memory (track 0 last seen at frame 0)
    _, _, s4 = rovis_track_step(s2, _det([Q + 1], [0.9], [(5, 5)]), torch.randn(Q + 3, D), Q, frame=4, retain=4)
    assert s4.ids.tolist() == [1, 3] and s4.last_frame.tolist() == [4, 1]
    with pytest.raises(ValueError, match="queries"):
        rovis_track_step(s1, det1, queries1, Q, frame=2)                               # 6 rows for 4 + 3


def test_a_track_query_keeps_its_identity_across_frames_and_duplicate_tracks_are_removed():
    state = None
    for f in range(5):
        n = 0 if state is None else len(state)
        queries = torch.randn(Q + n, D)
        if state is None:
            det = _det([2], [0.9], [(f, f)])              # a static query starts the track
        else:                                              # the object moves; its track query finds it
            det = _det([Q + 0, Q + 0], [0.8, 0.5], [(f, f), (f, f)])  # same query twice (two classes)
        ids, sel, state = rovis_track_step(state, det, queries, Q, frame=f)
        assert ids.tolist() == [0]                        # one track, the same id in every frame (NMS 0.7)
    assert state.next_id == 1
    keep = mask_nms(torch.stack([torch.ones(4, 4, dtype=torch.bool)] * 3), 0.4, protected=2)
    assert keep.tolist() == [True, True, False]          # protected (continued) tracks are never suppressed


def test_results_accumulator_mean_score_and_majority_class():
    acc = TrackResultsAccumulator(7, 3, [10, 20], top_k=None)
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    m[0, 1:3, 1:3] = True
    acc.add_frame(0, torch.tensor([5]), torch.tensor([1]), torch.tensor([0.6]), m)
    acc.add_frame(1, torch.tensor([]).long(), torch.tensor([]).long(), torch.tensor([]), m[:0])
    acc.add_frame(2, torch.tensor([5]), torch.tensor([1]), torch.tensor([0.2]), m)
    with pytest.raises(ValueError, match="twice"):
        TrackResultsAccumulator(7, 1, [10]).add_frame(0, torch.tensor([1, 1]), torch.zeros(2).long(),
                                                      torch.ones(2), m.repeat(2, 1, 1))
    (res,) = acc.results()
    assert res["score"] == pytest.approx(0.4) and res["category_id"] == 20
    assert res["segmentations"][1] is None and res["segmentations"][0]["size"] == [4, 4]


# ------------------------------------------------------------------------------------------------------------------
# training-time track queries
# ------------------------------------------------------------------------------------------------------------------
def test_select_track_queries_keep_and_false_positive_semantics():
    prev_masks = torch.full((6, 8, 8), -5.0)
    prev_masks[0, 0:2, 0:2] = 5.0                         # matched query 0, box at (0, 0)
    prev_masks[1, 6:8, 6:8] = 5.0                         # matched query 1
    prev_masks[2, 0:2, 0:2] = 5.0                         # unmatched, same top-left corner as query 0: weight 0
    prev_masks[4, 4:6, 4:6] = 5.0                         # unmatched, away from query 0
    qi, gi = torch.tensor([0, 1]), torch.tensor([1, 0])   # query 0 shows instance id 11, query 1 id 10
    prev_ids, cur_ids = torch.tensor([10, 11]), torch.tensor([11, 12])   # id 10 left the other frame
    out, tgt = select_track_queries(qi, gi, prev_masks, prev_ids, cur_ids, keep_prob=1.0, fp_prob=0.0)
    assert out.tolist() == [0, 1] and tgt.tolist() == [0, -1]             # identity -> index there, or none
    out, tgt = select_track_queries(qi, gi, prev_masks, prev_ids, cur_ids, keep_prob=0.0, fp_prob=1.0)
    assert out.numel() == 0
    for seed in range(20):                                # query 0's false positive is weighted by distance:
        torch.manual_seed(seed)                           # never the zero-distance candidate 2
        out, tgt = select_track_queries(qi, gi, prev_masks, prev_ids, cur_ids, keep_prob=1.0, fp_prob=1.0)
        assert out[:2].tolist() == [0, 1] and len(set(out.tolist())) == 4 and tgt[2:].tolist() == [-1, -1]
        assert out[2] != 2 and all(int(o) not in (0, 1) for o in out[2:])
    torch.manual_seed(0)
    kept = [len(select_track_queries(torch.arange(5), torch.arange(5), prev_masks, torch.arange(5),
                                     torch.arange(5), 0.8, 0.0)[0]) for _ in range(400)]
    assert np.mean(kept) / 5 == pytest.approx(0.8, abs=0.03)              # keep probability 0.8 (FN 0.2)
    idx, tt = pad_track_queries([(torch.tensor([0]), torch.tensor([1])), (torch.tensor([]).long(),
                                                                           torch.tensor([]).long())],
                                [torch.tensor([0, 1]), torch.tensor([3])], 6)
    assert idx.shape == (2, 1) and tt.tolist() == [[1], [-1]] and int(idx[1, 0]) != 3


def test_matching_keeps_track_assignments_and_loss_excludes_their_instances():
    gt_masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    for k in range(3):
        gt_masks[k, 2 * k:2 * k + 2] = True
    labels = torch.zeros(3, dtype=torch.long)
    logits = torch.randn(Q + 2, 2)
    masks = torch.randn(Q + 2, 8, 8)
    qi, gi = match_with_tracks(logits, masks, labels, gt_masks, Q, torch.tensor([2, -1]))
    assert (Q, 2) in list(zip(qi.tolist(), gi.tolist())) and Q + 1 not in qi.tolist()
    assert sorted(gi.tolist()) == [0, 1, 2] and all(q < Q for q, g in zip(qi.tolist(), gi.tolist()) if g != 2)

    crit = SetCriterion(1)
    out = {"pred_logits": logits[None], "pred_masks": masks[None], "aux_outputs": []}
    tg = [{"labels": labels, "masks": gt_masks}]
    got = decode_loss(crit, out, tg, torch.tensor([[2, -1]]), Q)
    static = crit({"pred_logits": logits[None, :Q], "pred_masks": masks[None, :Q]},
                  [{"labels": labels[:2], "masks": gt_masks[:2]}])
    track = crit.matched({"pred_logits": logits[None, Q:], "pred_masks": masks[None, Q:]}, tg,
                         [(torch.tensor([0]), torch.tensor([2]))])
    assert float(got["loss"]) == pytest.approx(float(static["loss"] + track["loss"]), rel=1e-5)
    assert float(got["loss_track"]) == pytest.approx(float(track["loss"]), rel=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# training steps and inference on the smoke profile
# ------------------------------------------------------------------------------------------------------------------
def _frames(cfg, split="train"):
    js, root = resolve_split(cfg["data"], split, progress=False)
    return VideoFrames(js, root, cfg["model"]["img_size"])


def _step(cfg, stage, model, seed_offset=0):
    tcfg = stage_config(cfg, stage)
    frames = _frames(cfg)
    samples = [(vi, None) for vi in range(len(frames))]
    sampler = StepSampler(len(samples), 2, 0, DistInfo(0, 1, 0, "cpu"))
    steps = StepBatches(frames, samples, sampler, int(tcfg["clip_frames"]), tcfg, 0, 0)[seed_offset]
    crit = build_criterion(cfg["loss"], len(frames.category_ids))
    seed_step(0, seed_offset)
    loss, logs = chain_loss(model, crit, steps, stage == "sparse", "cpu", tcfg["frame_loss_weights"], "rovis",
                            RovisLossSettings())
    return loss, logs, steps, crit, tcfg


@pytest.mark.parametrize("stage", ["dense", "sparse"])
def test_rovis_training_step_gives_decoder_gradients(cache, stage):
    cfg = load_config("smoke", ["model.tracker=rovis"])
    pcfg = cfg["pruning"] if stage == "sparse" else None
    model = build_vis_model(cfg["model"], len(_frames(cfg).category_ids), pcfg).train()
    loss, logs, steps, crit, tcfg = _step(cfg, stage, model)
    assert math.isfinite(float(loss.detach())) and logs["track_queries"] > 0
    # the three official terms: key x1, reference with track queries x0.5, key with track queries x0.5
    w = tcfg["frame_loss_weights"]
    assert logs["loss_seg"] == pytest.approx(w[-1] * logs["loss_key"] + w[-2] * logs["loss_ref"]
                                             + 0.5 * logs["loss_key2"], rel=1e-5)
    loss.backward()
    dec = model.decoder
    for p in (dec.query_feat.weight, dec.class_embed.weight, dec.layers[0].self_attn.in_proj_weight,
              model.pyramid.parameters().__next__()):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    if stage == "sparse":
        gates = [p for n, p in model.named_parameters() if ".pruner." in n and p.requires_grad]
        assert gates and any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in gates)
        # no segmentation loss on the first frame of the chain: a weight there is refused
        with pytest.raises(ValueError, match="before the reference"):
            chain_loss(model, crit, steps, True, "cpu", [0.1, 0.5, 1.0], "rovis")
    # the augmentation draws come from the step seed: the same step gives the same loss
    model.zero_grad()
    again, logs2, *_ = _step(cfg, stage, model)
    assert float(again.detach()) == pytest.approx(float(loss.detach()), rel=1e-6) and logs2["track_queries"] == logs["track_queries"]


class _Recorder(torch.nn.Module):
    """A VIS model that records each frame's track queries and decoded queries."""

    def __init__(self, model):
        super().__init__()
        self.model, self.tracker, self.num_queries = model, model.tracker, model.num_queries
        self.calls = []

    def forward(self, images, state=None, execution=None, track_queries=None):
        out = self.model(images, state, execution=execution, track_queries=track_queries)
        self.calls.append((track_queries, out.queries))
        return out


def test_infer_video_links_frames_through_track_queries_with_consistent_ids(cache):
    cfg = load_config("smoke", ["model.tracker=rovis"])
    js, root = resolve_split(cfg["data"], "val", progress=False)
    frames = VideoFrames(js, root, cfg["model"]["img_size"], cache=False)
    model = _Recorder(build_vis_model(cfg["model"], len(frames.category_ids)).eval())
    # every detection kept (scores >= 0 > -1): tracks started at frame 0 are continued by their track queries
    settings = EvalSettings(top_k=1000, score="mean", mask_threshold=0.0, tracker_momentum=0.0,
                            rovis_new_score=-1.0, rovis_keep_score=-1.0, rovis_retain=10)
    res, recs = infer_video(model, frames, 0, settings, seed=0)
    t = frames.num_frames(0)
    assert len(recs) == t and len(model.calls) == t and model.calls[0][0] is None
    for (tq_prev, q_prev), (tq, _) in zip(model.calls[:-1], model.calls[1:]):
        assert tq is not None                             # the memory is queried every later frame
        # each track query is a decoded query of the previous frame (or a retained older one)
        rows = torch.cat([q_prev[0], tq_prev[0]]) if tq_prev is not None else q_prev[0]
        assert all(bool((rows == r).all(1).any()) for r in tq[0])
    assert res and all(len(r["segmentations"]) == t for r in res)
    # a track continued by its track query is one result with a mask in consecutive frames
    assert any(r["segmentations"][0] is not None and r["segmentations"][1] is not None for r in res)
    res2, _ = infer_video(model, frames, 0, settings, seed=0)
    assert res2 == res                                    # deterministic


def test_rovis_trains_and_infers_end_to_end_on_the_smoke_profile(cache):
    cfg = load_config("smoke", ["model.tracker=rovis", "train.dense.steps=3", "train.dense.ckpt_every=3"])
    run = train(cfg, "dense", out_dir=cache / "dense", progress=False)
    assert {"loss_key", "loss_ref", "loss_key2"} <= set(run["last"])
    model, _ = load_model(run["checkpoint"])
    assert model.tracker == "rovis"
    out = infer_checkpoint(run["checkpoint"], "val", cache / "infer", progress=False,
                           eval_cfg={"rovis_new_score": 0.0, "rovis_keep_score": 0.0})
    assert out["settings"]["tracker"] == "rovis" and out["settings"]["rovis_new_score"] == 0.0
    ap = evaluate_run(cache / "infer", out["gt_json"])
    assert 0.0 <= ap["AP"] <= 1.0
    # the tracker is the run's setting: a sparse run from this init with tracker embedding infers as embedding
    emb = load_config("smoke", ["model.tracker=embedding", "train.sparse.steps=1", "train.sparse.ckpt_every=1"])
    sparse = train(emb, "sparse", init=run["checkpoint"], out_dir=cache / "sparse", progress=False)
    assert "loss_key2" not in sparse["last"] and load_model(sparse["checkpoint"])[0].tracker == "embedding"
    with pytest.raises(ValueError, match="model.tracker"):
        build_vis_model({**cfg["model"], "tracker": "minvis"}, 1)


def test_rovis_on_the_adapter_host_trains_dense_and_sparse(cache):
    tiny = ["data.num_videos=2", "data.num_val_videos=1", "data.num_frames=4", "data.height=64", "data.width=64",
            "model.img_size=[64,64]", "model.dim=32", "model.num_queries=5", "model.dec_layers=2",
            "model.host=adapter", "model.adapter.conv_inplane=8", "model.adapter.deform_points=2",
            "model.adapter.pixel_decoder_layers=1", "loss.num_points=64", "loss.importance_sample_ratio=0.75",
            "model.tracker=rovis", "train.dense.steps=2", "train.sparse.steps=2"]
    cfg = load_config("smoke", tiny)
    dense = train(cfg, "dense", out_dir=cache / "dense", progress=False)
    sparse = train(cfg, "sparse", init=dense["checkpoint"], out_dir=cache / "sparse", progress=False)
    for run in (dense, sparse):
        assert all(math.isfinite(float(v)) for k, v in run["last"].items() if k.startswith("loss")), run["last"]
        assert run["last"]["loss_key2"] > 0
    out = infer_checkpoint(sparse["checkpoint"], "train", cache / "infer", progress=False)
    assert out["settings"]["tracker"] == "rovis" and 0.0 < out["pkr"]["pkr"] < 1.0
