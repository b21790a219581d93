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

Resolution: `height` / `width` (default the UNet's sample_size) may be any multiple of the UNet's downsampling
factor 2^(levels - 1). A genkit model sampled at another size samples on its schedule moved to that size,
Schedule.at_size(sqrt(height * width)): shifted_cosine keeps its base, so its log-SNR moves by
2 log(trained / new) (simple diffusion's rule); cosine is unchanged. With the polynomial and logsnr grids the
sigma range is EDM's [0.002, 80] either way, so the shift moves only the `time` grid's steps.

Upsample guidance (genkit.guidance.upsample_guidance): `upsample_guidance_scale` w > 0 at m times the trained
size adds a low-resolution pass of the same network per step (m = height / sample_size, an int >= 2);
`upsample_guidance_window` = (t_lo, t_hi), the part of the model's time t in [0, 1] (1 = pure noise) where it
is on (the paper's eta = 0.6 is (0.4, 1.0)); `upsample_guidance_adjust` drops "power" or "time" for the
paper's ablations. The output's `nfe` counts full-resolution evaluations,
`nfe_low_res` the extra low-resolution ones (each ~1 / m^2 of a full one).

Guidance interval (Kynkaanniemi et al. 2024): `guidance_sigma_range` = (lo, hi) applies `guidance_scale` only
at EDM sigma in [lo, hi] and samples the plain conditional model elsewhere, where a step costs 1 evaluation
instead of 2 (`nfe` counts what ran). Guidance at high noise mostly pulls the samples of a class together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from genkit.checks import LIMITS, bad, check_choice, check_float, check_int, check_sigmas
from genkit.denoiser import Denoiser
from genkit.guidance import cfg_combine, classifier_free_guidance, upsample_guidance
from genkit.sampling import default_sigma_range, make_grid, solver_entry, solver_names
from genkit.sampling.amed import (BottleneckTap, TrainedFor, find_predictor, learned_sigmas,
                                  load_predictor, run_grid, unet_fingerprint)
from genkit.scheduler import GenkitScheduler
from genkit.skip_tuning import SkipTuning, best_rho

MAX_BATCH_SIZE = LIMITS["batch_size"]
UG_ADJUSTMENTS = ("power", "time")  # upsample guidance's two adjustments; drop one for the paper's ablations
OUTPUT_TYPES = ("pil", "np", "pt", "latent")  # latent: the raw sample x, unclamped, in [-1, 1] scale


@dataclass
class PixelDiffusionPipelineOutput(BaseOutput):
    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    nfe: int  # full-resolution network evaluations per image (CFG counts 2 per call)
    nfe_low_res: int = 0  # extra low-resolution evaluations per image of upsample guidance (CFG counts 2)
    low_res_cost: float = 0.0  # nfe_low_res in full-resolution units: nfe_low_res / m^2


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Samples (N, C, H, W) in [-1, 1] -> uint8, the exact values the PNGs hold (PIL output is the same)."""
    return ((x / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)


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
            c = int(c) if isinstance(c, str) else c
            ids.append(check_int("class", c, 0, self.num_classes - 1))  # 3.7 is refused, not truncated
        return torch.tensor(ids, dtype=torch.long)

    @property
    def trained_size(self) -> int:
        size = self.unet.config.sample_size
        return size if isinstance(size, int) else size[0]

    @property
    def downsampling_factor(self) -> int:
        """Height and width must be multiples of this: the UNet halves the image at each level but the last."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    def check_size(self, height, width) -> tuple[int, int]:
        """height / width (None: the trained size) -> ints, else a ValueError naming the size."""
        f, size = self.downsampling_factor, self.trained_size
        out = []
        for name, v in (("height", height), ("width", width)):
            v = size if v is None else check_int(name, v, f, LIMITS["image_size"])
            if v % f:
                bad(name, v, f"a multiple of {f} (this UNet downsamples {f}x), e.g. {v - v % f} or {v - v % f + f}")
            out.append(v)
        return tuple(out)

    def upsample_factor(self, height: int, width: int) -> int:
        """m for upsample guidance: height = m * the trained size, m an int >= 2, width divisible by m."""
        size = self.trained_size
        m = height // size
        if height % size or m < 2:
            bad("height", height, f"upsample guidance needs m * {size} px (the trained size), m an int >= 2")
        if width % (m * self.downsampling_factor):
            bad("width", width, f"a multiple of {m * self.downsampling_factor} (m = {m} times the downsampling "
                                f"factor {self.downsampling_factor}) for upsample guidance")
        return m

    def ug_sigma_window(self, window, genkit_model: bool, image_size: float) -> tuple[float, float]:
        """upsample_guidance_window (t_lo, t_hi) in the model's time -> (sigma_lo, sigma_hi)."""
        if not (isinstance(window, (tuple, list)) and len(window) == 2):
            bad("upsample_guidance_window", window, "(t_lo, t_hi) with 0 <= t_lo < t_hi <= 1")
        t_lo = check_float("upsample_guidance_window[0]", window[0], 0.0, 1.0)
        t_hi = check_float("upsample_guidance_window[1]", window[1], 0.0, 1.0)
        if t_lo >= t_hi:
            bad("upsample_guidance_window", window, "(t_lo, t_hi) with 0 <= t_lo < t_hi <= 1")
        if t_lo == 0.0 and t_hi == 1.0:
            return 0.0, float("inf")
        if genkit_model:
            logsnr = self.scheduler.schedule.at_size(image_size).logsnr(torch.tensor([t_lo, t_hi], dtype=torch.float64))
        else:  # a discrete table: t = index / (T - 1)
            table = self.denoiser().table_logsnr
            idx = torch.tensor([t_lo, t_hi], dtype=torch.float64) * (len(table) - 1)
            logsnr = table[idx.round().long()]
        sig = torch.exp(-0.5 * logsnr)
        return (0.0 if t_lo == 0.0 else float(sig[0])), (float("inf") if t_hi == 1.0 else float(sig[1]))

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
        height: int | None = None,
        width: int | None = None,
        upsample_guidance_scale: float = 0.0,
        upsample_guidance_window: tuple[float, float] = (0.0, 1.0),
        upsample_guidance_adjust: tuple[str, ...] = UG_ADJUSTMENTS,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        batch_invariant: bool = False,
        amed_predictor: str | TrainedFor | None = None,
        skip_tuning: float | bool | None = None,
        skip_sigma_range: tuple[float, float] | None = None,
        guidance_sigma_range: tuple[float, float] | None = None,
    ):
        """batch_invariant=True: one network call per image (about 2x slower on a CPU), so that every image is
        byte-identical whatever batch it is drawn in (genkit sample's default; see Denoiser.model_output).
        solver: a name from genkit.sampling.solver_names() (AMED ones need a predictor: found in the model
        folder's amed/ for this solver, num_inference_steps and guidance_scale, or given as `amed_predictor`,
        a folder, an AMEDPredictor or BNSWeights), or "scheduler" for a diffusers scheduler's own loop. grid: None = the
        model's, except that an AMED solver then prefers a predictor that learned its own grid ("learned",
        train_amed.py --learn_grid) and samples on it; a named grid asks for the predictor trained on it.
        skip_tuning: rho_bottom of skip-tuning (None / False = off; True = the best rho that `genkit bench
        skip` stored in the model folder for this solver, steps, guidance and grid); skip_sigma_range: apply it
        only there. guidance_sigma_range: (lo, hi), guide only at lo <= sigma <= hi (EDM sigma; None: every step)."""
        # 1. Check inputs (genkit/checks.py: one message format; NaN / inf never pass)
        check_int("batch_size", batch_size, 1, MAX_BATCH_SIZE)
        check_int("num_inference_steps", num_inference_steps, 1, LIMITS["steps"])
        check_choice("output_type", output_type, OUTPUT_TYPES)
        guidance_scale = check_float("guidance_scale", guidance_scale, 0, LIMITS["guidance"])
        if sigmas is not None:
            sigmas = check_sigmas("sigmas", sigmas)
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
        height, width = self.check_size(height, width)
        ug_scale = check_float("upsample_guidance_scale", upsample_guidance_scale, 0.0, LIMITS["guidance"])
        if isinstance(upsample_guidance_adjust, str):
            bad("upsample_guidance_adjust", upsample_guidance_adjust, f"a tuple of {UG_ADJUSTMENTS} entries")
        for a in upsample_guidance_adjust:
            check_choice("upsample_guidance_adjust", a, UG_ADJUSTMENTS)
        labels = self.class_ids(class_labels, batch_size)
        if guidance_scale != 1.0 and labels is None:
            raise ValueError(f"guidance_scale={guidance_scale} needs a class-conditional model (use 1.0)")
        device = self._execution_device
        labels = labels.to(device) if labels is not None else None
        cfg_factor = 2 if guidance_scale != 1.0 else 1
        interval = self.check_guidance_interval(guidance_sigma_range, guidance_scale, entry, ug_scale)

        ug_factor = self.upsample_factor(height, width) if ug_scale > 0 else 1
        if ug_scale > 0 and solver == "scheduler":
            bad("solver", solver, "upsample guidance runs with a genkit solver: one of " + ", ".join(solver_names()))
        image_size = (height * width) ** 0.5
        ug_window = self.ug_sigma_window(upsample_guidance_window, genkit_model, image_size) if ug_scale > 0 \
            else None

        # 2. Initial noise, one generator per image when a list is given
        shape = (batch_size, self.unet.config.in_channels, height, width)
        noise = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)

        # 3. The AMED predictor, whose learned grid (if any) the run samples on; the grid named for skip-tuning's
        #    stored pick (None for explicit sigmas)
        pred = None
        if entry is not None and entry.needs_predictor:
            pred = self.amed_predictor(solver, num_inference_steps, guidance_scale, amed_predictor, grid, sigmas)
        model_grid = self.scheduler.config.get("grid", "polynomial") if genkit_model else "polynomial"
        grid_name = None if sigmas is not None else run_grid(pred, grid, model_grid)

        # 4. Sample (skip-tuning: hooks on the UNet for this call only; rho = 1 leaves it bit-identical)
        rho = self._skip_rho(skip_tuning, solver, num_inference_steps, guidance_scale, grid_name)
        with SkipTuning(self.unet, rho if rho is not None else 1.0, skip_sigma_range) as tuner:
            x, total_nfe, low_res = self._sample(
                noise, solver, entry, num_inference_steps, grid, sigmas, labels, guidance_scale, cfg_factor,
                genkit_model, image_size, ug_scale, ug_factor, ug_window, upsample_guidance_adjust, tuner,
                pred, callback_on_step_end, callback_on_step_end_tensor_inputs, batch_invariant, interval)

        images = self._postprocess(x, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return PixelDiffusionPipelineOutput(images=images, nfe=total_nfe, nfe_low_res=low_res,
                                            low_res_cost=low_res / ug_factor ** 2)

    @staticmethod
    def check_guidance_interval(sigma_range, guidance_scale, entry, ug_scale) -> tuple[float, float] | None:
        """guidance_sigma_range -> (lo, hi) with 0 <= lo < hi (hi may be inf), or None (every step / no guidance)."""
        if sigma_range is None:
            return None
        allowed = "(lo, hi): EDM sigmas with 0 <= lo < hi, e.g. (0, 1.0)"
        if isinstance(sigma_range, str) or not hasattr(sigma_range, "__len__") or len(sigma_range) != 2:
            bad("guidance_sigma_range", sigma_range, allowed)
        lo = check_float("guidance_sigma_range[0]", sigma_range[0], 0.0)
        hi = sigma_range[1]
        hi = float("inf") if hi == float("inf") else check_float("guidance_sigma_range[1]", hi, 0.0)
        if lo >= hi:
            bad("guidance_sigma_range", tuple(sigma_range), allowed)
        if guidance_scale == 1.0:
            return None                          # nothing to apply (as with guidance_scale 1 alone)
        if entry is not None and entry.needs_predictor:
            bad("guidance_sigma_range", tuple(sigma_range), "None with an AMED / BNS solver (its predictor was "
                "trained for guidance at every step)")
        if ug_scale > 0:
            bad("guidance_sigma_range", tuple(sigma_range), "None with upsample guidance")
        return lo, hi

    def _skip_rho(self, skip_tuning, solver, num_steps, guidance_scale, grid) -> float | None:
        if skip_tuning is None or skip_tuning is False:
            return None
        if skip_tuning is True:
            return best_rho(self.config.get("_name_or_path"), solver, num_steps, guidance_scale, grid)
        return skip_tuning  # checked by SkipTuning

    def amed_predictor(self, solver: str, num_steps: int, guidance_scale: float, given=None,
                       grid: str | None = None, sigmas=None) -> TrainedFor:
        """The AMED predictor for this run: given, or found in the model folder (grid None: a learned-grid one
        first; explicit sigmas: the one trained on them). Not yet checked: that needs the run's sigmas, which
        a learned grid takes from the predictor."""
        if given is None:
            given = find_predictor(self.config.get("_name_or_path"), solver, num_steps, guidance_scale, grid,
                                   sigmas)
        pred = given if isinstance(given, TrainedFor) else load_predictor(given)
        return pred.to(self._execution_device)

    def _sample(self, noise, solver, entry, num_inference_steps, grid, sigmas, labels, guidance_scale, cfg_factor,
                genkit_model, image_size, ug_scale, ug_factor, ug_window, upsample_guidance_adjust, tuner,
                pred, callback_on_step_end, callback_on_step_end_tensor_inputs, batch_invariant, interval=None):
        """-> (x, network evaluations per image, low-resolution evaluations per image); CFG counted. pred: the
        AMED predictor of an AMED solver (None otherwise); interval: the checked guidance_sigma_range."""
        device = noise.device
        low_res = 0  # low-resolution evaluations per image (upsample guidance)
        if solver == "scheduler":
            x, steps, guided = self._sample_with_scheduler(noise, num_inference_steps, labels, guidance_scale,
                                                           callback_on_step_end, callback_on_step_end_tensor_inputs,
                                                           batch_invariant, interval)
            total_nfe = steps + guided
        else:
            den = self.denoiser()
            den.per_sample = bool(batch_invariant)
            null = self.num_classes
            cfg = classifier_free_guidance(den, labels, null, guidance_scale, interval) if labels is not None \
                else None
            denoise = cfg if cfg is not None else (lambda x, s: den(x, s))
            if ug_scale > 0:  # outside CFG: the low-resolution pass batches cond + uncond too
                denoise = upsample_guidance(denoise, ug_scale, ug_factor, ug_window,
                                            time_adjustment="time" in upsample_guidance_adjust,
                                            power_adjustment="power" in upsample_guidance_adjust,
                                            table_logsnr=den.table_logsnr if den.time_input == "discrete" else None)
            if pred is not None and sigmas is None:
                sigmas = learned_sigmas(pred, grid)  # None: the run's own grid
            if sigmas is None:
                if genkit_model:
                    sigmas = self.scheduler.sigma_grid(num_inference_steps, grid,
                                                       image_size=None if image_size == self.trained_size else image_size)
                else:
                    lo, hi = default_sigma_range(None, den.sigma_range)
                    sigmas = make_grid(grid or "polynomial", num_inference_steps, lo, hi)
            sigmas = torch.as_tensor(sigmas, dtype=torch.float32).to(device)
            num_steps = len(sigmas) - 1
            callback = self._solver_callback(callback_on_step_end, callback_on_step_end_tensor_inputs, num_steps)
            tuned = tuner.wrap(denoise)
            if not entry.needs_predictor:
                x = entry.fn(tuned, noise * sigmas[0], sigmas, callback=callback)
                total_nfe = entry.nfe(num_steps) + cfg.guided_calls if interval else entry.nfe(num_steps) * cfg_factor
            else:
                if num_steps < entry.min_steps:
                    bad("num_inference_steps", num_steps, f"an int >= {entry.min_steps} for solver={solver!r}")
                pred.check(solver=solver, sigmas=[float(v) for v in sigmas[:-1]],
                           guidance_scale=float(guidance_scale), teacher=unet_fingerprint(self.unet))
                with BottleneckTap(self.unet) as tap:  # an AMED predictor reads the UNet's mid_block output
                    kw = pred.solver_kwargs(tap, labels=labels, noise=noise)
                    x = entry.fn(tuned, noise * sigmas[0], sigmas, callback=callback, **kw)
                total_nfe = entry.nfe(num_steps, pred.config.afs) * cfg_factor
            low_res = getattr(denoise, "low_res_calls", 0) * cfg_factor
        return x, total_nfe, low_res

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

    def _sample_with_scheduler(self, noise, num_inference_steps, labels, guidance_scale, cb, cb_inputs,
                               batch_invariant=False, interval=None):
        """diffusers' own loop: scheduler.step over the network's raw output (eps / v / x0). -> (x, steps, steps
        that ran the null branch too)."""
        den = self.denoiser()
        den.per_sample = bool(batch_invariant)
        sched = self.scheduler
        sched.set_timesteps(num_inference_steps, device=noise.device)
        ac = sched.alphas_cumprod.to(noise.device, torch.float64)
        latents = noise * sched.init_noise_sigma
        guided = 0
        for i, t in enumerate(self.progress_bar(sched.timesteps)):
            model_in = sched.scale_model_input(latents, t)
            logsnr = (torch.log(ac[t]) - torch.log1p(-ac[t])).float().expand(len(latents))
            sigma = float(torch.exp(-0.5 * logsnr[0]))
            if guidance_scale != 1.0 and (interval is None or interval[0] <= sigma <= interval[1]):
                guided += 1
                null = torch.full_like(labels, self.num_classes)
                out = den.model_output(torch.cat([model_in] * 2), torch.cat([logsnr] * 2), torch.cat([labels, null]))
                out = cfg_combine(*out.chunk(2), guidance_scale)
            else:
                out = den.model_output(model_in, logsnr, labels)
            latents = sched.step(out, t, latents).prev_sample
            if cb is not None:
                res = cb(self, i, t, {"latents": latents} if "latents" in cb_inputs else {})
                latents = res.get("latents", latents) if res else latents
        return latents, len(sched.timesteps), guided
