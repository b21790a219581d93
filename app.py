"""Gradio app for a genkit pipeline: pick a class, seed, steps, solver and guidance, get a batch of images.

    python app.py                                   # weights/openmoji-32 on http://127.0.0.1:7860
    python app.py --model DIR --host 0.0.0.0 --port 7861 --device cuda
    python app.py --tokenizer DIR                   # the Tokenizer tab's model (default weights/openmoji-vq)
    python app.py --mm DIR                          # the Text and image tab's model (default weights/openmoji-mm)

The event is exposed as the API endpoint /generate:

    from gradio_client import Client
    gallery, info = Client("http://127.0.0.1:7860/").predict(
        "face-smiling", 0, 20, "dpmpp_2m", 2.0, 4, api_name="/generate")

The Tokenizer tab (API endpoint /tokenize) shows an image's 8x8 grid of VQ codes and its reconstruction:

    original, reconstruction, codes, info = Client(url).predict(handle_file("emoji.png"), api_name="/tokenize")

The Text and image tab (endpoints /text_to_image and /caption) runs the multimodal AR model both ways:

    gallery, info = Client(url).predict("red apple", 0, 4, 3.0, api_name="/text_to_image")
    caption = Client(url).predict(handle_file("emoji.png"), api_name="/caption")

Image k of a batch uses seed + k, so it is the same image as `genkit sample --seed SEED` gives for that seed.
Bad input is answered with an error naming the parameter, the value and what is allowed; the app keeps serving.
Environment: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT set the defaults of --host / --port. The app never
opens a share link and runs offline (GRADIO_ANALYTICS_ENABLED=False and HF_HUB_OFFLINE=1 unless set).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Before gradio / diffusers are imported: no analytics, no hub access.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

UNCONDITIONAL = "(unconditional)"
DEFAULT_CLASS = "face-smiling"
DEFAULT_SOLVER = "dpmpp_2m"
MAX_STEPS = 100
MAX_GUIDANCE = 8.0
MAX_SEED = 2**63 - 1
MM_GUIDANCE, MM_TEMPERATURE = 5.0, 0.7  # = pipelines.multimodal.DEFAULT_* (kept light here; a test checks)
# 32x32 images: show them with crisp pixels when the browser scales them up. theme/css go to launch() in Gradio 6.
CSS = "#gallery img, .pixelated img { image-rendering: pixelated; }"
TOKENIZER_VIEW = 8  # the tokenizer tab shows 32x32 images 8x larger

# gradio and torch are imported inside the functions below so that `python app.py --help` and a bad --model
# fail fast, before the slow imports.


def class_choices(pipe) -> list[str]:
    """Dropdown choices: "(unconditional)" then the model's class names (or ids when it has no names)."""
    n = pipe.num_classes
    names = list(pipe.config.class_names or [str(i) for i in range(n)]) if n else []
    return [UNCONDITIONAL] + names


