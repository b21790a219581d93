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


# -- mutation survivors (docs/mutation.md): grids' ends and range, make_grid's defaults and messages ---------

def test_grid_time_hits_both_ends_to_float64_precision_and_never_leaves_the_range():
    from genkit.sampling.grids import grid_time

    for sched in (Schedule("shifted_cosine", 64, 32), Schedule("cosine"), Schedule("interpolated", 64)):
        for hi in (80.0, 14.6, 3.3, 157.4, 1.7):
            for lo in (0.002, 0.03, 0.0123, 0.5, 0.007):     # 0.007: float32 would miss it by 2e-7
                g = grid_time(5, sched, lo, hi)[:-1]
                assert abs(float(g[0]) / hi - 1) < 1e-12 and abs(float(g[-1]) / lo - 1) < 1e-12, (sched, lo, hi)
                assert float(g.max()) <= hi and float(g.min()) >= lo, (sched, lo, hi)   # the clamp binds here


def test_make_grid_passes_rho_and_defaults_to_7_and_names_bad_input():
    lo, hi = 0.01, 50.0
    assert torch.equal(make_grid("polynomial", 6, lo, hi), grid_polynomial(6, lo, hi, 7.0))
    assert torch.equal(make_grid("polynomial", 6, lo, hi, rho=3.0), grid_polynomial(6, lo, hi, 3.0))
    assert not torch.equal(grid_polynomial(6, lo, hi, 3.0), grid_polynomial(6, lo, hi, 7.0))
    with pytest.raises(ValueError) as e:
        make_grid("karras", 4, lo, hi)
    assert str(e.value) == f"grid='karras' is not allowed: one of {', '.join(GRIDS)}"
    with pytest.raises(ValueError) as e:
        make_grid("polynomial", 4, 1.0, 1.0)
    assert str(e.value) == "sigma_min=1.0, sigma_max=1.0 are not allowed: 0 < sigma_min < sigma_max"
    with pytest.raises(ValueError) as e:
        make_grid("time", 4, lo, hi)
    assert str(e.value) == "grid='time' needs the model's schedule (a genkit model)"


def test_interpolated_schedule_uses_the_custom_bounds_in_both_references():
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    s = Schedule("interpolated", 64, interp_low=32, interp_high=128, logsnr_min=-9.0, logsnr_max=11.0)
    lo, hi = logsnr_shifted(t, 64, 32, -9.0, 11.0), logsnr_shifted(t, 64, 128, -9.0, 11.0)
    torch.testing.assert_close(s.logsnr(t), t * lo + (1 - t) * hi, rtol=1e-14, atol=0)
    torch.testing.assert_close(logsnr_interpolated(t, 64, 32, 128, -9.0, 11.0), t * lo + (1 - t) * hi)


def test_logsnr_keeps_a_tensors_dtype_and_at_size_moves_the_shift():
    s = Schedule("shifted_cosine", 32, 32)
    assert s.logsnr(torch.tensor([0.5], dtype=torch.float32)).dtype == torch.float32
    assert s.logsnr(0.5).dtype == torch.float64
    big = s.at_size(64)
    assert big.image_size == 64 and (big.name, big.base_size) == (s.name, s.base_size)
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    torch.testing.assert_close(big.logsnr(t), s.logsnr(t) + 2 * math.log(32 / 64))


# -- solvers: no bar by default, the callback's denoised, the last step to 0, DPM-Solver++(3M)'s orders -------

SOLVERS = ("euler", "heun", "dpm2", "dpmpp_2m", "dpmpp_3m", "ipndm")


def _d_poly(a, b, c):
    """A denoiser that ignores x: D(sigma) = a + b lambda + c lambda^2, lambda = -log sigma (float64)."""
    return lambda x, sigma: torch.full_like(x, a + b * (-math.log(float(sigma))) + c * math.log(float(sigma)) ** 2)


def _exact(a, b, c, x0, s0):
    """The PF-ODE's exact x(sigma) from x0 at s0 for that D: x = sigma [x0 / s0 + F(lambda) - F(lambda0)],
    F(l) = e^l (a + b (l - 1) + c (l^2 - 2 l + 2)), the antiderivative of D(l) e^l."""
    F = lambda lam: math.exp(lam) * (a + b * (lam - 1) + c * (lam * lam - 2 * lam + 2))  # noqa: E731
    return lambda s: s * (x0 / s0 + F(-math.log(s)) - F(-math.log(s0)))


@pytest.mark.parametrize("name", SOLVERS)
def test_no_progress_bar_unless_asked_and_the_callback_gets_this_steps_denoised(name, capsys):
    from genkit.sampling import solvers

    sigmas = make_grid("polynomial", 4, 0.1, 10.0)
    den = _d_poly(0.3, 0.2, 0.0)
    seen = []
    getattr(solvers, name)(den, torch.ones(1, dtype=torch.float64), sigmas,
                           callback=lambda info: seen.append((info["sigma"], info["denoised"])))
    assert "sampling" not in capsys.readouterr().err
    assert [s for s, _ in seen] == sigmas[:-1].tolist()
    for s, d in seen:                          # D at this step's own sigma (D ignores x, so it is known exactly)
        assert torch.equal(d, den(torch.ones(1, dtype=torch.float64), s))
    getattr(solvers, name)(den, torch.ones(1, dtype=torch.float64), sigmas, disable=False)
    assert "sampling:" in capsys.readouterr().err                # tqdm's "desc: 100%|..."


