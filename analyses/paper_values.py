"""Values REPORTED BY THE PAPERS, quoted from the source documents in ``../shared/papers``.

Nothing here is computed by vppkit. Reports show these next to our numbers, always labelled "paper",
so that differences are visible. Each constant names its source. Values read off a plot (Fig. 4) carry
the pixel-calibration uncertainty stated in vpp-notes.md §9.2 (about ±0.2 pp PKR, ±0.1 AP).
"""

from __future__ import annotations

# VPP supplementary (000_*), Table 7: kappa_init ablation, ViT-Adapter Tiny, YouTube-VIS 2021, goal PKR 55 %.
KAPPA_TABLE7 = [
    {"kappa_init": 0.3, "PKR": 51.4, "AP": 41.8},
    {"kappa_init": 0.5, "PKR": 52.7, "AP": 42.3},
    {"kappa_init": 0.7, "PKR": 54.1, "AP": 39.5},
]
KAPPA_TABLE7_SOURCE = "VPP supplementary Table 7 (ViT-Adapter-T, YouTube-VIS 2021, goal PKR 55 %)"

# VPP supplementary (000_*), Table 8: IoI (%) by object size. Keys: (goal PKR %, dataset, method).
IOI_TABLE8 = [
    {"goal_PKR": 55, "dataset": "YTVIS21", "method": "SViT", "IoI": 73.7, "IoI_S": 77.2, "IoI_M": 68.8, "IoI_L": 65.8},
    {"goal_PKR": 55, "dataset": "YTVIS21", "method": "VPP", "IoI": 82.3, "IoI_S": 87.3, "IoI_M": 76.2, "IoI_L": 72.2},
    {"goal_PKR": 55, "dataset": "YTVIS19", "method": "SViT", "IoI": 63.1, "IoI_S": 67.9, "IoI_M": 61.0, "IoI_L": 58.5},
    {"goal_PKR": 55, "dataset": "YTVIS19", "method": "VPP", "IoI": 77.3, "IoI_S": 84.4, "IoI_M": 75.0, "IoI_L": 71.4},
    {"goal_PKR": 40, "dataset": "YTVIS21", "method": "SViT", "IoI": 62.7, "IoI_S": 67.5, "IoI_M": 56.0, "IoI_L": 52.1},
    {"goal_PKR": 40, "dataset": "YTVIS21", "method": "VPP", "IoI": 73.4, "IoI_S": 79.5, "IoI_M": 65.9, "IoI_L": 60.7},
    {"goal_PKR": 40, "dataset": "YTVIS19", "method": "SViT", "IoI": 54.9, "IoI_S": 60.6, "IoI_M": 52.4, "IoI_L": 49.4},
    {"goal_PKR": 40, "dataset": "YTVIS19", "method": "VPP", "IoI": 66.7, "IoI_S": 75.8, "IoI_M": 63.7, "IoI_L": 58.8},
]
IOI_TABLE8_SOURCE = "VPP supplementary Table 8 (ViT-Adapter, YouTube-VIS 2019/2021)"

# VPP official README results table (003_*), YouTube-VIS 2021.
RESULTS_README = [
    {"model": "ViT-Adapter-S + ROVIS (dense)", "PKR": 100.0, "AP_track": 50.4, "mAP_bbox": 57.3, "mAP_segm": 52.3},
    {"model": "VPP-S", "PKR": 51.5, "AP_track": 49.8, "mAP_bbox": 56.1, "mAP_segm": 51.3},
    {"model": "VPP-S", "PKR": 39.3, "AP_track": 48.5, "mAP_bbox": 54.3, "mAP_segm": 49.9},
    {"model": "ViT-Adapter-T + ROVIS (dense)", "PKR": 100.0, "AP_track": 42.2, "mAP_bbox": 49.1, "mAP_segm": 44.8},
    {"model": "VPP-T", "PKR": 52.7, "AP_track": 42.3, "mAP_bbox": 49.9, "mAP_segm": 45.7},
    {"model": "VPP-T", "PKR": 40.9, "AP_track": 40.9, "mAP_bbox": 47.6, "mAP_segm": 43.6},
]
RESULTS_README_SOURCE = "VPP official README (YouTube-VIS 2021)"

