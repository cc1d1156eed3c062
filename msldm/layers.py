"""Building blocks of the SourceVAE (DAC-style, Kumar et al. 2023; Sec. 2.1 of the MSLDM paper).

Everything here is export-friendly: plain `Conv1d` / `ConvTranspose1d` / `Conv2d` wrapped in
`torch.nn.utils.parametrizations.weight_norm` (folded away by `fold_weight_norm` before ONNX
export), and Snake written with `sin` and elementwise arithmetic only.

Initialisation: PyTorch's default conv weights and zero biases. (DAC and the MSLDM code call a
truncated-normal init on the weight-normed conv, but with weight norm the effective weight is
recomputed from g and v, so only the zero bias takes effect; we do the same thing explicitly.)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["Snake1d", "ResidualUnit", "wn_conv1d", "wn_conv_transpose1d", "wn_conv2d",
           "fold_weight_norm"]


def _zero_bias(conv: nn.Module) -> nn.Module:
    bias = getattr(conv, "bias", None)
    if bias is not None:
        nn.init.zeros_(bias)
    return conv


def wn_conv1d(in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
              padding: int = 0, dilation: int = 1) -> nn.Conv1d:
    """A weight-normalised `Conv1d`: `[B, in, L] -> [B, out, L']`."""
    conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                     dilation=dilation)
    return weight_norm(_zero_bias(conv))


def wn_conv_transpose1d(in_channels: int, out_channels: int, kernel_size: int, *,
                        stride: int = 1, padding: int = 0,
                        output_padding: int = 0) -> nn.ConvTranspose1d:
    """A weight-normalised `ConvTranspose1d`: `[B, in, L] -> [B, out, L']`."""
    conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, output_padding=output_padding)
    return weight_norm(_zero_bias(conv))


def wn_conv2d(in_channels: int, out_channels: int, kernel_size: tuple[int, int], *,
              stride: tuple[int, int] = (1, 1),
              padding: tuple[int, int] = (0, 0)) -> nn.Conv2d:
    """A weight-normalised `Conv2d` (discriminators): `[B, in, H, W] -> [B, out, H', W']`."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
    return weight_norm(_zero_bias(conv))


class Snake1d(nn.Module):
    """Snake activation with a learnable per-channel alpha (Ziyin et al. 2020, as in DAC).

    `snake(x) = x + 1 / (alpha + 1e-9) * sin(alpha * x)^2`, alpha `[1, C, 1]` initialised to 1.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x [B, C, L] -> [B, C, L]`."""
        return x + (1.0 / (self.alpha + 1e-9)) * torch.sin(self.alpha * x).pow(2)


class ResidualUnit(nn.Module):
    """DAC residual unit: Snake -> dilated conv (k=7) -> Snake -> 1x1 conv, plus the input.

    'Same' padding keeps the length, so no data-dependent cropping is needed.
    """

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(channels),
            wn_conv1d(channels, channels, 7, dilation=dilation, padding=3 * dilation),
            Snake1d(channels),
            wn_conv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x [B, C, L] -> [B, C, L]`."""
        return x + self.block(x)


def fold_weight_norm(module: nn.Module) -> int:
    """Remove every weight-norm parametrization under `module`, in place.

    Each `weight = g * v / ||v||` becomes a plain `weight` parameter holding the same values,
    so outputs are unchanged. Returns the number of parametrizations removed.
    """
    removed = 0
    for sub in module.modules():
        if parametrize.is_parametrized(sub, "weight"):
            parametrize.remove_parametrizations(sub, "weight", leave_parametrized=True)
            removed += 1
    return removed
