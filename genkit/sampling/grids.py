"""Sigma grids for the solvers: (num_steps + 1,) float64 tensors, strictly decreasing, last entry 0."""

from __future__ import annotations

import math

import torch

GRIDS = ("polynomial", "logsnr", "time")
LEARNED = "learned"  # a grid an AMED predictor learned (train_amed.py --learn_grid): its sigmas live in its config
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0  # EDM's range: data in [-1, 1] is pure noise long before sigma = 80


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def grid_polynomial(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: uniform steps in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64) if num_steps > 1 else \
        torch.zeros(1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def grid_logsnr(num_steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Uniform in log-SNR (= uniform in log sigma), DPM-Solver's default."""
    if num_steps == 1:
        return _append_zero(torch.tensor([sigma_max], dtype=torch.float64))
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_steps, dtype=torch.float64).exp())


def grid_time(num_steps: int, schedule, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Uniform in the schedule's time t (DDIM-style spacing for that schedule)."""
    t_hi = schedule.t_from_logsnr(torch.tensor(-2 * math.log(sigma_max), dtype=torch.float64))
    t_lo = schedule.t_from_logsnr(torch.tensor(-2 * math.log(sigma_min), dtype=torch.float64))
    t = torch.linspace(float(t_hi), float(t_lo), num_steps, dtype=torch.float64) if num_steps > 1 else t_hi.view(1)
    sigmas = torch.exp(-0.5 * schedule.logsnr(t)).clamp(sigma_min, sigma_max)
    return _append_zero(sigmas)


def default_sigma_range(schedule=None, model_range: tuple[float, float] | None = None) -> tuple[float, float]:
    """(sigma_min, sigma_max) for sampling.

    A clipped cosine schedule reaches sigma = exp(7.5) ~ 1808; beyond sigma = 80 an image in [-1, 1] is pure
    noise, so steps there are wasted: clip to EDM's [0.002, 80], then into the range a discrete model knows.
    """
    lo, hi = SIGMA_MIN, SIGMA_MAX
    if schedule is not None:
        lo, hi = max(lo, schedule.sigma_min), min(hi, schedule.sigma_max)
    if model_range is not None:
        lo, hi = max(lo, model_range[0]), min(hi, model_range[1])
    return lo, hi


def make_grid(name: str, num_steps: int, sigma_min: float, sigma_max: float, schedule=None,
              rho: float = 7.0) -> torch.Tensor:
    if name == LEARNED:
        raise ValueError(f"grid={name!r} is not allowed here: a learned grid belongs to an AMED predictor (its "
                         f"config's sigmas); use an amed solver, or one of {', '.join(GRIDS)}")
    if name not in GRIDS:
        raise ValueError(f"grid={name!r} is not allowed: one of {', '.join(GRIDS)}")
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_inference_steps={num_steps!r} is not allowed: an int >= 1")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"sigma_min={sigma_min}, sigma_max={sigma_max} are not allowed: 0 < sigma_min < sigma_max")
    if name == "polynomial":
        return grid_polynomial(num_steps, sigma_min, sigma_max, rho)
    if name == "logsnr":
        return grid_logsnr(num_steps, sigma_min, sigma_max)
    if schedule is None:
        raise ValueError("grid='time' needs the model's schedule (a genkit model)")
    return grid_time(num_steps, schedule, sigma_min, sigma_max)
