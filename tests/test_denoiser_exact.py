"""genkit/denoiser.py against exact answers: config defaults, the discrete time mapping at and beyond the table's
ends, the three prediction types on an oracle network, sigma as float / 0-d / (N,), the net's dtype, the
class labels. These kill the mutants (.ci/mutation, docs/mutation.md) that the solver tests let through."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from genkit.denoiser import Denoiser, logsnr_to_c_noise
from genkit.scheduler import GenkitScheduler
from genkit.schedules import Schedule, alpha_sigma, logsnr_from_sigma, sigma_from_logsnr


class _Config(dict):
    """A scheduler config that lacks keys: diffusers' FrozenDict is a dict, so .get is what the denoiser uses."""


def _table(ac):
    ac = torch.as_tensor(ac, dtype=torch.float64)
    return torch.log(ac) - torch.log1p(-ac)


class Oracle(torch.nn.Module):
    """A 'network' that knows x0 and eps: outputs the exact v, eps or x0 for its VP input, and records its inputs.

    time is c_noise (logsnr models) or the table index (discrete models: the table is passed in)."""

    def __init__(self, x0, eps, kind, table=None, dtype=torch.float32):
        super().__init__()
        self.x0, self.eps, self.kind, self.table = x0, eps, kind, table
        self.unused = torch.nn.Parameter(torch.zeros(1, dtype=dtype))  # the denoiser reads the net's dtype from it
        self.calls = []

    def forward(self, x_vp, t, class_labels=None):
        self.calls.append((x_vp.dtype, t.clone(), class_labels))
        if self.table is None:
            logsnr = 15 - t.double() * 30 / 1000                       # inverse of logsnr_to_c_noise
        else:                                                          # linear in the index, as Denoiser.timestep
            i = t.double().clamp(0, len(self.table) - 1)
            lo = i.floor().long().clamp(max=len(self.table) - 2)
            logsnr = self.table[lo] + (i - lo) * (self.table[lo + 1] - self.table[lo])
        a, s = (v.view(-1, 1, 1, 1) for v in alpha_sigma(logsnr))
        out = {"v_prediction": a * self.eps - s * self.x0, "epsilon": self.eps + 0 * a, "sample": self.x0 + 0 * a}
        return type("O", (), {"sample": out[self.kind].to(x_vp.dtype)})()


def test_from_scheduler_defaults_to_a_discrete_epsilon_model():
    """A scheduler config without time_input / prediction_type is a plain DDPM checkpoint: epsilon, discrete."""
    ddpm = DDPMScheduler(num_train_timesteps=1000)
    bare = type("Bare", (), {"config": _Config(), "alphas_cumprod": ddpm.alphas_cumprod})()
    den = Denoiser.from_scheduler(torch.nn.Linear(1, 1), bare)
    assert (den.prediction_type, den.time_input) == ("epsilon", "discrete")
    torch.testing.assert_close(den.table_logsnr, _table(ddpm.alphas_cumprod))   # float64, as computed here


def test_from_scheduler_reads_a_genkit_folders_time_input_and_prediction():
    """A GenkitScheduler says logsnr / v_prediction: the net gets c_noise = (15 - lambda) * 1000 / 30, not an index."""
    den = Denoiser.from_scheduler(torch.nn.Linear(1, 1), GenkitScheduler(image_size=8))
    assert (den.prediction_type, den.time_input, den.sigma_range) == ("v_prediction", "logsnr", None)
    lam = torch.tensor([-15.0, -3.0, 0.0, 7.5, 15.0])
    torch.testing.assert_close(den.timestep(lam), torch.tensor([1000.0, 600.0, 500.0, 250.0, 0.0]))
    eps = Denoiser.from_scheduler(torch.nn.Linear(1, 1), GenkitScheduler(prediction_type="epsilon"))
    assert eps.prediction_type == "epsilon"
    # a scheduler object without an alphas_cumprod attribute is fine for a logsnr model
    plain = type("P", (), {"config": _Config(time_input="logsnr", prediction_type="sample")})()
    den = Denoiser.from_scheduler(torch.nn.Linear(1, 1), plain)
    assert (den.prediction_type, den.time_input, den.table_logsnr) == ("sample", "logsnr", None)


