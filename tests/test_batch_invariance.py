"""Image k depends only on its seed, whatever the batch: beyond the 8x8 toy, on a 16x16 UNet with self-attention
(attention mixes positions, group norm mixes channels: neither may mix images), with CFG (a batch of 2N)."""

import pytest
import torch
from diffusers import UNet2DModel

from genkit.scheduler import GenkitScheduler
from pipelines.pixel_diffusion import PixelDiffusionPipeline


@pytest.fixture(scope="module")
def attn_pipe():
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=8, attention_head_dim=8, num_class_embeds=4).eval()
    pipe = PixelDiffusionPipeline(unet, GenkitScheduler(image_size=16), class_names=["a", "b", "c"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_each_image_depends_only_on_its_seed_with_attention_and_cfg(attn_pipe, solver="heun"):
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    kw = dict(num_inference_steps=3, solver=solver, guidance_scale=2.0, output_type="latent")
    full = attn_pipe(batch_size=5, class_labels=[0, 1, 2, 0, 1], generator=gens(range(20, 25)), **kw).images
    for k in (0, 4):
        one = attn_pipe(batch_size=1, class_labels=[[0, 1, 2, 0, 1][k]], generator=gens([20 + k]), **kw).images
        torch.testing.assert_close(full[k:k + 1], one, atol=1e-4, rtol=1e-4)
    pair = attn_pipe(batch_size=2, class_labels=[0, 1], generator=gens([23, 24]), **kw).images
    torch.testing.assert_close(full[3:], pair, atol=1e-4, rtol=1e-4)
    assert (full[0] - full[3]).abs().max() > 1e-2                # other seeds, other images
