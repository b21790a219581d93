"""ODE solvers for the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma (EDM form).

Every solver is a pure function with one signature (k-diffusion's):

    x0 = solver(denoise, x, sigmas, callback=None, disable=True)

denoise(x, sigma) -> x0 estimate; x: initial noise already scaled by sigmas[0]; sigmas: (N + 1,) decreasing,
last 0. The denoiser is never called at sigma = 0. After step i, callback({"i", "x", "sigma", "sigma_next",
"denoised"}) may return {"x": new_x} to replace the state (pipelines' callback_on_step_end).
Step coefficients are computed in float64 from the grid, then applied in x's dtype.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm


def _loop(sigmas, disable):
    steps = range(len(sigmas) - 1)
    return steps if disable else tqdm(steps, desc="sampling")  # no bar object at all when disabled


def _report(callback, i, x, sigma, sigma_next, denoised):
    if callback is None:
        return x
    out = callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})
    return out["x"] if out and "x" in out else x


def _s(sigma, x):
    """A grid entry as a 0-d tensor on x's device and dtype."""
    return torch.as_tensor(float(sigma), dtype=x.dtype, device=x.device)


def euler(denoise, x, sigmas, callback=None, disable=True):
    """Euler steps on the PF-ODE = deterministic DDIM (Karras et al. 2022, Alg. 1 without correction)."""
    for i in _loop(sigmas, disable):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoise(x, _s(s, x))
        d = (x - denoised) / s                                     # 1. slope dx/dsigma
        x = x + d * (s_next - s)                                   # 2. Euler step
        x = _report(callback, i, x, s, s_next, denoised)
    return x


def heun(denoise, x, sigmas, callback=None, disable=True):
    """Heun's 2nd-order method (Karras et al. 2022, Alg. 1): Euler, then a trapezoidal correction."""
    for i in _loop(sigmas, disable):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoise(x, _s(s, x))
        d = (x - denoised) / s
        x_euler = x + d * (s_next - s)                             # 1. Euler step
        if s_next == 0:                                            # 2. last step to 0: Euler only
            x = x_euler
        else:                                                      # 3. 2nd-order correction
            d_next = (x_euler - denoise(x_euler, _s(s_next, x))) / s_next
            x = x + 0.5 * (d + d_next) * (s_next - s)
        x = _report(callback, i, x, s, s_next, denoised)
    return x


def dpm2(denoise, x, sigmas, callback=None, disable=True):
    """DPM-Solver-2 (Lu et al. 2022) as a midpoint method in log sigma; Euler for the last step to 0."""
    for i in _loop(sigmas, disable):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoise(x, _s(s, x))
        d = (x - denoised) / s
        if s_next == 0:
            x = x + d * (s_next - s)
        else:
            s_mid = math.exp(0.5 * (math.log(s) + math.log(s_next)))  # 1. geometric midpoint
            x_mid = x + d * (s_mid - s)                                # 2. half step
            d_mid = (x_mid - denoise(x_mid, _s(s_mid, x))) / s_mid     # 3. slope at the midpoint
            x = x + d_mid * (s_next - s)                               # 4. full step with it
        x = _report(callback, i, x, s, s_next, denoised)
    return x


def dpmpp_2m(denoise, x, sigmas, callback=None, disable=True):
    """DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2): data prediction, 2nd-order multistep in lambda = -log sigma.

    1st order on the first step and on the last step to sigma = 0 (where x = D exactly).
    """
    old_denoised, h_last = None, None
    for i in _loop(sigmas, disable):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoise(x, _s(s, x))
        if s_next == 0:
            x_new = denoised
        else:
            h = math.log(s) - math.log(s_next)                     # 1. step in lambda
            if old_denoised is None:
                d = denoised
            else:                                                  # 2. linear extrapolation of D in lambda
                r = h_last / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x_new = (s_next / s) * x - math.expm1(-h) * d          # 3. exact integration of the linear part
            h_last = h
        old_denoised = denoised
        x = _report(callback, i, x_new, s, s_next, denoised)
    return x


def dpmpp_3m(denoise, x, sigmas, callback=None, disable=True):
    """DPM-Solver++(3M) (Lu et al. 2022b), deterministic: 3rd-order multistep in lambda.

    Order ramps up 1, 2, 3 at the start and down at the end: the step before last is at most 2nd order,
    the last step to sigma = 0 returns D. D(lambda) is extrapolated by a quadratic through the last three
    denoised values, whose product with e^lambda is integrated exactly (exact when D is quadratic in lambda).
    """
    hist, hs = [], []                                              # past denoised values and lambda steps
    n = len(sigmas) - 1
    for i in _loop(sigmas, disable):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoise(x, _s(s, x))
        if s_next == 0:
            x_new = denoised
        else:
            h = math.log(s) - math.log(s_next)
            order = min(1 + len(hist), 3, n - i)                   # lower order at the start and the end
            phi_1 = -math.expm1(-h)                                # (1 - e^-h)
            phi_2 = (math.expm1(-h) + h) / h                       # = 1 - phi_1 / h
            x_new = (s_next / s) * x + phi_1 * denoised            # 1. first-order (DDIM) part
            if order >= 2:
                r0 = hs[-1] / h
                d1_0 = (denoised - hist[-1]) / r0                  # 2. first divided difference
                if order == 3:
                    r1 = hs[-2] / h
                    d1_1 = (hist[-1] - hist[-2]) / r1
                    d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)     # 3. ~ h D', 2nd-order accurate
                    d2 = 2 * (d1_0 - d1_1) / (r0 + r1)             # 4. ~ h^2 D'' (DPM-Solver's and diffusers'
                    phi_3 = phi_2 / h - 0.5                        #    multistep code omit this 2: then the
                    x_new = x_new + phi_2 * d1 - phi_3 * d2        #    method is only 2nd order)
                else:
                    x_new = x_new + phi_2 * d1_0
            hs.append(h)
        hist.append(denoised)
        hist, hs = hist[-2:], hs[-2:]
        x = _report(callback, i, x_new, s, s_next, denoised)
    return x


IPNDM_COEFFS = ((1.0,), (3 / 2, -1 / 2), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


def ipndm(denoise, x, sigmas, callback=None, disable=True):
    """Improved PNDM (Zhang & Chen 2023, DEIS; as in Zhou et al.'s diff-solvers): Adams-Bashforth on
    d = (x - D) / sigma with up to 4 past slopes, stepping in sigma."""
    slopes = []
    for i in _loop(sigmas, disable):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoise(x, _s(s, x))
        slopes = (slopes + [(x - denoised) / s])[-4:]
        coeffs = IPNDM_COEFFS[len(slopes) - 1]
        d = sum(c * g for c, g in zip(coeffs, reversed(slopes)))  # newest slope first
        x = x + d * (s_next - s)
        x = _report(callback, i, x, s, s_next, denoised)
    return x


# No gradients through a sampler. Wrapped here, not by decorator: mutmut (.ci/mutation) skips decorated functions.
euler, heun, dpm2, dpmpp_2m, dpmpp_3m, ipndm = (torch.no_grad()(f) for f in (euler, heun, dpm2, dpmpp_2m, dpmpp_3m,
                                                                             ipndm))
