"""Quantizers for image tokenizers (research/multimodal.md §3), with orthogonal options:

VectorQuantizer(dim, K, estimator=..., simvq=..., cosine=..., kmeans_init=..., beta=...)
    nearest-code VQ. How gradients pass the argmin (estimator):
      "ste"       straight-through, z_q = z + sg(q - z): dz_q/dz = I           (van den Oord et al. 2017)
      "rotation"  z_q = sg(lam R) z with lam R z = q: dz_q/dz = lam R         (Fifty et al. 2025)
    How the codebook is parameterised:
      simvq=False  a free (K, d) table, learned by the codebook loss
      simvq=True   C = Q W: Q (K, d) frozen N(0, 1/d), W a learned d x d linear map (Zhu et al. 2025)
    cosine=True compares l2-normalised vectors (and quantizes the normalised z).
    Loss (weights in the paper's naming, NOT Su's, who swaps them):
      codebook |q - sg(z)|^2  +  beta * commitment |z - sg(q)|^2,   beta = 0.25
FSQ(levels, dim)
    finite scalar quantization (Mentzer et al. 2024): project to len(levels) dims, bound each to its level
    count, round with the straight-through estimator; the codebook is the implicit grid of prod(levels) codes.
    No codebook, no loss.

Both map z (N, d, h, w) to a QuantizerOutput(z_q (N, d, h, w), indices (N, h, w), loss, quant_error).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import torch
import torch.nn.functional as F
from torch import nn

ESTIMATORS = ("ste", "rotation")
EPS = 1e-6


@dataclass
class QuantizerOutput:
    z_q: torch.Tensor          # (N, d, h, w): the decoder input, equal to the chosen codes in the forward pass
    indices: torch.Tensor      # (N, h, w) long
    loss: torch.Tensor         # scalar: codebook + beta * commitment (0 for FSQ)
    quant_error: torch.Tensor  # scalar, detached: mean |z - q|^2 per element


def rotate_to(z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The rotation trick, efficient form (no d x d matrix). z, q: (M, d).

    u = z/|z|, q^ = q/|q|, r = (u + q^)/|u + q^|, lam = |q|/|z|, all constants (detached):
        out = lam (z - 2 (z.r) r + 2 (z.u) q^)  =  lam R z,   R = I - 2 r r^T + 2 q^ u^T
    R rotates u onto q^ within their plane (identity on the rest), so out == q in value, and the gradient
    reaching z is lam R^T g: the decoder's gradient, rotated and scaled like the code is relative to z.
    """
    z_norm = z.norm(dim=-1, keepdim=True).clamp_min(EPS)          # clamped, not shifted: exact when |z| > EPS
    q_norm = q.norm(dim=-1, keepdim=True).clamp_min(EPS)
    u, q_hat = (z / z_norm).detach(), (q / q_norm).detach()
    r = F.normalize(u + q_hat, dim=-1, eps=EPS).detach()
    lam = (q_norm / z_norm).detach()
    return lam * (z - 2 * (z * r).sum(-1, keepdim=True) * r + 2 * (z * u).sum(-1, keepdim=True) * q_hat)


