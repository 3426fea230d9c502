"""The tiny real generator and discriminator the trainer tests share (seconds on a CPU).

``from tinymodels import TinyG, TinyD`` (pytest puts tests/ on ``sys.path`` beside conftest.py; a test
file run as a script, as test_ddp's ranks are, has its own folder there).
"""
from __future__ import annotations

import torch
from torch import nn


class TinyG(nn.Module):
    """(image, trimap) -> {"alpha"}: two 3x3 convolutions."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, image, trimap):
        return {"alpha": torch.sigmoid(self.net(torch.cat([image, trimap], 1)))}


class TinyD(nn.Module):
    """A two-layer PatchGAN-shaped discriminator over (image, alpha)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(4, 8, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, x):
        return self.net(x)
