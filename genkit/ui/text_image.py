"""The Text and image tab: one transformer both ways -- a prompt -> images (/text_to_image), an image -> its
name (/caption); a drawn image goes to Caption in one click.

    gallery, info = Client(url).predict("red apple", 0, 4, 5.0, 0.7, "", api_name="/text_to_image")
    caption = Client(url).predict(handle_file("emoji.png"), api_name="/caption")

The images of a prompt are drawn in ONE pipeline call from one generator seeded with `seed`, exactly as
`genkit draw --seed SEED --num N` draws them (image k of N is the same in both). The app used to call the
pipeline once per image (batch 1, N calls): that, not Gradio, made the tab ~2x slower than the script.
The API takes the sliders' bounds: a guidance of 1e6 is refused there as it is on the slider.
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

from .diffusion import as_int
from .options import MAX_SEED

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


def make_text_to_image(mm, max_images: int = MAX_IMAGES, model_name: str | None = None, out_dir: str | None = None):
    """Handler: (prompt, seed, number of images, guidance, temperature, negative prompt) -> (gallery, info).
    Each image is a PNG file with its `parameters` chunk; a blank negative prompt means the unconditional model."""
    import torch

    guidance_default, temperature_default = defaults()
    # what the tab leaves at the pipeline's defaults, recorded in each PNG (read from the signature: one place)
    params = inspect.signature(type(mm).__call__).parameters
    fixed = {k: params[k].default for k in ("num_inference_steps", "head_steps", "solver", "rerank")}
    model_hash = fingerprint(mm.model)
    model_name = model_name or Path(getattr(mm, "name_or_path", "") or "model").name
    root = Path(out_dir or os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()) / "genkit-images"

    def text_to_image(prompt, seed, num_images, guidance=guidance_default, temperature=temperature_default,
                      negative_prompt="", progress=gr.Progress()):
        try:
            # one str: a list would be drawn as several prompts under one prompt's seed labels (issue 15 #4)
            prompt = check_text("prompt", prompt, mm.model.config.max_text_bytes)
            seed, num_images, guidance, temperature = validate(seed, num_images, guidance, temperature, max_images)
            negative_prompt = negative_prompt or None
            progress(0, desc="drawing")
            t0 = time.perf_counter()
            kw = dict(num_images_per_prompt=num_images, guidance_scale=guidance, temperature=temperature,
                      negative_prompt=negative_prompt)
            images = mm(prompt=prompt, generator=torch.Generator().manual_seed(seed), **kw).images
            wall = time.perf_counter() - t0
        except ValueError as e:
            raise gr.Error(str(e), print_exception=False) from None
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
        return items, f"**wall time:** {wall:.2f} s for {num_images} image{'s' if num_images > 1 else ''}"

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


def build(mm, examples: list[str] | None = None, model_name: str | None = None):
    """Lay out the tab; return its form (prompt, seed, images, guidance, temperature, negative prompt)."""
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
            draw = gr.Button("Draw", variant="primary", elem_id="draw")
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
    draw.click(make_text_to_image(mm, model_name=model_name), inputs=form, outputs=[gallery, info],
               api_name="text_to_image", concurrency_id="model", concurrency_limit=1, preprocess=False)
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