def kmeans(x: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """Lloyd's k-means on (M, d) -> (k, d) centres; empty clusters keep their previous centre."""
    idx = torch.randint(len(x), (k,), generator=generator, device="cpu").to(x.device)
    centres = x[idx].clone()
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
    return centres


def _flat(z: torch.Tensor) -> torch.Tensor:
    """(N, d, h, w) -> (N h w, d)."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def _unflat(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    n, d, h, w = like.shape
    return v.reshape(n, h, w, -1).permute(0, 3, 1, 2)


class VectorQuantizer(nn.Module):
    def __init__(self, dim: int, codebook_size: int, estimator: str = "ste", simvq: bool = False,
                 cosine: bool = False, kmeans_init: bool = False, beta: float = 0.25, seed: int = 0):
        super().__init__()
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator={estimator!r} is not allowed: one of {', '.join(ESTIMATORS)}")
        if kmeans_init and simvq:
            raise ValueError("kmeans_init=True is not allowed with simvq=True: SimVQ's base codebook stays frozen")
        if codebook_size < 2 or dim < 1:
            raise ValueError(f"codebook_size={codebook_size}, dim={dim} are not allowed: K >= 2, dim >= 1")
        self.dim, self.codebook_size, self.estimator = dim, codebook_size, estimator
        self.simvq, self.cosine, self.beta = simvq, cosine, beta
        g = torch.Generator().manual_seed(seed)
        if simvq:  # 1. C = Q W, Q frozen N(0, 1/d), W learned (nn.Linear with a bias, as the official code)
            self.register_buffer("frozen_codebook", torch.randn(codebook_size, dim, generator=g) * dim ** -0.5)
            self.codebook_transform = nn.Linear(dim, dim)
        else:      # a free table; uniform(-1/K, 1/K) as in VQ-VAE implementations
            self.embedding = nn.Parameter((torch.rand(codebook_size, dim, generator=g) * 2 - 1) / codebook_size)
        self.register_buffer("needs_init", torch.tensor(bool(kmeans_init)))

    @property
    def codebook(self) -> torch.Tensor:
        """(K, d), in the space the distances are measured (normalised when cosine)."""
        c = self.codebook_transform(self.frozen_codebook) if self.simvq else self.embedding
        return F.normalize(c, dim=-1) if self.cosine else c

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(N, h, w) -> code vectors (N, d, h, w)."""
        if indices.min() < 0 or indices.max() >= self.codebook_size:
            raise ValueError(f"indices in [{int(indices.min())}, {int(indices.max())}] are not allowed: "
                             f"codes 0..{self.codebook_size - 1}")
        return self.codebook[indices].permute(0, 3, 1, 2)

    @torch.no_grad()
    def _kmeans_init(self, z: torch.Tensor) -> None:
        """Centres of the first training batch: codebook norms then match the encoder's (Su's caveat)."""
        self.embedding.data.copy_(kmeans(z.detach().float(), self.codebook_size,
                                         generator=torch.Generator().manual_seed(0)))
        self.needs_init.fill_(False)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        zf = _flat(z).float()                                         # (M, d)
        if self.cosine:
            zf = F.normalize(zf, dim=-1)
        if self.training and bool(self.needs_init):
            self._kmeans_init(zf)
        codebook = self.codebook
        with torch.no_grad():                                         # 2. nearest code
            idx = torch.cdist(zf, codebook.detach()).argmin(dim=1)
        q = codebook[idx]                                             # (M, d), carries W's / C's gradient
        codebook_loss = F.mse_loss(q, zf.detach())                    # 3. moves codes (or W) to the encoder
        commitment = F.mse_loss(zf, q.detach())                       #    and the encoder to its codes
        if self.estimator == "ste":                                   # 4. gradient past the argmin
            zq = zf + (q - zf).detach()
        else:
            zq = rotate_to(zf, q.detach())
        return QuantizerOutput(_unflat(zq, z).to(z.dtype), idx.view(z.shape[0], *z.shape[2:]),
                               codebook_loss + self.beta * commitment, commitment.detach())


class FSQ(nn.Module):
    """Finite scalar quantization over `levels` (e.g. [8, 5, 5, 5] -> 1000 codes), with 1x1 projections from
    and back to `dim` channels when dim != len(levels)."""

    def __init__(self, levels: list[int] | tuple[int, ...], dim: int | None = None):
        super().__init__()
        if not levels or any(int(v) < 2 for v in levels):
            raise ValueError(f"levels={list(levels)!r} is not allowed: a list of ints >= 2 such as [8, 5, 5, 5]")
        self.levels = [int(v) for v in levels]
        self.dim = dim or len(self.levels)
        self.codebook_size = prod(self.levels)
        self.register_buffer("_levels", torch.tensor(self.levels, dtype=torch.float32), persistent=False)
        self.register_buffer("_basis", torch.tensor([prod(self.levels[:i]) for i in range(len(self.levels))]),
                             persistent=False)
        n = len(self.levels)
        self.project_in = nn.Conv2d(self.dim, n, 1) if self.dim != n else nn.Identity()
        self.project_out = nn.Conv2d(n, self.dim, 1) if self.dim != n else nn.Identity()

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """(..., n) -> values in (-L/2, L/2) (odd L) or (-L/2, L/2 - 1) shifted by 1/2 (even L): round() then
        gives exactly L integers per dimension."""
        half = (self._levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer codes (..., n) in [-L//2, ...] -> indices (...)."""
        return ((codes + self._levels // 2) * self._basis).sum(-1).long()

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(N, h, w) -> the decoder input (N, dim, h, w)."""
        if indices.min() < 0 or indices.max() >= self.codebook_size:
            raise ValueError(f"indices in [{int(indices.min())}, {int(indices.max())}] are not allowed: "
                             f"codes 0..{self.codebook_size - 1}")
        digits = (indices.unsqueeze(-1) // self._basis) % self._levels.long()       # (N, h, w, n)
        normalised = (digits - self._levels // 2) / (self._levels // 2)
        return self.project_out(normalised.permute(0, 3, 1, 2).float())

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        h = self.project_in(z).permute(0, 2, 3, 1).float()                          # (N, h, w, n)
        bounded = self.bound(h)
        codes = bounded + (bounded.round() - bounded).detach()                       # round with STE
        idx = self.codes_to_indices(codes.detach().round())
        zq = self.project_out((codes / (self._levels // 2)).permute(0, 3, 1, 2))
        err = (bounded.round() - bounded).pow(2).mean().detach()
        return QuantizerOutput(zq.to(z.dtype), idx, zq.new_zeros(()), err)
