"""A digit classifier: the judge of Mena et al.'s assembly experiment (2017, section 4.3).

The classic two-convolution MNIST network of TensorFlow's "deep MNIST" tutorial, which Mena et al.
trained as the judge (99.2 % test accuracy in their paper): 5x5 convolution with 32 channels,
ReLU, 2x2 max pooling, 5x5 convolution with 64 channels, ReLU, 2x2 max pooling, a dense layer of
1024 units with ReLU and dropout, and 10 logits.
"""

from __future__ import annotations

import torch
from torch import nn

from permlib.nn.init import torch_default_init_

__all__ = ["DigitClassifier"]


class DigitClassifier(nn.Module):
    """Two-convolution classifier of ``side``-pixel grayscale images into ``n_classes``.

    Args:
        n_classes: output logits (10 digits).
        side: image side in pixels (28 for MNIST; a multiple of 4).
        dropout: dropout probability before the logits (active in training mode only).
        generator: CPU generator for the initial weights (PyTorch's default initialization).

    Shape:
        ``forward(images)``: ``(B, 1, side, side) -> (B, n_classes)`` logits.
    """

    def __init__(
        self,
        n_classes: int = 10,
        side: int = 28,
        dropout: float = 0.5,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if side % 4 or side < 4:
            raise ValueError(f"side must be a positive multiple of 4, got {side}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.side = side
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * (side // 4) ** 2, 1024), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(1024, n_classes),
        )  # fmt: skip
        if generator is not None:
            torch_default_init_(self, generator)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or tuple(images.shape[1:]) != (1, self.side, self.side):
            raise ValueError(f"images must be (B, 1, {self.side}, {self.side}), "
                             f"got {tuple(images.shape)}")  # fmt: skip
        return self.classifier(self.features(images))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, chunk: int = 500) -> torch.Tensor:
        """Predicted classes ``(B,)`` int64, in evaluation mode (no dropout), by chunks."""
        was = self.training
        self.eval()
        try:
            out = [self(images[i : i + chunk]).argmax(dim=-1)
                   for i in range(0, images.shape[0], chunk)]  # fmt: skip
        finally:
            self.train(was)
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=images.device)
