"""The app's request checks, as plain functions any UI (app.py today, genkit/ui/ tomorrow) calls first.

Each returns the values normalised (JSON numbers arrive as floats: an integral 3.0 is taken as 3) or raises the
one-format ValueError of genkit/checks.py, which the UI shows as a message while it keeps serving. Gradio's API
bypasses the sliders' ranges, so these are the only bounds an /api caller meets.
"""

from __future__ import annotations

from .checks import LIMITS, bad, check_choice, check_float, check_int, check_text

MAX_STEPS = 100          # the app's steps slider: a request is interactive
MAX_GUIDANCE = 8.0       # the guidance sliders
MAX_SEED = LIMITS["seed"]


def as_int(name: str, value, lo: int, hi: int) -> int:
    """An int (or an integral float, as JSON numbers may arrive) in [lo, hi]."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return check_int(name, value, lo, hi)


def check_generate(class_name, seed, steps, solver, guidance, batch_size, class_choices: list[str],
                   max_batch_size: int = 16):
    """The Generate tab: (class, seed, steps, solver, guidance, batch size), normalised."""
    from genkit.sampling import solver_names

    if class_name not in class_choices:
        shown = ", ".join(repr(c) for c in class_choices[:5]) + (", ..." if len(class_choices) > 5 else "")
        bad("class", class_name, f"one of {len(class_choices)} names ({shown})")
    batch_size = as_int("batch_size", batch_size, 1, max_batch_size)
    seed = as_int("seed", seed, 0, MAX_SEED - (batch_size - 1))
    steps = as_int("steps", steps, 1, MAX_STEPS)
    check_choice("solver", solver, solver_names())
    guidance = check_float("guidance", guidance, 0, MAX_GUIDANCE)
    return class_name, seed, steps, solver, guidance, batch_size


def check_text_to_image(prompt, seed, num_images, guidance, temperature, negative_prompt,
                        max_images: int = LIMITS["app_images"], max_bytes: int | None = None):
    """The Text and image tab's /text_to_image: one prompt (a str: a list would be drawn as many prompts and the
    images labelled with wrong seeds), images seed .. seed + num_images - 1, finite guidance and temperature."""
    prompt = check_text("prompt", prompt, max_bytes)
    num_images = as_int("num_images", num_images, 1, max_images)
    seed = as_int("seed", seed, 0, MAX_SEED - (num_images - 1))
    guidance = check_float("guidance", guidance, 0, MAX_GUIDANCE)
    temperature = check_float("temperature", temperature, 0, LIMITS["temperature"])
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        bad("negative_prompt", negative_prompt, "a text (blank: guidance against the unconditional model)")
    negative_prompt = check_text("negative_prompt", negative_prompt, max_bytes) if negative_prompt and \
        negative_prompt.strip() else None
    return prompt, seed, num_images, guidance, temperature, negative_prompt
