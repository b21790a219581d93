"""Schedules against the closed forms of research/diffusion.md §1; the denoiser against diffusers' DDIM."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from genkit.denoiser import Denoiser, logsnr_to_c_noise
from genkit.guidance import classifier_free_guidance
from genkit.sampling import euler
from genkit.scheduler import GenkitScheduler
from genkit.schedules import Schedule, alpha_sigma, logsnr_cosine, sigma_from_logsnr
from helpers import tiny_unet

T = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)


def test_cosine_matches_closed_form_and_clipping():
    # unclipped: lambda = -2 log tan(pi t / 2); clipping maps t affinely into [t_min, t_max]
    t_min, t_max = math.atan(math.exp(-7.5)), math.atan(math.exp(7.5))
    assert math.isclose(t_min, 5.53e-4, rel_tol=1e-3) and math.isclose(t_max, 1.570243, rel_tol=1e-6)
    lam = logsnr_cosine(T)
    assert torch.allclose(lam, -2 * torch.log(torch.tan(t_min + T * (t_max - t_min))))
    ends = logsnr_cosine(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    assert torch.allclose(ends, torch.tensor([15.0, 0.0, -15.0], dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("d,shift", [(32, 1.386), (64, 0.0), (128, -1.386), (256, -2.773), (512, -4.159)])
def test_shift_table(d, shift):
    """The spec's shift table with d_ref = 64: lambda_shift - lambda_cos = 2 log(64 / d)."""
    s = Schedule("shifted_cosine", image_size=d, base_size=64)
    assert torch.allclose(s.logsnr(T) - logsnr_cosine(T), torch.full_like(T, shift), atol=1e-3)


def test_shifted_closed_form_unclipped():
    """alpha_t = 1 / sqrt(1 + (d/d_ref)^2 tan^2(pi t/2)) and sigma_EDM = (d/d_ref) tan(pi t/2) (wide bounds)."""
    s = Schedule("shifted_cosine", image_size=128, base_size=32, logsnr_min=-60, logsnr_max=60)
    alpha, sigma = alpha_sigma(s.logsnr(T))
    ratio = 128 / 32
    tan = torch.tan(math.pi * T / 2)
    assert torch.allclose(alpha, 1 / torch.sqrt(1 + ratio ** 2 * tan ** 2), atol=1e-9)
    assert torch.allclose(sigma / alpha, ratio * tan, rtol=1e-9)
    assert torch.allclose(alpha ** 2 + sigma ** 2, torch.ones_like(alpha))


def test_interpolated_endpoints_and_weights():
    s = Schedule("interpolated", image_size=512, interp_low=32, interp_high=256)
    lo = Schedule("shifted_cosine", 512, 32).logsnr(T)
    hi = Schedule("shifted_cosine", 512, 256).logsnr(T)
    assert torch.allclose(s.logsnr(T), T * lo + (1 - T) * hi)
    # high noise (t -> 1) follows shift-32 (more noise), low noise (t -> 0) follows shift-256
    one, zero = torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64)
    assert torch.allclose(s.logsnr(one), Schedule("shifted_cosine", 512, 32).logsnr(one))
    assert torch.allclose(s.logsnr(zero), Schedule("shifted_cosine", 512, 256).logsnr(zero))


@pytest.mark.parametrize("sched", [Schedule("cosine"), Schedule("shifted_cosine", 128, 32),
                                   Schedule("interpolated", 512, interp_low=32, interp_high=256)])
def test_t_from_logsnr_inverts(sched):
    assert torch.allclose(sched.t_from_logsnr(sched.logsnr(T)), T, atol=1e-9)


def test_edm_sigma_and_diffusers_table():
    s = Schedule("shifted_cosine", 128, 64)
    assert math.isclose(s.sigma_max, math.exp(0.5 * (15 + 2 * math.log(2))), rel_tol=1e-9)  # ~3.6e3 (spec 1b)
    ac = s.alphas_cumprod(1000)
    assert torch.allclose(ac, torch.sigmoid(s.logsnr(torch.arange(1, 1001, dtype=torch.float64) / 1000)))
    betas = s.betas(1000)
    assert torch.allclose(torch.cumprod(1 - betas, 0), ac, rtol=1e-6)
    # the exported config makes diffusers' schedulers reproduce the same table
    ddim = DDIMScheduler.from_config(GenkitScheduler.from_schedule(s).config)
    assert torch.allclose(ddim.alphas_cumprod.double(), ac, rtol=1e-4)
    assert ddim.config.prediction_type == "v_prediction"
    assert math.isclose(sigma_from_logsnr(0.0), 1.0)


