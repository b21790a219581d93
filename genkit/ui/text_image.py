"""The Text and image tab: one transformer both ways -- a prompt -> images (/text_to_image), an image -> its
name (/caption); a drawn image goes to Caption in one click.

    gallery, info = Client(url).predict("red apple", 0, 4, 5.0, 0.7, "", api_name="/text_to_image")
    caption = Client(url).predict(handle_file("emoji.png"), api_name="/caption")

The images of a prompt are drawn in ONE pipeline call from one generator seeded with `seed`, exactly as
`genkit draw --seed SEED --num N` draws them (image k of N is the same in both). The app used to call the
pipeline once per image (batch 1, N calls): that, not Gradio, made the tab ~2x slower than the script.
The API takes the sliders' bounds: a guidance of 1e6 is refused there as it is on the slider.

Live previews and Stop as in the Diffusion tab (genkit/ui/runner.py): the pipeline's step callback streams the
partial images after each AR step (drawn patches, gray where still masked) and checks the session's Stop flag;
a forward pre-hook on the transformer and the diffusion head stops before their next evaluation.
"""

import inspect
import os
import tempfile
import time
from pathlib import Path

# Handlers' gr.Request / gr.SelectData annotations must resolve at module level: Gradio reads them to
# pass the session and the selected item (so no `from __future__ import annotations` here).
import gradio as gr

from genkit.checks import LIMITS, check_float, check_text
from genkit.png_info import draw_settings, fingerprint, format_parameters, parse_parameters, png_bytes

from .diffusion import as_int, to_pil
from .options import MAX_SEED
from .runner import Stops

MAX_IMAGES = LIMITS["app_images"]  # 16
MAX_GUIDANCE = 8.0
MAX_TEMPERATURE = 1.5


def defaults():
    from pipelines.multimodal import DEFAULT_GUIDANCE, DEFAULT_TEMPERATURE

    return DEFAULT_GUIDANCE, DEFAULT_TEMPERATURE


def validate(seed, num_images, guidance, temperature, max_images: int = MAX_IMAGES):
    num_images = as_int("num_images", num_images, 1, max_images)
    seed = as_int("seed", seed, 0, MAX_SEED)
    guidance = check_float("guidance", guidance, 0, MAX_GUIDANCE)
    temperature = check_float("temperature", temperature, 0, MAX_TEMPERATURE)
    return seed, num_images, guidance, temperature


