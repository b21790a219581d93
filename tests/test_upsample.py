"""Upsample guidance (genkit.guidance.upsample_guidance) against closed forms on Gaussian data, and in the pipeline.

Toy data: every pixel iid N(mu, s^2) at low resolution. Its exact EDM denoiser is pixelwise,
D_g(x; sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu), at any image size: a "network" trained at r px that runs
unchanged at m r px. The block-constant data U_m z (z low-resolution Gaussian) has the exact denoiser
D_high(x; sigma) = U_m D_g(D_m x; sigma / m), since D_m x = z + (sigma / m) n' carries all the signal.
"""

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler

from genkit.denoiser import Denoiser
from genkit.guidance import classifier_free_guidance, downsample, snap_logsnr, upsample, upsample_guidance
from genkit.sampling import get_solver, grid_polynomial, nfe, solver_names

SOLVERS = solver_names(predictor=False)
from genkit.scheduler import GenkitScheduler
from pipelines.pixel_diffusion import PixelDiffusionPipeline
from helpers import tiny_unet

MU, S = 0.3, 0.5


def gaussian_denoiser(x, sigma):
    sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
    return MU + S ** 2 / (S ** 2 + sigma ** 2) * (x - MU)


def paper_ug_x0(x, sigma, w, m, time_adjustment=True, power_adjustment=True):
    """The paper's VP / eps form, written independently of genkit's EDM form:
    eps~ = eps(x_t, t) + w U[eps(x_low, tau) / m - D eps(x_t, t)], x_low = D x_t / sqrt(P_t), lambda_tau = lambda_t + 2 log m;
    the ablations use tau = t, or x_low = D x_t. eps is the exact VP noise predictor of N(mu, s^2) data."""
    def eps_net(x_vp, lam):
        a, sv = math.sqrt(1 / (1 + math.exp(-lam))), math.sqrt(1 / (1 + math.exp(lam)))
        return sv * (x_vp - a * MU) / (a ** 2 * S ** 2 + sv ** 2)

    lam = -2 * math.log(sigma)
    alpha, sigma_vp = math.sqrt(1 / (1 + math.exp(-lam))), math.sqrt(1 / (1 + math.exp(lam)))
    x_vp = alpha * x
    eps = eps_net(x_vp, lam)
    p = alpha ** 2 + sigma_vp ** 2 / m ** 2
    x_low = downsample(x_vp, m) / (math.sqrt(p) if power_adjustment else 1.0)
    tau = lam + 2 * math.log(m) if time_adjustment else lam
    eps_t = eps + w * upsample(eps_net(x_low, tau) / m - downsample(eps, m), m)
    return (x_vp - sigma_vp * eps_t) / alpha


@pytest.mark.parametrize("adjust", [(True, True), (False, True), (True, False), (False, False)])
@pytest.mark.parametrize("sigma", [0.05, 0.7, 3.0, 20.0])
def test_power_and_time_adjustments_match_the_papers_eps_form(adjust, sigma):
    torch.manual_seed(0)
    x = MU + torch.randn(2, 3, 8, 8, dtype=torch.float64) * math.sqrt(S ** 2 + sigma ** 2)
    time_adj, power_adj = adjust
    for m in (2, 4):
        ug = upsample_guidance(gaussian_denoiser, 0.7, m, time_adjustment=time_adj, power_adjustment=power_adj)
        got = ug(x, torch.tensor(sigma, dtype=torch.float64))
        want = paper_ug_x0(x, sigma, 0.7, m, time_adj, power_adj)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sigma", [0.05, 0.7, 3.0, 20.0])
def test_w1_gives_the_exact_low_frequencies_of_block_constant_data(sigma):
    """With both adjustments and w = 1, D_m of UG's prediction is D_m of the exact high-resolution denoiser;
    without the time or the power adjustment it is not."""
    torch.manual_seed(1)
    z = MU + S * torch.randn(4, 3, 4, 4, dtype=torch.float64)
    x = upsample(z, 2) + sigma * torch.randn(4, 3, 8, 8, dtype=torch.float64)
    exact = upsample(gaussian_denoiser(downsample(x, 2), sigma / 2), 2)
    s = torch.tensor(sigma, dtype=torch.float64)
    got = upsample_guidance(gaussian_denoiser, 1.0, 2)(x, s)
    torch.testing.assert_close(downsample(got, 2), downsample(exact, 2), rtol=1e-10, atol=1e-10)
    for kw in ({"time_adjustment": False}, {"power_adjustment": False}) if sigma > 0.5 else ():  # tiny sigma: ~same
        off = upsample_guidance(gaussian_denoiser, 1.0, 2, **kw)(x, s)
        assert (downsample(off, 2) - downsample(exact, 2)).abs().max() > 1e-4


