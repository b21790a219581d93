"""SiD's losses (genkit/distill/sid.py) against their definitions (research/diffusion.md §5): the generator loss's
gradient (finite differences, float64), omega, NaN dropping, the fake-score loss, the noise levels, and the
one-step generator at initialisation."""

import math

import pytest
import torch

from genkit.denoiser import Denoiser
from genkit.distill import (SIGMA_INIT, fake_score_loss, fake_score_sigmas, generate, generator_loss,
                            generator_sigmas, guided_teacher, karras_sigma)
from genkit.scheduler import GenkitScheduler
from pipelines.one_step import OneStepPipeline
from helpers import tiny_unet

SHAPE = (1, 1, 2, 2)  # one image of 4 pixels: small enough for a dense finite-difference check


class Smooth(torch.nn.Module):
    """A fixed nonlinear 'denoiser' f(x, sigma) -> x0 (float64), with parameters that must get no gradient."""

    def __init__(self, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(4, 4, generator=g, dtype=torch.float64) * 0.5)
        self.b = torch.nn.Parameter(torch.randn(4, generator=g, dtype=torch.float64) * 0.1)

    def forward(self, x, sigma, labels=None):
        s = torch.as_tensor(sigma, dtype=x.dtype).view(-1, 1)
        h = torch.tanh(x.flatten(1) @ self.w.T / (1 + s) + self.b)
        return (h * (1 + 0.3 * s)).view_as(x)


def generator_fn(theta):
    return lambda z: torch.tanh((z.flatten(1) @ theta.T)).view_as(z) * 1.5


def sid_setup(seed):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(4, 4, generator=g, dtype=torch.float64)
    z = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    noise = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.3 + seed * 0.4], dtype=torch.float64)
    teacher, fake = Smooth(100 + seed).requires_grad_(False), Smooth(200 + seed).requires_grad_(False)
    return theta, z, noise, sigma, teacher, fake


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("alpha", [0.0, 1.2])
def test_generator_loss_gradient_matches_finite_differences(seed, alpha):
    """d/dtheta of (L2 - alpha L1)/omega with omega held fixed (it is a stop-gradient): the gradient reaches theta
    through x_g directly and through x_t inside both frozen denoisers."""
    theta, z, noise, sigma, teacher, fake = sid_setup(seed)
    theta = theta.requires_grad_(True)
    loss, stats = generator_loss(teacher, fake, generator_fn(theta)(z), sigma, noise, alpha=alpha)
    loss.backward()
    omega0 = stats["omega"]

    def fixed_omega_loss(th):  # loss x omega(th) / omega(theta): the same function with omega frozen at theta
        with torch.no_grad():
            value, s = generator_loss(teacher, fake, generator_fn(th)(z), sigma, noise, alpha=alpha)
        return value.item() * s["omega"] / omega0

    h, numeric = 1e-6, torch.zeros_like(theta)
    for i in range(4):
        for j in range(4):
            e = torch.zeros_like(theta)
            e[i, j] = h
            numeric[i, j] = (fixed_omega_loss(theta.detach() + e) - fixed_omega_loss(theta.detach() - e)) / (2 * h)
    assert torch.allclose(theta.grad, numeric, rtol=1e-5, atol=1e-8), (theta.grad, numeric)
    # frozen for this step: the denoisers' own parameters get nothing
    assert all(p.grad is None for p in [*teacher.parameters(), *fake.parameters()])


def test_generator_gradient_flows_through_both_denoisers():
    """Cutting the path through the teacher or the fake score changes the gradient: both carry a share of it."""
    theta, z, noise, sigma, teacher, fake = sid_setup(1)

    def grad(t_fn, f_fn):
        th = theta.clone().requires_grad_(True)
        generator_loss(t_fn, f_fn, generator_fn(th)(z), sigma, noise, alpha=1.2)[0].backward()
        return th.grad

    full = grad(teacher, fake)
    no_teacher_path = grad(lambda x, s, y=None: teacher(x.detach(), s), fake)
    no_fake_path = grad(teacher, lambda x, s, y=None: fake(x.detach(), s))
    assert (full - no_teacher_path).abs().max() > 1e-4 and (full - no_fake_path).abs().max() > 1e-4