def make_text_to_image(mm, max_images: int = MAX_IMAGES, model_name: str | None = None, out_dir: str | None = None,
                       stops: Stops | None = None):
    """Handler (a generator): (prompt, seed, number of images, guidance, temperature, negative prompt, preview
    every k steps) -> (gallery, info) as the images form, patch by patch, then the final PNG files, each with its
    `parameters` chunk. A blank negative prompt means the unconditional model. Stop ends the call after the AR step
    (or network evaluation) under way; the partial images stay shown, no PNG is written."""
    import torch

    stops = stops or Stops()
    guidance_default, temperature_default = defaults()
    # what the tab leaves at the pipeline's defaults, recorded in each PNG (read from the signature: one place)
    params = inspect.signature(type(mm).__call__).parameters
    fixed = {k: params[k].default for k in ("num_inference_steps", "head_steps", "solver", "rerank")}
    steps = mm.model.num_patches if mm.model.config.order == "raster" else fixed["num_inference_steps"]
    model_hash = fingerprint(mm.model)
    model_name = model_name or Path(getattr(mm, "name_or_path", "") or "model").name
    root = Path(out_dir or os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()) / "genkit-images"

    def text_to_image(prompt, seed, num_images, guidance=guidance_default, temperature=temperature_default,
                      negative_prompt="", preview_every=1, request: gr.Request = None, progress=gr.Progress()):
        try:
            # one str: a list would be drawn as several prompts under one prompt's seed labels (issue 15 #4)
            prompt = check_text("prompt", prompt, mm.model.config.max_text_bytes)
            seed, num_images, guidance, temperature = validate(seed, num_images, guidance, temperature, max_images)
            preview_every = as_int("preview_every", preview_every, 0, steps)
        except ValueError as e:
            raise gr.Error(str(e), print_exception=False) from None
        negative_prompt = negative_prompt or None
        session = getattr(request, "session_hash", None) or "local"
        t0 = time.perf_counter()

        def work(report):
            def on_step(_pipe, i, t, tensors):
                stops.check(session)
                show = preview_every and ((i + 1) % preview_every == 0 or i + 1 == steps)
                report("step", i, t, tensors["images"].detach().cpu() if show else None)
                return {}
            kw = dict(num_images_per_prompt=num_images, guidance_scale=guidance, temperature=temperature,
                      negative_prompt=negative_prompt, callback_on_step_end=on_step)
            report("images", mm(prompt=prompt, generator=torch.Generator().manual_seed(seed), **kw).images)

        def info(i: int, note: str = "") -> str:
            wall = time.perf_counter() - t0
            left = f" · ~{wall / i * (steps - i):.1f} s left" if 0 < i < steps and not note else ""
            return f"**step {i}/{steps}** · {wall:.1f} s{left}{note}"

        previews, done, images = [], 0, None
        try:  # a ValueError from the pipeline (e.g. a too-long negative prompt) is a message, as the form's are
            for kind, *payload in stops.run(session, work):
                if kind == "step":
                    i, known, x = payload
                    done = i + 1
                    progress((done, steps), desc="drawing", unit="steps")
                    if x is not None:
                        previews = [(im, f"seed {seed} · {k + 1}/{num_images} · step {done}/{steps}")
                                    for k, im in enumerate(to_pil(x))]
                        yield previews, info(done)
                elif kind == "images":
                    images = payload[0]
                elif kind == "stopped":
                    yield previews, info(done, " · **stopped**: the partial images are not saved")
        except ValueError as e:
            raise gr.Error(str(e), print_exception=False) from None
        if images is None:
            return
        wall = time.perf_counter() - t0
        root.mkdir(parents=True, exist_ok=True)
        run_dir = Path(tempfile.mkdtemp(prefix=f"draw-{seed}-", dir=root))
        items = []
        for k, im in enumerate(images):
            text = format_parameters(prompt, draw_settings(
                steps=fixed["num_inference_steps"], head_steps=fixed["head_steps"], solver=fixed["solver"],
                rerank=fixed["rerank"], guidance=guidance, temperature=temperature,
                seed=seed, images=num_images, index=k, model_hash=model_hash, model=model_name), negative_prompt)
            path = run_dir / f"{k}.png"
            path.write_bytes(png_bytes(im, text))
            items.append((str(path), f"seed {seed} · {k + 1}/{num_images}"))
        yield items, f"**wall time:** {wall:.2f} s for {num_images} image{'s' if num_images > 1 else ''}"

    return text_to_image


def form_values(text: str) -> list:
    """A drawn PNG's `parameters` -> (prompt, seed, images, guidance, temperature, negative prompt)."""
    prompt, negative, kv = parse_parameters(text)
    if "Temperature" not in kv or "Seed" not in kv:
        raise ValueError(f"parameters={text[:60]!r} is not allowed: a Text and image tab or `genkit draw` image")
    return [prompt, int(kv["Seed"]), int(kv.get("Images", 1)), float(kv["CFG scale"]), float(kv["Temperature"]),
            negative or ""]


def make_caption(mm):
    """Handler: an image (any size, RGB or RGBA) -> the model's caption (center-cropped, resized to 32x32)."""
    import numpy as np
    from PIL import Image

    from genkit.data.folder import square_rgb

    def caption(image):
        if image is None:
            raise gr.Error("image is missing: upload an image", print_exception=False)
        return mm.caption(square_rgb(Image.fromarray(np.asarray(image)), mm.model.config.image_size))[0]

    return caption


