"""Spatial prior module (SPM) of ViT-Adapter (Chen et al. ICLR'23, §3.2): a dense CNN path beside the ViT.

A ResNet-style stem (three 3x3 convs, the first with stride 2, then a stride-2 max pool: stride 4) and three
stride-2 3x3 convs give maps at strides 4, 8, 16 and 32 with ``inplanes`` x (1, 2, 4, 4) channels; a 1x1 conv per
scale projects each to the ViT width. Conv, BatchNorm and ReLU as the official ``SpatialPriorModule``
(PatGlan/Video-Patch-Pruning ``adapter_modules.py``; SyncBatchNorm there: convert with
``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` for multi-GPU runs). This path is never pruned.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SpatialPriorModule(nn.Module):
    """Conv stem to strides 4 / 8 / 16 / 32, each projected to ``embed_dim`` channels.

    Args:
        inplanes: stem width (ViT-Adapter ``conv_inplane``, 64 in the paper's configs).
        embed_dim: ViT width C.

    Forward:
        images (B, 3, H, W) -> ``(c1, c2, c3, c4)``: c1 (B, C, ⌈H/4⌉, ⌈W/4⌉) map; c2, c3, c4 maps at strides
        8, 16, 32 (B, C, h_l, w_l) (each conv halves with ceil: h_l = ⌈h_{l-1} / 2⌉).
    """

    def __init__(self, inplanes: int = 64, embed_dim: int = 384) -> None:
        super().__init__()
        i = inplanes
        self.stem = nn.Sequential(*_conv_bn_relu(3, i, 2), *_conv_bn_relu(i, i, 1), *_conv_bn_relu(i, i, 1),
                                  nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.conv2 = nn.Sequential(*_conv_bn_relu(i, 2 * i, 2))
        self.conv3 = nn.Sequential(*_conv_bn_relu(2 * i, 4 * i, 2))
        self.conv4 = nn.Sequential(*_conv_bn_relu(4 * i, 4 * i, 2))
        self.fc1 = nn.Conv2d(i, embed_dim, 1)
        self.fc2 = nn.Conv2d(2 * i, embed_dim, 1)
        self.fc3 = nn.Conv2d(4 * i, embed_dim, 1)
        self.fc4 = nn.Conv2d(4 * i, embed_dim, 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        s4 = self.stem(images)
        s8 = self.conv2(s4)
        s16 = self.conv3(s8)
        s32 = self.conv4(s16)
        return self.fc1(s4), self.fc2(s8), self.fc3(s16), self.fc4(s32)