@pytest.mark.parametrize("name", SOLVERS)
def test_the_last_step_to_zero_returns_the_denoised_sample(name):
    from genkit.sampling import solvers

    x = torch.tensor([2.0, -1.0], dtype=torch.float64)
    out = getattr(solvers, name)(lambda x, s: 0.5 * x + 0.1, x, torch.tensor([0.7, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out, 0.5 * x + 0.1, rtol=0, atol=1e-14)


def test_dpmpp_3m_steps_are_exact_to_the_order_they_claim():
    """Each step started from the exact state (the callback resets x): on a non-uniform grid, steps of order >= 2
    are exact when D is linear in lambda, steps of order 3 when it is quadratic; order 1 at the start, 2 next, 3 in
    the middle, 2 on the step before the last (which returns D)."""
    from genkit.sampling import dpmpp_3m

    sigmas = make_grid("polynomial", 8, 0.1, 10.0)                      # 8 steps, the last to 0
    for (a, b, c), exact_steps in (((0.3, 0.2, 0.0), range(1, 7)), ((0.3, 0.2, 0.05), range(2, 6))):
        x0 = 1.3
        exact, errors = _exact(a, b, c, x0, float(sigmas[0])), {}

        def reset(info):
            if info["sigma_next"] == 0:
                return None
            want = exact(info["sigma_next"])
            errors[info["i"]] = abs(float(info["x"]) - want) / abs(want)
            return {"x": torch.full_like(info["x"], want)}

        dpmpp_3m(_d_poly(a, b, c), torch.full((1,), x0, dtype=torch.float64), sigmas, callback=reset)
        assert sorted(errors) == list(range(7))
        for i, err in errors.items():
            if i in exact_steps:
                assert err < 1e-12, (a, b, c, i, err)
            else:
                assert err > 1e-5, (a, b, c, i, err)      # lower order there: the test can tell


# -- guidance: the sigma CFG hands the net, upsample guidance's defaults, window edges, dtypes -----------------

def test_guided_pair_hands_the_denoiser_float32_sigmas_for_2n():
    from genkit.guidance import guided_pair

    got = []
    def both(x2, s2):
        got.append(s2)
        return x2
    guided_pair(both, 2.0)(torch.zeros(3, 2), torch.tensor(0.5, dtype=torch.float64))
    guided_pair(both, 2.0)(torch.zeros(3, 2), torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    assert [(s.dtype, tuple(s.shape)) for s in got] == [(torch.float32, (6,))] * 2
    assert got[1].tolist() == pytest.approx([0.1, 0.2, 0.3] * 2)


def _ug_toy():
    """A continuous-time toy denoiser (depends on x and sigma) for upsample guidance on 4x4 images."""
    return lambda x, s: x / (1 + torch.as_tensor(s, dtype=x.dtype).reshape(-1, 1, 1, 1) ** 2)


def test_upsample_guidance_defaults_to_factor_2_and_its_window_is_closed():
    from genkit.guidance import upsample_guidance

    den, x = _ug_toy(), torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(upsample_guidance(den, 0.7)(x, 1.0), upsample_guidance(den, 0.7, factor=2)(x, 1.0))
    assert not torch.allclose(upsample_guidance(den, 0.7)(x, 1.0), den(x, 1.0))
    win = upsample_guidance(den, 0.7, sigma_window=(0.5, 2.0))
    for s in (0.5, 2.0):                                         # lo <= sigma <= hi: both edges guided
        torch.testing.assert_close(win(x, s), upsample_guidance(den, 0.7)(x, s))
    sig = torch.tensor([1.0, 3.0])                               # one sample inside the window, one outside
    mixed = win(x, sig)
    torch.testing.assert_close(mixed[1], den(x, sig)[1])
    torch.testing.assert_close(mixed[0], upsample_guidance(den, 0.7)(x[:1], 1.0)[0])


def test_guidance_keeps_float32_for_a_float64_sigma_and_snap_keeps_the_targets_dtype():
    from genkit.guidance import snap_logsnr, upsample_guidance

    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    out = upsample_guidance(_ug_toy(), 0.7)(x, torch.tensor(1.0, dtype=torch.float64))
    assert out.dtype == torch.float32
    table = torch.linspace(10, -10, 50, dtype=torch.float64)
    snapped = snap_logsnr(torch.tensor([0.3, -4.0]), torch.tensor([-1.0, -5.0]), table)
    assert snapped.dtype == torch.float32
