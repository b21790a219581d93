"""ODE error: how far a solver's result is from the exact probability-flow ODE solution of the same noise.

The exact solution is approximated by a high-accuracy solver run (Heun on a fine grid): cheap, deterministic
and free of sampling noise, so it is the first check for any solver, grid or skip-tuning change.
"""

from __future__ import annotations

import torch

REFERENCE_SOLVER, REFERENCE_STEPS = "heun", 256   # 511 NFE; its own error is far below any few-step solver's


def ode_error(x: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
    """Per-image RMS distance (N,) between two batches of final samples (N, C, H, W), in [-1, 1] pixel units."""
    if x.shape != x_ref.shape:
        raise ValueError(f"ode_error needs equal shapes, got {tuple(x.shape)} and {tuple(x_ref.shape)}")
    return (x.double() - x_ref.double()).pow(2).flatten(1).mean(1).sqrt()
