"""YouTube-VIS schema: masks, round trip, and every validation error naming the id at fault."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from vppkit.data.ytvis import (YTVISFormatError, annotations_by_video, category_index, decode_segmentation,
                               encode_mask, load_ytvis, resolve_frames_root, rle_counts, save_ytvis, validate_ytvis)

H, W = 6, 8


def _mask(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _uncompressed(mask):
    """Uncompressed COCO RLE (column-major run lengths) built by hand."""
    flat = mask.T.reshape(-1).astype(int)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def make_ds():
    """Two videos, three annotations, using compressed RLE, uncompressed RLE, polygons and nulls."""
    return {
        "info": {"description": "test"},
        "videos": [
            {"id": 11, "file_names": ["a/00000.png", "a/00001.png", "a/00002.png"], "height": H, "width": W,
             "length": 3},
            {"id": 12, "file_names": ["b/00000.png", "b/00001.png"], "height": H, "width": W, "length": 2},
        ],
        "annotations": [
            {"id": 101, "video_id": 11, "category_id": 3, "iscrowd": 0,
             "segmentations": [encode_mask(_mask(0, 2, 0, 3)), None, encode_mask(_mask(1, 4, 2, 5))],
             "bboxes": [[0, 0, 3, 2], None, [2, 1, 3, 3]], "areas": [6.0, None, 9.0]},
            {"id": 102, "video_id": 11, "category_id": 7, "iscrowd": 0,
             "segmentations": [_uncompressed(_mask(2, 6, 4, 8)), None, None],
             "bboxes": [[4, 2, 4, 4], None, None], "areas": [16.0, None, None]},
            {"id": 201, "video_id": 12, "category_id": 3, "iscrowd": 0,
             "segmentations": [[[1.0, 1.0, 5.0, 1.0, 5.0, 4.0, 1.0, 4.0]], None],
             "bboxes": [[1, 1, 4, 3], None], "areas": [12.0, None]},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }


def test_encode_decode_and_rle_counts_match_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = rng.uniform(size=(13, 17)) > 0.6
        rle = encode_mask(m)
        assert isinstance(rle["counts"], str) and rle["size"] == [13, 17]
        assert np.array_equal(decode_segmentation(rle, 13, 17), m)
        runs = rle_counts(rle["counts"])
        assert sum(runs) == 13 * 17
        # rebuilt from the parsed runs, pycocotools gives back the same string
        again = mask_utils.frPyObjects({"size": [13, 17], "counts": runs}, 13, 17)
        assert again["counts"].decode() == rle["counts"]
    assert decode_segmentation(None, 4, 4) is None


def test_decode_uncompressed_and_polygon():
    m = _mask(2, 6, 4, 8)
    assert np.array_equal(decode_segmentation(_uncompressed(m), H, W), m)
    poly = decode_segmentation([[1.0, 1.0, 5.0, 1.0, 5.0, 4.0, 1.0, 4.0]], H, W)
    assert poly.dtype == bool and 9 <= poly.sum() <= 20


def test_round_trip(tmp_path):
    ds = make_ds()
    path = save_ytvis(ds, tmp_path / "sub" / "a.json")
    loaded = load_ytvis(path)
    assert loaded == json.loads(json.dumps(ds))
    save_ytvis(loaded, tmp_path / "b.json")
    assert load_ytvis(tmp_path / "b.json") == loaded
    assert not list((tmp_path / "sub").glob(".*"))  # no temp files left behind (atomic write)


def test_helpers():
    ds = make_ds()
    assert category_index(ds) == {3: 0, 7: 1}
    by = annotations_by_video(ds)
    assert [a["id"] for a in by[11]] == [101, 102] and [a["id"] for a in by[12]] == [201]
    assert resolve_frames_root(ds) is None
    ds["info"]["frames_root"] = "frames"
    assert resolve_frames_root(ds, "/x/y/a.json").as_posix() == "/x/y/frames"


def _expect(ds, *needles, **kw):
    with pytest.raises(YTVISFormatError) as exc:
        validate_ytvis(ds, source="my.json", **kw)
    msg = str(exc.value)
    assert "my.json" in msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_missing_keys():
    ds = make_ds()
    del ds["categories"]
    _expect(ds, "categories")
    ds = make_ds()
    del ds["videos"][1]["height"]
    _expect(ds, "id 12", "height")
    ds = make_ds()
    del ds["annotations"][2]["segmentations"]
    _expect(ds, "id 201", "segmentations")


def test_segmentation_length_mismatch():
    ds = make_ds()
    ds["annotations"][1]["segmentations"].append(None)
    _expect(ds, "annotation id 102", "video id 11", "length 3")
    ds = make_ds()
    ds["annotations"][0]["areas"] = [1.0]
    _expect(ds, "annotation id 101", "areas")


def test_file_names_length_mismatch():
    ds = make_ds()
    ds["videos"][0]["length"] = 4
    _expect(ds, "video id 11", "file_names")


def test_invalid_rle():
    bad_strings = ["", "91", "9220", "zz~~"]  # sums != H*W, or not decodable
    for s in bad_strings:
        ds = make_ds()
        ds["annotations"][0]["segmentations"][2] = {"size": [H, W], "counts": s}
        _expect(ds, "annotation id 101", "frame 2", "invalid segmentation")
    ds = make_ds()
    ds["annotations"][1]["segmentations"][0] = {"size": [H, W], "counts": [10, 5, 100]}
    _expect(ds, "annotation id 102", "frame 0", "sum")
    ds = make_ds()
    ds["annotations"][2]["segmentations"][0] = [[1.0, 2.0, 3.0]]
    _expect(ds, "annotation id 201", "polygon")
    ds = make_ds()
    ds["annotations"][2]["segmentations"][0] = 5
    _expect(ds, "annotation id 201", "frame 0")


def test_frame_size_mismatch_in_rle():
    ds = make_ds()
    ds["annotations"][0]["segmentations"][0] = encode_mask(np.ones((H, W + 1), bool))
    _expect(ds, "annotation id 101", "video id 11", "size")


def test_unknown_category_and_video():
    ds = make_ds()
    ds["annotations"][2]["category_id"] = 99
    _expect(ds, "annotation id 201", "unknown category id 99")
    ds = make_ds()
    ds["annotations"][2]["video_id"] = 77
    _expect(ds, "annotation id 201", "unknown video id 77")


def test_duplicate_ids():
    ds = make_ds()
    ds["videos"][1]["id"] = 11
    _expect(ds, "video id 11", "duplicate")
    ds = make_ds()
    ds["annotations"][2]["id"] = 101
    _expect(ds, "annotation id 101", "duplicate")
    ds = make_ds()
    ds["categories"].append({"id": 7, "name": "again"})
    _expect(ds, "category id 7", "duplicate")


def _write_frames(root, ds, size=(W, H)):
    for v in ds["videos"]:
        for name in v["file_names"]:
            p = root / name
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", size).save(p)


def test_frames_root_checks(tmp_path):
    ds = make_ds()
    _write_frames(tmp_path, ds)
    validate_ytvis(ds, frames_root=tmp_path)
    (tmp_path / "b" / "00001.png").unlink()
    _expect(ds, "video id 12", "missing frame file", "00001.png", frames_root=tmp_path)
    Image.new("RGB", (W + 2, H)).save(tmp_path / "b" / "00001.png")
    _expect(ds, "video id 12", "00001.png", "declared", frames_root=tmp_path)


def test_load_names_the_file(tmp_path):
    ds = make_ds()
    path = save_ytvis(ds, tmp_path / "x.json")
    bad = copy.deepcopy(ds)
    bad["annotations"][0]["segmentations"].pop()
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(YTVISFormatError, match=r"bad\.json.*annotation id 101"):
        load_ytvis(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(YTVISFormatError, match="broken.json"):
        load_ytvis(tmp_path / "broken.json")
    with pytest.raises(YTVISFormatError):
        save_ytvis(bad, tmp_path / "never.json")
    assert not (tmp_path / "never.json").exists()
    assert load_ytvis(path) == json.loads(json.dumps(ds))
