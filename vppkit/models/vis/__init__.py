"""Video instance segmentation model (MinVIS-style, docs/vis_model.md): pyramid, query decoder, matcher,
losses, online tracker."""

from vppkit.models.vis.decoder import MaskDecoder
from vppkit.models.vis.losses import PointSampledCriterion, SetCriterion, build_criterion
from vppkit.models.vis.matcher import hungarian_match
from vppkit.models.vis.model import VISModel, VISOutput, build_pruner, build_vis_model
from vppkit.models.vis.pyramid import SimplePyramid
from vppkit.models.vis.tracker import TrackerState, VideoTrackAccumulator, match_queries, track_step

__all__ = ["MaskDecoder", "SetCriterion", "PointSampledCriterion", "build_criterion", "hungarian_match", "VISModel",
           "VISOutput", "build_pruner", "build_vis_model", "SimplePyramid", "TrackerState", "VideoTrackAccumulator",
           "match_queries", "track_step"]
