"""OneStepPipeline: a one-step generator (SiD-distilled) drawn with a single network evaluation per image.

    pipe = OneStepPipeline.from_pretrained("weights/openmoji-32-sid")
    out = pipe(batch_size=8, class_labels="animal-mammal",
               generator=[torch.Generator().manual_seed(s) for s in range(8)])
    out.images, out.nfe                     # 8 PIL images, 1

x = G(sigma_init z; sigma_init), z ~ N(0, I): the generator is a UNet2DModel read through genkit's Denoiser, so
the folder keeps its teacher's layout (unet/, scheduler/ with prediction type and time input) plus sigma_init in
model_index.json. Classifier-free guidance is not applied at sampling: a generator distilled from a guided
teacher has the guidance scale built in (its model card says which); guidance_scale must stay 1.
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from genkit.checks import check_choice, check_float, check_int
from pipelines.pixel_diffusion import (MAX_BATCH_SIZE, OUTPUT_TYPES, PixelDiffusionPipeline,
                                       PixelDiffusionPipelineOutput)


class OneStepPipeline(PixelDiffusionPipeline):
    def __init__(self, unet, scheduler, class_names: list[str] | None = None, sigma_init: float = 2.5,
                 teacher_guidance: float = 1.0, teacher_guidance_sigma_max: float | None = None):
        super().__init__(unet=unet, scheduler=scheduler, class_names=class_names)
        # what it was distilled to match: the teacher at guidance teacher_guidance (only at sigma <= sigma_max,
        # unguided above, when that is set: distill_sid.py --teacher_guidance_sigma_max); a record, not a knob
        self.register_to_config(sigma_init=float(sigma_init), teacher_guidance=float(teacher_guidance),
                                teacher_guidance_sigma_max=None if teacher_guidance_sigma_max is None
                                else float(teacher_guidance_sigma_max))

    def check_size(self, height, width) -> tuple[int, int]:
        """Only the size it was distilled at (None: that size)."""
        size = self.trained_size
        for name, v in (("height", height), ("width", width)):
            if v is not None:
                check_int(name, v, size, size)
        return size, size

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 1,
        class_labels=None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        guidance_scale: float = 1.0,
        solver: str | None = None,
        grid: str | None = None,
        latents: torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        batch_invariant: bool = False,
        upsample_guidance_scale: float = 0.0,
        amed_predictor=None,
        skip_tuning=None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
    ):
        """One network evaluation per image. The arguments a PixelDiffusionPipeline takes for its solvers (steps,
        solver, grid, guidance, upsample guidance, AMED, skip-tuning) are accepted only at their neutral values, so
        callers can swap this pipeline in; batch_invariant=True runs one network call per image (byte-identical
        images whatever the batch)."""
        # 1. Check inputs
        check_int("batch_size", batch_size, 1, MAX_BATCH_SIZE)
        self.check_size(height, width)
        check_float("upsample_guidance_scale", upsample_guidance_scale, 0.0, 0.0)
        check_choice("amed_predictor", amed_predictor, (None,))
        check_choice("skip_tuning", skip_tuning, (None, False))
        check_int("num_inference_steps", num_inference_steps, 1, 1)
        check_float("guidance_scale", guidance_scale, 1.0, 1.0)
        check_choice("output_type", output_type, OUTPUT_TYPES)
        check_choice("solver", solver, (None, "one_step"))
        check_choice("grid", grid, (None,))
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"generator is a list of {len(generator)}: give one per image ({batch_size})")
        for name in callback_on_step_end_tensor_inputs:
            check_choice("callback_on_step_end_tensor_inputs", name, self._callback_tensor_inputs)
        labels = self.class_ids(class_labels, batch_size)
        device = self._execution_device
        labels = labels.to(device) if labels is not None else None

        # 2. Noise z ~ N(0, I), one generator per image when a list is given
        size = self.unet.config.sample_size
        shape = (batch_size, self.unet.config.in_channels, size, size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents has shape {tuple(latents.shape)}: {shape} is allowed")
        z = latents.to(device, torch.float32)

        # 3. One network evaluation: x = G(sigma_init z; sigma_init)
        sigma = self.config.sigma_init
        den = self.denoiser()
        den.per_sample = bool(batch_invariant)
        x = den(sigma * z, sigma, class_labels=labels)
        if callback_on_step_end is not None:
            local = {"latents": x, "denoised": x}
            res = callback_on_step_end(self, 0, sigma, {k: local[k] for k in callback_on_step_end_tensor_inputs})
            x = res.get("latents", x) if res else x

        images = self._postprocess(x, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return PixelDiffusionPipelineOutput(images=images, nfe=1)
