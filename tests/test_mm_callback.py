"""MultimodalARPipeline's step callback (diffusers' callback_on_step_end convention): every AR step seen once, in
order, with the partial images; a no-op callback changes no byte; pipe._interrupt ends the call after that step."""

import numpy as np
import pytest
import torch

from genkit.mm import MultimodalAR
from pipelines.multimodal import MultimodalARPipeline


@pytest.fixture(scope="module")
def mm():
    torch.manual_seed(0)
    model = MultimodalAR(d_model=32, n_layers=1, n_heads=2, head_width=32, head_depth=1, max_text_bytes=16)
    return MultimodalARPipeline(model=model.eval())


def draw(mm, **kw):
    base = dict(prompt="red apple", num_images_per_prompt=2, num_inference_steps=6, head_steps=3,
                guidance_scale=2.0, generator=torch.Generator().manual_seed(4), output_type="np")
    return mm(**{**base, **kw}).images


def test_callback_sees_every_step_once_and_a_noop_leaves_bytes_identical(mm):
    seen = []

    def record(pipe, i, t, tensors):
        assert pipe is mm
        seen.append((i, t, tensors["known"].clone(), tensors["images"].clone(), tensors["patches"].clone()))
        return {}

    ref = draw(mm)
    out = draw(mm, callback_on_step_end=record, callback_on_step_end_tensor_inputs=["images", "known", "patches"])
    assert np.array_equal(out, ref)                                  # byte-identical with a no-op callback
    n = mm.model.num_patches                                         # 64 patches of 4x4 at 32 px
    assert [i for i, *_ in seen] == list(range(6))                   # each of the 6 AR steps, once, in order
    counts = [int(k.sum(1)[0]) for _, _, k, _, _ in seen]
    assert [t for _, t, *_ in seen] == counts                        # t = patches known per image
    assert counts == sorted(set(counts)) and counts[-1] == n         # strictly growing, all known at the end
    # MAR's cosine schedule: after step s, n - floor(n cos(pi/2 (s+1)/6)) patches are known
    assert counts == [n - int(np.floor(n * np.cos(np.pi / 2 * (s + 1) / 6))) if s < 5 else n for s in range(6)]
    # the last partial image is the output; earlier ones are the output where known, gray (0) elsewhere
    final = torch.from_numpy(out).permute(0, 3, 1, 2) * 2 - 1
    assert torch.allclose((seen[-1][3] / 2 + 0.5).clamp(0, 1), torch.from_numpy(out).permute(0, 3, 1, 2))
    g, p = mm.model.grid, mm.model.config.patch_size
    for _, _, known, images, _ in seen:
        mask = known.view(-1, 1, g, g).repeat_interleave(p, 2).repeat_interleave(p, 3).expand_as(images)
        assert torch.all(images[~mask] == 0)
        assert torch.allclose(images[mask], final[mask], atol=1e-6)  # a known patch never changes afterwards


def test_two_prompts_count_steps_across_the_call(mm):
    seen = []
    mm(prompt=["a", "b"], num_inference_steps=3, head_steps=2, output_type="np",
       callback_on_step_end=lambda p, i, t, x: seen.append(i) or {})
    assert seen == list(range(6))


def test_interrupt_stops_after_that_step(mm):
    seen = []

    def stop_at_2(pipe, i, t, tensors):
        seen.append(i)
        if i == 2:
            pipe._interrupt = True
        return {}

    out = draw(mm, callback_on_step_end=stop_at_2, prompt=["a", "b"])
    assert seen == [0, 1, 2]                                         # no step after the one that set the flag
    assert out.shape == (4, 32, 32, 3)
    assert np.all(out[2:] == 0.5)                                    # the second prompt never started: gray
    assert draw(mm).shape == (2, 32, 32, 3) and not mm.interrupt    # the next call starts afresh


def test_callback_can_replace_patches(mm):
    def zero_all(pipe, i, t, tensors):
        return {"patches": torch.zeros_like(tensors["patches"])}

    out = draw(mm, callback_on_step_end=zero_all, callback_on_step_end_tensor_inputs=["patches"])
    assert np.all(out == 0.5)                                        # every drawn patch replaced by 0 (gray)


@pytest.mark.parametrize("kw, name", [({"callback_on_step_end_tensor_inputs": ["latents"]},
                                       "callback_on_step_end_tensor_inputs='latents'"),
                                      ({"callback_on_step_end": 3}, "callback_on_step_end=3")])
def test_bad_callback_arguments_are_named(mm, kw, name):
    with pytest.raises(ValueError, match=name):
        draw(mm, **kw)
