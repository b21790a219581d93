"""Exact values of schedules, grids and CFG that the solver tests do not pin down (each of these was a
surviving mutant of `.ci/mutation`): defaults, bounds, dtypes, per-sample sigma, error messages."""

import math

import pytest
import torch

from genkit.guidance import classifier_free_guidance
from genkit.sampling import GRIDS, grid_polynomial, make_grid, steps_for_nfe
from genkit.schedules import Schedule, logsnr_interpolated, logsnr_shifted, sigma_from_logsnr

T01 = torch.tensor([0.0, 1.0], dtype=torch.float64)


def test_grid_polynomial_is_karras_rho_7_by_default():
    n, lo, hi = 6, 0.002, 80.0
    i = torch.arange(n, dtype=torch.float64)
    karras = (hi ** (1 / 7) + i / (n - 1) * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7        # EDM eq. 5
    g = grid_polynomial(n, lo, hi)
    torch.testing.assert_close(g[:-1], karras, rtol=1e-12, atol=0)
    assert g[-1] == 0


@pytest.mark.parametrize("name", GRIDS)
@pytest.mark.parametrize("num_steps", [1, 2, 7])
def test_grids_are_float64_and_hit_both_ends_exactly(name, num_steps):
    """Step coefficients are computed in float64 from the grid (solvers.py), so the grid is float64."""
    g = make_grid(name, num_steps, 0.002, 80.0, schedule=Schedule("shifted_cosine", 64, 32))
    assert g.dtype == torch.float64
    assert float(g[0]) == pytest.approx(80.0, rel=1e-9)
    if num_steps > 1:
        assert float(g[-2]) == pytest.approx(0.002, rel=1e-9)


def test_steps_for_nfe_is_an_int():
    for name in ("euler", "heun", "dpm2", "dpmpp_2m"):
        for budget in (1, 4, 5, 10):
            k = steps_for_nfe(name, budget)
            assert type(k) is int, (name, budget, k)
    assert steps_for_nfe("heun", 5) == 3 and steps_for_nfe("euler", 5) == 5


def test_sigma_from_logsnr_on_floats_and_tensors():
    assert sigma_from_logsnr(2.0) == pytest.approx(math.exp(-1.0), rel=1e-15)
    assert sigma_from_logsnr(-4.0) == pytest.approx(math.exp(2.0), rel=1e-15)
    torch.testing.assert_close(sigma_from_logsnr(torch.tensor([2.0, -4.0], dtype=torch.float64)),
                               torch.tensor([math.exp(-1.0), math.exp(2.0)], dtype=torch.float64))


def test_default_and_custom_logsnr_bounds():
    assert logsnr_shifted(T01, 64, 64).tolist() == pytest.approx([15.0, -15.0], abs=1e-9)
    assert logsnr_interpolated(T01, 64, 64, 64).tolist() == pytest.approx([15.0, -15.0], abs=1e-9)
    for name in ("cosine", "shifted_cosine", "interpolated"):
        s = Schedule(name, image_size=64, base_size=64, interp_low=64, interp_high=64, logsnr_min=-10.0, logsnr_max=8.0)
        assert s.logsnr(T01).tolist() == pytest.approx([8.0, -10.0], abs=1e-9), name
        assert s.logsnr(0.5).dtype == torch.float64                       # floats are lifted to float64
    assert Schedule("cosine", image_size=128, base_size=32).logsnr(T01).tolist() == pytest.approx([15.0, -15.0])


def test_t_from_logsnr_clamps_outside_the_range_and_ignores_size_for_cosine():
    for s in (Schedule("cosine"), Schedule("shifted_cosine", 64, 32)):
        lam = s.logsnr(torch.tensor([0.0, 1.0], dtype=torch.float64))
        t = s.t_from_logsnr(torch.stack([lam[0] + 5, lam[1] - 5]))       # cleaner than t = 0, noisier than 1
        assert t.tolist() == [0.0, 1.0]
    cos = Schedule("cosine", image_size=128, base_size=32)               # cosine has no shift whatever the size
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    torch.testing.assert_close(cos.t_from_logsnr(cos.logsnr(t)), t)
    assert cos.t_from_logsnr(0.0).dtype == torch.float64


def test_schedule_rejects_empty_range_and_unknown_names_with_the_allowed_ones():
    with pytest.raises(ValueError, match=r"^logsnr_min=1.0 must be below logsnr_max=1.0$"):
        Schedule("cosine", logsnr_min=1.0, logsnr_max=1.0)
    with pytest.raises(ValueError, match=r"one of cosine, shifted_cosine, interpolated$"):
        Schedule("linear")


def test_discrete_table_has_T_entries_and_betas_are_capped():
    assert len(Schedule("cosine").alphas_cumprod()) == 1000 and len(Schedule("cosine").betas()) == 1000
    assert float(Schedule("cosine").betas().max()) == pytest.approx(0.93211473, rel=1e-6)   # under the cap
    wide = Schedule("cosine", logsnr_min=-40.0)        # the last step would be beta ~ 1: capped at 0.999
    ac = wide.alphas_cumprod()
    raw = 1 - ac / torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    assert float(raw.max()) > 0.9999 and float(wide.betas().max()) == pytest.approx(0.999, abs=1e-12)


def test_cfg_with_a_per_sample_sigma_and_an_odd_batch():
    """sigma of shape (N,) (per-sample noise levels) and N = 3: each sample is guided at its own sigma."""
    def den(x, sigma, class_labels):        # a toy conditional denoiser: depends on x, sigma and the label
        return x / (1 + sigma.view(-1, 1)) + class_labels.view(-1, 1).to(x.dtype)

    x = torch.arange(6, dtype=torch.float32).view(3, 2)
    y, sig = torch.tensor([0, 1, 2]), torch.tensor([0.5, 1.0, 2.0])
    g = classifier_free_guidance(den, y, 7, 3.0)(x, sig)
    cond, uncond = den(x, sig, y), den(x, sig, torch.full_like(y, 7))
    torch.testing.assert_close(g, uncond + 3.0 * (cond - uncond))
    g0 = classifier_free_guidance(den, y, 7, 3.0)(x, 1.0)                 # a scalar sigma too
    torch.testing.assert_close(g0, den(x, torch.ones(3), torch.full_like(y, 7)) + 3.0 * (den(x, torch.ones(3), y)
                                                                                         - den(x, torch.ones(3), torch.full_like(y, 7))))
