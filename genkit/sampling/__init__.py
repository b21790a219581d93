"""Solvers (pure functions over a denoiser) and sigma grids. See solvers.py and grids.py."""

from .grids import GRIDS, default_sigma_range, grid_logsnr, grid_polynomial, grid_time, make_grid
from .solvers import SOLVERS, dpm2, dpmpp_2m, dpmpp_3m, euler, get_solver, heun, ipndm, nfe, steps_for_nfe

__all__ = ["GRIDS", "SOLVERS", "default_sigma_range", "grid_logsnr", "grid_polynomial", "grid_time", "make_grid",
           "euler", "heun", "dpm2", "dpmpp_2m", "dpmpp_3m", "ipndm", "get_solver", "nfe", "steps_for_nfe"]