def _as_int(name: str, value, lo: int, hi: int) -> int:
    """An int (or an integral float, as JSON numbers may arrive) in [lo, hi], else ValueError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
    if not ok or not lo <= value <= hi:
        raise ValueError(f"{name}={value!r} is not allowed: an int in [{lo}, {hi}]")
    return int(value)


def validate(pipe, class_name, seed, steps, solver, guidance, batch_size, max_batch_size: int = 16):
    """Check the widget values; return them normalised, or raise ValueError naming the bad parameter."""
    from genkit.sampling import available_solvers

    choices = class_choices(pipe)
    if class_name not in choices:
        shown = ", ".join(repr(c) for c in choices[:5]) + (", ..." if len(choices) > 5 else "")
        raise ValueError(f"class={class_name!r} is not allowed: one of {len(choices)} names ({shown})")
    batch_size = _as_int("batch_size", batch_size, 1, max_batch_size)
    seed = _as_int("seed", seed, 0, MAX_SEED - (batch_size - 1))
    steps = _as_int("steps", steps, 1, MAX_STEPS)
    solvers = available_solvers(pipe.config._name_or_path)
    if solver not in solvers:
        raise ValueError(f"solver={solver!r} is not allowed: one of {', '.join(solvers)}")
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0 <= guidance <= MAX_GUIDANCE:
        raise ValueError(f"guidance={guidance!r} is not allowed: a number in [0, {MAX_GUIDANCE:g}] (1 = off)")
    return class_name, seed, steps, solver, float(guidance), batch_size


def make_generate(pipe, max_batch_size: int = 16):
    """The event handler, a plain function of the widget values -> (gallery items, info markdown)."""
    import gradio as gr
    import torch

    # Progress is reported from the pipeline's step callback rather than with gr.Progress(track_tqdm=True):
    # tqdm tracking picks up two bars per call (the pipeline's and the solver loop's disabled one) and shows
    # one stuck at 0 and the other running to twice the step count.
    def generate(class_name, seed, steps, solver, guidance, batch_size, progress=gr.Progress()):
        try:
            class_name, seed, steps, solver, guidance, batch_size = validate(
                pipe, class_name, seed, steps, solver, guidance, batch_size, max_batch_size)
            conditional = class_name != UNCONDITIONAL
            label = class_name if conditional else None
            # Guidance between the null class and itself changes nothing but doubles the cost: skip it.
            scale = guidance if conditional and pipe.num_classes else 1.0
            device = pipe.device
            gens = [torch.Generator(device).manual_seed(seed + k) for k in range(batch_size)]

            def on_step(_pipe, i, _sigma, _tensors):
                progress((i + 1, steps), desc="sampling", unit="steps")

            t0 = time.perf_counter()
            out = pipe(batch_size=batch_size, num_inference_steps=steps, solver=solver, guidance_scale=scale,
                       class_labels=label, generator=gens, callback_on_step_end=on_step,
                       callback_on_step_end_tensor_inputs=[])
            wall = time.perf_counter() - t0
        except ValueError as e:
            raise gr.Error(str(e), print_exception=False) from None
        items = [(img, f"seed {seed + k}") for k, img in enumerate(out.images)]
        note = "" if scale == guidance else " (guidance not used for unconditional samples)"
        info = (f"**NFE per image:** {out.nfe} · **wall time:** {wall:.2f} s for {batch_size} image"
                f"{'s' if batch_size > 1 else ''} · **device:** {device}{note}")
        return items, info

    return generate


def make_tokenize(tokenizer):
    """The Tokenizer tab's handler: an image (H, W, 3|4) uint8 -> (original 32x32, reconstruction, code grid,
    info). Any image is composited on white, center-cropped and resized to the tokenizer's size first."""
    import gradio as gr
    import numpy as np
    import torch
    from PIL import Image

    from genkit.data.folder import square_rgb

    size = tokenizer.config.image_size

    def tokenize(image):
        if image is None:
            raise gr.Error("image is missing: upload an image or pick one of the examples", print_exception=False)
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or arr.dtype != np.uint8:
            raise gr.Error(f"image of shape {arr.shape} and dtype {arr.dtype} is not allowed: an RGB or RGBA "
                           "picture", print_exception=False)
        small = square_rgb(Image.fromarray(arr), size)
        x = torch.from_numpy(small).permute(2, 0, 1).unsqueeze(0)
        codes = tokenizer.encode(x)
        rec = ((tokenizer.decode(codes)[0].permute(1, 2, 0).cpu() + 1) * 127.5).round().clamp(0, 255)
        rec = rec.to(torch.uint8).numpy()
        mse = float(np.mean(((rec.astype(np.float32) - small) / 127.5) ** 2))
        grid = codes[0].tolist()
        used = len({c for row in grid for c in row})
        info = (f"**{len(grid)}x{len(grid[0])} codes** from a codebook of {tokenizer.codebook_size}; "
                f"{used} distinct codes in this image · reconstruction MSE {mse:.4f} (pixels in [-1, 1])")
        big = lambda a: np.asarray(Image.fromarray(a).resize((size * TOKENIZER_VIEW,) * 2, Image.NEAREST))  # noqa: E731
        return big(small), big(rec), grid, info

    return tokenize


def make_text_to_image(mm, max_images: int = 16):
    """Handler: (prompt, seed, number of images, guidance, temperature, negative prompt) -> (gallery items, info).
    Image k uses seed + k; a blank negative prompt means guidance against the unconditional model."""
    import gradio as gr
    import torch

    def text_to_image(prompt, seed, num_images, guidance, temperature=MM_TEMPERATURE, negative_prompt="",
                      progress=gr.Progress()):
        try:
            num_images = _as_int("num_images", num_images, 1, max_images)
            seed = _as_int("seed", seed, 0, MAX_SEED - num_images)
            t0 = time.perf_counter()
            images = []
            for k in range(num_images):  # one generator per image: image k depends on seed + k only
                progress((k, num_images), desc="drawing", unit="images")
                images += mm(prompt=prompt, num_images_per_prompt=1, guidance_scale=guidance,
                             temperature=temperature, negative_prompt=negative_prompt or None,
                             generator=torch.Generator().manual_seed(seed + k)).images
            wall = time.perf_counter() - t0
        except ValueError as e:
            raise gr.Error(str(e), print_exception=False) from None
        return [(im, f"seed {seed + k}") for k, im in enumerate(images)], f"**wall time:** {wall:.2f} s"

    return text_to_image