def test_scale_0_and_outside_the_window_is_the_plain_denoiser():
    assert upsample_guidance(gaussian_denoiser, 0.0) is gaussian_denoiser
    x = torch.randn(2, 3, 8, 8)
    ug = upsample_guidance(gaussian_denoiser, 1.0, 2, sigma_window=(5.0, 10.0))
    for sigma in (0.5, 4.9, 10.5):
        assert torch.equal(ug(x, torch.tensor(sigma)), gaussian_denoiser(x, torch.tensor(sigma)))
    assert ug.low_res_calls == 0
    assert not torch.equal(ug(x, torch.tensor(7.0)), gaussian_denoiser(x, torch.tensor(7.0)))
    assert ug.low_res_calls == 1


def test_snap_to_the_nearest_table_step_with_the_clamp():
    table = torch.linspace(10, -10, 21, dtype=torch.float64)           # index k: lambda = 10 - k
    target = torch.tensor([3.4, 3.6, -30.0])
    current = torch.tensor([2.0, 2.0, -8.0])
    snapped = snap_logsnr(target, current, table)
    # nearest: 3.0, 4.0; far below the table: the noisiest step (-10) clamped to no noisier than t (-8)
    assert snapped.tolist() == [3.0, 4.0, -8.0]


class _RecordingUnet(torch.nn.Module):
    """Stands in for a UNet: returns zeros and records the timesteps it is called with."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))  # the denoiser reads the dtype from the parameters
        self.timesteps = []

    def forward(self, x, t, class_labels=None):
        self.timesteps.append(t.clone())
        return type("Out", (), {"sample": torch.zeros_like(x)})()


def test_discrete_model_gets_an_integer_table_step_for_the_low_resolution_pass():
    sched = DDPMScheduler(num_train_timesteps=1000)
    unet = _RecordingUnet()
    den = Denoiser(unet, "epsilon", "discrete", sched.alphas_cumprod)
    ug = upsample_guidance(lambda x, s: den(x, s), 1.0, 2, table_logsnr=den.table_logsnr)
    lam_t = 0.5 * (den.table_logsnr[500] + den.table_logsnr[501]).item()  # between two table steps
    ug(torch.randn(1, 3, 8, 8), torch.tensor([math.exp(-0.5 * lam_t)], dtype=torch.float32))
    t_high, t_low = unet.timesteps[0].item(), unet.timesteps[1].item()
    want = int((den.table_logsnr - (lam_t + 2 * math.log(2))).abs().argmin())
    assert 500 < t_high < 501 and abs(t_low - want) < 1e-3 and want < 500


def test_ug_and_cfg_commute():
    """Both are affine in D with weights summing to 1: UG(CFG(D)) == CFG(UG(D)) (genkit uses the first)."""
    den = Denoiser(tiny_unet(4), "v_prediction", "logsnr")
    labels = torch.tensor([0, 2])
    x, sigma = torch.randn(2, 3, 16, 16), torch.tensor(1.5)
    outer = upsample_guidance(classifier_free_guidance(den, labels, 3, 2.5), 0.8, 2)(x, sigma)
    cond = upsample_guidance(lambda x, s: den(x, s, class_labels=labels), 0.8, 2)(x, sigma)
    uncond = upsample_guidance(lambda x, s: den(x, s, class_labels=torch.full_like(labels, 3)), 0.8, 2)(x, sigma)
    torch.testing.assert_close(outer, uncond + 2.5 * (cond - uncond), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_follows_the_exact_low_resolution_ode_with_ug(solver):
    """Block-constant Gaussian data, w = 1, the exact low-res model: D_m of UG's prediction depends only on D_m x
    and equals the exact high-res denoiser's, and every solver is linear in x and D, so D_m of UG's sample equals
    D_m of the same solver run on the exact high-res denoiser from the same noise, for every solver."""
    torch.manual_seed(2)
    sigmas = grid_polynomial(12, 0.002, 80.0)
    x0 = torch.randn(2, 3, 8, 8, dtype=torch.float64) * 80.0
    exact = lambda x, s: upsample(gaussian_denoiser(downsample(x, 2), torch.as_tensor(s) / 2), 2)  # noqa: E731
    ref = get_solver(solver)(exact, x0, sigmas)
    got = get_solver(solver)(upsample_guidance(gaussian_denoiser, 1.0, 2), x0, sigmas)
    torch.testing.assert_close(downsample(got, 2), downsample(ref, 2), rtol=1e-8, atol=1e-8)
    assert (got - upsample(downsample(got, 2), 2)).abs().max() > 1e-3  # the naive model's high frequencies stay


# -- the pipeline ------------------------------------------------------------------------------------------

def gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(scope="module")
def genkit_pipe():
    pipe = PixelDiffusionPipeline(tiny_unet(4), GenkitScheduler(image_size=8), class_names=["a", "b", "c"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_scale_0_is_bit_identical_to_plain_sampling(genkit_pipe):
    kw = dict(batch_size=2, num_inference_steps=4, class_labels=[0, 1], guidance_scale=2.0, height=16, width=16,
              output_type="latent")
    plain = genkit_pipe(generator=gens([0, 1]), **kw)
    off = genkit_pipe(generator=gens([0, 1]), upsample_guidance_scale=0.0, upsample_guidance_window=(0.3, 0.9), **kw)
    assert torch.equal(plain.images, off.images) and off.nfe_low_res == 0
    on = genkit_pipe(generator=gens([0, 1]), upsample_guidance_scale=1.0, **kw)
    assert not torch.equal(plain.images, on.images)


@pytest.mark.parametrize("solver", SOLVERS)
def test_pipeline_counts_low_resolution_evaluations(genkit_pipe, solver):
    out = genkit_pipe(batch_size=2, num_inference_steps=4, solver=solver, class_labels=[0, 1], guidance_scale=2.0,
                      height=16, width=16, upsample_guidance_scale=1.0, generator=gens([0, 1]), output_type="pt")
    assert out.images.shape == (2, 3, 16, 16) and torch.isfinite(out.images).all()
    assert out.nfe == nfe(solver, 4) * 2 and out.nfe_low_res == out.nfe and out.low_res_cost == out.nfe / 4
    part = genkit_pipe(batch_size=2, num_inference_steps=4, solver=solver, class_labels=[0, 1], guidance_scale=2.0,
                       height=16, width=16, upsample_guidance_scale=1.0, upsample_guidance_window=(0.5, 1.0),
                       generator=gens([0, 1]), output_type="pt")
    assert 0 < part.nfe_low_res < out.nfe_low_res


def test_ug_on_a_plain_diffusers_ddpm_folder(tmp_path):
    DDPMPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(tmp_path)
    pipe = PixelDiffusionPipeline.from_pretrained(tmp_path)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(batch_size=2, num_inference_steps=5, solver="dpmpp_2m", height=16, width=16, output_type="np")
    out = pipe(generator=gens([0, 1]), upsample_guidance_scale=1.2, upsample_guidance_window=(0.4, 1.0), **kw)
    plain = pipe(generator=gens([0, 1]), **kw)
    assert out.images.shape == (2, 16, 16, 3) and np.isfinite(out.images).all()
    assert 0 < out.nfe_low_res < out.nfe == 5 and not np.array_equal(out.images, plain.images)
    with pytest.raises(ValueError, match="solver='scheduler' is not allowed"):
        pipe(solver="scheduler", height=16, width=16, upsample_guidance_scale=1.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(height=12, width=12, upsample_guidance_scale=1.0), r"height=12 is not allowed: upsample guidance needs m \* 8"),
    (dict(height=8, width=8, upsample_guidance_scale=1.0), r"height=8 is not allowed"),
    (dict(height=16, width=18, upsample_guidance_scale=1.0), r"width=18 is not allowed: a multiple of 4"),
    (dict(height=16, width=16, upsample_guidance_scale=float("nan")), r"upsample_guidance_scale=nan is not allowed"),
    (dict(height=16, width=16, upsample_guidance_scale=-1), r"upsample_guidance_scale=-1 is not allowed"),
    (dict(height=16, width=16, upsample_guidance_scale=1.0, upsample_guidance_window=(0.8, 0.2)),
     r"upsample_guidance_window=\(0.8, 0.2\) is not allowed"),
    (dict(height=16, width=16, upsample_guidance_scale=1.0, upsample_guidance_adjust=("power", "space")),
     r"upsample_guidance_adjust='space' is not allowed"),
])
def test_bad_ug_input_names_the_parameter(genkit_pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        genkit_pipe(batch_size=1, num_inference_steps=2, **kwargs)
