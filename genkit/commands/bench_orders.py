"""`genkit bench orders`: each solver's convergence order on a toy whose exact answer is known.

Data: per pixel 0.5 N(MU1, S^2) + 0.5 N(MU2, S^2); its denoiser D(x; sigma) is the posterior mean, closed-form
and non-linear in x. The exact PF-ODE solution dx/dlog(sigma) = x - D comes from scipy's DOP853 at 1e-12.
- global order: log2 of the error ratio when the steps double (64 -> 128), on sigma in [0.002, 80];
- local order: one interior step started from the exact solution has error ~ h^(order + 1) (32 -> 64 steps).
Deterministic (float64, fixed seeds); ~10 s on one CPU core. tests/test_solvers.py asserts the same facts.
"""

from __future__ import annotations

import math
import platform

import numpy as np
import torch

MU1, MU2, S = -0.6, 0.5, 0.3
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
# solver -> (grid for the global order, grid for the local order): iPNDM's fixed Adams-Bashforth coefficients
# assume equal steps, so its local order is measured on a uniform sigma grid
GRIDS = {"euler": ("logsnr", "logsnr"), "heun": ("logsnr", "logsnr"), "dpm2": ("logsnr", "logsnr"),
         "dpmpp_2m": ("logsnr", "logsnr"), "dpmpp_3m": ("polynomial", "logsnr"), "ipndm": ("polynomial", "uniform")}


def mixture_denoiser(x, sigma):
    v = S * S + float(sigma) ** 2
    w1 = torch.sigmoid(((x - MU2) ** 2 - (x - MU1) ** 2) / (2 * v))  # posterior of component 1
    post = lambda mu: mu + S * S / v * (x - mu)  # noqa: E731
    return w1 * post(MU1) + (1 - w1) * post(MU2)


def exact_flow(x, s_from, s_to):
    """The PF-ODE solution from sigma = s_from to s_to (> 0), float64, to ~1e-11."""
    from scipy.integrate import solve_ivp

    rhs = lambda t, y: y - mixture_denoiser(torch.from_numpy(y), math.exp(t)).numpy()  # noqa: E731
    sol = solve_ivp(rhs, (math.log(s_from), math.log(s_to)), x.numpy(), method="DOP853", rtol=1e-12, atol=1e-12)
    return torch.from_numpy(np.ascontiguousarray(sol.y[:, -1]))


def global_errors(name, grid, steps=(16, 32, 64, 128), n=2000):
    from genkit.sampling import get_solver, make_grid

    x = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * SIGMA_MAX
    ref = mixture_denoiser(exact_flow(x, SIGMA_MAX, SIGMA_MIN), SIGMA_MIN)  # the last step: x = D(x; sigma_min)
    return [float((get_solver(name)(mixture_denoiser, x, make_grid(grid, k, SIGMA_MIN, SIGMA_MAX)) - ref)
                  .abs().mean()) for k in steps]


def local_error(name, sigmas, x0):
    """Max one-step error of interior steps when every step starts from the exact solution."""
    from genkit.sampling import get_solver

    errors, n, state = [], len(sigmas) - 1, {"x": x0}

    def reset(info):
        exact = exact_flow(state["x"], info["sigma"], info["sigma_next"])
        if 3 <= info["i"] < n - 2:  # interior steps: full order (the first and last ones ramp down)
            errors.append((info["x"] - exact).abs().max().item())
        state["x"] = exact
        return {"x": exact}

    get_solver(name)(mixture_denoiser, x0, sigmas, callback=reset)
    return max(errors)


def local_order(name, grid):
    x0 = torch.linspace(-3, 3, 64, dtype=torch.float64)
    errs = []
    for n in (32, 64):
        if grid == "uniform":
            sig = torch.linspace(2.0, 1.0, n + 1, dtype=torch.float64)
        else:
            sig = torch.exp(torch.linspace(math.log(2.0), math.log(0.5), n + 1, dtype=torch.float64))
        errs.append(local_error(name, sig, x0 * float(sig[0])))
    return math.log2(errs[0] / errs[1])


def orders() -> dict:
    out = {}
    for name, (g_grid, l_grid) in GRIDS.items():
        errs = global_errors(name, g_grid)
        out[name] = {"global": round(math.log2(errs[-2] / errs[-1]), 3),
                     "global_by_doubling": [round(math.log2(a / b), 3) for a, b in zip(errs, errs[1:])],
                     "global_error_at_128": float(f"{errs[-1]:.4g}"), "global_grid": g_grid,
                     "local": round(local_order(name, l_grid), 3), "local_grid": l_grid}
    return out


def add_parser(bsub):
    p = bsub.add_parser("orders", help="each solver's global and local convergence order on a closed-form toy",
                        description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="FILE.json", help="e.g. docs/solver_orders.json")


def run_orders(args) -> dict:
    from genkit.commands.common import atomic_write_json

    torch.set_num_threads(1)
    result = {"solvers": orders(),
              "global_grid_note": "64 -> 128 steps, sigma 0.002-80; iPNDM is 2nd order on non-uniform grids",
              "command": f"genkit bench orders --out {args.out}", "device": f"CPU ({platform.machine()}), float64",
              "torch": torch.__version__}
    atomic_write_json(args.out, result)
    for k, v in result["solvers"].items():
        print(f"{k:10s} global {v['global']:.2f} ({v['global_grid']})  local {v['local']:.2f} ({v['local_grid']})")
    return result
