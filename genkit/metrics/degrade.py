"""Controlled degradations of real images, for checking that a Frechet distance sees what it should:
FD must rise monotonically with blur strength and with added noise."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """uint8 (N, 3, H, W) blurred by a separable Gaussian of std `sigma` pixels (replicate padding)."""
    if sigma <= 0:
        return images.clone()
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = images.float()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return x.round().clamp(0, 255).to(torch.uint8)


def add_noise(images: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    """uint8 images plus N(0, std^2) noise in 0..255 units, rounded and clipped (seeded)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=g) * std
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)
