"""Shared training pieces: the diffusion loss, accelerate setup, checkpoints (no pickle), EMA, metrics logs.

Every script in training/ uses these, so a fix here (resume, logging, safety) reaches all of them.
"""

from genkit.training.accel import make_accelerator
from genkit.training.checkpoint import (checkpoint_dirs, load_checkpoint, resolve_checkpoint, save_checkpoint)
from genkit.training.log import JsonlLog, minutes_before
from genkit.training.loss import LOSS_WEIGHTINGS, diffusion_loss

__all__ = ["make_accelerator", "checkpoint_dirs", "load_checkpoint", "resolve_checkpoint", "save_checkpoint",
           "JsonlLog", "minutes_before", "LOSS_WEIGHTINGS", "diffusion_loss"]
