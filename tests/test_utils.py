import json

import numpy as np
import pytest
import torch

from vppkit.models.records import KeepRecord
from vppkit.utils.io import atomic_path, atomic_write_json
from vppkit.utils.provenance import provenance


def test_atomic_write_json_roundtrip(tmp_path):
    p = atomic_write_json(tmp_path / "a" / "r.json", {"x": np.float32(1.5), "y": [1, 2]})
    assert json.loads(p.read_text()) == {"x": 1.5, "y": [1, 2]}
    assert [f.name for f in p.parent.iterdir()] == ["r.json"]


def test_atomic_write_leaves_target_untouched_on_error(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(ValueError):
        atomic_write_json(target, {"x": float("nan")})  # NaN is refused
    assert target.read_text() == "old"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer died")
    assert target.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]


def test_keep_record_pack_roundtrip():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(3, 12, 35, generator=g) > 0.4
    rec = KeepRecord.from_masks(masks, (5, 7), overhead_macs=12.0)
    back = KeepRecord.from_packed(rec.to_packed())
    assert torch.equal(back.masks, rec.masks)
    assert torch.equal(back.counts, masks.sum(-1))
    assert back.grid == (5, 7)
    assert back[1].masks.shape == (1, 12, 35)


def test_keep_record_rejects_bad_shapes():
    with pytest.raises(ValueError, match="grid"):
        KeepRecord.from_masks(torch.ones(1, 12, 10, dtype=torch.bool), (3, 3))


def test_provenance_has_commit_and_time():
    info = provenance("smoke", 3)
    assert info["profile"] == "smoke" and info["seed"] == 3
    assert info["commit"] and info["time_utc"].endswith("Z")
