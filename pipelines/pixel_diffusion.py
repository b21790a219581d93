"""PixelDiffusionPipeline: sample a pixel-space UNet2DModel with genkit solvers or diffusers schedulers.

    pipe = PixelDiffusionPipeline.from_pretrained("weights/openmoji-32")
    images = pipe(batch_size=8, num_inference_steps=20, solver="dpmpp_2m", class_labels="face-smiling",
                  guidance_scale=2.0, generator=[torch.Generator().manual_seed(s) for s in range(8)]).images

- scheduler = GenkitScheduler (a genkit model): `solver` picks a genkit solver (default: the one in the
  scheduler config); `solver="scheduler"` is not available since GenkitScheduler has no step().
- scheduler = any diffusers scheduler (DDIMScheduler.from_config(pipe.scheduler.config), or a plain DDPM
  folder's DDPMScheduler): `solver=None` runs that scheduler's own step() loop; a solver name runs the genkit
  solver on the same network, reading prediction type and time table from the scheduler.
A list of generators gives one per image, so image k depends only on its own generator (seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from genkit.denoiser import Denoiser
from genkit.guidance import cfg_combine, classifier_free_guidance
from genkit.sampling import default_sigma_range, make_grid, solver_entry, solver_names
from genkit.sampling.amed import AMEDPredictor, BottleneckTap, find_predictor, unet_fingerprint
from genkit.scheduler import GenkitScheduler
from genkit.skip_tuning import SkipTuning, best_rho

MAX_BATCH_SIZE = 1024
OUTPUT_TYPES = ("pil", "np", "pt", "latent")  # latent: the raw sample x, unclamped, in [-1, 1] scale


@dataclass
class PixelDiffusionPipelineOutput(BaseOutput):
    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    nfe: int  # network evaluations per image (CFG counts 2 per call)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Samples (N, C, H, W) in [-1, 1] -> uint8, the exact values the PNGs hold (PIL output is the same)."""
    return ((x / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)


def _check_int(name, value, lo, hi=None):
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= lo
    if not ok or (hi is not None and value > hi):
        allowed = f"an int >= {lo}" if hi is None else f"an int in [{lo}, {hi}]"
        raise ValueError(f"{name}={value!r} is not allowed: {allowed}")


class PixelDiffusionPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents", "denoised"]

    def __init__(self, unet, scheduler, class_names: list[str] | None = None):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(class_names=list(class_names) if class_names else None)

    # -- helpers -------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Real classes of a class-conditional UNet (the last embedding is the null class); 0 if none."""
        n = self.unet.config.num_class_embeds
        return 0 if n is None else n - 1

    def class_ids(self, class_labels, batch_size: int) -> torch.Tensor | None:
        """Class labels (int, name, or a list of either, one per image) -> (batch_size,) long tensor."""
        if self.num_classes == 0:
            if class_labels is not None:
                raise ValueError(f"class_labels={class_labels!r} is not allowed: this model is unconditional")
            return None
        if class_labels is None:  # the null class: unconditional samples from a conditional model
            return torch.full((batch_size,), self.num_classes, dtype=torch.long)
        labels = class_labels.tolist() if torch.is_tensor(class_labels) else class_labels
        labels = labels if isinstance(labels, (list, tuple)) else [labels] * batch_size
        if len(labels) != batch_size:
            raise ValueError(f"class_labels has {len(labels)} entries: give one per image ({batch_size}) or one")
        names = self.config.class_names or []
        ids = []
        for c in labels:
            if isinstance(c, str) and not c.isdigit():
                if c not in names:
                    raise ValueError(f"class={c!r} is not a known class: one of {len(names)} names such as "
                                     f"{', '.join(names[:4])}, ... or an id 0..{self.num_classes - 1}")
                c = names.index(c)
            c = int(c)
            if not 0 <= c < self.num_classes:
                raise ValueError(f"class={c!r} is out of range: ids 0..{self.num_classes - 1}")
            ids.append(c)
        return torch.tensor(ids, dtype=torch.long)

    def denoiser(self) -> Denoiser:
        return Denoiser.from_scheduler(self.unet, self.scheduler)

    def _postprocess(self, x: torch.Tensor, output_type: str):
        if output_type == "latent":
            return x
        if output_type == "pil":
            return [PIL.Image.fromarray(a) for a in to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()]
        x = (x / 2 + 0.5).clamp(0, 1)
        return x if output_type == "pt" else x.permute(0, 2, 3, 1).float().cpu().numpy()

    # -- sampling -------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 20,
        solver: str | None = None,
        grid: str | None = None,
        guidance_scale: float = 1.0,
        class_labels=None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        sigmas: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        amed_predictor: str | AMEDPredictor | None = None,
        skip_tuning: float | bool | None = None,
        skip_sigma_range: tuple[float, float] | None = None,
    ):
        """solver: a name from genkit.sampling.solver_names() (AMED ones need a predictor: found in the model
        folder's amed/ for this solver, num_inference_steps and guidance_scale, or given as `amed_predictor`,
        a folder or an AMEDPredictor), or "scheduler" for a diffusers scheduler's own loop.
        skip_tuning: rho_bottom of skip-tuning (None / False = off; True = the best rho that `genkit bench
        skip` stored in the model folder for this solver and NFE); skip_sigma_range: apply it only there."""
        # 1. Check inputs
        _check_int("batch_size", batch_size, 1, MAX_BATCH_SIZE)
        _check_int("num_inference_steps", num_inference_steps, 1)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r} is not allowed: one of {OUTPUT_TYPES}")
        if not isinstance(guidance_scale, (int, float)) or guidance_scale < 0:
            raise ValueError(f"guidance_scale={guidance_scale!r} is not allowed: a number >= 0")
        genkit_model = isinstance(self.scheduler, GenkitScheduler)
        solver = solver or (self.scheduler.config.solver if genkit_model else "scheduler")
        allowed = solver_names() + ([] if genkit_model else ["scheduler"])
        if solver not in allowed:
            raise ValueError(f"solver={solver!r} is not allowed: one of {', '.join(allowed)}")
        entry = solver_entry(solver) if solver != "scheduler" else None
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"generator is a list of {len(generator)}: give one per image ({batch_size})")
        for name in callback_on_step_end_tensor_inputs:
            if name not in self._callback_tensor_inputs:
                raise ValueError(f"callback_on_step_end_tensor_inputs has {name!r}: "
                                 f"allowed {self._callback_tensor_inputs}")
        labels = self.class_ids(class_labels, batch_size)
        if guidance_scale != 1.0 and labels is None:
            raise ValueError(f"guidance_scale={guidance_scale} needs a class-conditional model (use 1.0)")
        device = self._execution_device
        labels = labels.to(device) if labels is not None else None
        cfg_factor = 2 if guidance_scale != 1.0 else 1

        # 2. Initial noise, one generator per image when a list is given
        size = self.unet.config.sample_size
        shape = (batch_size, self.unet.config.in_channels, size, size)
        noise = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)

        # 3. Sample
        rho = self._skip_rho(skip_tuning, solver, num_inference_steps, guidance_scale)
        tuner = SkipTuning(self.unet, rho if rho is not None else 1.0, skip_sigma_range)
        with tuner:
            x, total_nfe = self._sample(noise, num_inference_steps, solver, entry, grid, sigmas, guidance_scale,
                                        labels, tuner, amed_predictor, callback_on_step_end,
                                        callback_on_step_end_tensor_inputs)
        total_nfe *= cfg_factor

        images = self._postprocess(x, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return PixelDiffusionPipelineOutput(images=images, nfe=total_nfe)

    def _skip_rho(self, skip_tuning, solver, num_steps, guidance_scale) -> float | None:
        if skip_tuning is None or skip_tuning is False:
            return None
        if skip_tuning is True:
            return best_rho(self.config._name_or_path, solver, num_steps, guidance_scale)
        return skip_tuning  # checked by SkipTuning

    def amed_predictor(self, solver: str, sigmas, guidance_scale: float, given=None) -> AMEDPredictor:
        """The AMED predictor for this run (given, or found in the model folder), checked against it."""
        if given is None:
            given = find_predictor(self.config._name_or_path, solver, len(sigmas) - 1, guidance_scale)
        pred = given if isinstance(given, AMEDPredictor) else AMEDPredictor.load(given)
        pred.check(solver=solver, sigmas=[float(v) for v in sigmas[:-1]], guidance_scale=float(guidance_scale),
                   teacher=unet_fingerprint(self.unet))
        return pred.to(self._execution_device)

    def _sample(self, noise, num_inference_steps, solver, entry, grid, sigmas, guidance_scale, labels, tuner,
                amed_predictor, callback_on_step_end, tensor_inputs):
        """-> (x, NFE per image before CFG)."""
        device = noise.device
        if solver == "scheduler":
            x, steps = self._sample_with_scheduler(noise, num_inference_steps, labels, guidance_scale,
                                                   callback_on_step_end, tensor_inputs)
            return x, steps
        den = self.denoiser()
        null = self.num_classes
        denoise = classifier_free_guidance(den, labels, null, guidance_scale) if labels is not None \
            else (lambda x, s: den(x, s))
        if sigmas is None:
            if isinstance(self.scheduler, GenkitScheduler):
                sigmas = self.scheduler.sigma_grid(num_inference_steps, grid)
            else:
                lo, hi = default_sigma_range(None, den.sigma_range)
                sigmas = make_grid(grid or "polynomial", num_inference_steps, lo, hi)
        sigmas = torch.as_tensor(sigmas, dtype=torch.float32).to(device)
        num_steps = len(sigmas) - 1
        callback = self._solver_callback(callback_on_step_end, tensor_inputs, num_steps)
        denoise = tuner.wrap(denoise)
        if not entry.needs_predictor:
            return entry.fn(denoise, noise * sigmas[0], sigmas, callback=callback), entry.nfe(num_steps)
        if num_steps < entry.min_steps:
            raise ValueError(f"num_inference_steps={num_steps} is not allowed: solver={solver!r} needs >= "
                             f"{entry.min_steps}")
        pred = self.amed_predictor(solver, sigmas, guidance_scale, amed_predictor)
        with BottleneckTap(self.unet) as tap:
            x = entry.fn(denoise, noise * sigmas[0], sigmas, callback=callback,
                         predictor=pred.step_predictor(tap), afs=pred.config.afs)
        return x, entry.nfe(num_steps, pred.config.afs)

    def _solver_callback(self, callback_on_step_end, tensor_inputs, num_steps):
        bar = self.progress_bar(total=num_steps)

        def callback(info):
            bar.update()
            if info["i"] == num_steps - 1:
                bar.close()
            if callback_on_step_end is None:
                return None
            local = {"latents": info["x"], "denoised": info["denoised"]}
            out = callback_on_step_end(self, info["i"], info["sigma"], {k: local[k] for k in tensor_inputs})
            return {"x": out["latents"]} if out and "latents" in out else None

        return callback

    def _sample_with_scheduler(self, noise, num_inference_steps, labels, guidance_scale, cb, cb_inputs):
        """diffusers' own loop: scheduler.step over the network's raw output (eps / v / x0)."""
        den = self.denoiser()
        sched = self.scheduler
        sched.set_timesteps(num_inference_steps, device=noise.device)
        ac = sched.alphas_cumprod.to(noise.device, torch.float64)
        latents = noise * sched.init_noise_sigma
        for i, t in enumerate(self.progress_bar(sched.timesteps)):
            model_in = sched.scale_model_input(latents, t)
            logsnr = (torch.log(ac[t]) - torch.log1p(-ac[t])).float().expand(len(latents))
            if guidance_scale != 1.0:
                null = torch.full_like(labels, self.num_classes)
                out = den.model_output(torch.cat([model_in] * 2), torch.cat([logsnr] * 2), torch.cat([labels, null]))
                out = cfg_combine(*out.chunk(2), guidance_scale)
            else:
                out = den.model_output(model_in, logsnr, labels)
            latents = sched.step(out, t, latents).prev_sample
            if cb is not None:
                res = cb(self, i, t, {"latents": latents} if "latents" in cb_inputs else {})
                latents = res.get("latents", latents) if res else latents
        return latents, len(sched.timesteps)
