"""chain_loss: the official ROVIS frame weights (reff x0, ref x0.5, key x1; dense ref x0.5, key x1) on a chain
whose per-frame segmentation and sparsity losses are known, and the per-block keep ratios it logs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vppkit.config import load_config
from vppkit.engine.train import chain_loss, stage_config
from vppkit.models.records import KeepRecord

N, DEPTH = 10, 12


class _Model(torch.nn.Module):
    """Frame t (images filled with t) gives segmentation loss ``SEG[t] * a``, sparsity loss ``AUX[t] * a`` and keeps
    ``KEPT[t][b]`` of the N tokens at block b; it records the state it was given."""

    def __init__(self, kept):
        super().__init__()
        self.a = torch.nn.Parameter(torch.ones(()))
        self.kept, self.states = kept, []

    def forward(self, images, state=None):
        t = int(images.flatten()[0])
        self.states.append(state)
        masks = torch.zeros(images.shape[0], DEPTH, N, dtype=torch.bool)
        for b, k in enumerate(self.kept[t]):
            masks[:, b, :k] = True
        keep = KeepRecord.from_masks(masks, (2, 5))
        backbone = SimpleNamespace(state=f"state{t}", aux_loss=AUX[t] * self.a, keep=keep)
        return SimpleNamespace(backbone=backbone, decoder_dict=lambda: {"t": t, "a": self.a})


SEG = [1.0, 2.0, 3.0]
AUX = [0.1, 0.2, 0.4]


class _Criterion:
    def __init__(self):
        self.calls = []

    def __call__(self, out, targets):
        t = out["t"]
        self.calls.append(t)
        loss = SEG[t] * out["a"]
        return {"loss": loss, "loss_ce": loss / 2, "loss_mask": loss / 4, "loss_dice": loss / 4}


def _steps(n):
    tg = [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 4, 4)}]
    return [(torch.full((1, 3, 4, 4), t, dtype=torch.uint8), tg) for t in range(n)]


def test_sparse_chain_weights_are_the_official_ones():
    kept = [[10] * DEPTH, [10, 7, 7, 5, 5, 5, 4, 4, 4, 3, 3, 3], [10, 6, 6, 6, 6, 6, 2, 2, 2, 1, 1, 1]]
    model, crit = _Model(kept), _Criterion()
    weights = stage_config(load_config("smoke"), "sparse")["frame_loss_weights"]
    assert weights == [0.0, 0.5, 1.0]
    loss, logs = chain_loss(model, crit, _steps(3), True, "cpu", weights)
    # task = 0 * 1 + 0.5 * 2 + 1 * 3 = 4; sparsity summed over all three frames = 0.7
    assert logs["loss_seg"] == pytest.approx(4.0) and logs["loss_sparse"] == pytest.approx(0.7)
    assert float(loss.detach()) == pytest.approx(4.7)
    assert logs["loss_ce"] == pytest.approx(2.0) and logs["loss_dice"] == pytest.approx(1.0)
    loss.backward()                                       # d/da of (4 + 0.7) a
    assert float(model.a.grad) == pytest.approx(4.7)
    assert crit.calls == [1, 2]                           # no segmentation loss on the first frame (reff)
    assert model.states == [None, "state0", "state1"]     # the chain passes the temporal state
    # per block: frames 1 and 2 (the ones with a previous frame), e.g. block 3: (5 + 6) / 2 / 10
    assert logs["keep_b0"] == pytest.approx(1.0) and logs["keep_b1"] == pytest.approx(0.65)
    assert logs["keep_b3"] == pytest.approx(0.55) and logs["keep_b11"] == pytest.approx(0.2)
    # keep_ratio: mean over all three frames and all blocks
    total = sum(sum(k) for k in kept) / (3 * DEPTH * N)
    assert logs["keep_ratio"] == pytest.approx(total)


def test_dense_clip_weights_and_no_state():
    model, crit = _Model([[10] * DEPTH] * 2), _Criterion()
    weights = stage_config(load_config("smoke"), "dense")["frame_loss_weights"]
    assert weights == [0.5, 1.0]
    loss, logs = chain_loss(model, crit, _steps(2), False, "cpu", weights)
    assert float(loss.detach()) == pytest.approx(0.5 * 1.0 + 1.0 * 2.0)    # no sparsity loss in the dense stage
    assert model.states == [None, None] and "keep_b0" not in logs
    # no weights: the plain mean over frames
    loss, _ = chain_loss(_Model([[10] * DEPTH] * 2), _Criterion(), _steps(2), False, "cpu")
    assert float(loss.detach()) == pytest.approx(1.5)


def test_weights_must_fit_the_clip():
    with pytest.raises(ValueError, match="frame_loss_weights has 2 weights for a 3-frame clip"):
        chain_loss(_Model([[10] * DEPTH] * 3), _Criterion(), _steps(3), True, "cpu", [0.5, 1.0])
    with pytest.raises(ValueError, match=">= 0"):
        chain_loss(_Model([[10] * DEPTH] * 2), _Criterion(), _steps(2), False, "cpu", [-1.0, 1.0])
