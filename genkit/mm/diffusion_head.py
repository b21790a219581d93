"""The per-patch diffusion head (MAR's "Diffusion Loss", Li et al. 2024; research/multimodal.md §1.3).

A small MLP with adaLN predicts v for one noisy patch vector, conditioned on the transformer output z at that
patch and on the noise level. A plain regression head would collapse to the conditional mean (MAR: FID > 100);
a diffusion head samples p(patch | z). It is an ordinary genkit denoiser, so genkit's solvers and grids sample it:

    loss = patch_diffusion_loss(head, x0, z, schedule, repeats=4)   # x0 (M, 48) in [-1, 1], z (M, d)
    x0 = sample_patches(head, z, steps=20, solver="dpmpp_2m", temperature=1.0, generator=g)

Time convention as genkit's UNets: VP, v-prediction, continuous log-SNR, c_noise = (15 - lambda) * 1000 / 30.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import Timesteps
from torch import nn

from ..denoiser import logsnr_to_c_noise
from ..guidance import guided_pair
from ..sampling import default_sigma_range, get_solver, make_grid
from ..schedules import Schedule, alpha_sigma

PATCH_SCHEDULE = Schedule("cosine")        # log-SNR in [-15, 15], as MAR's cosine schedule


class AdaLNBlock(nn.Module):
    """LN -> (1 + scale) * . + shift -> Linear -> SiLU -> Linear, gated, residual; shift/scale/gate from y."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.mod = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))
        nn.init.zeros_(self.mod[1].weight)
        nn.init.zeros_(self.mod[1].bias)                  # adaLN-Zero: each block starts as the identity

    def forward(self, h, y):
        shift, scale, gate = self.mod(y).chunk(3, dim=-1)
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


class DiffusionHead(nn.Module):
    def __init__(self, patch_dim: int, cond_dim: int, width: int = 256, depth: int = 3):
        super().__init__()
        self.time = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.cond = nn.Linear(cond_dim, width)
        self.inp = nn.Linear(patch_dim, width)
        self.blocks = nn.ModuleList(AdaLNBlock(width) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_mod = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, patch_dim)
        for m in (self.final_mod[1], self.out):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x_t: torch.Tensor, logsnr: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x_t (M, P) VP-noised patches, logsnr (M,), z (M, d) -> v prediction (M, P)."""
        y = self.time_mlp(self.time(logsnr_to_c_noise(logsnr)).to(z.dtype)) + self.cond(z)
        h = self.inp(x_t)
        for block in self.blocks:
            h = block(h, y)
        shift, scale = self.final_mod(y).chunk(2, dim=-1)
        return self.out(self.final_norm(h) * (1 + scale) + shift)


def patch_diffusion_loss(head, x0: torch.Tensor, z: torch.Tensor, schedule: Schedule = PATCH_SCHEDULE,
                         repeats: int = 4, generator: torch.Generator | None = None,
                         reduction: str = "mean") -> torch.Tensor:
    """MAR's loss with `repeats` noise draws per patch (z is reused, not recomputed): E |v_hat - v|^2.
    reduction="none": the loss of each patch (M,), its mean over the draws (the same draws as "mean")."""
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction={reduction!r} is not allowed: 'mean' or 'none'")
    m = len(x0)
    x0, z = x0.repeat(repeats, 1), z.repeat(repeats, 1)
    t = torch.rand(len(x0), device=x0.device, generator=generator)
    logsnr = schedule.logsnr(t)                                             # 1. a noise level per draw
    alpha, sigma = (s.unsqueeze(1) for s in alpha_sigma(logsnr))
    eps = torch.randn(x0.shape, device=x0.device, generator=generator)
    x_t = alpha * x0 + sigma * eps                                          # 2. VP noising
    v = alpha * eps - sigma * x0
    err = (head(x_t, logsnr, z).float() - v) ** 2                          # 3. v-prediction error
    return err.mean() if reduction == "mean" else err.mean(1).view(repeats, m).mean(0)


def head_denoiser(head, z: torch.Tensor):
    """D(x, sigma) ~ E[x0 | x] for x = x0 + sigma n (EDM form), given z (M, d): what genkit's solvers call."""
    def denoise(x, sigma):
        logsnr = (-2.0 * torch.log(torch.as_tensor(sigma, dtype=torch.float32, device=x.device))).expand(len(x))
        alpha, sigma_vp = (s.unsqueeze(1) for s in alpha_sigma(logsnr))
        x_vp = alpha * x
        return alpha * x_vp - sigma_vp * head(x_vp, logsnr, z).float()
    return denoise


def guided_head_denoiser(head, z: torch.Tensor, guidance_scale: float = 1.0, z_uncond: torch.Tensor | None = None):
    """D(x, sigma) given z (M, d), guided away from z_uncond when given: [cond; uncond] as one batch, so a
    guided step costs 2 head evaluations in 1 call (before issue 16: 3 calls, the unconditional one twice)."""
    if z_uncond is None or guidance_scale == 1.0:
        return head_denoiser(head, z)
    return guided_pair(head_denoiser(head, torch.cat([z, z_uncond])), guidance_scale)


@torch.no_grad()
def sample_patches(head, z: torch.Tensor, steps: int = 20, solver: str = "dpmpp_2m", temperature: float = 1.0,
                   guidance_scale: float = 1.0, z_uncond: torch.Tensor | None = None,
                   generator: torch.Generator | None = None, patch_dim: int | None = None) -> torch.Tensor:
    """Patches (M, P) from noise given z (M, d), by a genkit ODE solver over the head.

    temperature scales the initial noise (tau < 1: more typical samples; the deterministic solver then maps it
    to data). With z_uncond and guidance_scale w: D = D_u + w (D_c - D_u) (classifier-free guidance).
    """
    patch_dim = patch_dim or head.out.out_features
    den = guided_head_denoiser(head, z, guidance_scale, z_uncond)
    lo, hi = default_sigma_range(PATCH_SCHEDULE)
    sigmas = make_grid("polynomial", steps, lo, hi).to(z.device)
    noise = torch.randn(len(z), patch_dim, device="cpu", generator=generator).to(z.device)
    return get_solver(solver)(den, noise * temperature * sigmas[0], sigmas)
