"""genkit/denoiser.py against exact answers: config defaults, the discrete time mapping, the three
prediction types on an oracle network (these kill the mutants that the solver tests let through)."""

import torch
from diffusers import DDPMScheduler

from genkit.denoiser import Denoiser


class _Config(dict):
    """A scheduler config that lacks keys: diffusers' FrozenDict is a dict, so .get is what the denoiser uses."""


def test_from_scheduler_defaults_to_a_discrete_epsilon_model():
    """A scheduler config without time_input / prediction_type is a plain DDPM checkpoint: epsilon, discrete."""
    ddpm = DDPMScheduler(num_train_timesteps=1000)
    bare = type("Bare", (), {"config": _Config(), "alphas_cumprod": ddpm.alphas_cumprod})()
    den = Denoiser.from_scheduler(torch.nn.Linear(1, 1), bare)
    assert (den.prediction_type, den.time_input) == ("epsilon", "discrete")
    ac = ddpm.alphas_cumprod.double()
    torch.testing.assert_close(den.table_logsnr, torch.log(ac) - torch.log1p(-ac))


def test_solvers_run_without_gradients():
    """Every solver samples under no_grad (wrapped at the end of solvers.py), even over a denoiser with parameters."""
    from genkit.sampling import solvers

    w = torch.nn.Parameter(torch.tensor(0.5))
    sigmas = torch.tensor([2.0, 1.0, 0.5, 0.0], dtype=torch.float64)
    for name in ("euler", "heun", "dpm2", "dpmpp_2m", "dpmpp_3m", "ipndm"):
        x = getattr(solvers, name)(lambda x, s: w * x, torch.ones(2, 3), sigmas)
        assert not x.requires_grad, name
        assert getattr(solvers, name).__name__ == name