def test_generator_loss_value_and_omega_normalisation():
    """Per sample: sum_pixels (f_phi - f_psi)((f_phi - x_g) - alpha (f_phi - f_psi)) / mean|x_g - f_phi|; scaling
    every image by c scales the loss by c (c^2 / c): omega makes it scale-free to first order."""
    g = torch.Generator().manual_seed(0)
    x_g, real, fake_out = (torch.randn(3, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    sigma, noise = torch.ones(3, dtype=torch.float64), torch.zeros(3, 3, 4, 4, dtype=torch.float64)
    alpha = 1.2

    def loss_at(c):
        return generator_loss(lambda x, s, y=None: c * real, lambda x, s, y=None: c * fake_out, c * x_g, sigma,
                              noise, alpha=alpha)[0]

    d = real - fake_out
    omega = (x_g - real).abs().mean(dim=(1, 2, 3))
    expected = ((d * ((real - x_g) - alpha * d)).sum(dim=(1, 2, 3)) / omega).mean()
    assert torch.allclose(loss_at(1.0), expected, rtol=1e-12)
    assert torch.allclose(loss_at(7.0), 7.0 * expected, rtol=1e-12)
    # omega is clipped at 1e-5: a teacher that returns x_g exactly gives a finite loss
    same, _ = generator_loss(lambda x, s, y=None: x_g, lambda x, s, y=None: fake_out, x_g, sigma, noise)
    assert torch.isfinite(same)
    d0 = x_g - fake_out
    assert torch.allclose(same, ((d0 * (-1.2 * d0)).sum(dim=(1, 2, 3)) / 1e-5).mean())


def test_non_finite_samples_are_dropped_from_both_losses():
    g = torch.Generator().manual_seed(1)
    x_g = torch.randn(4, 3, 4, 4, generator=g, requires_grad=True)
    sigma, noise = torch.full((4,), 0.5), torch.randn(4, 3, 4, 4, generator=g)
    teacher = lambda x, s, y=None: 0.5 * x  # noqa: E731

    def fake_with_nan(x, s, y=None):
        out = 0.4 * x
        return torch.cat([out[:1], out[1:2] * float("nan"), out[2:]])

    loss, stats = generator_loss(teacher, fake_with_nan, x_g, sigma, noise)
    keep = [0, 2, 3]
    x_ref = x_g.detach()[keep].requires_grad_(True)
    ref, _ = generator_loss(teacher, lambda x, s, y=None: 0.4 * x, x_ref, sigma[keep], noise[keep])
    assert stats["dropped"] == 1 and torch.allclose(loss, ref)
    loss.backward()
    ref.backward()
    # the kept samples get exactly their own gradient; the dropped one's is non-finite (0 x NaN inside the net),
    # which is why distill_sid.py passes parameter gradients through nan_to_num before each step
    assert torch.allclose(x_g.grad[keep], x_ref.grad)
    # the fake-score loss drops the same way; all samples bad -> 0 with a usable graph
    f_loss, f_stats = fake_score_loss(fake_with_nan, x_g, sigma, noise)
    f_ref, _ = fake_score_loss(lambda x, s, y=None: 0.4 * x, x_g[keep], sigma[keep], noise[keep])
    assert f_stats["dropped"] == 1 and torch.allclose(f_loss, f_ref)
    all_bad, s = fake_score_loss(lambda x, s, y=None: x * float("nan"), x_g, sigma, noise)
    assert s["dropped"] == 4 and all_bad.item() == 0.0


def test_fake_score_loss_is_the_edm_weighted_denoising_loss():
    g = torch.Generator().manual_seed(2)
    x_g, noise = torch.randn(3, 3, 4, 4, generator=g), torch.randn(3, 3, 4, 4, generator=g)
    sigma = torch.tensor([0.1, 1.0, 5.0])
    k = torch.tensor(0.7, requires_grad=True)                      # the fake score's one parameter
    fake = lambda x, s, y=None: k * x  # noqa: E731
    pred = 0.7 * (x_g + sigma.view(-1, 1, 1, 1) * noise)
    weight = (sigma ** 2 + 0.25) / (0.5 * sigma) ** 2
    expected = (weight * (pred - x_g).pow(2).sum(dim=(1, 2, 3))).mean()
    loss, _ = fake_score_loss(fake, x_g.requires_grad_(True), sigma, noise)
    assert torch.allclose(loss, expected, rtol=1e-6)
    loss.backward()
    assert k.grad is not None and x_g.grad is None  # G is frozen in the fake-score step: x_g is detached


def test_noise_levels():
    assert karras_sigma(torch.tensor(0.0)).item() == pytest.approx(0.002)
    assert karras_sigma(torch.tensor(1.0)).item() == pytest.approx(80.0)
    assert karras_sigma(torch.tensor(0.8)).item() == pytest.approx(24.4, abs=0.05)  # tmax 800: [0.002, 24.4]
    s = generator_sigmas(20_000, tmax=800, generator=torch.Generator().manual_seed(0))
    assert s.min() >= 0.002 - 1e-6 and s.min() < 0.003 and s.max() <= 24.45 and s.max() > 23.0
    f = fake_score_sigmas(20_000, generator=torch.Generator().manual_seed(0)).log()
    assert f.mean().item() == pytest.approx(-1.2, abs=0.03) and f.std().item() == pytest.approx(1.2, abs=0.03)
    assert SIGMA_INIT == 2.5


def test_generate_on_gaussian_data_is_the_exact_posterior_mean():
    """Data x0 ~ N(mu, s^2 I): D(x; sigma) = mu + s^2/(s^2 + sigma^2)(x - mu), so the generator at init maps z to
    mu + s^2/(s^2 + 6.25)(2.5 z - mu)."""
    mu, s2 = 0.3, 0.5 ** 2
    exact = lambda x, sigma, class_labels=None: mu + s2 / (s2 + sigma ** 2) * (x - mu)  # noqa: E731
    z = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(generate(exact, z), mu + s2 / (s2 + 6.25) * (2.5 * z - mu))


def test_one_step_pipeline_at_init_is_the_teachers_denoiser_at_sigma_init():
    unet, sched = tiny_unet(4), GenkitScheduler(image_size=8)
    pipe = OneStepPipeline(unet, sched, class_names=["a", "b", "c"], sigma_init=2.5)
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    out = pipe(batch_size=2, class_labels=[0, 2], generator=gens, output_type="latent")
    z = torch.stack([torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(s)) for s in (3, 4)])
    expected = Denoiser.from_scheduler(unet, sched)(2.5 * z, 2.5, class_labels=torch.tensor([0, 2]))
    assert out.nfe == 1 and torch.allclose(out.images, expected, atol=1e-6)


def test_guided_teacher_is_classifier_free_guidance():
    den = lambda x, s, class_labels=None: x * (1.0 + (class_labels.float().view(-1, 1, 1, 1) if class_labels is not None else 0))  # noqa: E731,E501
    x, labels = torch.ones(2, 1, 2, 2), torch.tensor([1, 2])
    w, null = 3.0, 0   # with null label 0: D(.|null) = x, D(.|y) = (1 + y) x
    out = guided_teacher(den, w, null)(x, 1.0, labels)
    assert torch.allclose(out, x + w * (labels.float().view(-1, 1, 1, 1) * x))
    assert torch.allclose(guided_teacher(den, 1.0, null)(x, 1.0, labels), den(x, 1.0, labels))
    assert torch.allclose(guided_teacher(den, w, null)(x, 1.0, None), x)
    # a guidance interval: guided at sigma <= sigma_max, plain conditional above, per sample
    sigma = torch.tensor([0.5, 4.0])
    out = guided_teacher(den, w, null, sigma_max=1.0)(x, sigma, labels)
    assert torch.allclose(out[0], (x + w * labels[0] * x)[0]) and torch.allclose(out[1], den(x, 4.0, labels)[1])


@pytest.mark.parametrize("kwargs, name", [
    ({"num_inference_steps": 2}, "num_inference_steps"), ({"guidance_scale": 2.0}, "guidance_scale"),
    ({"guidance_scale": math.nan}, "guidance_scale"), ({"output_type": "jpg"}, "output_type"),
    ({"solver": "euler"}, "solver"), ({"batch_size": 0}, "batch_size"),
])
def test_one_step_pipeline_rejects_bad_arguments(kwargs, name):
    pipe = OneStepPipeline(tiny_unet(4), GenkitScheduler(image_size=8), class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match=f"^{name}="):
        pipe(**kwargs)


def test_shipped_one_step_generator_loads_and_draws_in_one_evaluation():
    """weights/openmoji-32-sid (INTERIM, see its card): small safetensors folder with the OpenMoji attribution;
    one network evaluation per image, class labels by name, one generator per image, every output type; image k
    depends only on its own generator."""
    from pathlib import Path

    import numpy as np

    folder = Path(__file__).resolve().parents[1] / "weights" / "openmoji-32-sid"
    assert sum(f.stat().st_size for f in folder.rglob("*.safetensors")) < 30e6
    assert "CC BY-SA 4.0" in (folder / "README.md").read_text() and "INTERIM" in (folder / "README.md").read_text()
    pipe = OneStepPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.sigma_init == 2.5 and pipe.num_classes == 98
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    out = pipe(batch_size=3, class_labels=["face-smiling", 40, "flag"], generator=gens([0, 1, 2]), output_type="np")
    assert out.nfe == 1 and out.images.shape == (3, 32, 32, 3) and np.isfinite(out.images).all()
    alone = pipe(batch_size=1, class_labels=[40], generator=gens([1]), output_type="np", batch_invariant=True)
    assert np.abs(alone.images[0] - out.images[1]).max() < 1e-5
    assert len(pipe(batch_size=2, generator=gens([0, 1])).images) == 2                      # PIL, null class
    assert pipe(batch_size=1, generator=gens([0]), output_type="pt").images.shape == (1, 3, 32, 32)


def two_gaussian_classes(mu: torch.Tensor, sd: torch.Tensor, null: int):
    """The exact denoiser E[x0 | x_t (, y)] of two 1-D classes N(mu_y, sd_y^2), equally likely; label `null` (or
    any label >= 2) asks for the mixture. x (B, 1, 1, 1) float64."""
    mu, var0 = mu.double().view(1, 2, 1, 1), sd.double().view(1, 2, 1, 1) ** 2

    def den(x, sigma, class_labels=None):
        sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(len(x)).view(-1, 1, 1, 1)
        var = var0 + sigma ** 2
        cond = mu + var0 / var * (x - mu)                                          # (B, 2, 1, 1)
        logp = -(x - mu) ** 2 / (2 * var) - 0.5 * torch.log(var)
        mixture = (torch.softmax(logp, dim=1) * cond).sum(1, keepdim=True)
        y = class_labels.view(-1, 1, 1, 1)
        return torch.where(y == null, mixture, cond.gather(1, y.clamp(max=1)))

    return den


def test_guided_teacher_at_high_noise_asks_for_a_negative_class_variance():
    """The reason for guided_teacher's sigma_max, on exact denoisers: two 1-D classes N(+-tau, s^2) and their
    mixture (the null class). The variance a Gaussian would need to have the guided denoiser's slope at a class
    mean, v = 1 / precision - sigma^2 with precision = (1 - dD/dx) / sigma^2, is s^2 - (w - 1) tau^2 at high noise:
    negative for w = 2 when tau > s (collapse), s^2 at w = 1, and s^2 again above sigma_max with the interval."""
    s, tau, null = 0.3, 1.0, 2
    den = two_gaussian_classes(torch.tensor([-tau, tau], dtype=torch.float64), torch.tensor([s, s]), null)

    def implied_variance(w, sigma, sigma_max=None):
        x = torch.full((1, 1, 1, 1), tau, dtype=torch.float64, requires_grad=True)
        out = guided_teacher(den, w, null, sigma_max)(x, torch.tensor([sigma], dtype=torch.float64),
                                                      torch.tensor([1]))
        slope = torch.autograd.grad(out.sum(), x)[0].item()
        return sigma ** 2 / (1 - slope) - sigma ** 2

    assert implied_variance(2.0, 40.0) == pytest.approx(s * s - tau * tau, abs=0.02)          # -0.91: collapse
    assert implied_variance(3.0, 40.0) == pytest.approx(s * s - 2 * tau * tau, abs=0.03)
    assert implied_variance(1.0, 40.0) == pytest.approx(s * s, abs=0.01)
    assert implied_variance(2.0, 40.0, sigma_max=1.0) == pytest.approx(s * s, abs=0.01)      # the interval
    assert implied_variance(2.0, 0.05) > 0                                                    # low noise: fine


def sid_on_two_classes(alpha: float, guidance: float = 1.0, sigma_max: float | None = None,
                       steps: int = 1500, B: int = 2048) -> torch.Tensor:
    """SiD's generator loss alone on closed-form scores: classes N(+-1, 0.3^2), the teacher their exact denoiser
    (guided_teacher with `guidance`, `sigma_max`), a generator x = m_y + e^{l_y} z that starts wrong (m_y = +-0.5,
    sd 1), the fake score the exact denoiser of the generator's current classes (plain). Returns (4,): the class
    means (sign-flipped: +1 is right for both) and sds, averaged over the last third of the steps."""
    torch.manual_seed(0)
    den = two_gaussian_classes(torch.tensor([-1.0, 1.0]), torch.tensor([0.3, 0.3]), null=2)
    teacher = guided_teacher(den, guidance, 2, sigma_max)
    m = torch.tensor([-0.5, 0.5], dtype=torch.float64, requires_grad=True)
    log_sd = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([m, log_sd], lr=1e-2)          # beta1 0.9: SiD's beta1 = 0 turns batch noise into drift
    seen = []
    for i in range(steps):
        y = torch.randint(2, (B,))
        x_g = m[y].view(-1, 1, 1, 1) + log_sd.exp()[y].view(-1, 1, 1, 1) * torch.randn(B, 1, 1, 1, dtype=torch.float64)
        fake_den = two_gaussian_classes(m.detach(), log_sd.exp().detach(), null=2)      # frozen for this step
        fake = lambda x, sigma, labels: fake_den(x, sigma, class_labels=labels)            # noqa: E731
        loss, _ = generator_loss(teacher, fake, x_g, generator_sigmas(B).double(), torch.randn_like(x_g), y, alpha)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2 * steps // 3:
            seen.append(torch.cat([m.detach() * torch.tensor([-1.0, 1.0]), log_sd.exp().detach()]))
    return torch.stack(seen).mean(0)


@pytest.mark.parametrize("alpha, sd_range", [(0.0, (0.26, 0.34)), (0.5, (0.26, 0.34)), (1.2, (1.5, 4.0))])
def test_sid_with_an_exact_fake_score_converges_to_the_teachers_classes_for_alpha_below_1(alpha, sd_range):
    """With an unguided teacher, SiD's generator loss alone brings the generator to the teacher's means and spread
    for alpha 0 and 0.5. alpha 1 mostly gets there but wanders (one class's sd 0.46 on some seeds); alpha 1.2, the
    paper's choice, has no stable point: the (1 - alpha) |D_teacher - D_fake|^2 term is negative and pushes the
    generator out to sd ~2.5. The paper's alpha leans on a fake score that lags the generator."""
    mean = sid_on_two_classes(alpha)
    lo, hi = sd_range
    assert lo < mean[2] < hi and lo < mean[3] < hi, mean
    if alpha < 1:
        assert mean[:2].tolist() == pytest.approx([1.0, 1.0], abs=0.02), mean


@pytest.mark.parametrize("sigma_max", [None, 1.0])
def test_sid_from_a_guided_teacher_reaches_the_data_only_with_the_guidance_interval(sigma_max):
    """The teacher guided at 2 (as genkit samples it). Guided at every sigma its target is no distribution (at high
    noise it asks for a negative class variance): the generator's class means are pushed out to about +-1.85 and
    its sds to about 1.2. Guided only at sigma <= 1, where the classes are told apart, the generator lands on the
    data's classes: means +-1, sd 0.3. alpha 0.5: with an exact fake score it has a stable point; at alpha 1 (the
    shipped recipe, whose fake score lags) the same happens (+-1.9 guided everywhere, +-1.0 with the interval),
    but one class's sd drifts along a flat direction (0.30 or 0.41 as float rounding goes), too loose to test."""
    mean = sid_on_two_classes(0.5, guidance=2.0, sigma_max=sigma_max)
    if sigma_max is None:
        assert mean[:2].min() > 1.5, mean
    else:
        assert mean.tolist() == pytest.approx([1.0, 1.0, 0.3, 0.3], abs=0.02), mean
