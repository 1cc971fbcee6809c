"""DAVIS -> YouTube-VIS conversion: the shared DAVIS-2016 subset and a DAVIS-2017-style palette folder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vppkit.data.davis import davis_to_ytvis, read_davis_labels
from vppkit.data.ytvis import decode_segmentation, validate_ytvis
from vppkit.utils.paths import davis_root


@pytest.fixture(scope="module")
def davis():
    root = davis_root()
    if not (root / "ImageSets" / "240p" / "train.txt").is_file():
        pytest.skip(f"DAVIS subset not found at {root} (set VPPKIT_DAVIS_ROOT)")
    return root


@pytest.fixture(scope="module")
def train(davis):
    return davis_to_ytvis(davis, "train", progress=False)


@pytest.mark.parametrize("split, n_seq, n_frames", [("train", 12, 932), ("val", 6, 434)])
def test_split_counts(davis, split, n_seq, n_frames, train):
    ds = train if split == "train" else davis_to_ytvis(davis, split, progress=False)
    assert len(ds["videos"]) == n_seq
    assert sum(v["length"] for v in ds["videos"]) == n_frames
    assert len(ds["annotations"]) == n_seq  # DAVIS-2016: one object per sequence
    assert ds["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    validate_ytvis(ds, frames_root=ds["info"]["frames_root"], source=f"davis {split}")


def test_mask_areas_match_pngs(davis, train):
    vids = {v["name"]: v for v in train["videos"]}
    anns = {a["video_id"]: a for a in train["annotations"]}
    for seq, t in [("bear", 77), ("bear", 0), ("boat", 10), ("tennis", 40)]:
        v = vids[seq]
        assert v["file_names"][t] == f"{seq}/{t:05d}.jpg"
        png = davis / "Annotations" / "240p" / seq / f"{t:05d}.png"
        with Image.open(png) as im:
            arr = np.array(im)
            mode = im.mode
        expected = (arr[..., 0] if arr.ndim == 3 else arr) > 0
        if seq == "bear" and t == 77:
            assert mode == "LA"  # the quirk must really be exercised
        seg = anns[v["id"]]["segmentations"][t]
        got = decode_segmentation(seg, v["height"], v["width"])
        assert got is not None and expected.sum() > 0
        assert np.array_equal(got, expected), (seq, t)
        assert anns[v["id"]]["areas"][t] == float(expected.sum())


def test_la_png_reads_l_channel(davis):
    labels = read_davis_labels(davis / "Annotations" / "240p" / "bear" / "00077.png")
    assert labels.shape == (240, 427) and set(np.unique(labels)) <= {0, 1}


def test_empty_frame_gives_null(davis, train):
    # every annotated frame is present; a frame whose PNG is all zero must be null (not an empty RLE)
    for a in train["annotations"]:
        v = next(v for v in train["videos"] if v["id"] == a["video_id"])
        for t, seg in enumerate(a["segmentations"]):
            if seg is None:
                png = davis / "Annotations" / "240p" / v["name"] / f"{t:05d}.png"
                assert not np.array(Image.open(png)).any()
                assert a["areas"][t] is None and a["bboxes"][t] is None


def _palette_folder(root):
    """A 1-sequence DAVIS-2017-style folder: palette PNGs with objects 1 and 2 and a void border (255)."""
    seq, h, w = "two", 20, 30
    (root / "JPEGImages" / "480p" / seq).mkdir(parents=True)
    (root / "Annotations" / "480p" / seq).mkdir(parents=True)
    (root / "ImageSets" / "480p").mkdir(parents=True)
    lines = []
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (3 * 252) + [255, 255, 255]
    for t in range(3):
        lab = np.zeros((h, w), np.uint8)
        lab[2:8, 3 + t:10 + t] = 1
        if t != 1:
            lab[10:18, 15:25] = 2  # object 2 absent in frame 1
        lab[0, :] = 255  # void
        im = Image.fromarray(lab, mode="P")
        im.putpalette(palette)
        im.save(root / "Annotations" / "480p" / seq / f"{t:05d}.png")
        Image.new("RGB", (w, h), (t, t, t)).save(root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg")
        lines.append(f"/JPEGImages/480p/{seq}/{t:05d}.jpg /Annotations/480p/{seq}/{t:05d}.png")
    (root / "ImageSets" / "480p" / "val.txt").write_text("\n".join(lines) + "\n")


def test_palette_png_two_objects(tmp_path):
    _palette_folder(tmp_path)
    ds = davis_to_ytvis(tmp_path, "val", res="480p", progress=False)
    validate_ytvis(ds, frames_root=tmp_path / "JPEGImages" / "480p")
    assert len(ds["videos"]) == 1 and ds["videos"][0]["length"] == 3
    anns = sorted(ds["annotations"], key=lambda a: a["davis_object_id"])
    assert [a["davis_object_id"] for a in anns] == [1, 2]
    assert all(a["category_id"] == 1 for a in anns)
    assert anns[1]["segmentations"][1] is None and anns[0]["segmentations"][1] is not None
    assert anns[0]["areas"] == [42.0, 42.0, 42.0] and anns[1]["areas"][0] == 80.0
    m = decode_segmentation(anns[0]["segmentations"][2], 20, 30)
    assert m[2:8, 5:12].all() and m.sum() == 42 and not m[0].any()  # void row never foreground


def test_missing_annotation_is_named(tmp_path):
    _palette_folder(tmp_path)
    (tmp_path / "Annotations" / "480p" / "two" / "00002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"two.*00002\.png"):
        davis_to_ytvis(tmp_path, "val", res="480p", progress=False)
    with pytest.raises(FileNotFoundError, match="train.txt"):
        davis_to_ytvis(tmp_path, "train", res="480p", progress=False)