# VPP Fig. 4 (AP loss vs PKR, ViT-Adapter-S), read off the plot by pixel calibration (vpp-notes.md §9.2).
AP_LOSS_FIG4 = [
    {"method": "VPP", "dataset": "YTVIS21", "PKR": 51.5, "AP_loss": 0.6},
    {"method": "VPP", "dataset": "YTVIS21", "PKR": 39.3, "AP_loss": 1.9},
    {"method": "VPP", "dataset": "YTVIS19", "PKR": 52.5, "AP_loss": 1.3},
    {"method": "VPP", "dataset": "YTVIS19", "PKR": 39.5, "AP_loss": 2.2},
    {"method": "SViT", "dataset": "YTVIS21", "PKR": 54.2, "AP_loss": 3.5},
    {"method": "SViT", "dataset": "YTVIS21", "PKR": 39.6, "AP_loss": 5.5},
    {"method": "SViT", "dataset": "YTVIS19", "PKR": 54.9, "AP_loss": 4.7},
    {"method": "SViT", "dataset": "YTVIS19", "PKR": 45.9, "AP_loss": 7.5},
    {"method": "DynamicViT", "dataset": "YTVIS21", "PKR": 54.4, "AP_loss": 5.2},
    {"method": "DynamicViT", "dataset": "YTVIS21", "PKR": 40.6, "AP_loss": 8.4},
    {"method": "DynamicViT", "dataset": "YTVIS19", "PKR": 54.4, "AP_loss": 8.9},
    {"method": "DynamicViT", "dataset": "YTVIS19", "PKR": 40.6, "AP_loss": 13.6},
]
AP_LOSS_FIG4_SOURCE = "VPP Fig. 4, values read off the plot (vpp-notes.md §9.2; about ±0.2 pp PKR, ±0.1 AP)"

# VPP Fig. 2 / supplementary §C: FGS per layer. Only a description is available (no numbers in the text).
FGS_FIG2_DESCRIPTION = (
    "Paper (VPP Fig. 2, supplementary §C): FGS about 0.6 at index 0 (0.5 = chance), rising almost linearly "
    "with depth until layer 9; initial features (idx 0) and early blocks (idx 1-3) lack foreground selectivity."
)
FGS_FIG2_INDEX0 = 0.6  # the only number quoted in the text (supplementary §C)

# VPP Fig. 5: patch density per layer. Description only; the nominal schedule is arithmetic (vpp-notes §11).
DENSITY_FIG5_DESCRIPTION = (
    "Paper (VPP Fig. 5): VPP removes patches after layer 1 while keeping high density in layers 7-12; "
    "SViT needs dense initial layers and leaves the deepest layers with insufficient density."
)

# The paper's training / model setup (vpp-notes §2.1-2.3, §7.1-7.2, from the official configs), the reference the
# report's "what this run scaled down" table compares a profile against. Text, quoted; nothing computed.
PAPER_SETUP = {
    "data": "YouTube-VIS 2019 / 2021 train (40 classes), evaluated on the valid split",
    "host": "ViT-Adapter (spatial prior conv_inplane 64, interactions [[0, 2], [3, 5], [6, 8], [9, 11]] + 2 extra "
            "extractors, deformable attention 6 heads x 4 points, cffn 0.25) -> Mask2Former (ROVIS)",
    "backbone": "ViT-Adapter-T / -S around DeiT-T / -S (patch 16), from a COCO-pretrained Mask2Former",
    "backbone training": "trained, lr x0.1",
    "input": "long side 960 px, padded to /32 (1280x720 -> 544x960, N = 2040 tokens)",
    "VIS head": "ROVIS: Mask2Former, 256-d, 100 queries, 9 decoder layers, MSDeformAttn pixel decoder",
    "mask loss": "BCE + Dice on 12544 sampled points (importance sampling 0.75, oversample 3.0)",
    "dense stage": "6 epochs over annotated key frames, 8 samples / step (1 per GPU x 8), key + 1 reference",
    "sparse stage": "6 epochs, 8 samples / step, 3-frame chains reff -> ref -> key",
    "tracker": "ROVIS track queries (static-query detections kept at score > 0.3, track-query ones > 0.25; "
               "training: false negatives kept with p 0.8, false positives added with p 0.2)",
    "segmentation loss per frame": "key (static queries) x1 + ref (track queries) x0.5 + key (track queries) x0.5; "
                                   "none on reff (rovis.py)",
    "drop path": "0.1 (Tiny) / 0.2 (Small)",
    "inference": "Gumbel noise kept (official code; supplementary §B: essential)",
}
PAPER_SETUP_SOURCE = "vpp-notes.md §2.1-2.3 and §7 (official configs and README)"
