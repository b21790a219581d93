"""Noise schedules as log-SNR functions lambda(t), t in [0, 1], t = 0 clean (research/diffusion.md §1).

VP form: x_t = alpha_t x0 + sigma_t eps, alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda).
EDM form: x = x_vp / alpha, sigma_edm = exp(-lambda / 2).

Three schedules (simple diffusion, Hoogeboom et al. 2023):
- cosine:        lambda(t) = -2 log tan(t_min + t (t_max - t_min)), clipped to [logsnr_min, logsnr_max]
- shifted:       cosine + 2 log(base / image_size)       (clip first, then shift)
- interpolated:  t * shifted(base=low) + (1 - t) * shifted(base=high)

A `Schedule` is a small frozen dataclass; it is saved in the scheduler config (GenkitScheduler) so a
pipeline folder round-trips it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch

SCHEDULES = ("cosine", "shifted_cosine", "interpolated")


def _t_bounds(logsnr_min: float, logsnr_max: float) -> tuple[float, float]:
    return math.atan(math.exp(-0.5 * logsnr_max)), math.atan(math.exp(-0.5 * logsnr_min))


def logsnr_cosine(t: torch.Tensor, logsnr_min: float = -15.0, logsnr_max: float = 15.0) -> torch.Tensor:
    t_min, t_max = _t_bounds(logsnr_min, logsnr_max)
    return -2.0 * torch.log(torch.tan(t_min + t * (t_max - t_min)))


def logsnr_shifted(t, image_size: int, base_size: int, logsnr_min=-15.0, logsnr_max=15.0) -> torch.Tensor:
    return logsnr_cosine(t, logsnr_min, logsnr_max) + 2.0 * math.log(base_size / image_size)


def logsnr_interpolated(t, image_size: int, low: int, high: int, logsnr_min=-15.0, logsnr_max=15.0):
    lo = logsnr_shifted(t, image_size, low, logsnr_min, logsnr_max)
    hi = logsnr_shifted(t, image_size, high, logsnr_min, logsnr_max)
    return t * lo + (1 - t) * hi


def alpha_sigma(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VP coefficients (alpha_t, sigma_t) from log-SNR."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def sigma_from_logsnr(logsnr):
    """EDM sigma = sigma_t / alpha_t = exp(-lambda/2)."""
    return torch.exp(-0.5 * logsnr) if torch.is_tensor(logsnr) else math.exp(-0.5 * logsnr)


def logsnr_from_sigma(sigma):
    return -2.0 * torch.log(sigma) if torch.is_tensor(sigma) else -2.0 * math.log(sigma)


@dataclass(frozen=True)
class Schedule:
    """A log-SNR schedule for images of side `image_size`.

    name: "cosine" | "shifted_cosine" | "interpolated"
    base_size: reference resolution d_ref of the shifted schedule (shift = 2 log(base/image))
    interp_low / interp_high: the two references of the interpolated schedule
    """

    name: str = "shifted_cosine"
    image_size: int = 32
    base_size: int = 32
    interp_low: int = 32
    interp_high: int = 256
    logsnr_min: float = -15.0
    logsnr_max: float = 15.0

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ValueError(f"schedule={self.name!r} is not allowed: one of {', '.join(SCHEDULES)}")
        if self.logsnr_min >= self.logsnr_max:
            raise ValueError(f"logsnr_min={self.logsnr_min} must be below logsnr_max={self.logsnr_max}")

    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64 if not torch.is_tensor(t) else t.dtype)
        if self.name == "cosine":
            return logsnr_cosine(t, self.logsnr_min, self.logsnr_max)
        if self.name == "shifted_cosine":
            return logsnr_shifted(t, self.image_size, self.base_size, self.logsnr_min, self.logsnr_max)
        return logsnr_interpolated(t, self.image_size, self.interp_low, self.interp_high,
                                   self.logsnr_min, self.logsnr_max)

    def t_from_logsnr(self, logsnr: torch.Tensor, iters: int = 60) -> torch.Tensor:
        """Inverse of logsnr(t) (monotone decreasing): closed form for cosine/shifted, bisection otherwise."""
        logsnr = torch.as_tensor(logsnr, dtype=torch.float64)
        if self.name != "interpolated":
            shift = 0.0 if self.name == "cosine" else 2.0 * math.log(self.base_size / self.image_size)
            t_min, t_max = _t_bounds(self.logsnr_min, self.logsnr_max)
            return ((torch.atan(torch.exp(-0.5 * (logsnr - shift))) - t_min) / (t_max - t_min)).clamp(0, 1)
        lo, hi = torch.zeros_like(logsnr), torch.ones_like(logsnr)
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            above = self.logsnr(mid) > logsnr  # still too clean: move right
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    @property
    def sigma_min(self) -> float:
        return float(sigma_from_logsnr(self.logsnr(torch.tensor(0.0, dtype=torch.float64))))

    @property
    def sigma_max(self) -> float:
        return float(sigma_from_logsnr(self.logsnr(torch.tensor(1.0, dtype=torch.float64))))

    def alphas_cumprod(self, num_train_timesteps: int = 1000) -> torch.Tensor:
        """Discrete table for diffusers: alphas_cumprod[i] = sigmoid(lambda((i + 1) / T)), i = 0 least noisy."""
        t = torch.arange(1, num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
        return torch.sigmoid(self.logsnr(t))

    def betas(self, num_train_timesteps: int = 1000) -> torch.Tensor:
        ac = self.alphas_cumprod(num_train_timesteps)
        prev = torch.cat([torch.ones(1, dtype=ac.dtype), ac[:-1]])
        return (1 - ac / prev).clamp(max=0.999)

    def at_size(self, image_size: float) -> "Schedule":
        """The same schedule for images of side `image_size` (a model sampled at another size than it was
        trained at): the name and references are kept, so shifted_cosine becomes lambda + 2 log(base / size)
        (simple diffusion's rule: m^2 times more pixels average the noise m^2 times better); cosine is unchanged."""
        return replace(self, image_size=image_size)

    def to_dict(self) -> dict:
        return asdict(self)
