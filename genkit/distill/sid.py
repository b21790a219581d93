"""SiD: Score identity Distillation (Zhou et al., ICML 2024, arXiv 2404.04057; research/diffusion.md §5).

Three denoisers D(x, sigma, labels) -> x0 in EDM form (genkit.denoiser.Denoiser, so v / eps prediction,
continuous or discrete time all work), all three starting from the teacher's weights:
  teacher  f_phi   frozen; optionally classifier-free guided (the distribution users sample), at every sigma
                   or only below a sigma_max (guided_teacher: why)
  fake     f_psi   learns the score of the generator's own images
  G        G_theta one step: x_g = G(sigma_init z, sigma_init), z ~ N(0, I)

Per iteration (data-free: only class labels are drawn, uniformly):
  1. fake-score step: x_g = G(...) without grad; sigma ~ exp(N(-1.2, 1.2^2));
     loss = lambda(sigma) |f_psi(x_g + sigma n; sigma) - x_g|^2,  lambda = (sigma^2 + 0.25) / (0.5 sigma)^2
  2. generator step:  x_g = G(...) with grad; sigma = Karras(u), u ~ U[0, tmax/1000]; x_t = x_g + sigma n;
     loss = sum_pixels (f_phi - f_psi) . [(f_phi - x_g) - alpha (f_phi - f_psi)] / omega      ((L2 - alpha L1)/omega)
     omega = stopgrad(mean_pixels |x_g - f_phi|) clipped >= 1e-5. Gradients reach theta through x_g, both directly
     and through x_t into f_phi and f_psi; their parameters get none (the caller freezes them for this step).
Both losses: summed over pixels, averaged over the batch (as the reference code); samples with a non-finite
value anywhere are dropped from the loss (and counted).
"""

from __future__ import annotations

import torch

from genkit.guidance import classifier_free_guidance

SIGMA_INIT = 2.5
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0     # EDM's Karras grid, used for the generator loss's sigma
P_MEAN, P_STD, SIGMA_DATA = -1.2, 1.2, 0.5       # EDM's training distribution for the fake-score loss
OMEGA_MIN = 1e-5


# -- noise levels --------------------------------------------------------------------------------------------

def karras_sigma(u: torch.Tensor, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                 rho: float = RHO) -> torch.Tensor:
    """u in [0, 1] -> sigma: u = 0 gives sigma_min, u = 1 gives sigma_max (EDM's time-step map, continuous)."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + (1 - u) * (lo - hi)) ** rho


def generator_sigmas(n: int, tmax: float = 800, generator=None, device="cpu") -> torch.Tensor:
    """(n,) sigmas for the generator loss: u ~ U[0, tmax/1000] through the Karras map (tmax 800: [0.002, 24.4])."""
    u = torch.rand(n, generator=generator, device=device) * (tmax / 1000)
    return karras_sigma(u)


def fake_score_sigmas(n: int, generator=None, device="cpu") -> torch.Tensor:
    """(n,) sigmas for the fake-score loss: log sigma ~ N(P_MEAN, P_STD^2) (EDM)."""
    return (torch.randn(n, generator=generator, device=device) * P_STD + P_MEAN).exp()


# -- the three networks --------------------------------------------------------------------------------------

def guided_teacher(denoise, guidance_scale: float = 1.0, null_label: int | None = None,
                   sigma_max: float | None = None):
    """The teacher as users sample it: D_w(x | y) = D(x | null) + w (D(x | y) - D(x | null)); plain D when
    the model is unconditional (labels None) or w = 1. With sigma_max, guided only at sigma <= sigma_max and
    plain above (a guidance interval, Kynkaanniemi et al. 2024). Returns f(x, sigma, labels) -> x0.

    Why an interval: at high noise the guided score asks for less than no spread within a class. Classes
    N(mu_y, s^2) whose means spread with variance tau^2: for sigma >> tau the guided score's precision
    w/(s^2+sigma^2) - (w-1)/(s^2+tau^2+sigma^2) is, to first order in 1/sigma^2, that of a class variance
    s^2 - (w-1) tau^2, negative once the classes lie further apart than their own spread; a generator fitted
    to it at every sigma collapses to one image per class."""
    interval = None if sigma_max is None else (0.0, float(sigma_max))

    def teacher(x, sigma, labels=None):
        if labels is None or guidance_scale == 1.0:
            return denoise(x, sigma, class_labels=labels)
        return classifier_free_guidance(denoise, labels, null_label, guidance_scale, interval)(x, sigma)

    return teacher


def generate(g_denoise, z: torch.Tensor, labels=None, sigma_init: float = SIGMA_INIT) -> torch.Tensor:
    """One network evaluation: x_g = G(sigma_init z; sigma_init). z (B, C, H, W) ~ N(0, I)."""
    return g_denoise(sigma_init * z, sigma_init, class_labels=labels)


def _finite_rows(*tensors) -> torch.Tensor:
    """(B,) bool: samples whose every value is finite in all tensors."""
    ok = torch.ones(tensors[0].shape[0], dtype=torch.bool, device=tensors[0].device)
    for t in tensors:
        ok &= torch.isfinite(t.detach()).flatten(1).all(1)
    return ok


# -- losses --------------------------------------------------------------------------------------------------

def generator_loss(teacher, fake, x_g: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                   labels=None, alpha: float = 1.2) -> tuple[torch.Tensor, dict]:
    """(L2 - alpha L1) / omega, summed over pixels, mean over the finite samples. x_g: (B, C, H, W) with grad;
    sigma (B,); noise (B, C, H, W) ~ N(0, I). Returns (loss, stats)."""
    # 1. diffuse the generated images
    x_t = x_g + sigma.view(-1, 1, 1, 1) * noise
    # 2. both scores (as denoisers) at x_t
    real = teacher(x_t, sigma, labels)
    fake_x0 = fake(x_t, sigma, labels)
    # 3. drop samples with a non-finite value (fp16 overflow)
    ok = _finite_rows(x_g, real, fake_x0)
    x_g, real, fake_x0 = x_g[ok], real[ok], fake_x0[ok]
    # 4. omega: mean absolute distance of x_g to the teacher's denoised image, no gradient
    omega = (x_g - real).abs().mean(dim=(1, 2, 3), keepdim=True).detach().clamp_min(OMEGA_MIN)
    # 5. (L2 - alpha L1) / omega per sample
    diff = real - fake_x0
    per_sample = (diff * ((real - x_g) - alpha * diff) / omega).sum(dim=(1, 2, 3))
    loss = per_sample.mean() if len(per_sample) else x_g.nan_to_num(0.0).sum() * 0.0
    return loss, {"dropped": int((~ok).sum()), "omega": omega.mean().item() if len(omega) else float("nan")}


def fake_score_loss(fake, x_g: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                    labels=None) -> tuple[torch.Tensor, dict]:
    """EDM denoising loss of the fake score on generated images x_g (no grad into G): lambda(sigma) |f_psi - x_g|^2,
    summed over pixels, mean over the finite samples."""
    x_g = x_g.detach()
    pred = fake(x_g + sigma.view(-1, 1, 1, 1) * noise, sigma, labels)
    ok = _finite_rows(x_g, pred)
    weight = (sigma[ok] ** 2 + SIGMA_DATA ** 2) / (sigma[ok] * SIGMA_DATA) ** 2
    per_sample = weight * (pred[ok] - x_g[ok]).pow(2).sum(dim=(1, 2, 3))
    loss = per_sample.mean() if len(per_sample) else pred.nan_to_num(0.0).sum() * 0.0
    return loss, {"dropped": int((~ok).sum())}
