"""Synthetic generator: determinism, YouTube-VIS validity, size-bin coverage and the promised scene content."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vppkit.data.synthetic import (CATEGORIES, SIZE_BINS, _amodal, generate_synthetic, render_video, size_bin,
                                   size_bin_stats, synthetic_dataset)
from vppkit.data.ytvis import decode_segmentation, load_ytvis

SMALL = dict(num_videos=3, num_frames=6, height=64, width=96, progress=False)


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_determinism(tmp_path):
    a = generate_synthetic(tmp_path / "a", seed=3, **SMALL)
    b = generate_synthetic(tmp_path / "b", seed=3, **SMALL)
    c = generate_synthetic(tmp_path / "c", seed=4, **SMALL)
    ta, tb, tc = _tree(a.parent), _tree(b.parent), _tree(c.parent)
    assert ta == tb  # identical json and identical frame bytes
    assert ta.keys() == tc.keys()
    assert ta["instances.json"] != tc["instances.json"]
    assert any(ta[k] != tc[k] for k in ta if k.endswith(".jpg"))


def test_png_frames_and_sizes(tmp_path):
    path = generate_synthetic(tmp_path, seed=0, image_format="png", **SMALL)
    ds = load_ytvis(path, frames_root=tmp_path / "JPEGImages")  # validates files and image sizes
    v = ds["videos"][0]
    assert v["file_names"][0].endswith(".png") and (v["height"], v["width"]) == (64, 96)
    assert ds["info"]["frames_root"] == "JPEGImages"


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        generate_synthetic(tmp_path, num_videos=0)
    with pytest.raises(ValueError):
        generate_synthetic(tmp_path, image_format="gif")


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    """The default-sized set (24 videos, 16 frames, 192x192), generated once for this module."""
    root = tmp_path_factory.mktemp("synth_default")
    path = synthetic_dataset(root=root, progress=False)
    assert synthetic_dataset(root=root, progress=False) == path  # cached: second call finds it
    return path, load_ytvis(path)


def test_default_set_covers_size_bins_and_content(default_set):
    path, ds = default_set
    assert len(ds["videos"]) == 24 and all(v["length"] == 16 for v in ds["videos"])
    assert (ds["videos"][0]["height"] // 16) * (ds["videos"][0]["width"] // 16) >= 144
    stats = size_bin_stats(ds)
    n = len(ds["annotations"])
    for b in SIZE_BINS:  # every IoI bin well populated, per instance and per (frame, instance)
        assert stats["instances"][b] >= 0.15 * n, stats["instances"]
        assert stats["frame_instances"][b] > 50
    # the bin assigned at generation time is the bin measured on the visible masks
    target = {a["id"]: a["size_bin_target"] for a in ds["annotations"]}
    agree = sum(target[i] == b for i, _, b in stats["per_instance"])
    assert agree >= 0.9 * n
    assert stats["empty_frames"] >= 2  # some frames without any object
    assert {a["category_id"] for a in ds["annotations"]} == {c["id"] for c in CATEGORIES}
    # instances entering late / leaving early: null in the middle of present frames or at the ends
    assert sum(a["segmentations"][0] is None for a in ds["annotations"]) >= 3
    assert sum(a["segmentations"][-1] is None for a in ds["annotations"]) >= 3


def test_size_bin_edges():
    assert size_bin(0.10) == "S" and size_bin(0.1001) == "M" and size_bin(0.20) == "M" and size_bin(0.21) == "L"


def test_motion_scale_and_occlusion():
    frames, plans, masks = render_video(seed=0, video_index=0, first_instance=0, num_frames=8, height=96, width=96)
    assert len(frames) == 8 and frames[0].shape == (96, 96, 3) and frames[0].dtype == np.uint8
    occluded = 0
    for k, p in enumerate(plans):
        present = [t for t in range(8) if p["t_in"] <= t < p["t_out"]]
        amodal = [_amodal(p, t, t / 7, 96, 96)[1].sum() for t in present]
        visible = [masks[k][t].sum() for t in present]
        occluded += sum(v < a for v, a in zip(visible, amodal))
        centres = [np.argwhere(_amodal(p, t, t / 7, 96, 96)[1]).mean(0) for t in present[:1] + present[-1:]]
        if len(present) > 1:
            assert np.abs(centres[0] - centres[-1]).sum() > 0  # it moves
            assert abs(p["zoom"]) > 0  # and changes scale
        for t in range(8):
            if not p["t_in"] <= t < p["t_out"]:
                assert not masks[k][t].any()
    assert occluded > 0


def test_background_is_cluttered(default_set):
    """Pixels outside all instances are far from flat: textured background with distractors."""
    path, ds = default_set
    root = path.parent / "JPEGImages"
    stds, grads = [], []
    for v in ds["videos"][:6]:
        anns = [a for a in ds["annotations"] if a["video_id"] == v["id"]]
        img = np.asarray(Image.open(root / v["file_names"][0]).convert("RGB"), float)
        fg = np.zeros(img.shape[:2], bool)
        for a in anns:
            m = decode_segmentation(a["segmentations"][0], v["height"], v["width"])
            if m is not None:
                fg |= m
        # 4x4 block means: pixel noise averages out (sigma 3 -> 0.75), textures and distractor edges remain
        h, w = (img.shape[0] // 4) * 4, (img.shape[1] // 4) * 4
        blocks = img[:h, :w].reshape(h // 4, 4, w // 4, 4, 3).mean(axis=(1, 3))
        bg_blocks = ~fg[:h, :w].reshape(h // 4, 4, w // 4, 4).any(axis=(1, 3))
        diff = np.abs(np.diff(blocks, axis=1)).mean(axis=2)[bg_blocks[:, 1:] & bg_blocks[:, :-1]]
        stds.append(img[~fg].std(axis=0).mean())
        grads.append(diff.mean())
    # measured: the smooth colour field alone (no clutter, no distractors) gives a block gradient of ~1.9;
    # the generated backgrounds give ~5.7
    assert np.mean(stds) > 12 and np.mean(grads) > 3.5, (stds, grads)