def guard(mm, stops: Stops) -> None:
    """Stop before the next network evaluation: the transformer's and, per patch, the diffusion head's."""
    import torch

    for name in ("transformer", "patch_head", "code_head"):
        if isinstance(getattr(mm.model, name, None), torch.nn.Module):
            stops.guard(getattr(mm.model, name))


def build(mm, examples: list[str] | None = None, model_name: str | None = None, stops: Stops | None = None):
    """Lay out the tab; return its form (prompt, seed, images, guidance, temperature, negative prompt)."""
    stops = stops or Stops()
    guard(mm, stops)
    guidance_default, temperature_default = defaults()
    gr.Markdown("One transformer reads and writes both: type an emoji name to draw it, or give it an image to name.")
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            prompt = gr.Textbox(value="red apple", label="Prompt (an emoji name)", elem_id="prompt")
            seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="mm_seed")
            num = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Images", elem_id="mm_num")
            guidance = gr.Slider(0, MAX_GUIDANCE, value=guidance_default, step=0.1, label="Guidance",
                                 elem_id="mm_guidance")
            temperature = gr.Slider(0, MAX_TEMPERATURE, value=temperature_default, step=0.05,
                                    label="Temperature (noise scale of the diffusion head)", elem_id="mm_temperature")
            negative = gr.Textbox(value="", label="Negative prompt (optional: what guidance pushes away from)",
                                  elem_id="mm_negative")
            preview_every = gr.Slider(0, 16, value=1, step=1, label="Preview every k steps (0 = off)",
                                      elem_id="mm_preview_every")
            with gr.Row():
                draw = gr.Button("Draw", variant="primary", elem_id="draw")
                stop = gr.Button("Stop", variant="stop", elem_id="mm_stop")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="Drawn (select one, then Send to Caption)", columns=4,
                                 elem_classes="pixelated", elem_id="mm_gallery")
            info = gr.Markdown(elem_id="mm_info")
    with gr.Row():
        with gr.Column():
            to_caption = gr.Image(type="numpy", image_mode="RGBA", label="Image to caption", elem_id="to_caption")
            if examples:
                gr.Examples(examples=[[e] for e in examples], inputs=[to_caption], label="Caption examples "
                            "(OpenMoji val: never seen in training)")
        with gr.Column():
            send = gr.Button("Send to Caption (selected image, else the first)", elem_id="send_to_caption")
            name_it = gr.Button("Caption", elem_id="caption")
            caption_out = gr.Textbox(label="Caption", interactive=False, elem_id="caption_out")
    form = [prompt, seed, num, guidance, temperature, negative]
    draw.click(make_text_to_image(mm, model_name=model_name, stops=stops), inputs=[*form, preview_every],
               outputs=[gallery, info], api_name="text_to_image", concurrency_id="model", concurrency_limit=1,
               preprocess=False)

    def on_stop(request: gr.Request):
        stops.stop(request.session_hash)
    stop.click(on_stop, None, None, queue=False, api_visibility="private")
    caption = make_caption(mm)
    name_it.click(caption, inputs=[to_caption], outputs=[caption_out], api_name="caption", concurrency_id="model",
                  concurrency_limit=1)
    selected = gr.State(0)

    def pick(evt: gr.SelectData):
        return evt.index
    gallery.select(pick, None, selected, api_visibility="private", queue=False)

    def send_image(items, index):
        if not items:
            raise gr.Error("nothing drawn yet: press Draw first", print_exception=False)
        item = items[min(index or 0, len(items) - 1)]
        path = item[0] if isinstance(item, (list, tuple)) else item["image"]["path"]
        return path
    send.click(send_image, [gallery, selected], to_caption, api_visibility="private", queue=False).then(
        caption, [to_caption], caption_out, api_visibility="private", concurrency_id="model", concurrency_limit=1)
    return form
