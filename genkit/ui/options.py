"""What the UI offers, read from the library rather than kept by hand: solvers, sigma grids, diffusers' schedulers,
class names, and the bounds every slider and the API share (one number in one place)."""

from __future__ import annotations

from genkit.checks import LIMITS

UNCONDITIONAL = "(unconditional)"
DEFAULT_CLASS = "face-smiling"
MAX_STEPS = 100           # a request is interactive
MAX_GUIDANCE = 8.0        # the guidance sliders (and the API: it takes the sliders' bounds)
MAX_SEED = LIMITS["seed"]
MAX_BATCH_COUNT = 16
MAX_UPSAMPLE_GUIDANCE = 2.0  # the slider's end; the paper's useful range is well inside it
MAX_SIGMA = 80.0          # the guidance interval's top: EDM's sigma_max (80 and above = guided at every step)
RANDOM_SEED = -1          # A1111's convention: -1 draws a fresh seed, shown in the result
QUEUE_SIZE = 64           # queue(max_size): beyond it a caller is told the queue is full, not left hanging
HISTORY_SIZE = 64         # past images kept per browser session
# diffusers' own schedulers, run with their step() loop on the same UNet (from_config of the model's scheduler):
# label in the Sampler menu -> diffusers class name
DIFFUSERS_SCHEDULERS = {"DDIM (diffusers)": "DDIMScheduler",
                        "DPM-Solver++ (diffusers)": "DPMSolverMultistepScheduler",
                        "UniPC (diffusers)": "UniPCMultistepScheduler"}


def solver_names(model_dir=None) -> list[str]:
    """genkit's solvers, the one place the UI reads them: the registry's training-free solvers, plus the learned
    ones (AMED, BNS) for which model_dir/amed/ holds trained parameters."""
    from genkit.sampling import available_solvers

    return available_solvers(model_dir)


def grid_names(model_dir: str | None = None) -> list[str]:
    """The sigma grids, and "learned" when model_dir/amed/ holds a learned solver with a learned grid (AMED, BNS)."""
    from genkit.sampling import GRIDS
    from genkit.sampling.amed import list_predictors
    from genkit.sampling.grids import LEARNED

    learned = any(p["grid"] == LEARNED for p in list_predictors(model_dir))
    return list(GRIDS) + ([LEARNED] if learned else [])


def model_dir(pipe) -> str | None:
    """The folder a pipeline was loaded from (where AMED predictors live); None for one built in memory."""
    return pipe.config.get("_name_or_path") or None


def sampler_choices(model_dir=None) -> list[str]:
    """The Sampler menu: every genkit solver usable with the model in model_dir, then diffusers' schedulers."""
    return solver_names(model_dir) + list(DIFFUSERS_SCHEDULERS)


def class_choices(pipe) -> list[str]:
    """Class menu: "(unconditional)" then the model's class names (or ids when it has no names)."""
    n = pipe.num_classes
    names = list(pipe.config.class_names or [str(i) for i in range(n)]) if n else []
    return [UNCONDITIONAL] + names


def default_class(pipe) -> str:
    choices = class_choices(pipe)
    return DEFAULT_CLASS if DEFAULT_CLASS in choices else choices[min(1, len(choices) - 1)]


def is_one_step(pipe) -> bool:
    """A one-step generator (pipelines/one_step.py, SiD): one network evaluation, no steps / solver / grid /
    guidance / size to choose."""
    from pipelines.one_step import OneStepPipeline

    return isinstance(pipe, OneStepPipeline)


def model_choices(models: dict) -> list[tuple[str, str]]:
    """The Model menu: (label, name) per loaded diffusion pipeline, labelled with what it is."""
    def label(name, pipe):
        size = pipe.unet.config.sample_size
        kind = "one-step (SiD), 1 evaluation" if is_one_step(pipe) else "diffusion"
        return f"{name} · {size}x{size} · {kind}"
    return [(label(n, p), n) for n, p in models.items()]


def sizes(pipe) -> list[int]:
    """Image sizes offered: the trained size, then 2x (upsample guidance makes it work without training)."""
    native = pipe.unet.config.sample_size
    return [native, 2 * native]
