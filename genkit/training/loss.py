"""The diffusion training loss (research/diffusion.md §1), with explicit arguments.

  1. t ~ U(0, 1); lambda = schedule.logsnr(t); alpha, sigma = sqrt(sigmoid(+-lambda))
  2. x_t = alpha x0 + sigma eps; v = alpha eps - sigma x0
  3. loss = w(lambda) |v_hat - v|^2   (w = 1 for "v", alpha^2 for "eps", SiD2's sigmoid(b - lambda) alpha^2)
  4. optional multiscale loss on eps at 1/s-weighted average-pooled scales (simple diffusion).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genkit.checks import check_choice
from genkit.denoiser import logsnr_to_c_noise
from genkit.schedules import Schedule, alpha_sigma

LOSS_WEIGHTINGS = ("v", "eps", "sigmoid")


def diffusion_loss(unet, x0: torch.Tensor, labels, schedule: Schedule, *, weighting: str = "v",
                   sigmoid_bias: float = -2.0, multiscale: bool = False, multiscale_min: int = 8,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean loss of a v-predicting UNet on clean images x0 (B, 3, H, W) in [-1, 1]; labels (B,) or None."""
    check_choice("weighting", weighting, LOSS_WEIGHTINGS)
    b = x0.shape[0]
    # 1. noise level per image
    t = torch.rand(b, device=x0.device, generator=generator)
    logsnr = schedule.logsnr(t)                                       # (B,)
    alpha, sigma = (s.view(-1, 1, 1, 1) for s in alpha_sigma(logsnr))
    # 2. noisy input and target
    eps = torch.randn(x0.shape, device=x0.device, generator=generator)
    x_t = alpha * x0 + sigma * eps
    v = alpha * eps - sigma * x0
    # 3. weighted v-MSE
    v_hat = unet(x_t, logsnr_to_c_noise(logsnr), class_labels=labels).sample.float()
    per_sample = (v_hat - v).pow(2).mean(dim=(1, 2, 3))               # (B,)
    if weighting == "eps":
        per_sample = per_sample * alpha.flatten() ** 2                # |eps - eps_hat|^2 = alpha^2 |v - v_hat|^2
    elif weighting == "sigmoid":
        per_sample = per_sample * alpha.flatten() ** 2 * torch.sigmoid(sigmoid_bias - logsnr)
    loss = per_sample.mean()
    # 4. multiscale eps loss
    if multiscale:
        eps_hat = sigma * x_t + alpha * v_hat                         # eps from v (VP identities)
        side, terms = x0.shape[-1] // 2, []
        while side >= multiscale_min:
            k = x0.shape[-1] // side
            diff = F.avg_pool2d(eps_hat - eps, k)                     # D_s applied to the residual
            terms.append(diff.pow(2).mean() * (k * k) / side)         # rescale pooled noise to unit variance
            side //= 2
        loss = loss + sum(terms)
    return loss
