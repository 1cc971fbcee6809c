"""vppkit.data: YouTube-VIS json (load / validate / save), DAVIS conversion, synthetic videos, video readers.

See docs/contracts.md ("Data"). Submodules:

- :mod:`vppkit.data.ytvis`: schema, :class:`YTVISFormatError`, RLE through pycocotools;
- :mod:`vppkit.data.davis`: DAVIS folder -> class-agnostic YouTube-VIS dict;
- :mod:`vppkit.data.synthetic`: procedural YouTube-VIS videos (the default data), size-bin statistics;
- :mod:`vppkit.data.video`: per-video reader, the engine's resized view (:class:`VideoFrames`), reference-frame
  sampling for training clips;
- :mod:`vppkit.data.transforms`: clip transform (resize, flip, normalise, pad) shared by frames and masks.
"""

from vppkit.data.davis import davis_to_ytvis
from vppkit.data.synthetic import generate_synthetic, size_bin, size_bin_stats, synthetic_dataset
from vppkit.data.transforms import ClipTransform
from vppkit.data.video import VideoFrames, VideoReader, VideoSet, sample_reference_frames
from vppkit.data.ytvis import (YTVISFormatError, category_index, decode_segmentation, encode_mask, load_ytvis,
                               save_ytvis, validate_ytvis)

__all__ = [
    "YTVISFormatError", "load_ytvis", "validate_ytvis", "save_ytvis", "decode_segmentation", "encode_mask",
    "category_index", "davis_to_ytvis", "generate_synthetic", "synthetic_dataset", "size_bin", "size_bin_stats",
    "ClipTransform", "VideoReader", "VideoSet", "VideoFrames", "sample_reference_frames",
]
