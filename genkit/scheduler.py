"""GenkitScheduler: a diffusers-compatible scheduler config that carries a genkit Schedule.

It is what a genkit pipeline folder stores in scheduler/scheduler_config.json:
- the continuous log-SNR schedule (name, image_size, base_size, ...), used by the genkit solvers;
- prediction_type and time_input, read by genkit.denoiser.Denoiser (how the UNet was trained);
- trained_betas / num_train_timesteps / timestep_spacing for the same schedule on 1000 discrete steps, so
  `DDIMScheduler.from_config(pipe.scheduler.config)` (or DPMSolverMultistep, UniPC) runs diffusers' own
  schedulers on a genkit model on equal terms.

The sampling loop itself lives in genkit.sampling (pure functions over a denoiser); this class turns
num_inference_steps into a sigma grid (`set_timesteps`), which is all a pipeline needs from it.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .sampling.grids import default_sigma_range, make_grid
from .schedules import Schedule


class GenkitScheduler(SchedulerMixin, ConfigMixin):
    config_name = "scheduler_config.json"
    order = 1

    def __init__(
        self,
        schedule: str = "shifted_cosine",     # cosine | shifted_cosine | interpolated
        image_size: int = 32,
        base_size: int = 32,                  # d_ref of the shifted schedule
        interp_low: int = 32,
        interp_high: int = 256,
        logsnr_min: float = -15.0,
        logsnr_max: float = 15.0,
        prediction_type: str = "v_prediction",
        time_input: str = "logsnr",           # see genkit.denoiser
        solver: str = "dpmpp_2m",             # default genkit solver for this model
        grid: str = "polynomial",             # default sigma grid
        rho: float = 7.0,
        num_train_timesteps: int = 1000,      # for diffusers' discrete schedulers (from_config)
        trained_betas: list | None = None,
        beta_schedule: str = "linear",        # ignored by diffusers when trained_betas is set
        timestep_spacing: str = "trailing",
        clip_sample: bool = False,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
    ):
        self.schedule = Schedule(schedule, image_size, base_size, interp_low, interp_high, logsnr_min, logsnr_max)
        if trained_betas is None:  # computed, so that the saved config is complete for diffusers' from_config
            trained_betas = self.schedule.betas(num_train_timesteps).tolist()
        # registered by hand (not with @register_to_config, which would record trained_betas=None)
        self.register_to_config(
            schedule=schedule, image_size=image_size, base_size=base_size, interp_low=interp_low,
            interp_high=interp_high, logsnr_min=logsnr_min, logsnr_max=logsnr_max,
            prediction_type=prediction_type, time_input=time_input, solver=solver, grid=grid, rho=rho,
            num_train_timesteps=num_train_timesteps, trained_betas=list(trained_betas),
            beta_schedule=beta_schedule, timestep_spacing=timestep_spacing, clip_sample=clip_sample,
            set_alpha_to_one=set_alpha_to_one, steps_offset=steps_offset)
        self.alphas_cumprod = self.schedule.alphas_cumprod(num_train_timesteps).float()
        self.sigmas = None
        self.timesteps = None
        self.num_inference_steps = None
        self.init_noise_sigma = 1.0

    @classmethod
    def from_schedule(cls, schedule: Schedule, **kwargs) -> "GenkitScheduler":
        return cls(schedule=schedule.name, image_size=schedule.image_size, base_size=schedule.base_size,
                   interp_low=schedule.interp_low, interp_high=schedule.interp_high,
                   logsnr_min=schedule.logsnr_min, logsnr_max=schedule.logsnr_max, **kwargs)

    def sigma_grid(self, num_inference_steps: int, grid: str | None = None, sigma_min=None, sigma_max=None,
                   rho: float | None = None, image_size: float | None = None) -> torch.Tensor:
        """The EDM sigmas (num_inference_steps + 1,), descending, last 0; image_size: for images of another
        side than the model's, on the schedule shifted to it (Schedule.at_size)."""
        schedule = self.schedule if image_size is None else self.schedule.at_size(image_size)
        lo, hi = default_sigma_range(schedule)
        return make_grid(grid or self.config.grid, num_inference_steps, sigma_min or lo, sigma_max or hi,
                         schedule=schedule, rho=rho or self.config.rho)

    def set_timesteps(self, num_inference_steps: int, device=None, grid: str | None = None):
        self.num_inference_steps = num_inference_steps
        self.sigmas = self.sigma_grid(num_inference_steps, grid).to(device)
        logsnr = -2 * torch.log(self.sigmas[:-1].double())
        self.timesteps = self.schedule.t_from_logsnr(logsnr).float().to(device)  # continuous t in [0, 1]