def test_bad_schedule_name():
    with pytest.raises(ValueError, match="schedule='linear'"):
        Schedule("linear")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_euler_on_denoiser_equals_diffusers_ddim(prediction_type):
    """Deterministic DDIM is Euler on the PF-ODE in EDM form: same timesteps -> the same image."""
    unet = tiny_unet()
    ddim = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type=prediction_type,
                         set_alpha_to_one=True, timestep_spacing="leading", clip_sample=False)
    ddim.set_timesteps(10)
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    latents = noise.clone()
    with torch.no_grad():
        for t in ddim.timesteps:
            latents = ddim.step(unet(latents, t).sample, t, latents).prev_sample

    ac = ddim.alphas_cumprod.double()
    sig = torch.sqrt((1 - ac[ddim.timesteps]) / ac[ddim.timesteps])
    sigmas = torch.cat([sig, torch.zeros(1, dtype=torch.float64)])
    den = Denoiser(unet, prediction_type, "discrete", ac)
    x = noise / torch.sqrt(ac[ddim.timesteps[0]]).float()     # VP -> EDM scale
    out = euler(den, x, sigmas)
    assert torch.allclose(out, latents, atol=1e-4), (out - latents).abs().max()


def test_discrete_time_input_hits_table_entries():
    sched = DDPMScheduler(num_train_timesteps=1000)
    den = Denoiser(tiny_unet(), "epsilon", "discrete", sched.alphas_cumprod)
    idx = torch.tensor([0, 10, 500, 999])
    ac = sched.alphas_cumprod.double()
    logsnr = torch.log(ac[idx]) - torch.log1p(-ac[idx])
    assert torch.allclose(den.timestep(logsnr), idx.float(), atol=1e-3)
    lo, hi = den.sigma_range
    assert math.isclose(lo, 0.0100, rel_tol=1e-3) and 100 < hi < 200  # linear-beta DDPM: sigma_max ~ 157


def test_v_denoiser_is_exact_for_an_oracle_network():
    """If the network outputs the true v, D returns the true x0 at every noise level."""
    x0 = torch.rand(3, 3, 8, 8) * 2 - 1
    eps = torch.randn(3, 3, 8, 8)

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))   # the denoiser reads the net's dtype from it

        def forward(self, x_vp, t, class_labels=None):
            logsnr = 15 - t * 30 / 1000                               # inverse of logsnr_to_c_noise
            a, s = (v.view(-1, 1, 1, 1) for v in alpha_sigma(logsnr))
            return type("O", (), {"sample": a * eps - s * x0})()

    den = Denoiser(Oracle(), "v_prediction", "logsnr")
    for sigma in (0.01, 0.5, 3.0, 80.0):
        x = x0 + sigma * eps
        assert torch.allclose(den(x, torch.tensor(sigma)), x0, atol=1e-4)
    assert torch.allclose(logsnr_to_c_noise(torch.tensor([15.0, -15.0])), torch.tensor([0.0, 1000.0]))


def test_cfg_batches_both_branches_and_w1_is_conditional():
    unet = tiny_unet(num_class_embeds=4)
    den = Denoiser(unet, "v_prediction", "logsnr")
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 2])
    cond = den(x, torch.tensor(1.0), class_labels=y)
    uncond = den(x, torch.tensor(1.0), class_labels=torch.tensor([3, 3]))
    g = classifier_free_guidance(den, y, 3, 2.5)(x, torch.tensor(1.0))
    assert torch.allclose(g, uncond + 2.5 * (cond - uncond), atol=1e-5)
    assert torch.allclose(classifier_free_guidance(den, y, 3, 1.0)(x, torch.tensor(1.0)), cond)
