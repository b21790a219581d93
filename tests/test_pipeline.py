"""PixelDiffusionPipeline: genkit solvers, diffusers schedulers, plain DDPM folders, seeds, round trips."""

import numpy as np
import pytest
import torch
from diffusers import (DDIMScheduler, DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler)

from genkit.sampling import make_grid, nfe, solver_names
from genkit.scheduler import GenkitScheduler
from pipelines.pixel_diffusion import PixelDiffusionPipeline
from helpers import tiny_unet


@pytest.fixture(scope="module")
def genkit_pipe():
    pipe = PixelDiffusionPipeline(tiny_unet(4), GenkitScheduler(image_size=8), class_names=["a", "b", "c"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def ddpm_folder(tmp_path_factory):
    """A plain diffusers DDPM folder (UNet2DModel + DDPMScheduler, eps-prediction), as google/ddpm-cifar10-32."""
    path = tmp_path_factory.mktemp("ddpm")
    DDPMPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(path)
    return path


def gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("solver", solver_names(predictor=False) + ["scheduler"])
def test_plain_ddpm_folder_samples_with_every_solver(ddpm_folder, solver):
    pipe = PixelDiffusionPipeline.from_pretrained(ddpm_folder)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, DDPMScheduler)
    out = pipe(batch_size=2, num_inference_steps=4, solver=solver, generator=gens([0, 1]), output_type="np")
    assert out.images.shape == (2, 8, 8, 3) and np.isfinite(out.images).all()
    assert out.nfe == (4 if solver == "scheduler" else nfe(solver, 4))


def ddim_loop(unet, config, num_steps, noise, class_labels=None, guidance_scale=1.0, null=None):
    """diffusers' own deterministic DDIM, step by step on the raw UNet: the independent reference."""
    sched = DDIMScheduler.from_config(config, timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=False)
    sched.set_timesteps(num_steps)
    x = noise.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            if guidance_scale == 1.0:
                out = unet(x, t, class_labels=class_labels).sample
            else:
                cond = unet(x, t, class_labels=class_labels).sample
                uncond = unet(x, t, class_labels=torch.full_like(class_labels, null)).sample
                out = uncond + guidance_scale * (cond - uncond)
            x = sched.step(out, t, x).prev_sample
    return x, sched


@pytest.fixture(scope="module")
def ddpm_reference(ddpm_folder):
    """The PF-ODE solution of the plain DDPM folder from seeds 0, 1: diffusers' DDIM at 200 steps (~2 s)."""
    pipe = PixelDiffusionPipeline.from_pretrained(ddpm_folder)
    noise = torch.cat([torch.randn(1, 3, 8, 8, generator=g) for g in gens([0, 1])])
    return ddim_loop(pipe.unet, pipe.scheduler.config, 200, noise)[0]


def test_plain_ddpm_folder_time_mapping_equals_diffusers_ddim_step_by_step(ddpm_folder):
    """Euler on the DDIM timesteps' sigmas == diffusers' DDIMScheduler on the same eps network, step by step:
    the folder's discrete time input (fractional index into its alphas_cumprod) and eps -> x0 are right."""
    pipe = PixelDiffusionPipeline.from_pretrained(ddpm_folder)
    pipe.set_progress_bar_config(disable=True)
    noise = torch.cat([torch.randn(1, 3, 8, 8, generator=g) for g in gens([5, 6])])
    ref, sched = ddim_loop(pipe.unet, pipe.scheduler.config, 8, noise)
    ac = sched.alphas_cumprod.double()
    sigmas = torch.cat([torch.sqrt((1 - ac[sched.timesteps]) / ac[sched.timesteps]), torch.zeros(1, dtype=torch.float64)])
    seen = []

    def record(p, i, t, kw):
        seen.append(kw["latents"] * torch.sqrt(ac[sched.timesteps[i + 1]] if i + 1 < 8 else torch.tensor(1.0)).float())

    out = pipe(batch_size=2, num_inference_steps=8, solver="euler", sigmas=sigmas, generator=gens([5, 6]),
               output_type="latent", callback_on_step_end=record).images
    scale = ref.abs().max()
    assert (out - ref).abs().max() < 1e-4 * scale, ((out - ref).abs().max(), scale)
    # and every intermediate state (EDM x back to VP x * alpha) equals DDIM's
    x = noise.clone()
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps[:-1]):
            x = sched.step(pipe.unet(x, t).sample, t, x).prev_sample
            assert (seen[i] - x).abs().max() < 1e-4 * max(1.0, float(x.abs().max())), i


