"""Distillation of a diffusion teacher into a one-step generator (SiD)."""

from genkit.distill.sid import (SIGMA_INIT, fake_score_loss, generate, generator_loss, generator_sigmas,
                                fake_score_sigmas, guided_teacher, karras_sigma)

__all__ = ["SIGMA_INIT", "fake_score_loss", "generate", "generator_loss", "generator_sigmas", "fake_score_sigmas",
           "guided_teacher", "karras_sigma"]