def make_caption(mm):
    """Handler: an image (any size, RGB or RGBA) -> the model's caption (center-cropped, resized to 32x32)."""
    import gradio as gr
    import numpy as np
    from PIL import Image

    from genkit.data.folder import square_rgb

    def caption(image):
        if image is None:
            raise gr.Error("image is missing: upload an image", print_exception=False)
        return mm.caption(square_rgb(Image.fromarray(np.asarray(image)), mm.model.config.image_size))[0]

    return caption


def build_demo(pipe, max_batch_size: int = 16, tokenizer=None, examples: list[str] | None = None, mm=None):
    """The gr.Blocks UI for `pipe` (a PixelDiffusionPipeline) and, when given, a Tokenizer tab for `tokenizer`
    (a VQTokenizer) with example image files, and a Text and image tab for `mm` (a MultimodalARPipeline);
    launch it with demo.launch(css=CSS, ...)."""
    import gradio as gr

    from genkit.sampling import available_solvers

    choices = class_choices(pipe)
    default_class = DEFAULT_CLASS if DEFAULT_CLASS in choices else choices[min(1, len(choices) - 1)]
    size = pipe.unet.config.sample_size
    generate = make_generate(pipe, max_batch_size)

    with gr.Blocks(title="genkit") as demo:
        gr.Markdown(f"# genkit\n"
                    f"Class-conditional {size}×{size} emoji from a small pixel-space diffusion model"
                    f"{', a VQ tokenizer' if tokenizer is not None else ''}"
                    f"{' and a text-and-image transformer' if mm is not None else ''}. "
                    f"Training images: [OpenMoji](https://openmoji.org), licensed CC BY-SA 4.0.")
        with gr.Tab("Diffusion"), gr.Row():
            with gr.Column(scale=1, min_width=280):
                cls = gr.Dropdown(choices, value=default_class, label="Class", elem_id="class")
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed (image k uses seed + k)",
                                 elem_id="seed")
                steps = gr.Slider(1, MAX_STEPS, value=20, step=1, label="Steps", elem_id="steps")
                solver = gr.Dropdown(available_solvers(pipe.config._name_or_path), value=DEFAULT_SOLVER, label="Solver", elem_id="solver")
                guidance = gr.Slider(0, MAX_GUIDANCE, value=2.0, step=0.1, label="Guidance (1 = off)",
                                     elem_id="guidance")
                batch = gr.Slider(1, max_batch_size, value=min(4, max_batch_size), step=1, label="Batch size",
                                  elem_id="batch_size")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                gallery = gr.Gallery(label="Samples", columns=4, format="png", object_fit="contain",
                                     height="auto", elem_id="gallery")
                info = gr.Markdown(elem_id="info")
        # preprocess=False: the handler gets the raw values and checks them itself, so a bad value sent through
        # the API is answered with the parameter's name rather than the components' anonymous range errors.
        button.click(generate, inputs=[cls, seed, steps, solver, guidance, batch], outputs=[gallery, info],
                     api_name="generate", concurrency_limit=1, preprocess=False)
        if tokenizer is not None:
            tokenize = make_tokenize(tokenizer)
            with gr.Tab("Tokenizer"):
                gr.Markdown("A VQ tokenizer turns a 32×32 image into an 8×8 grid of discrete codes and back. "
                            "Upload any picture (center-cropped and resized to 32×32) or pick an OpenMoji "
                            "val emoji the tokenizer never saw in training.")
                with gr.Row():
                    with gr.Column(scale=1, min_width=280):
                        image = gr.Image(type="numpy", image_mode="RGBA", label="Image", elem_id="tok_input")
                        if examples:
                            gr.Examples(examples=[[e] for e in examples], inputs=[image], label="OpenMoji val")
                        go = gr.Button("Tokenize", variant="primary", elem_id="tokenize")
                    with gr.Column(scale=2):
                        with gr.Row():
                            original = gr.Image(label="Input at 32×32", elem_classes="pixelated", format="png")
                            recon = gr.Image(label="Decoded from the codes", elem_classes="pixelated", format="png")
                        codes = gr.Dataframe(label="Code ids (8×8)", interactive=False, elem_id="codes")
                        tok_info = gr.Markdown(elem_id="tok_info")
                go.click(tokenize, inputs=[image], outputs=[original, recon, codes, tok_info], api_name="tokenize",
                         concurrency_limit=1)
        if mm is not None:
            with gr.Tab("Text and image"):
                gr.Markdown("One transformer reads and writes both: type an emoji name to draw it, or give it an "
                            "image to name.")
                with gr.Row():
                    with gr.Column(scale=1, min_width=280):
                        prompt = gr.Textbox(value="red apple", label="Prompt (an emoji name)", elem_id="prompt")
                        mm_seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="mm_seed")
                        mm_num = gr.Slider(1, 16, value=4, step=1, label="Images", elem_id="mm_num")
                        mm_guidance = gr.Slider(0, MAX_GUIDANCE, value=MM_GUIDANCE, step=0.1,
                                                label="Guidance", elem_id="mm_guidance")
                        mm_temperature = gr.Slider(0, 1.5, value=MM_TEMPERATURE, step=0.05,
                                                   label="Temperature (noise scale of the diffusion head)",
                                                   elem_id="mm_temperature")
                        mm_negative = gr.Textbox(value="", label="Negative prompt (optional: what guidance pushes "
                                                 "away from)", elem_id="mm_negative")
                        draw = gr.Button("Draw", variant="primary", elem_id="draw")
                    with gr.Column(scale=2):
                        mm_gallery = gr.Gallery(label="Drawn", columns=4, format="png", elem_classes="pixelated")
                        mm_info = gr.Markdown()
                with gr.Row():
                    to_caption = gr.Image(type="numpy", image_mode="RGBA", label="Image to caption")
                    with gr.Column():
                        name_it = gr.Button("Caption", elem_id="caption")
                        caption_out = gr.Textbox(label="Caption", interactive=False, elem_id="caption_out")
                draw.click(make_text_to_image(mm), inputs=[prompt, mm_seed, mm_num, mm_guidance, mm_temperature,
                                                           mm_negative],
                           outputs=[mm_gallery, mm_info], api_name="text_to_image", concurrency_limit=1,
                           preprocess=False)
                name_it.click(make_caption(mm), inputs=[to_caption], outputs=[caption_out], api_name="caption",
                              concurrency_limit=1)
    return demo


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"--port={text!r} is not allowed: an int in [1, 65535]")
    return value