def test_constructor_defaults_and_bad_input_messages():
    den = Denoiser(torch.nn.Linear(1, 1))
    assert (den.prediction_type, den.time_input, den.table_logsnr, den.per_sample) == ("v_prediction", "logsnr",
                                                                                      None, False)
    msg = "prediction_type='x0' is not allowed: one of ('v_prediction', 'epsilon', 'sample')"
    with pytest.raises(ValueError) as e:
        Denoiser(None, "x0")
    assert str(e.value) == msg
    with pytest.raises(ValueError) as e:
        Denoiser(None, "epsilon", "sigma")
    assert str(e.value) == "time_input='sigma' is not allowed: one of ('logsnr', 'discrete')"
    with pytest.raises(ValueError) as e:
        Denoiser(None, "epsilon", "discrete")
    assert str(e.value) == "time_input='discrete' needs the model's alphas_cumprod table"


def test_the_table_is_float64_even_from_a_float32_alphas_cumprod():
    ac32 = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    assert ac32.dtype == torch.float32
    den = Denoiser(None, "epsilon", "discrete", ac32)
    assert den.table_logsnr.dtype == torch.float64
    assert torch.equal(den.table_logsnr, _table(ac32))
    assert den.sigma_range == (math.exp(-0.5 * float(den.table_logsnr[0])), math.exp(-0.5 * float(den.table_logsnr[-1])))


def test_discrete_timestep_is_exact_at_both_ends_between_them_and_clamped_beyond():
    """Index i at table[i]; the midpoint in lambda of two entries is i + 0.5; beyond the table: 0 or T - 1."""
    ac = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    den, tab = Denoiser(None, "epsilon", "discrete", ac), _table(ac)
    at = den.timestep(tab[[0, 1, 998, 999]])
    torch.testing.assert_close(at, torch.tensor([0.0, 1.0, 998.0, 999.0]), atol=1e-4, rtol=0)
    mid = den.timestep(0.5 * (tab[[0, 500, 998]] + tab[[1, 501, 999]]))       # halfway in lambda: linear in lambda
    torch.testing.assert_close(mid, torch.tensor([0.5, 500.5, 998.5]), atol=1e-4, rtol=0)
    beyond = den.timestep(torch.tensor([tab[0] + 5.0, tab[0] + 1e-3, tab[-1] - 1e-3, tab[-1] - 5.0]))
    assert beyond.tolist() == [0.0, 0.0, 999.0, 999.0] and beyond.dtype == torch.float32


