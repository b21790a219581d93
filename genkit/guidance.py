"""Denoiser -> denoiser transforms: classifier-free guidance (Ho & Salimans 2022), written once here, and
upsample guidance (Hwang, Park & Jo 2024): a model trained at r px drawing at m * r px.

Every classifier-free-guided call in genkit (the pixel pipeline's solvers and its diffusers-scheduler loop, the
multimodal diffusion head, the multimodal code logits) goes through cfg_combine; both branches always run as one
batch of 2N, so a guided call costs exactly 2 network evaluations per sample.
"""

from __future__ import annotations

import math

import torch


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale) -> torch.Tensor:
    """D_w = D_u + w (D_c - D_u); w = 1 is plain conditional sampling, w = 0 unconditional."""
    return uncond + scale * (cond - uncond)


def guided_pair(denoise_both, scale):
    """denoise_both(x2, sigma) evaluates [cond; uncond] on a batch of 2N -> the guided D(x, sigma) on N.

    sigma may be a float, a 0-d tensor or (N,): it is doubled to (2N,) to match the batch."""
    def guided(x, sigma):
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        sigma2 = sigma.expand(2 * len(x)) if sigma.ndim == 0 else torch.cat([sigma, sigma])
        cond, uncond = denoise_both(torch.cat([x, x]), sigma2).chunk(2)
        return cfg_combine(cond, uncond, scale)
    return guided


def classifier_free_guidance(denoise, class_labels: torch.Tensor, null_label: int, scale,
                             sigma_range: tuple[float, float] | None = None):
    """Guided D(x, sigma) through a null class: [class_labels; null] in one batch of 2N (cond first: the AMED
    predictor reads the conditional half of the bottleneck). scale: a float, or a tensor that broadcasts over
    (N, C, H, W), e.g. (N, 1, 1, 1) for a scale per sample.

    sigma_range = (lo, hi): the guidance interval (Kynkaanniemi et al. 2024): guided at lo <= sigma <= hi, plain
    conditional D outside, where the null branch is not run (1 network evaluation instead of 2). With a sigma per
    sample that is inside for some samples only, all 2N run and those outside get the conditional D (scale: a
    float). The interval's function counts its calls that ran both branches in `.guided_calls`: NFE per image =
    calls + guided_calls (without an interval every call runs both when scale != 1)."""
    def cond(x, sigma):
        return denoise(x, sigma, class_labels=class_labels)
    if not torch.is_tensor(scale) and scale == 1.0:
        return cond
    labels = torch.cat([class_labels, torch.full_like(class_labels, null_label)])
    both = lambda x2, s2: denoise(x2, s2, class_labels=labels)  # noqa: E731
    full = guided_pair(both, scale)
    if sigma_range is None:
        return full
    if torch.is_tensor(scale):
        raise ValueError("classifier_free_guidance: a guidance interval (sigma_range) takes a float scale")
    lo, hi = sigma_range

    def interval(x, sigma):
        s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        inside = (s >= lo) & (s <= hi)                                   # () or (N,)
        if not bool(inside.any()):
            return cond(x, sigma)
        interval.guided_calls += 1
        if bool(inside.all()):
            return full(x, sigma)
        c, u = both(torch.cat([x, x]), torch.cat([s, s])).chunk(2)    # some inside: s is (N,)
        return torch.where(inside.view(-1, *[1] * (x.ndim - 1)), cfg_combine(c, u, scale), c)

    interval.guided_calls = 0
    return interval


# -- upsample guidance ---------------------------------------------------------------------------------------

def downsample(x: torch.Tensor, m: int) -> torch.Tensor:
    """D_m: mean over m x m blocks, (N, C, H, W) -> (N, C, H/m, W/m). D_m U_m = I, so D_m n of unit noise has std 1/m."""
    return torch.nn.functional.avg_pool2d(x, m)


def upsample(x: torch.Tensor, m: int) -> torch.Tensor:
    """U_m: nearest-neighbour repeat of each pixel m x m times (the right inverse of D_m)."""
    return x.repeat_interleave(m, dim=-2).repeat_interleave(m, dim=-1)


def snap_logsnr(target: torch.Tensor, current: torch.Tensor, table_logsnr: torch.Tensor) -> torch.Tensor:
    """Discrete-time models: the table's log-SNR nearest to `target` (N,), clamped to be no noisier than the
    high-resolution step's own `current` (tau <= t; research/diffusion.md §2a.2). table: (T,), decreasing."""
    table = table_logsnr.to(target.device, torch.float64)
    k = (table.view(1, -1) - target.double().view(-1, 1)).abs().argmin(dim=1)              # nearest step tau
    k_t = (table.view(1, -1) - current.double().view(-1, 1)).abs().argmin(dim=1)            # the step t itself
    return table[torch.minimum(k, k_t)].to(target.dtype)