def _batch_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"--max-batch-size={text!r} is not allowed: an int in [1, 1024]")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="app.py", description="Serve a genkit pipeline as a Gradio app (local only, "
                                "no share link).", formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    p.add_argument("--model", default="weights/openmoji-32", metavar="DIR",
                   help="pipeline folder (default: weights/openmoji-32)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1", metavar="H",
                   help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1; 0.0.0.0 in Docker)")
    p.add_argument("--port", type=_port, default=os.environ.get("GRADIO_SERVER_PORT") or "7860", metavar="P",
                   help="port (default: $GRADIO_SERVER_PORT or 7860)")
    p.add_argument("--device", default=None, metavar="D", help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--max-batch-size", type=_batch_limit, default=16, metavar="N",
                   help="largest batch the UI allows (default 16)")
    p.add_argument("--tokenizer", default="weights/openmoji-vq", metavar="DIR",
                   help="VQ tokenizer folder for the Tokenizer tab (default: weights/openmoji-vq; "
                        "the tab is left out if the folder is missing)")
    p.add_argument("--mm", default="weights/openmoji-mm", metavar="DIR",
                   help="multimodal model folder for the Text and image tab (default: weights/openmoji-mm; "
                        "the tab is left out if the folder is missing)")
    return p


def _fail(message: str, code: int = 2):
    print(f"app.py: error: {' '.join(str(message).split())}", file=sys.stderr)  # one line
    sys.exit(code)


def _load_optional(folder: str, flag: str, tab: str, load):
    """A model for an optional tab: None (with a note) if the folder is missing; a one-line exit if damaged."""
    if not os.path.isdir(folder):
        print(f"app.py: note: nothing at --{flag}={folder!r}; the {tab} tab is left out", file=sys.stderr)
        return None
    try:
        return load(folder)
    except Exception as e:  # noqa: BLE001  (any load failure: a damaged folder)
        _fail(f"--{flag}={folder!r} could not be loaded ({type(e).__name__}: {e})")


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if not os.path.isdir(args.model):  # answered before the slow imports (torch, diffusers, gradio)
        _fail(f"--model={args.model!r} is not a folder: give a pipeline folder such as weights/openmoji-32")
    from genkit.commands.common import load_pipeline, pick_device

    try:
        pipe = load_pipeline(args.model, pick_device(args.device))
    except ValueError as e:
        _fail(e)
    from genkit.vq import VQTokenizer
    from pipelines.multimodal import MultimodalARPipeline

    tokenizer = _load_optional(args.tokenizer, "tokenizer", "Tokenizer",
                               lambda d: VQTokenizer.from_pretrained(d, local_files_only=True).eval())
    examples = sorted(str(p) for p in Path(args.tokenizer, "examples").glob("*.png")) or None
    mm = _load_optional(args.mm, "mm", "Text and image",
                        lambda d: MultimodalARPipeline.from_pretrained(d, local_files_only=True).to(pipe.device))
    demo = build_demo(pipe, args.max_batch_size, tokenizer, examples, mm)
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=False, css=CSS)
    except OSError as e:  # port in use, address not available
        _fail(f"cannot serve on {args.host}:{args.port} ({e})", 1)


if __name__ == "__main__":
    main()
