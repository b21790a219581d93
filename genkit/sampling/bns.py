"""A learned multistep solver: every step mixes all the denoiser outputs so far, with weights and grid trained
on the teacher's own ODE solutions (in the spirit of BNS, Shaul et al., ICML 2024; LD3, Tong et al. 2025).

On DPM-Solver++'s data-prediction form, a grid sigma_0 > ... > sigma_{N-1} > sigma_N = 0 and one network
evaluation per step (NFE = N):

    D_i     = D(x_i; sigma_i)
    x_{i+1} = (sigma_{i+1} / sigma_i) x_i + (1 - sigma_{i+1} / sigma_i) sum_{j <= i} w_ij D_j

The linear part is integrated exactly, as in DPM-Solver++; w (N, N, lower triangular) is free. w = I is Euler
(DDIM); w_ii = 1 + 1/(2 r_i), w_i,i-1 = -1/(2 r_i) is DPM-Solver++(2M) (dpmpp_2m_weights); the last step,
to sigma = 0, returns sum_j w_N-1,j D_j. training/train_bns.py learns w and the sigmas after sigma_0 (and
sigma_0 itself with --learn_sigma_max: the sampler then starts from the unit noise times sigma_0) by
backpropagating the final sample's distance to an accurate solution of the same ODE (the ODE error itself).

AFS (afs=True, train_bns.py --afs): D_0 is read from a per-class table stored with the weights (the teacher's
guided D at sigma_max, averaged over 4 noises) instead of evaluated, so N grid steps cost N - 1 evaluations. At
sigma_max = 80 D still depends on its input (0.10 RMS per pixel from the table on the shipped teacher), but the
final sample hardly does: swapping the network's D_0 for the table moved trained weights' held-out ODE error by
-0.0001 and +0.0005. AMED's analytical first step makes the same saving with D_0 = 0; the table is the better guess.
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..checks import bad
from .amed import TrainedFor
from .solvers import _loop, _report


def dpmpp_2m_weights(sigmas) -> torch.Tensor:
    """(N, N) float64: the w that makes bns_sample DPM-Solver++(2M) on this grid (N + 1 sigmas ending at 0)."""
    s = [float(v) for v in sigmas]
    n = len(s) - 1
    w = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        w[i, i] = 1.0
        if 0 < i and s[i + 1] > 0:                                   # 1st order first and on the step to 0
            r = (math.log(s[i - 1]) - math.log(s[i])) / (math.log(s[i]) - math.log(s[i + 1]))
            w[i, i], w[i, i - 1] = 1 + 1 / (2 * r), -1 / (2 * r)
    return w


def bns_sample(denoise, x, sigmas, weights, callback=None, disable=True, first=None):
    """x (B, C, H, W) at sigmas[0]; sigmas (N + 1,) ending at 0 (floats or a tensor that may carry gradients);
    weights (N, N), lower triangle used. N network evaluations; N - 1 when `first` (B, C, H, W) gives D_0 (AFS)."""
    dens = []
    for i in _loop(sigmas, disable):
        s, s_next = sigmas[i], sigmas[i + 1]
        sig = s if torch.is_tensor(s) else torch.as_tensor(float(s), dtype=x.dtype, device=x.device)
        dens.append(first if i == 0 and first is not None else denoise(x, sig))  # 1. the step's one evaluation
        d = sum(weights[i, j] * dens[j] for j in range(i + 1))        # 2. learned mix of every D so far
        x = (s_next / s) * x + (1 - s_next / s) * d                    # 3. DPM-Solver++'s exact linear part
        if callback is not None:
            x = _report(callback, i, x, float(torch.as_tensor(s).detach()), float(torch.as_tensor(s_next).detach()),
                        dens[-1])
    return x


def table_rows(table, labels, batch: int):
    """AFS's D_0 (B, C, H, W) from a per-class table (K, C, H, W) for labels (B,) (None: an unconditional model,
    row 0 for every image); None without a table."""
    if table is None:
        return None
    return table[0].expand(batch, *table.shape[1:]) if labels is None else table[labels.to(table.device)]


@torch.no_grad()
def sample(denoise, x, sigmas, callback=None, disable=True, weights=None, first=None):
    """The registry's solver function: bns_sample without gradients."""
    if weights is None:
        raise ValueError("solver 'bns' needs learned weights: a BNSWeights folder (training/train_bns.py)")
    first = None if first is None else first.to(x)
    return bns_sample(denoise, x, sigmas, weights.to(x.dtype), callback, disable, first)


TABLE_DTYPE = torch.float16  # AFS's per-class table as stored (its values are within 1e-3 of float32's)


class BNSWeights(TrainedFor, ModelMixin, ConfigMixin):
    """The learned w (N, N) of bns_sample; the config records the grid (sigmas without the final 0), the guidance
    scale and the teacher's fingerprint it was trained on, and `check` refuses any other use (as AMED's). With
    afs, the buffer first_table (K, C, H, W) holds D at sigmas[0] per class label (K = 1: unconditional), in
    float16: 0.6 MB instead of 1.2 for 99 classes at 32 px, and train_bns rounds it so before training with it."""

    @register_to_config
    def __init__(self, solver: str = "bns", num_steps: int = 5, grid: str = "learned", sigmas: list | None = None,
                 guidance_scale: float = 1.0, afs: bool = False, teacher: str = "", init: str = "euler",
                 table_shape: list | None = None):
        super().__init__()
        self.weights = nn.Parameter(torch.eye(num_steps))
        if afs:
            if table_shape is None or len(table_shape) != 4:
                raise ValueError(f"table_shape={table_shape!r} is not allowed: with afs, [K, C, H, W] of the "
                                 "per-class table of D at sigma_max")
            self.register_buffer("first_table", torch.zeros(table_shape, dtype=TABLE_DTYPE))

    def solver_kwargs(self, tap=None, labels=None, noise=None) -> dict:
        """Keyword arguments of the registry's `bns` function (the UNet's bottleneck tap is not read); with AFS
        the table's rows for `labels` (B,) (None: an unconditional model, row 0), checked against noise's size."""
        kw = {"weights": torch.tril(self.weights.detach())}
        if self.config.afs:
            table = self.first_table
            if noise is None:
                raise ValueError("BNS weights with AFS need the starting noise (its batch and image size)")
            if tuple(noise.shape[1:]) != tuple(table.shape[1:]):
                _, h, w = table.shape[1:]
                bad("height", noise.shape[-2], f"{h} (and width {w}): these BNS weights' table of D at sigma_max "
                    f"is for {h}x{w} images, not {noise.shape[-2]}x{noise.shape[-1]}")
            if labels is not None and int(labels.max()) >= len(table):
                bad("class_labels", labels.tolist(), f"ids below {len(table)} (the rows of the BNS weights' table)")
            kw["first"] = table_rows(table, labels, len(noise))
        return kw
