"""height / width in PixelDiffusionPipeline, and the schedule a genkit model samples on at another size."""

import math

import pytest
import torch

from genkit.schedules import Schedule
from genkit.scheduler import GenkitScheduler
from pipelines.pixel_diffusion import PixelDiffusionPipeline
from helpers import tiny_unet


@pytest.fixture(scope="module")
def pipe():
    p = PixelDiffusionPipeline(tiny_unet(4), GenkitScheduler(image_size=8, grid="time"), class_names=["a", "b", "c"])
    p.set_progress_bar_config(disable=True)
    return p


def gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("height, width", [(8, 8), (16, 16), (8, 24), (6, 10)])
def test_any_multiple_of_the_downsampling_factor(pipe, height, width):
    out = pipe(batch_size=2, num_inference_steps=3, class_labels=[0, 1], height=height, width=width,
               generator=gens([0, 1]), output_type="pt")
    assert out.images.shape == (2, 3, height, width) and torch.isfinite(out.images).all()


def test_default_size_is_the_trained_one(pipe):
    a = pipe(batch_size=1, num_inference_steps=3, class_labels=0, generator=gens([0]), output_type="latent").images
    b = pipe(batch_size=1, num_inference_steps=3, class_labels=0, height=8, width=8, generator=gens([0]),
             output_type="latent").images
    assert a.shape == (1, 3, 8, 8) and torch.equal(a, b)


@pytest.mark.parametrize("height, width, name", [(9, 8, "height=9"), (8, 7, "width=7"), (0, 8, "height=0"),
                                                  (8.0, 8, "height=8.0"), ("16", 16, "height='16'")])
def test_unsupported_size_is_refused_naming_it(pipe, height, width, name):
    with pytest.raises(ValueError, match=f"{name} is not allowed"):
        pipe(batch_size=1, num_inference_steps=2, height=height, width=width)


def test_shifted_schedule_moves_by_2_log_ratio_and_cosine_does_not():
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    s32 = Schedule("shifted_cosine", image_size=32, base_size=32)
    torch.testing.assert_close(s32.at_size(64).logsnr(t) - s32.logsnr(t), torch.full_like(t, 2 * math.log(0.5)))
    c = Schedule("cosine", image_size=32)
    torch.testing.assert_close(c.at_size(64).logsnr(t), c.logsnr(t))


def test_time_grid_at_another_size_is_the_shifted_schedules(pipe):
    """The sampler's sigmas at 16 px are those of Schedule.at_size(16): a factor 2 above the 8 px ones in the
    middle of the range (the ends are clipped to [0.002, 80])."""
    seen = []
    pipe(batch_size=1, num_inference_steps=6, class_labels=0, height=16, width=16, generator=gens([0]),
         callback_on_step_end=lambda p, i, s, kw: seen.append(s) or {}, output_type="latent")
    want = pipe.scheduler.sigma_grid(6, image_size=16)[:-1]
    assert seen == pytest.approx(want.tolist())
    base = pipe.scheduler.sigma_grid(6)
    shifted = GenkitScheduler(image_size=16).sigma_grid(6, grid="time")  # same base (32), trained at 16
    torch.testing.assert_close(want, shifted[:-1])
    assert not torch.allclose(base, shifted)
