"""Small PyTorch building blocks shared by the task models and the tests."""
from __future__ import annotations

import torch
from torch import nn


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class MultiHeadCNN(nn.Module):
    """A compact CNN with one softmax head per output; `features` is the Grad-CAM layer."""

    def __init__(self, heads: dict[str, int], channels: int = 1, widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        layers, c = [], channels
        for i, w in enumerate(widths):
            layers += [conv_block(c, w), conv_block(w, w)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.heads = nn.ModuleDict({name: nn.Linear(c, n) for name, n in heads.items()})

    def forward(self, x: torch.Tensor):
        z = self.pool(self.features(x)).flatten(1)
        return tuple(torch.softmax(head(z), dim=1) for head in self.heads.values())


def multi_head_cnn(heads: dict[str, int], channels: int = 1, widths: list[int] = (16, 32, 64)) -> MultiHeadCNN:
    return MultiHeadCNN(heads, channels, tuple(widths))
