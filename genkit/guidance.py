"""Denoiser -> denoiser transforms. Classifier-free guidance (Ho & Salimans 2022), written once here.

Every guided call in genkit (the pixel pipeline's solvers and its diffusers-scheduler loop, the multimodal
diffusion head, the multimodal code logits) goes through cfg_combine; both branches always run as one batch of
2N, so a guided call costs exactly 2 network evaluations per sample.
"""

from __future__ import annotations

import torch


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """D_w = D_u + w (D_c - D_u); w = 1 is plain conditional sampling, w = 0 unconditional."""
    return uncond + scale * (cond - uncond)


def guided_pair(denoise_both, scale: float):
    """denoise_both(x2, sigma) evaluates [cond; uncond] on a batch of 2N -> the guided D(x, sigma) on N.

    sigma may be a float, a 0-d tensor or (N,): it is doubled to (2N,) to match the batch."""
    def guided(x, sigma):
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        sigma2 = sigma.expand(2 * len(x)) if sigma.ndim == 0 else torch.cat([sigma, sigma])
        cond, uncond = denoise_both(torch.cat([x, x]), sigma2).chunk(2)
        return cfg_combine(cond, uncond, scale)
    return guided


def classifier_free_guidance(denoise, class_labels: torch.Tensor, null_label: int, scale: float):
    """Guided D(x, sigma) through a null class: [class_labels; null] in one batch of 2N (cond first: the AMED
    predictor reads the conditional half of the bottleneck)."""
    if scale == 1.0:
        return lambda x, sigma: denoise(x, sigma, class_labels=class_labels)
    labels = torch.cat([class_labels, torch.full_like(class_labels, null_label)])
    return guided_pair(lambda x2, s2: denoise(x2, s2, class_labels=labels), scale)
