"""Reference-frame sampling, clip transforms applied identically to frames and masks, per-video reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vppkit.data.transforms import ClipTransform, resized_size
from vppkit.data.video import VideoSet, sample_reference_frames
from vppkit.data.ytvis import encode_mask, save_ytvis

H, W, T = 30, 50, 10


def _object_mask(t, k):
    """Instance k at frame t: a box moving right; instance 1 absent in frames 0-2; asymmetric in x."""
    m = np.zeros((H, W), bool)
    if k == 0:
        m[5:15, 2 + 2 * t:12 + 2 * t] = True
    elif t >= 3:
        m[18:28, 30:34] = True
        m[18:20, 34:45] = True
    return m


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two videos in PNG; a frame's pixel is 255 exactly where some instance is, so image == mask union."""
    root = tmp_path_factory.mktemp("tiny")
    videos, anns = [], []
    for vid, length in ((1, T), (2, 1)):
        names = []
        for t in range(length):
            union = _object_mask(t, 0) | _object_mask(t, 1)
            img = np.repeat((union * 255).astype(np.uint8)[..., None], 3, axis=2)
            img[..., 1] = t  # frame id in the green channel (rounded back after resize)
            name = f"v{vid}/{t:05d}.png"
            (root / "frames" / f"v{vid}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / "frames" / name)
            names.append(name)
        videos.append({"id": vid, "file_names": names, "height": H, "width": W, "length": length})
        for k in range(2):
            segs = []
            for t in range(length):
                m = _object_mask(t, k)
                segs.append(encode_mask(m) if m.any() else None)
            anns.append({"id": 10 * vid + k, "video_id": vid, "category_id": 5 + 2 * k, "iscrowd": 0,
                         "segmentations": segs})
    ds = {"info": {"frames_root": "frames"}, "videos": videos, "annotations": anns,
          "categories": [{"id": 7, "name": "b"}, {"id": 5, "name": "a"}]}
    return save_ytvis(ds, root / "tiny.json")


def test_sample_reference_frames_window_and_orders():
    rng = np.random.default_rng(0)
    for _ in range(200):
        length = int(rng.integers(1, 30))
        key = int(rng.integers(0, length))
        for order in ("random", "sorted", "causal"):
            for num_ref in (1, 2):
                frames, ki = sample_reference_frames(key, length, num_ref, 5, order, rng)
                assert len(frames) == num_ref + 1 and frames[ki] == key
                refs = frames[:ki] + frames[ki + 1:]
                assert all(abs(r - key) <= 5 and 0 <= r < length for r in refs)
                if length > 1:
                    assert key not in refs
                if order == "random" or order == "causal":
                    assert ki == num_ref
                if order == "sorted" or (order == "causal" and key >= 1):
                    assert frames == sorted(frames)
                if order == "causal" and key >= 1:
                    assert all(r < key for r in refs)
                if length >= 12 and 5 <= key < length - 5 and order != "causal":
                    assert len(set(refs)) == num_ref  # distinct when the window is full
    # "random" really leaves future references in the chain sometimes (official, unsorted)
    futures = sum(max(sample_reference_frames(10, 30, 2, 5, "random", rng)[0][:2]) > 10 for _ in range(50))
    assert 0 < futures < 50
    with pytest.raises(ValueError):
        sample_reference_frames(0, 5, 1, 5, "backwards", rng)
    with pytest.raises(ValueError):
        sample_reference_frames(7, 5, 1, 5, "random", rng)


def _clip(tiny, frames, transform, seed=0):
    """Frames ``frames`` of video 1 (raw) through ``transform``: (images (T,3,H,W), masks T x (K,H,W), meta)."""
    reader = VideoSet(tiny)[0]
    masks = [reader.load_masks(t)[0] for t in frames]
    return transform([reader.load_frame(t) for t in frames], masks, np.random.default_rng(seed))


def test_clip_transform_resizes_and_pads(tiny):
    images, masks, meta = _clip(tiny, [2, 4, 3], ClipTransform(long_side=40, pad_to=16))
    assert resized_size(H, W, 40) == (24, 40)
    assert images.shape == (3, 3, 32, 48) and images.dtype == torch.float32
    assert len(masks) == 3 and all(m.shape == (2, 32, 48) and m.dtype == torch.bool for m in masks)
    assert meta["padded_size"] == (32, 48) and meta["size"] == (24, 40) and meta["orig_size"] == (H, W)
    assert not masks[0][1].any() and masks[1][1].any()  # instance 1 absent before frame 3: all-False mask
    # padding is zero (images) / False (masks)
    assert (images[:, :, 24:] == 0).all() and not any(m[:, 24:].any() for m in masks)


def _unnormalised(flip):
    return ClipTransform(long_side=None, pad_to=1, hflip_prob=1.0 if flip else 0.0, normalize=False)


def test_flip_identical_on_frames_and_masks(tiny):
    for frames in ([0, 1, 2], [5, 3, 7], [9, 8, 6]):
        a_img, a_masks, a_meta = _clip(tiny, frames, _unnormalised(False))
        b_img, b_masks, b_meta = _clip(tiny, frames, _unnormalised(True))
        assert b_meta["flipped"] and not a_meta["flipped"]
        assert torch.equal(b_img, a_img.flip(-1))
        for ma, mb in zip(a_masks, b_masks):
            assert torch.equal(mb, ma.flip(-1))
        # masks still sit on the object pixels of their own frame
        for t, f in enumerate(frames):
            fg = b_img[t, 0] > 0.5
            assert torch.equal(fg, b_masks[t].any(0))
            assert round(float(b_img[t, 1].max()) * 255) == f


def test_resize_keeps_frames_and_masks_aligned(tiny):
    images, masks, _ = _clip(tiny, [6, 5], ClipTransform(long_side=80, pad_to=16, hflip_prob=1.0, normalize=False))
    assert images.shape[-2:] == (48, 80)
    for t in range(2):
        fg = images[t, 0] > 0.5
        m = masks[t].any(0)
        inter, union = (fg & m).sum().item(), (fg | m).sum().item()
        assert inter / union > 0.85  # bilinear vs nearest differ only on edges


def test_normalisation_and_errors():
    tf = ClipTransform(pad_to=8)
    white = [np.full((5, 6, 3), 255, np.uint8)]
    x, masks, meta = tf(white, None)
    assert masks is None and x.shape == (1, 3, 8, 8)
    expected = (1 - torch.tensor(tf.mean)) / torch.tensor(tf.std)
    assert torch.allclose(x[0, :, 0, 0], expected.float())
    with pytest.raises(ValueError, match="same size|share one size"):
        tf([np.zeros((5, 6, 3), np.uint8), np.zeros((6, 6, 3), np.uint8)])
    with pytest.raises(ValueError, match="does not match"):
        tf(white, [np.zeros((1, 4, 6), bool)])


def test_video_reader_for_inference(tiny):
    videos = VideoSet(tiny, transform=ClipTransform(pad_to=16))
    assert len(videos) == 2
    reader = videos[0]
    assert len(reader) == T and reader.instance_ids.tolist() == [10, 11]
    frames = list(reader)
    assert [f["frame_index"] for f in frames] == list(range(T))
    f = frames[1]
    assert f["image"].shape == (3, 32, 64) and f["masks"].shape == (2, 32, 64)
    assert f["valid"].tolist() == [True, False]
    assert torch.equal(f["masks"][0, :H, :W], torch.from_numpy(_object_mask(1, 0)))
    with pytest.raises(IndexError):
        reader[T]
    (tiny.parent / "frames" / "v1" / "00004.png").rename(tiny.parent / "gone.png")
    try:
        with pytest.raises(FileNotFoundError, match=r"video id 1.*00004\.png"):
            reader.load_frame(4)
    finally:
        (tiny.parent / "gone.png").rename(tiny.parent / "frames" / "v1" / "00004.png")
