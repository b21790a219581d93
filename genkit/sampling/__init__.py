"""Solvers (pure functions over a denoiser), sigma grids and the one solver registry. See registry.py."""

from .grids import GRIDS, default_sigma_range, grid_logsnr, grid_polynomial, grid_time, make_grid
from .registry import REGISTRY, SolverEntry, available_solvers, get_solver, nfe, solver_entry, solver_names, steps_for_nfe
from .solvers import dpm2, dpmpp_2m, dpmpp_3m, euler, heun, ipndm

__all__ = ["GRIDS", "REGISTRY", "SolverEntry", "available_solvers", "default_sigma_range", "grid_logsnr", "grid_polynomial", "grid_time",
           "make_grid", "euler", "heun", "dpm2", "dpmpp_2m", "dpmpp_3m", "ipndm", "get_solver", "nfe",
           "solver_entry", "solver_names", "steps_for_nfe"]
