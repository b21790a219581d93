"""One Accelerator setup for every training script."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration


def make_accelerator(out_dir: Path, gradient_accumulation_steps: int = 1, mixed_precision: str | None = None,
                     report_to: str | None = None) -> Accelerator:
    """An Accelerator for `accelerate launch` (GPUs) and `torchrun` (CPU: gloo ranks).

    torchrun on a machine without GPUs: accelerate forms gloo ranks only with cpu=True; without it every process
    would train alone and all of them would write the same output_dir.
    """
    return Accelerator(
        cpu=int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available(),
        gradient_accumulation_steps=gradient_accumulation_steps,
        mixed_precision=mixed_precision,
        log_with=report_to,
        project_config=ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(Path(out_dir) / "logs")),
    )
