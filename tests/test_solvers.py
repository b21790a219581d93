"""Solvers and grids against exact answers on toy data whose denoiser is closed-form.

Data: per pixel a two-component Gaussian mixture 0.5 N(mu1, s^2) + 0.5 N(mu2, s^2). Its denoiser is the
posterior-weighted mean, exact, and non-linear in x (a single Gaussian would make DPM-Solver++ almost exact).
For a single Gaussian N(mu, s^2) the PF-ODE solution itself is closed-form:
x(sigma) = mu + sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_max^2) (x(sigma_max) - mu).
"""

import math

import pytest
import torch

from genkit.sampling import GRIDS, SOLVERS, get_solver, grid_polynomial, heun, make_grid, nfe, steps_for_nfe
from genkit.schedules import Schedule

MU1, MU2, S = -0.6, 0.5, 0.3


def mixture_denoiser(x, sigma):
    v = S * S + float(sigma) ** 2
    w1 = torch.sigmoid(((x - MU2) ** 2 - (x - MU1) ** 2) / (2 * v))  # posterior of component 1
    post = lambda mu: mu + S * S / v * (x - mu)  # noqa: E731
    return w1 * post(MU1) + (1 - w1) * post(MU2)


def gaussian_denoiser(mu, s):
    return lambda x, sigma: mu + s * s / (s * s + float(sigma) ** 2) * (x - mu)


