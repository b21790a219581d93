"""Skip-tuning: the rho schedule, exact scaling of every skip tensor, bit-identity at rho = 1, clean removal."""

import json

import pytest
import torch

from genkit.denoiser import Denoiser
from genkit.skip_tuning import SkipTuning, best_rho, skip_rhos
from tests.helpers import save_tiny_pipeline, tiny_unet


def _inputs(seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.full((n,), 500.0)


def _capture_skips(unet):
    """A pre-hook per up block recording the skip tuple it receives (registered last: sees what is scaled)."""
    seen = []
    hooks = [b.register_forward_pre_hook(lambda m, a: seen.append([h.clone() for h in a[1]])) for b in unet.up_blocks]
    return seen, hooks


def test_rho_is_linear_from_bottom_to_one():
    assert skip_rhos(5, 0.6) == pytest.approx([0.6, 0.7, 0.8, 0.9, 1.0])
    assert skip_rhos(1, 0.7) == [0.7]


def test_every_skip_is_scaled_by_its_rho_innermost_first():
    unet = tiny_unet()
    x, t = _inputs()
    seen, hooks = _capture_skips(unet)
    with torch.no_grad():
        unet(x, t)
        plain = [list(s) for s in seen]
        seen.clear()
        with SkipTuning(unet, 0.5):
            for h in hooks:   # re-register the capture after the tuning hooks
                h.remove()
            seen2, hooks = _capture_skips(unet)
            unet(x, t)
    for h in hooks:
        h.remove()
    # innermost first: up_blocks[0] consumes its tuple from the end
    plain_order = [h for block in plain for h in reversed(block)]
    tuned_order = [h for block in seen2 for h in reversed(block)]
    rhos = skip_rhos(len(plain_order), 0.5)
    assert len(rhos) == sum(len(b.resnets) for b in unet.up_blocks) == 4
    for p, q, rho in zip(plain_order, tuned_order, rhos):
        assert torch.equal(q, p * rho) or (rho == 1.0 and torch.equal(q, p))


def test_rho_one_is_bit_identical_and_rho_below_one_is_not():
    unet = tiny_unet(4)
    x, t = _inputs()
    c = torch.tensor([0, 1, 2])
    with torch.no_grad():
        ref = unet(x, t, class_labels=c).sample
        with SkipTuning(unet, 1.0):
            same = unet(x, t, class_labels=c).sample
        with SkipTuning(unet, 0.7):
            tuned = unet(x, t, class_labels=c).sample
        after = unet(x, t, class_labels=c).sample
    assert torch.equal(same, ref) and torch.equal(after, ref)
    assert (tuned - ref).abs().max() > 1e-4


def test_hooks_are_gone_after_an_exception():
    unet = tiny_unet()
    x, t = _inputs()
    with torch.no_grad():
        ref = unet(x, t).sample
        with pytest.raises(RuntimeError, match="boom"):
            with SkipTuning(unet, 0.6):
                unet(x, t)
                raise RuntimeError("boom")
        assert all(not b._forward_pre_hooks for b in unet.up_blocks)
        assert torch.equal(unet(x, t).sample, ref)


def test_sigma_range_applies_only_inside_per_sample():
    unet = tiny_unet()
    den = Denoiser(unet)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    sig = torch.tensor([0.5, 20.0])                                        # one inside [0.1, 1], one outside
    with torch.no_grad():
        plain = den(x, sig)
        with SkipTuning(unet, 0.6) as st:
            everywhere = den(x, sig)
        with SkipTuning(unet, 0.6, sigma_range=(0.1, 1.0)) as st:
            ranged = st.wrap(den)(x, sig)
    assert torch.equal(ranged[1], plain[1]) and torch.equal(ranged[0], everywhere[0])
    assert not torch.equal(ranged[0], plain[0])


def test_bad_values_are_refused():
    unet = tiny_unet()
    for v in (0.0, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="skip_tuning=.* is not allowed: a finite number in"):
            SkipTuning(unet, v)
    with pytest.raises(ValueError, match="skip_sigma_range=.*lo < hi"):
        SkipTuning(unet, 0.8, sigma_range=(2.0, 1.0))


def test_pipeline_skip_tuning_and_best_rho(tmp_path):
    from pipelines.pixel_diffusion import PixelDiffusionPipeline

    folder = save_tiny_pipeline(tmp_path / "m")
    pipe = PixelDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    run = lambda **kw: pipe(batch_size=2, num_inference_steps=4, solver="euler", class_labels="a",  # noqa: E731
                            guidance_scale=2.0, generator=torch.Generator().manual_seed(0), output_type="pt",
                            **kw).images
    base = run()
    assert torch.equal(run(skip_tuning=1.0), base) and torch.equal(run(skip_tuning=None), base)
    assert not torch.equal(run(skip_tuning=0.7), base)
    with pytest.raises(ValueError, match="skip_tuning=True is not allowed: no best rho"):
        run(skip_tuning=True)
    (tmp_path / "m" / "skip_tuning.json").write_text(json.dumps(
        {"best": [{"solver": "euler", "num_steps": 4, "guidance": 2.0, "rho_bottom": 0.7}]}))
    assert best_rho(folder, "euler", 4, 2.0) == 0.7
    assert torch.equal(run(skip_tuning=True), run(skip_tuning=0.7))
    # a pick is for the grid it was measured on: the run's grid (here the model's) must match it
    (tmp_path / "m" / "skip_tuning.json").write_text(json.dumps({"best": [
        {"solver": "euler", "num_steps": 4, "guidance": 2.0, "grid": "logsnr", "rho_bottom": 0.9},
        {"solver": "euler", "num_steps": 4, "guidance": 2.0, "grid": pipe.scheduler.config.grid, "rho_bottom": 0.7}]}))
    assert best_rho(folder, "euler", 4, 2.0, "logsnr") == 0.9
    assert torch.equal(run(skip_tuning=True), run(skip_tuning=0.7))
    assert torch.equal(run(skip_tuning=True, grid="logsnr"), run(skip_tuning=0.9, grid="logsnr"))
    with pytest.raises(ValueError, match="no best rho .* grid='time'"):
        run(skip_tuning=True, grid="time")
