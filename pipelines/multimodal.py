"""MultimodalARPipeline: text -> image and image -> text with one genkit.mm.MultimodalAR transformer.

    pipe = MultimodalARPipeline.from_pretrained("weights/openmoji-mm")
    images = pipe(prompt="red apple", num_images_per_prompt=4, guidance_scale=3.0,
                  generator=torch.Generator().manual_seed(0)).images
    pipe.caption(images)                       # -> ["red apple", ...]

`num_inference_steps` counts the AR steps (MAR: patches are revealed over that many steps in a random order;
ignored for a raster-order model, which takes one step per patch); `head_steps` and `solver` set the ODE
solver of the per-patch diffusion head; `temperature` scales its initial noise. `rerank=K` draws K candidates
per image and keeps the one the same model, read the other way, finds most likely to be named the prompt
(max log p(prompt | image)): the model's captioning direction as its own critic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

import genkit.vq.tokenizer  # noqa: F401  (diffusers loads a discrete-arm folder's tokenizer only if imported)
from genkit.checks import LIMITS, bad, check_choice, check_float
from genkit.checks import check_int as _check_int
from genkit.data.folder import on_white
from genkit.mm import decode_text, encode_text
from genkit.sampling import solver_names

MAX_IMAGES_PER_PROMPT = 64
MAX_CANDIDATES = 256                       # num_images_per_prompt x rerank images drawn at once per prompt
# Sampling defaults, chosen by `genkit bench mm` on weights/openmoji-mm (FD-OpenMoji over a temperature x guidance
# sweep, weights/openmoji-mm/sweep/): a cooler head (0.7) and stronger guidance (5) than MAR's 1.0 / 3.
DEFAULT_GUIDANCE = 5.0
DEFAULT_TEMPERATURE = 0.7
OUTPUT_TYPES = ("pil", "np", "pt")


@dataclass
class MultimodalARPipelineOutput(BaseOutput):
    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


class MultimodalARPipeline(DiffusionPipeline):
    """model: a genkit.mm.MultimodalAR; tokenizer: the VQTokenizer a discrete-arm model (image_tokens="codes")
    reads and writes codes with (None for the default pixel-patch model)."""

    _optional_components = ["tokenizer"]

    def __init__(self, model, tokenizer=None):
        super().__init__()
        if model.discrete and tokenizer is None:
            raise ValueError("a model with image_tokens='codes' needs its VQ tokenizer: "
                             "MultimodalARPipeline(model, tokenizer=VQTokenizer...)")
        self.register_modules(model=model, tokenizer=tokenizer)

    def units_of(self, images: torch.Tensor) -> torch.Tensor:
        """Float images (N, 3, S, S) in [-1, 1] -> what the model reads (the images, or their VQ codes)."""
        return self.tokenizer.encode(images) if self.model.discrete else images

    def images_of(self, units: torch.Tensor) -> torch.Tensor:
        """What model.generate returns -> float images (N, 3, S, S) in [-1, 1]."""
        return self.tokenizer.decode(units) if self.model.discrete else units

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], num_images_per_prompt: int = 1, num_inference_steps: int = 16,
                 guidance_scale: float = DEFAULT_GUIDANCE, temperature: float = DEFAULT_TEMPERATURE,
                 head_steps: int = 20,
                 solver: str = "dpmpp_2m", generator: torch.Generator | list[torch.Generator] | None = None,
                 negative_prompt: str | list[str] | None = None, rerank: int = 1, output_type: str = "pil",
                 return_dict: bool = True):
        """Images for each prompt. Classifier-free guidance pushes away from the unconditional model, or from
        `negative_prompt` where given (one for all prompts, or one per prompt): D = D_neg + w (D_prompt - D_neg).
        rerank=K > 1: each image is the best of K candidates by log p(prompt | image) under the same model."""
        if not isinstance(prompt, (str, list, tuple)):  # None, bytes, a number: refused before any work
            bad("prompt", prompt, "a string or a non-empty list of strings")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or len(prompts) > LIMITS["prompts"]:
            bad("prompt", prompt, f"a string or a list of 1 to {LIMITS['prompts']} strings")
        if negative_prompt is not None and not isinstance(negative_prompt, (str, list, tuple)):
            bad("negative_prompt", negative_prompt, "None, a string or a list of strings (one per prompt)")
        ids = [encode_text(p, self.model.config.max_text_bytes, "prompt") for p in prompts]
        negs = [negative_prompt] * len(prompts) if negative_prompt is None or isinstance(negative_prompt, str) \
            else list(negative_prompt)
        if len(negs) != len(prompts):
            raise ValueError(f"negative_prompt is a list of {len(negs)}: give one per prompt ({len(prompts)})")
        neg_ids = [encode_text(n, self.model.config.max_text_bytes, "negative_prompt") if n and n.strip() else None
                   for n in negs]
        _check_int("num_images_per_prompt", num_images_per_prompt, 1, MAX_IMAGES_PER_PROMPT)
        _check_int("rerank", rerank, 1, MAX_CANDIDATES // num_images_per_prompt)
        _check_int("num_inference_steps", num_inference_steps, 1, self.model.num_patches)
        _check_int("head_steps", head_steps, 1, LIMITS["steps"])
        check_choice("solver", solver, solver_names(predictor=False))  # AMED needs a UNet bottleneck: not here
        guidance_scale = check_float("guidance_scale", guidance_scale, 0, LIMITS["guidance"])  # NaN / inf refused
        temperature = check_float("temperature", temperature, 0, LIMITS["temperature"])
        check_choice("output_type", output_type, OUTPUT_TYPES)
        gens = generator if isinstance(generator, list) else [generator] * len(prompts)
        if len(gens) != len(prompts):
            raise ValueError(f"generator is a list of {len(gens)}: give one per prompt ({len(prompts)})")
        kw = dict(num_steps=num_inference_steps, head_steps=head_steps, solver=solver, temperature=temperature,
                  guidance_scale=guidance_scale)
        x = torch.cat([self.images_of(self.generate_units(c, n, num_images_per_prompt, rerank, g, **kw))
                       for c, g, n in zip(ids, gens, neg_ids)])
        x = (x / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            images = x
        else:
            arr = x.permute(0, 2, 3, 1).cpu().numpy()
            images = arr if output_type == "np" else \
                [PIL.Image.fromarray(a) for a in (arr * 255).round().astype(np.uint8)]
        return MultimodalARPipelineOutput(images=images) if return_dict else (images,)

    def generate_units(self, caption: list[int], negative: list[int] | None, num: int, rerank: int, generator,
                       **kw) -> torch.Tensor:
        """num images (as the model's units) for one caption, each the best of `rerank` candidates."""
        units = self.model.generate(caption, num * rerank, generator=generator, negative=negative, **kw)
        if rerank == 1:
            return units
        # 1. score candidate j of image i (row-major: i * rerank + j) by the model's own captioning direction
        scores = self.model.caption_logprob(units, [caption] * len(units)).view(num, rerank)
        # 2. keep each image's best candidate
        return units[scores.argmax(1).cpu() + torch.arange(num) * rerank]

    @torch.no_grad()
    def caption(self, images, max_new_tokens: int = 64, temperature: float = 0.0,
                generator: torch.Generator | None = None) -> list[str]:
        """Captions for PIL images, uint8 arrays (N, H, W, 3) / (H, W, 3), or float tensors (N, 3, S, S) in
        [-1, 1]; images must already be S x S (the model's image_size)."""
        _check_int("max_new_tokens", max_new_tokens, 1, 1024)
        x = self._as_tensor(images)
        ids = self.model.caption(self.units_of(x), max_new_tokens, temperature, generator)
        return [decode_text(i) for i in ids]

    def _as_tensor(self, images) -> torch.Tensor:
        s = self.model.config.image_size
        if isinstance(images, PIL.Image.Image) or (isinstance(images, np.ndarray) and images.ndim == 3):
            images = [images]
        if isinstance(images, list):
            # transparent parts composited on white, as genkit caption and the app do (and as OpenMoji is drawn)
            arrs = [np.asarray(on_white(im) if isinstance(im, PIL.Image.Image) else im) for im in images]
            images = np.stack(arrs) if arrs else np.zeros((0, s, s, 3), np.uint8)
        if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[-1] == 4 and images.dtype == np.uint8:
            images = np.stack([np.asarray(on_white(PIL.Image.fromarray(a, "RGBA"))) for a in images])  # RGBA arrays
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"images of shape {images.shape} and dtype {images.dtype} are not allowed: "
                                 f"uint8 (N, {s}, {s}, 3) or PIL images")
            images = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        if not torch.is_tensor(images) or images.ndim != 4 or tuple(images.shape[1:]) != (3, s, s) or not len(images):
            shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
            raise ValueError(f"images of shape {shape} are not allowed: {s}x{s} RGB images (N, 3, {s}, {s})")
        if not torch.isfinite(images).all():
            bad("images", f"<{int((~torch.isfinite(images)).sum())} NaN/inf values>", "finite values in [-1, 1]")
        return images.to(self.model.device)