@pytest.mark.parametrize("kind", ["v_prediction", "epsilon", "sample"])
@pytest.mark.parametrize("time_input", ["logsnr", "discrete"])
def test_every_prediction_type_returns_the_true_x0_for_an_oracle(kind, time_input):
    """x = x0 + sigma eps in EDM form; the net sees alpha x and its own time input; D must return x0 exactly."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(3, 3, 4, 4, generator=g) * 2 - 1, torch.randn(3, 3, 4, 4, generator=g)
    ac = Schedule("cosine").alphas_cumprod() if time_input == "discrete" else None
    net = Oracle(x0, eps, kind, None if ac is None else _table(ac))
    den = Denoiser(net, kind, time_input, ac)
    for sigma in (0.05, 0.7, 3.0, torch.tensor(1.5), torch.tensor([0.1, 1.0, 10.0])):   # float, 0-d and (N,)
        s = torch.as_tensor(sigma, dtype=torch.float32).expand(3).view(-1, 1, 1, 1)
        torch.testing.assert_close(den(x0 + s * eps, sigma), x0, atol=2e-5, rtol=1e-4)
        lam = -2 * torch.log(s.flatten())
        _, t, labels = net.calls[-1]
        expect = logsnr_to_c_noise(lam) if ac is None else den.timestep(lam)
        torch.testing.assert_close(t, expect)
        assert t.shape == (3,) and t.dtype == torch.float32 and labels is None


def test_the_net_gets_its_own_dtype_and_the_class_labels():
    """A float64 net gets float64 input; the labels reach it unchanged; the result comes back as float32."""
    x0, eps = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    net = Oracle(x0, eps, "sample", dtype=torch.float64)
    y = torch.tensor([1, 2])
    out = Denoiser(net, "sample")(torch.ones(2, 3, 4, 4), 1.0, class_labels=y)
    dtype, _, labels = net.calls[-1]
    assert dtype == torch.float64 and labels is y and out.dtype == torch.float32
    den = Denoiser(net, "sample")
    den.per_sample = True                                    # one call per row: each row gets its own label
    den(torch.ones(2, 3, 4, 4), torch.tensor([1.0, 2.0]), class_labels=y)
    assert [c[2].tolist() for c in net.calls[-2:]] == [[1], [2]]
    assert [c[1].tolist() for c in net.calls[-2:]] == [[logsnr_to_c_noise(torch.tensor(0.0)).item()],
                                                       [logsnr_to_c_noise(torch.tensor(-2 * math.log(2.0))).item()]]


def test_logsnr_from_sigma_inverts_sigma_from_logsnr_on_floats_and_tensors():
    assert logsnr_from_sigma(1.0) == 0.0 and isinstance(logsnr_from_sigma(2.0), float)
    assert logsnr_from_sigma(math.exp(-1.5)) == pytest.approx(3.0, abs=1e-12)
    lam = torch.tensor([-4.0, 0.0, 2.5], dtype=torch.float64)
    torch.testing.assert_close(logsnr_from_sigma(sigma_from_logsnr(lam)), lam)
    torch.testing.assert_close(logsnr_from_sigma(torch.tensor([1.0, math.e])), torch.tensor([0.0, -2.0]))
    assert Schedule("cosine", image_size=16).to_dict() == dict(name="cosine", image_size=16, base_size=32,
                                                                interp_low=32, interp_high=256, logsnr_min=-15.0,
                                                                logsnr_max=15.0)


def test_solvers_run_without_gradients():
    """Every solver samples under no_grad (wrapped at the end of solvers.py), even over a denoiser with parameters."""
    from genkit.sampling import solvers

    w = torch.nn.Parameter(torch.tensor(0.5))
    sigmas = torch.tensor([2.0, 1.0, 0.5, 0.0], dtype=torch.float64)
    for name in ("euler", "heun", "dpm2", "dpmpp_2m", "dpmpp_3m", "ipndm"):
        x = getattr(solvers, name)(lambda x, s: w * x, torch.ones(2, 3), sigmas)
        assert not x.requires_grad, name
        assert getattr(solvers, name).__name__ == name


def test_float32_out_and_float32_time_whatever_the_sigma_dtype():
    x0, eps = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    net = Oracle(x0, eps, "v_prediction")
    den = Denoiser(net)
    out = den(torch.ones(2, 3, 4, 4), torch.tensor([0.5, 2.0], dtype=torch.float64))
    assert out.dtype == torch.float32
    den.model_output(torch.ones(2, 3, 4, 4), torch.tensor([1.0, -2.0], dtype=torch.float64))
    assert net.calls[-1][1].dtype == torch.float32                # the net's time input, from float64 log-SNR


def test_per_sample_calls_pass_no_labels_or_a_shared_0d_label_unchanged():
    x0, eps = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    net = Oracle(x0, eps, "sample")
    den = Denoiser(net, "sample")
    den.per_sample = True
    den(torch.ones(2, 3, 4, 4), 1.0)
    assert [c[2] for c in net.calls[-2:]] == [None, None]
    y = torch.tensor(2)
    den(torch.ones(2, 3, 4, 4), 1.0, class_labels=y)
    assert all(c[2] is y for c in net.calls[-2:])


def test_per_sample_calls_equal_one_batched_call_on_a_real_unet():
    """One network call per row (per_sample) is the batched call, row by row: each row sees its own input."""
    from helpers import tiny_unet

    den = Denoiser(tiny_unet(num_class_embeds=4))
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma, y = torch.tensor([0.3, 1.0, 4.0]), torch.tensor([0, 2, 1])
    with torch.no_grad():
        batched = den(x, sigma, class_labels=y)
        den.per_sample = True
        rows = den(x, sigma, class_labels=y)
    torch.testing.assert_close(rows, batched, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(rows[0], rows[1])