@pytest.mark.parametrize("solver", solver_names(predictor=False))
def test_plain_ddpm_folder_every_solver_converges_to_diffusers_ddim(ddpm_folder, ddpm_reference, solver):
    """Each genkit solver on the folder, over the model's whole sigma range, lands on diffusers' 200-step DDIM
    solution of the same ODE from the same noise (measured at 32 steps: 0.4-2.2% of max |x|, DDIM's own
    200-step error included), and closer with more steps. A wrong time mapping lands elsewhere."""
    pipe = PixelDiffusionPipeline.from_pretrained(ddpm_folder)
    pipe.set_progress_bar_config(disable=True)
    lo, hi = pipe.denoiser().sigma_range
    scale = float(ddpm_reference.abs().max())
    errs = [float((pipe(batch_size=2, num_inference_steps=n, solver=solver, sigmas=make_grid("logsnr", n, lo, hi),
                        generator=gens([0, 1]), output_type="latent").images - ddpm_reference).abs().max()) / scale
            for n in (8, 32)]
    assert errs[1] < (0.04 if solver == "euler" else 0.02) and errs[1] < errs[0] / 2, errs


@pytest.mark.parametrize("cls", [DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler])
def test_diffusers_schedulers_run_on_a_genkit_model(genkit_pipe, cls):
    pipe = PixelDiffusionPipeline(genkit_pipe.unet, cls.from_config(genkit_pipe.scheduler.config),
                                  class_names=genkit_pipe.config.class_names)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    out = pipe(batch_size=2, num_inference_steps=5, class_labels="b", guidance_scale=2.0,
               generator=gens([0, 1]), output_type="pt")
    assert out.images.shape == (2, 3, 8, 8) and torch.isfinite(out.images).all() and out.nfe == 10


def test_ddim_scheduler_equals_genkit_euler_on_the_same_timesteps(genkit_pipe):
    """diffusers' DDIM on our model == the genkit euler solver on DDIM's sigmas: the time input agrees."""
    ddim = DDIMScheduler.from_config(genkit_pipe.scheduler.config)
    pipe = PixelDiffusionPipeline(genkit_pipe.unet, ddim, class_names=genkit_pipe.config.class_names)
    pipe.set_progress_bar_config(disable=True)
    a = pipe(batch_size=2, num_inference_steps=6, class_labels=[0, 1], generator=gens([3, 4]), output_type="pt")
    ddim.set_timesteps(6)
    ac = ddim.alphas_cumprod.double()
    sig = torch.sqrt((1 - ac[ddim.timesteps]) / ac[ddim.timesteps])
    sigmas = torch.cat([sig, torch.zeros(1, dtype=torch.float64)])
    # DDIM starts from VP noise n (EDM: n / alpha_T); genkit from sigma_0 n = sigma_T n / alpha_T, and with
    # trailing spacing the first step is t = 999 where sigma_T = sqrt(1 - sigmoid(-15)) = 1 - 1.5e-7
    b = pipe(batch_size=2, num_inference_steps=6, class_labels=[0, 1], solver="euler",
             sigmas=sigmas, generator=gens([3, 4]), output_type="pt")
    assert int(ddim.timesteps[0]) == 999
    # float32: the first Euler step subtracts numbers of size sigma_0 ~ 1.8e3, so agree to ~1e-3, not 1e-6
    assert (a.images - b.images).abs().max() < 5e-3
    c = pipe(batch_size=2, num_inference_steps=6, class_labels=[0, 1], solver="euler",
             sigmas=sigmas * 1.5, generator=gens([3, 4]), output_type="pt")  # a wrong time mapping is visible
    assert (a.images - c.images).abs().max() > 5e-2
    # with guidance: the scheduler loop's CFG and genkit.guidance's CFG are the same rule (a flipped sign in
    # either one breaks this), and guidance changes the image
    kw = dict(batch_size=2, num_inference_steps=6, class_labels=[0, 1], guidance_scale=3.0, output_type="pt")
    ga = pipe(generator=gens([3, 4]), **kw).images
    gb = pipe(solver="euler", sigmas=sigmas, generator=gens([3, 4]), **kw).images
    assert (ga - gb).abs().max() < 5e-3 and (ga - a.images).abs().max() > 5e-2