@pytest.fixture(scope="module")
def x_start():
    return torch.randn(2000, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 80.0


@pytest.fixture(scope="module")
def reference(x_start):
    """High-accuracy solution: Heun with 3000 steps (its own error is ~1e-7 here)."""
    return heun(mixture_denoiser, x_start, grid_polynomial(3000, 0.002, 80.0))


def global_order(name, x_start, reference, steps=(16, 32, 64, 128)):
    errs = []
    for n in steps:
        out = get_solver(name)(mixture_denoiser, x_start, make_grid("logsnr", n, 0.002, 80.0))
        errs.append((out - reference).abs().mean().item())
    return [math.log2(errs[i] / errs[i + 1]) for i in range(len(errs) - 1)], errs


# Global order: one-step methods reach their order; the multistep ones (3M, iPNDM) start with lower-order
# steps, whose local error O(h^2) caps the *global* order at 2 — their higher order is checked locally below.
@pytest.mark.parametrize("name,order", [("euler", 1), ("heun", 2), ("dpm2", 2), ("dpmpp_2m", 2),
                                        ("dpmpp_3m", 2), ("ipndm", 2)])
def test_global_convergence_order(name, order, x_start, reference):
    orders, errs = global_order(name, x_start, reference)
    assert errs[-1] < errs[0] / 2 ** (3 * order - 1)
    assert min(orders[1:]) > order - 0.15, (name, orders)


def exact_between(x, s_from, s_to, substeps=200):
    return heun(mixture_denoiser, x, torch.cat([torch.linspace(s_from, s_to, substeps + 1, dtype=torch.float64),
                                                 torch.zeros(1, dtype=torch.float64)])[:-1])


def local_error(name, sigmas, x0):
    """Max one-step error when every step starts from the exact solution (the callback resets x)."""
    errors, n = [], len(sigmas) - 1

    def reset(info):
        exact = exact_between(state["x"], info["sigma"], info["sigma_next"])
        if 3 <= info["i"] < n - 2:  # interior steps: full order (the first and last ones ramp down)
            errors.append((info["x"] - exact).abs().max().item())
        state["x"] = exact
        return {"x": exact}

    state = {"x": x0}
    get_solver(name)(mixture_denoiser, x0, sigmas, callback=reset)
    return max(errors)


@pytest.mark.parametrize("name,grid,order", [("dpmpp_3m", "logsnr", 3), ("dpmpp_2m", "logsnr", 2),
                                             ("ipndm", "uniform", 4), ("heun", "logsnr", 2)])
def test_local_order(name, grid, order):
    """Local truncation error of an interior step scales as h^(order + 1)."""
    x0 = torch.linspace(-3, 3, 64, dtype=torch.float64)
    errs = []
    for n in (16, 32):
        if grid == "uniform":  # iPNDM's fixed Adams-Bashforth coefficients assume equal steps in sigma
            sig = torch.linspace(2.0, 1.0, n + 1, dtype=torch.float64)
        else:
            sig = torch.exp(torch.linspace(math.log(2.0), math.log(0.5), n + 1, dtype=torch.float64))
        errs.append(local_error(name, sig, x0 * float(sig[0])))  # no step to 0: all interior
    measured = math.log2(errs[0] / errs[1])
    assert measured > order + 0.2, (name, errs, measured)  # clearly above the next-lower order's h^order


def test_exact_gaussian_ode_solution():
    """On Gaussian data every solver converges to the closed-form PF-ODE solution."""
    mu = torch.linspace(-0.5, 0.5, 48, dtype=torch.float64)
    s, s_max = 0.5, 80.0
    x_t = mu + torch.randn(48, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * s_max
    exact = mu + s / math.sqrt(s * s + s_max ** 2) * (x_t - mu)
    for name in SOLVERS:
        err = [(get_solver(name)(gaussian_denoiser(mu, s), x_t, grid_polynomial(n, 0.002, s_max)) - exact).abs().max()
               for n in (16, 64)]
        assert err[1] < (0.1 if name == "euler" else 0.01) and err[1] < err[0] / 3.5, (name, err)


@pytest.mark.parametrize("name", list(SOLVERS))
def test_nfe_is_counted_exactly(name):
    calls = []

    def counting(x, sigma):
        assert float(sigma) > 0, "the denoiser must never see sigma = 0"
        calls.append(float(sigma))
        return mixture_denoiser(x, sigma)

    for n in (1, 2, 3, 7, 20):
        calls.clear()
        get_solver(name)(counting, torch.zeros(4, dtype=torch.float64), grid_polynomial(n, 0.002, 80.0))
        assert len(calls) == nfe(name, n)
    for budget in (1, 5, 10, 20, 50):
        k = steps_for_nfe(name, budget)
        assert nfe(name, k) <= max(budget, nfe(name, 1)) and (budget == 1 or nfe(name, k + 1) > budget)


def test_callback_sees_every_step_and_can_replace_x():
    seen = []

    def cb(info):
        seen.append(info["i"])
        return {"x": torch.zeros_like(info["x"])}

    out = get_solver("euler")(mixture_denoiser, torch.ones(3, dtype=torch.float64), grid_polynomial(5, 0.002, 80.0),
                              callback=cb)
    assert seen == [0, 1, 2, 3, 4] and torch.all(out == 0)


def test_bad_names_raise_clear_errors():
    with pytest.raises(ValueError, match="solver='rk9'.*euler"):
        get_solver("rk9")
    with pytest.raises(ValueError, match="grid='cosine'"):
        make_grid("cosine", 10, 0.002, 80.0)
    with pytest.raises(ValueError, match="num_inference_steps=0"):
        make_grid("polynomial", 0, 0.002, 80.0)
    with pytest.raises(ValueError, match="sigma_min"):
        make_grid("polynomial", 5, 1.0, 0.5)


@pytest.mark.parametrize("name", GRIDS)
def test_grids(name):
    sched = Schedule("shifted_cosine", 64, 32)
    g = make_grid(name, 10, 0.002, 80.0, schedule=sched)
    assert len(g) == 11 and g[-1] == 0 and torch.all(g[:-1] > 0)
    assert torch.all(g[1:] < g[:-1])
    assert math.isclose(float(g[0]), 80.0, rel_tol=1e-6) and math.isclose(float(g[-2]), 0.002, rel_tol=1e-6)
