"""Skip-tuning (Ma et al., ICML 2024; research/diffusion.md §3): scale a UNet's long skip connections at sampling.

The decoder input concat(u_i, d_i) becomes concat(u_i, rho_i d_i). For k + 1 skips counted from the innermost
(i = 0, lowest resolution) to the outermost (i = k), rho rises linearly from rho_bottom to 1:

    rho_i = rho_bottom + i (1 - rho_bottom) / k

In a diffusers UNet2DModel the skips reach each up block as its `res_hidden_states_tuple`, whose last entry is
consumed first; up_blocks[0] is the innermost. A forward pre-hook on every up block scales that tuple. No
training, no extra network evaluation.

    with SkipTuning(unet, rho_bottom=0.8) as st:          # hooks removed on exit, also after an exception
        x = solver(st.wrap(denoise), x, sigmas)           # wrap: only needed with sigma_range
"""

from __future__ import annotations

import torch

from .checks import check_float

RHO_RANGE = (0.1, 1.0)


def skip_rhos(num_skips: int, rho_bottom: float) -> list[float]:
    """rho per skip, innermost first: linear from rho_bottom to 1 (one skip: rho_bottom)."""
    if num_skips == 1:
        return [rho_bottom]
    return [rho_bottom + i * (1.0 - rho_bottom) / (num_skips - 1) for i in range(num_skips)]


def _block_skips(unet) -> list[int]:
    """Number of skip tensors each up block consumes (its resnets), innermost block first."""
    return [len(block.resnets) for block in unet.up_blocks]


class SkipTuning:
    """Removable skip-connection scaling on a UNet2DModel.

    rho_bottom: the innermost skip's scale (1 = off: the UNet's output is bit-identical).
    sigma_range: (lo, hi) in EDM sigma: scale only for noise levels in [lo, hi]; needs the denoiser wrapped
    with `wrap` so the hooks know the current sigma (per sample, also under CFG's doubled batch).
    """

    def __init__(self, unet, rho_bottom: float, sigma_range: tuple[float, float] | None = None):
        self.rho_bottom = check_float("skip_tuning", rho_bottom, *RHO_RANGE)
        if sigma_range is not None:
            lo, hi = (check_float("skip_sigma_range", v, 0.0) for v in sigma_range)
            if lo >= hi:
                raise ValueError(f"skip_sigma_range={tuple(sigma_range)!r} is not allowed: (lo, hi) with lo < hi")
            sigma_range = (lo, hi)
        self.unet, self.sigma_range = unet, sigma_range
        counts = _block_skips(unet)
        rhos = skip_rhos(sum(counts), self.rho_bottom)
        # per block, in the order of its tuple (last entry = the innermost of that block's skips)
        self.block_rhos, start = [], 0
        for n in counts:
            self.block_rhos.append(list(reversed(rhos[start:start + n])))
            start += n
        self.handles, self.sigma = [], None

    def _scale(self, h: torch.Tensor, rho: float) -> torch.Tensor:
        if rho == 1.0:
            return h
        if self.sigma_range is None:
            return h * rho
        if self.sigma is None:
            raise RuntimeError("skip-tuning with sigma_range needs the denoiser wrapped with SkipTuning.wrap")
        sig = self.sigma.to(h.device).reshape(-1)
        if len(sig) > 1 and len(h) % len(sig):                 # per-image network calls (batch_invariant)
            if not torch.all(sig == sig[0]):
                raise ValueError("skip_sigma_range with per-sample noise levels (AMED) needs batched network "
                                 "calls: use batch_invariant=False")
            sig = sig[:1]
        sig = sig.expand(len(h)) if len(sig) == 1 else sig.repeat(len(h) // len(sig))  # CFG: [cond; uncond]
        inside = (sig >= self.sigma_range[0]) & (sig <= self.sigma_range[1])
        factor = torch.where(inside, torch.tensor(rho, dtype=h.dtype, device=h.device),
                             torch.tensor(1.0, dtype=h.dtype, device=h.device))
        return h * factor.view(-1, *([1] * (h.ndim - 1)))

    def _hook(self, rhos):
        def pre_hook(module, args, kwargs):
            if "res_hidden_states_tuple" in kwargs:
                kwargs = dict(kwargs, res_hidden_states_tuple=tuple(
                    self._scale(h, r) for h, r in zip(kwargs["res_hidden_states_tuple"], rhos)))
            else:
                args = (args[0], tuple(self._scale(h, r) for h, r in zip(args[1], rhos)), *args[2:])
            return args, kwargs
        return pre_hook

    def __enter__(self) -> "SkipTuning":
        if self.handles:
            raise RuntimeError("this SkipTuning is already active")
        try:
            for block, rhos in zip(self.unet.up_blocks, self.block_rhos):
                self.handles.append(block.register_forward_pre_hook(self._hook(rhos), with_kwargs=True))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> bool:
        self.remove()
        return False

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles, self.sigma = [], None

    def wrap(self, denoise):
        """denoise(x, sigma) that records sigma for the sigma_range test (a no-op without a range)."""
        def tuned(x, sigma, *args, **kwargs):
            self.sigma = torch.as_tensor(sigma, dtype=torch.float32).detach().reshape(-1)
            return denoise(x, sigma, *args, **kwargs)
        return tuned if self.sigma_range is not None else denoise


SKIP_FILE = "skip_tuning.json"  # in a model folder: `genkit bench skip`'s sweep and best rho per solver / NFE


def best_rho(model_dir, solver: str, num_steps: int, guidance_scale: float, grid: str | None = None) -> float:
    """The rho_bottom `genkit bench skip` found best for this solver, steps, guidance and sigma grid
    (skip_tuning=True). grid None (a run on its own sigmas): any grid's pick for the rest."""
    import json
    from pathlib import Path

    path = Path(model_dir or ".") / SKIP_FILE
    rows = json.loads(path.read_text())["best"] if path.is_file() else []
    for row in rows:
        if row["solver"] == solver and row["num_steps"] == num_steps and \
                abs(row["guidance"] - guidance_scale) < 1e-6 and grid in (None, row.get("grid", grid)):
            return float(row["rho_bottom"])
    have = ", ".join(f"{r['solver']} steps={r['num_steps']} grid={r.get('grid', '?')}" for r in rows) or "none"
    raise ValueError(f"skip_tuning=True is not allowed: no best rho in {path} for solver={solver!r}, "
                     f"num_inference_steps={num_steps}, guidance={guidance_scale:g}, grid={grid!r} (have: {have}); "
                     f"give a rho_bottom in [{RHO_RANGE[0]}, {RHO_RANGE[1]}] or run `genkit bench skip`")
