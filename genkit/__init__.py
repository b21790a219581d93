"""genkit: pixel-space diffusion and multimodal generation on torch + diffusers."""

__version__ = "0.1.0"
