"""Network architectures for the reference models, keyed by the name a manifest gives.

Plain PyTorch: nothing here knows about Dagster, DICOM or where the model runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

INPUT_SIZE = 64
"""Side in pixels of the square single-channel image every architecture here expects."""


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCnn(nn.Module):
    """Three conv blocks (8-16-32 channels), global max pooling and one logit.

    Input: float tensor (batch, 1, 64, 64) scaled to [0, 1]. Output: (batch, 1) logits.
    Global max rather than average pooling: the lesions are a few pixels across, and averaging
    over the 8x8 feature map dilutes them (held-out CT AUC 0.94 with average, 0.97 with max,
    same data and schedule).
    """

    def __init__(self, channels: tuple[int, int, int] = (8, 16, 32)) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.features = nn.Sequential(_block(1, c1), _block(c1, c2), _block(c2, c3))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(c3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, 1) for images of shape (batch, 1, H, W)."""
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def small_cnn() -> nn.Module:
    """A freshly initialised `SmallCnn` with the default 8-16-32 channels."""
    return SmallCnn()


class ScreeningCnn(nn.Module):
    """Four conv blocks, global max pooling and one logit, for inputs of any square size.

    Input: float tensor (batch, in_channels, S, S) scaled to [0, 1]; 2.5D models stack a CT
    slice between its neighbours as channels. Output: (batch, 1) logits. Sized like the cheap
    end of real screening networks (hundreds of MFLOPs an image) while its weights stay
    under 1.6 MB.
    """

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int]) -> None:
        super().__init__()
        layers, previous = [], in_channels
        for width in widths:
            layers.append(_block(previous, width))
            previous = width
        self.in_channels = in_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(previous, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, 1) for images of shape (batch, in_channels, S, S)."""
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def screening_cnn_2d() -> nn.Module:
    """`ScreeningCnn` for single-channel images (radiographs), 16-32-64-128 channels."""
    return ScreeningCnn(1, (16, 32, 64, 128))


def screening_cnn_25d() -> nn.Module:
    """`ScreeningCnn` for a CT slice between its two neighbours (3 channels), 32-64-128-256."""
    return ScreeningCnn(3, (32, 64, 128, 256))


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "small_cnn_v1": small_cnn,
    "screening_cnn_2d_v2": screening_cnn_2d,
    "screening_cnn_25d_v2": screening_cnn_25d,
}
"""Architecture key (as written in a manifest) -> constructor of an untrained module."""


def build(architecture: str) -> nn.Module:
    """A new, untrained module for `architecture`; raises KeyError naming the known keys."""
    try:
        factory = ARCHITECTURES[architecture]
    except KeyError:
        raise KeyError(
            f"unknown architecture {architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}"
        ) from None
    return factory()
