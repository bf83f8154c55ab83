"""The low-resolution trunk: ResNet-34 stem + layers 1-2 with BatchNorm removed (conv
biases instead), then a DeepLabV3 ASPP head.

3DPE builds DeepLabV3 with ``encoder_depth=3``: the trunk output is layer 2, at 1/8 of the
input (stride 8 needs no dilation at this depth). ResNet layers 3 and 4 exist in the
official checkpoint but never run, so they are not built here (the loader checks and
drops them).

Shapes for a 512x512 input: (B, 5, 512, 512) -> stem (B, 64, 256, 256) -> max-pool +
layer1 (B, 64, 128, 128) -> layer2 (B, 128, 64, 64) -> ASPP (B, 256, 64, 64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """relu(conv2(relu(conv1(x))) + shortcut(x)), 3x3 convs with bias, no BatchNorm."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.shortcut = (
            nn.Conv2d(in_channels, channels, 1, stride=stride)
            if stride != 1 or in_channels != channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.conv2(F.relu(self.conv1(x))) + identity)


def _stage(in_channels: int, channels: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_channels, channels, stride)]
    layers += [BasicBlock(channels, channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNetTrunk(nn.Module):
    """ResNet-34 up to layer 2: (B, Cin, H, W) -> (B, 128, H/8, W/8)."""

    def __init__(self, in_channels: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3)
        self.layer1 = _stage(64, 64, 3, stride=1)
        self.layer2 = _stage(64, 128, 4, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        return self.layer2(self.layer1(x))


class ASPPHead(nn.Module):
    """DeepLabV3 decoder without BatchNorm: atrous spatial pyramid pooling (1x1, three
    dilated 3x3 at rates 12/24/36, global pooling), 1x1 projection, then a 3x3 conv.
    All followed by ReLU; dropout is inactive at inference.

    (B, 128, h, w) -> (B, 256, h, w).
    """

    def __init__(self, in_channels: int = 128, channels: int = 256,
                 rates: tuple[int, int, int] = (12, 24, 36)) -> None:
        super().__init__()
        self.branch1x1 = nn.Conv2d(in_channels, channels, 1)
        self.atrous = nn.ModuleList(
            nn.Conv2d(in_channels, channels, 3, padding=r, dilation=r) for r in rates
        )
        self.pooled = nn.Conv2d(in_channels, channels, 1)
        self.project = nn.Conv2d(channels * (2 + len(rates)), channels, 1)
        self.head = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [F.relu(self.branch1x1(x))]
        branches += [F.relu(conv(x)) for conv in self.atrous]
        # Global pooling branch: bilinear upsampling of a 1x1 map is a broadcast.
        pooled = F.relu(self.pooled(x.mean(dim=(2, 3), keepdim=True)))
        branches.append(pooled.expand(-1, -1, x.shape[2], x.shape[3]))
        x = F.relu(self.project(torch.cat(branches, dim=1)))
        return F.relu(self.head(x))
