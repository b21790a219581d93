"""Any diffusers UNet2DModel as one denoiser D(x, sigma, class_labels) -> x0 (EDM form).

The solvers see only D. Everything about how a network was trained lives here, in one place:
- prediction_type: "v_prediction" (genkit), "epsilon" (most diffusers checkpoints) or "sample";
- time_input: how sigma becomes the network's timestep input
    "logsnr"   c_noise = (15 - lambda) * 1000 / 30   (genkit's continuous-time models: any sigma works)
    "discrete" the fractional index into the model's own 1000-step alphas_cumprod table (DDPM checkpoints)
Both are read from the scheduler config, so `from_pretrained` round-trips them.
"""

from __future__ import annotations

import torch

LOGSNR_REF = 15.0  # c_noise maps lambda in [-15, 15] onto [1000, 0], the range diffusers' time embedding expects
PREDICTION_TYPES = ("v_prediction", "epsilon", "sample")
TIME_INPUTS = ("logsnr", "discrete")


def logsnr_to_c_noise(logsnr: torch.Tensor) -> torch.Tensor:
    return (LOGSNR_REF - logsnr) * (1000.0 / (2 * LOGSNR_REF))


class Denoiser:
    """D(x, sigma) ~ E[x0 | x] for x = x0 + sigma * n, over a UNet trained in VP form.

    x: (N, C, H, W) in EDM scale; sigma: float, 0-d or (N,) tensor. Returns x0, same shape, float32.
    """

    def __init__(self, unet, prediction_type: str = "v_prediction", time_input: str = "logsnr",
                 alphas_cumprod: torch.Tensor | None = None):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type={prediction_type!r} is not allowed: one of {PREDICTION_TYPES}")
        if time_input not in TIME_INPUTS:
            raise ValueError(f"time_input={time_input!r} is not allowed: one of {TIME_INPUTS}")
        if time_input == "discrete" and alphas_cumprod is None:
            raise ValueError("time_input='discrete' needs the model's alphas_cumprod table")
        self.unet, self.prediction_type, self.time_input = unet, prediction_type, time_input
        self.per_sample = False  # see model_output
        if alphas_cumprod is not None:
            ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
            self.table_logsnr = torch.log(ac) - torch.log1p(-ac)  # (T,), decreasing in the index
        else:
            self.table_logsnr = None

    @classmethod
    def from_scheduler(cls, unet, scheduler) -> "Denoiser":
        """Read prediction type and time input from a GenkitScheduler or any diffusers DDPM-family scheduler."""
        cfg = scheduler.config
        time_input = cfg.get("time_input", "discrete")
        ac = getattr(scheduler, "alphas_cumprod", None)
        return cls(unet, cfg.get("prediction_type", "epsilon"), time_input, ac)

    @property
    def sigma_range(self) -> tuple[float, float] | None:
        """(sigma_min, sigma_max) that a discrete model was trained on; None when any sigma works."""
        if self.table_logsnr is None or self.time_input != "discrete":
            return None
        return float(torch.exp(-0.5 * self.table_logsnr[0])), float(torch.exp(-0.5 * self.table_logsnr[-1]))

    def timestep(self, logsnr: torch.Tensor) -> torch.Tensor:
        """The network's time input for log-SNR values (N,)."""
        if self.time_input == "logsnr":
            return logsnr_to_c_noise(logsnr)
        # fractional index: interpolate lambda over the table (k-diffusion's sigma_to_t, in log-SNR)
        table = self.table_logsnr.to(logsnr.device)
        flipped = table.flip(0)  # increasing
        lam = logsnr.double().clamp(flipped[0], flipped[-1])  # beyond the table: its end, as k-diffusion
        idx = torch.searchsorted(flipped, lam).clamp(1, len(table) - 1)
        lo, hi = flipped[idx - 1], flipped[idx]
        frac = (lam - lo) / (hi - lo)
        pos_in_flipped = (idx - 1) + frac
        return (len(table) - 1 - pos_in_flipped).to(torch.float32)

    def model_output(self, x_vp: torch.Tensor, logsnr: torch.Tensor, class_labels=None) -> torch.Tensor:
        """Raw network output at VP input x_vp (N, C, H, W) and log-SNR (N,).

        per_sample: one network call per row. CPU conv / linear kernels pick their blocking by batch size, so a
        row's result can differ in the last float bit with its batch; one row per call makes every image
        independent of its neighbours (tests/test_reliability.py checks it on weights/openmoji-32)."""
        dtype = next(self.unet.parameters()).dtype  # also for a DDP-wrapped net (no .dtype attribute)
        t = self.timestep(logsnr).to(x_vp.device).to(torch.float32)
        x_vp = x_vp.to(dtype)
        if not self.per_sample:
            return self.unet(x_vp, t, class_labels=class_labels).sample.float()
        labels = class_labels if torch.is_tensor(class_labels) and class_labels.ndim else None
        rows = [self.unet(x_vp[i:i + 1], t[i:i + 1],
                          class_labels=class_labels if labels is None else labels[i:i + 1]).sample
                for i in range(len(x_vp))]
        return torch.cat(rows).float()

    def __call__(self, x: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
        logsnr = -2.0 * torch.log(sigma)                                  # (N,)
        alpha = torch.sigmoid(logsnr).sqrt().view(-1, 1, 1, 1)
        sigma_vp = torch.sigmoid(-logsnr).sqrt().view(-1, 1, 1, 1)
        x_vp = alpha * x                                                  # EDM -> VP input
        out = self.model_output(x_vp, logsnr, class_labels)
        if self.prediction_type == "v_prediction":
            return alpha * x_vp - sigma_vp * out
        if self.prediction_type == "epsilon":
            return (x_vp - sigma_vp * out) / alpha
        return out
