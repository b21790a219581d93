"""Denoiser -> denoiser transforms. Classifier-free guidance (Ho & Salimans 2022) through a null class."""

from __future__ import annotations

import torch


def classifier_free_guidance(denoise, class_labels: torch.Tensor, null_label: int, scale: float):
    """D_w(x) = D(x | null) + w (D(x | y) - D(x | null)); w = 1 is plain conditional sampling.

    Both branches run as one batch of 2N, so one call costs 2 network evaluations per sample.
    """
    if scale == 1.0:
        return lambda x, sigma: denoise(x, sigma, class_labels=class_labels)
    null = torch.full_like(class_labels, null_label)
    labels = torch.cat([class_labels, null])

    def guided(x, sigma):
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        sigma2 = torch.cat([sigma.expand(len(x))] * 2) if sigma.ndim == 0 else torch.cat([sigma, sigma])
        cond, uncond = denoise(torch.cat([x, x]), sigma2, class_labels=labels).chunk(2)
        return uncond + scale * (cond - uncond)

    return guided
