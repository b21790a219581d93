"""The training loss against its definition (research/diffusion.md §1): v-MSE, eps-MSE, multiscale."""

import torch
import torch.nn.functional as F

from genkit.schedules import Schedule, alpha_sigma
from genkit.training import diffusion_loss


class Zero(torch.nn.Module):
    """A network that predicts v = 0, so every loss has a closed form in the sampled (t, eps)."""

    def forward(self, x, t, class_labels=None):
        return type("O", (), {"sample": torch.zeros_like(x)})()


def draws(x0, schedule, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(x0.shape[0], generator=g)
    eps = torch.randn(x0.shape, generator=g)
    a, s = (v.view(-1, 1, 1, 1) for v in alpha_sigma(schedule.logsnr(t)))
    return a, s, eps, a * x0 + s * eps


def test_v_and_eps_weightings_match_their_definitions():
    x0 = torch.rand(6, 3, 16, 16) * 2 - 1
    sched = Schedule("shifted_cosine", 16, 32)
    a, s, eps, x_t = draws(x0, sched, 0)
    v = a * eps - s * x0
    loss_v = diffusion_loss(Zero(), x0, None, sched, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(loss_v, v.pow(2).mean(), rtol=1e-5)
    # eps-MSE computed from v_hat = 0: eps_hat = sigma x_t + alpha v_hat
    loss_eps = diffusion_loss(Zero(), x0, None, sched, weighting="eps",
                              generator=torch.Generator().manual_seed(0))
    assert torch.allclose(loss_eps, (eps - s * x_t).pow(2).mean(), rtol=1e-5)


def test_multiscale_adds_the_pooled_eps_terms():
    x0 = torch.rand(4, 3, 32, 32) * 2 - 1
    sched = Schedule("shifted_cosine", 32, 32)
    a, s, eps, x_t = draws(x0, sched, 1)
    residual = s * x_t - eps                                           # eps_hat - eps with v_hat = 0
    expected = (a * eps - s * x0).pow(2).mean()
    for side in (16, 8):                                               # 32 -> 16, 8 (multiscale_min = 8)
        k = 32 // side
        expected = expected + F.avg_pool2d(residual, k).pow(2).mean() * k * k / side
    got = diffusion_loss(Zero(), x0, None, sched, multiscale=True,
                         generator=torch.Generator().manual_seed(1))
    assert torch.allclose(got, expected, rtol=1e-5)