def upsample_guidance(denoise, scale: float, factor: int = 2, sigma_window: tuple[float, float] | None = None,
                      time_adjustment: bool = True, power_adjustment: bool = True,
                      table_logsnr: torch.Tensor | None = None):
    """Upsample guidance (Hwang, Park & Jo 2024; Su's post 23) as a denoiser -> denoiser transform, EDM form.

    denoise(x, sigma) -> x0 is a model trained at resolution r, called here at r * m (m = factor). With
    y = D_m x (the EDM sample seen at low resolution, whose noise is sigma / m):

        D~(x; sigma) = D(x; sigma) + w * U_m[ D_low(y) - D_m D(x; sigma) ]

    which is exactly the paper's eps form  eps~ = eps + w U_m[eps_low / m - D_m eps]  (eps = (x - D) / sigma);
    w = 1 replaces the low frequencies of the prediction by the low-resolution model's, w = 0 is plain D.
    D_low is the low-resolution branch, built from the same `denoise`:
      1. power adjustment: the network's VP input is D_m x_vp / sqrt(P), P = alpha^2 + sigma_vp^2 / m^2, i.e.
         alpha(sigma / m) * y; without it the network gets D_m x_vp = alpha(sigma) * y (too little variance);
      2. time adjustment: the network is told log-SNR lambda + 2 log m (sigma / m); without it, lambda itself.
         Discrete-time models (table_logsnr given): the nearest table step, clamped to tau <= t;
      3. the network's noise estimate eps_low under the time it was told, D_low = y - (sigma / m) eps_low.
    With both adjustments on a continuous-time model, D_low(y) = D(y; sigma / m) exactly.
    sigma_window = (lo, hi): guide only while lo <= sigma <= hi (the paper's time window eta, in sigma);
    outside it D~ = D and the low-resolution pass is skipped. Network calls of the low-resolution branch are
    counted in `.low_res_calls` of the returned function (each costs ~1/m^2 of a full one).

    Composition with classifier-free guidance: both are affine in D with weights summing to 1, so
    UG(CFG(D)) == CFG(UG(D)) (tested). genkit applies UG outside CFG, so the low-resolution pass batches
    cond + uncond like the full one.
    """
    m = int(factor)
    if scale == 0:
        return denoise
    lo, hi = sigma_window if sigma_window is not None else (0.0, float("inf"))

    def low_res(y, sigma):
        """D_low(y) for y = D_m x at (N,) EDM sigma of the high-resolution sample."""
        logsnr = -2.0 * torch.log(sigma)                                          # lambda_t
        logsnr_net = logsnr + 2.0 * math.log(m) if time_adjustment else logsnr    # 2. the time the net is told
        if table_logsnr is not None and time_adjustment:
            logsnr_net = snap_logsnr(logsnr_net, logsnr, table_logsnr)
        alpha_in = torch.sigmoid(logsnr + 2.0 * math.log(m) if power_adjustment else logsnr).sqrt()  # 1.
        # The denoiser at sigma_net feeds alpha(sigma_net) * x' to the net: choose x' so that it gets alpha_in * y
        sigma_net = torch.exp(-0.5 * logsnr_net)
        alpha_net = torch.sigmoid(logsnr_net).sqrt()
        x_net = (alpha_in / alpha_net).view(-1, 1, 1, 1) * y
        eps_low = (x_net - denoise(x_net, sigma_net)) / sigma_net.view(-1, 1, 1, 1)  # 3. the net's noise estimate
        return y - (sigma / m).view(-1, 1, 1, 1) * eps_low

    def guided(x, sigma):
        sigma_t = torch.as_tensor(sigma, device=x.device).to(x.dtype)
        sigma_t = sigma_t.expand(len(x)) if sigma_t.ndim == 0 else sigma_t
        d = denoise(x, sigma)
        inside = (sigma_t >= lo) & (sigma_t <= hi)
        if not bool(inside.any()):
            return d
        guided.low_res_calls += 1
        delta = upsample(low_res(downsample(x, m), sigma_t) - downsample(d, m), m)
        w = scale * inside.to(x.dtype).view(-1, 1, 1, 1)
        return d + w * delta

    guided.low_res_calls = 0
    return guided