def test_per_image_generators_make_each_image_depend_only_on_its_seed(genkit_pipe):
    full = genkit_pipe(batch_size=3, num_inference_steps=4, generator=gens([10, 11, 12]), output_type="pt").images
    one = genkit_pipe(batch_size=1, num_inference_steps=4, generator=gens([11]), output_type="pt").images
    assert torch.allclose(full[1], one[0], atol=1e-5)


def test_save_and_load_round_trip_offline(genkit_pipe, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    genkit_pipe.save_pretrained(tmp_path)
    back = PixelDiffusionPipeline.from_pretrained(tmp_path, local_files_only=True)
    back.set_progress_bar_config(disable=True)
    assert isinstance(back.scheduler, GenkitScheduler) and back.config.class_names == ["a", "b", "c"]
    assert back.scheduler.config.time_input == "logsnr"
    kw = dict(batch_size=2, num_inference_steps=3, class_labels=["a", "c"], generator=gens([0, 1]), output_type="pt")
    assert torch.equal(genkit_pipe(**kw).images, back(**{**kw, "generator": gens([0, 1])}).images)


def test_outputs_and_callback(genkit_pipe):
    seen = []

    def cb(pipe, i, t, kwargs):
        seen.append(i)
        return {"latents": kwargs["latents"]}

    out = genkit_pipe(batch_size=2, num_inference_steps=5, solver="heun", generator=gens([0, 1]),
                      callback_on_step_end=cb)
    assert seen == [0, 1, 2, 3, 4] and out.nfe == 9
    assert len(out.images) == 2 and out.images[0].size == (8, 8)
    (images,) = genkit_pipe(batch_size=1, num_inference_steps=2, output_type="np", return_dict=False)
    assert images.shape == (1, 8, 8, 3) and 0 <= images.min() and images.max() <= 1


def test_latent_output_is_the_raw_sample_and_pil_is_its_uint8(genkit_pipe):
    from pipelines.pixel_diffusion import to_uint8

    run = lambda kind: genkit_pipe(batch_size=2, num_inference_steps=3, generator=gens([5, 6]),  # noqa: E731
                                   output_type=kind).images
    x, pil, pt = run("latent"), run("pil"), run("pt")
    assert x.shape == (2, 3, 8, 8) and torch.equal(pt, (x / 2 + 0.5).clamp(0, 1))
    u8 = to_uint8(x).permute(0, 2, 3, 1).numpy()
    assert all(np.array_equal(np.asarray(im), a) for im, a in zip(pil, u8))


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_inference_steps=0), "num_inference_steps=0"),
    (dict(num_inference_steps=2.5), "num_inference_steps=2.5"),
    (dict(solver="rk45"), "solver='rk45'"),
    (dict(solver="scheduler"), "solver='scheduler'"),
    (dict(class_labels="zzz"), "class='zzz'"),
    (dict(class_labels=7), "class=7"),
    (dict(batch_size=5000), "batch_size=5000"),
    (dict(output_type="jpeg"), "output_type='jpeg'"),
    (dict(guidance_scale=-1.0), "guidance_scale=-1.0"),
    (dict(batch_size=2, generator=[torch.Generator()]), "generator is a list of 1"),
])
def test_bad_input_names_the_parameter(genkit_pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        genkit_pipe(**kwargs)
