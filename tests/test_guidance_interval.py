"""The guidance interval (Kynkaanniemi et al. 2024): classifier-free guidance only at sigma in [lo, hi].

Exact checks: the interval's two limits are plain CFG and the plain conditional model, bit for bit; inside a
mixed per-sample batch each sample gets its own; the pipeline's NFE counts what ran; SiD's guided teacher is the
same function; bad input names the parameter."""

import pytest
import torch

from genkit.guidance import cfg_combine, classifier_free_guidance
from genkit.scheduler import GenkitScheduler
from pipelines.pixel_diffusion import PixelDiffusionPipeline
from helpers import tiny_unet


def toy_den(x, sigma, class_labels):
    """A conditional denoiser that depends on x, sigma and the label; counts its calls and batch sizes."""
    toy_den.batches.append(len(x))
    sigma = torch.as_tensor(sigma, dtype=x.dtype).expand(len(x))
    return x / (1 + sigma.view(-1, 1)) + class_labels.view(-1, 1).to(x.dtype)


def test_interval_is_cfg_inside_the_conditional_model_outside_and_skips_the_null_branch_there():
    x, y, null = torch.arange(8.0).view(4, 2), torch.tensor([0, 1, 2, 1]), 7
    cond = lambda s: toy_den(x, s, y)                                           # noqa: E731
    cfg = lambda s: cfg_combine(toy_den(x, s, y), toy_den(x, s, torch.full_like(y, null)), 3.0)  # noqa: E731
    f = classifier_free_guidance(toy_den, y, null, 3.0, (0.5, 2.0))
    toy_den.batches = []
    assert torch.equal(f(x, 1.0), cfg(1.0)) and torch.equal(f(x, 0.5), cfg(0.5)) and torch.equal(f(x, 2.0), cfg(2.0))
    assert toy_den.batches[:1] == [8]                                           # inside: one batch of 2N
    toy_den.batches = []
    assert torch.equal(f(x, 2.01), cond(2.01)) and torch.equal(f(x, 0.1), cond(0.1))
    assert toy_den.batches == [4, 4, 4, 4]                                      # outside: N, never 2N
    assert f.guided_calls == 3
    s = torch.tensor([0.1, 1.0, 3.0, 2.0])                                      # a sigma per sample, mixed
    out = f(x, s)
    want = torch.stack([cond(s)[0], cfg(s)[1], cond(s)[2], cfg(s)[3]])
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    assert f.guided_calls == 4
    everywhere = classifier_free_guidance(toy_den, y, null, 3.0, (0.0, float("inf")))
    assert torch.equal(everywhere(x, s), classifier_free_guidance(toy_den, y, null, 3.0)(x, s))


def test_sid_guided_teacher_is_the_interval_from_zero():
    from genkit.distill import guided_teacher

    x, y, s = torch.arange(8.0).view(4, 2), torch.tensor([0, 1, 2, 1]), torch.tensor([0.1, 1.0, 3.0, 2.0])
    got = guided_teacher(toy_den, 2.0, 7, sigma_max=1.0)(x, s, y)
    assert torch.equal(got, classifier_free_guidance(toy_den, y, 7, 2.0, (0.0, 1.0))(x, s))


@pytest.fixture(scope="module")
def pipe():
    p = PixelDiffusionPipeline(tiny_unet(4), GenkitScheduler(image_size=8), class_names=["a", "b", "c"])
    p.set_progress_bar_config(disable=True)
    return p


def draw(pipe, **kw):
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    return pipe(batch_size=3, num_inference_steps=6, class_labels=[0, 1, 2], generator=gens, output_type="latent",
                **kw)


@pytest.mark.parametrize("solver", ["euler", "heun", "dpmpp_2m"])
def test_pipeline_interval_limits_are_cfg_and_no_guidance_bit_for_bit_and_nfe_counts_what_ran(pipe, solver):
    g = dict(solver=solver, guidance_scale=3.0)
    full, plain = draw(pipe, **g), draw(pipe, solver=solver)
    every = draw(pipe, **g, guidance_sigma_range=(0.0, float("inf")))
    never = draw(pipe, **g, guidance_sigma_range=(0.0, 1e-6))                   # below every grid sigma
    assert torch.equal(every.images, full.images) and every.nfe == full.nfe
    assert torch.equal(never.images, plain.images) and never.nfe == plain.nfe
    part = draw(pipe, **g, guidance_sigma_range=(0.0, 1.0))
    assert not torch.equal(part.images, full.images) and not torch.equal(part.images, plain.images)
    assert plain.nfe < part.nfe < full.nfe
    if solver != "heun":  # one call per step, at the step's own sigma: the guided steps are those at sigma <= 1
        sigmas = pipe.scheduler.sigma_grid(6)
        assert part.nfe == plain.nfe + int((torch.as_tensor(sigmas[:-1]) <= 1.0).sum())


def test_pipeline_interval_on_a_diffusers_scheduler_loop(pipe):
    from diffusers import DDIMScheduler

    genkit_sched = pipe.scheduler
    try:
        pipe.scheduler = DDIMScheduler.from_config(genkit_sched.config)
        full, plain = draw(pipe, guidance_scale=3.0), draw(pipe)
        never = draw(pipe, guidance_scale=3.0, guidance_sigma_range=(0.0, 1e-6))
        part = draw(pipe, guidance_scale=3.0, guidance_sigma_range=(0.0, 1.0))
    finally:
        pipe.scheduler = genkit_sched
    assert torch.equal(never.images, plain.images) and never.nfe == plain.nfe == 6 and full.nfe == 12
    assert 6 < part.nfe < 12 and not torch.equal(part.images, full.images)


@pytest.mark.parametrize("kwargs, match", [
    (dict(guidance_sigma_range=(1.0, 0.5)), r"guidance_sigma_range=\(1.0, 0.5\)"),
    (dict(guidance_sigma_range="0,1"), "guidance_sigma_range='0,1'"),
    (dict(guidance_sigma_range=(float("nan"), 1.0)), r"guidance_sigma_range\[0\]=nan"),
    (dict(guidance_sigma_range=(-1.0, 1.0)), r"guidance_sigma_range\[0\]=-1.0"),
    (dict(guidance_sigma_range=(0.0, 1.0), upsample_guidance_scale=1.0, height=16, width=16),
     "None with upsample guidance"),
    (dict(guidance_sigma_range=(0.0, 1.0), solver="amed"), "None with an AMED / BNS solver"),
])
def test_bad_interval_names_the_parameter(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe(batch_size=1, class_labels=0, guidance_scale=2.0, num_inference_steps=2, **kwargs)


def test_cli_flag_parses_and_refuses_bad_text():
    from genkit.commands.sample import guidance_interval

    assert guidance_interval("0,1") == (0.0, 1.0) and guidance_interval("0.3,inf") == (0.3, float("inf"))
    assert guidance_interval(None) is None
    for text in ("1", "1,0.5", "a,b", "nan,1", "-1,2"):
        with pytest.raises(ValueError, match="--guidance-sigma-range"):
            guidance_interval(text)
