"""Tiny random models shared by the tests (CPU, milliseconds per call)."""

from pathlib import Path

import torch
from diffusers import UNet2DModel

CLASS_NAMES = ["a", "b", "c"]


def tiny_unet(num_class_embeds=None, seed=0) -> UNet2DModel:
    """An 8x8 UNet2DModel; num_class_embeds = classes + 1 (the null class) for a conditional one."""
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 32),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8,
                       num_class_embeds=num_class_embeds).eval()


def save_tiny_pipeline(path: Path) -> str:
    """A class-conditional genkit pipeline folder (3 classes named a, b, c) at 8x8."""
    from genkit.scheduler import GenkitScheduler
    from pipelines.pixel_diffusion import PixelDiffusionPipeline

    PixelDiffusionPipeline(tiny_unet(4), GenkitScheduler(image_size=8), class_names=CLASS_NAMES).save_pretrained(path)
    return str(path)


def save_tiny_features(path: Path, seed=0) -> str:
    """A random OpenMojiFeatureNet (8-d features) over the tiny pipeline's classes."""
    from genkit.metrics import OpenMojiFeatureNet

    torch.manual_seed(seed)
    net = OpenMojiFeatureNet(num_classes=3, channels=(8, 8, 8, 8), feature_dim=8, input_size=16,
                             class_names=CLASS_NAMES).eval()
    net.save_pretrained(path)
    return str(path)


def run_cli(capsys, *argv):
    """genkit.cli.main in-process -> (exit status, stdout, stderr); argparse errors exit via SystemExit."""
    from genkit.cli import main

    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err
