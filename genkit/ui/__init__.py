"""The Gradio UI, one module per tab; app.py loads the models and calls build_demo.

    demo = build_demo(pipe, tokenizer=tok, examples=[...], mm=mm_pipe)
    demo.queue(max_size=QUEUE_SIZE).launch(css=CSS)

Model-bound events share one concurrency group ("model", one at a time: a CPU box gains nothing from two runs
side by side and a GPU's memory stays bounded); the queue holds up to QUEUE_SIZE waiting calls and answers the
next one with Gradio's "queue is full" error instead of letting memory grow.
"""

from __future__ import annotations

from .options import QUEUE_SIZE

# 32x32 images: crisp pixels when the browser scales them up. theme/css go to launch() in Gradio 6.
CSS = ".pixelated img { image-rendering: pixelated; }"


def build_demo(pipe, max_batch_size: int = 16, tokenizer=None, examples: list[str] | None = None, mm=None,
               model_name: str | None = None, queue_size: int = QUEUE_SIZE):
    """The gr.Blocks UI for `pipe` (a PixelDiffusionPipeline), plus a Tokenizer tab for `tokenizer` (a
    VQTokenizer, with example image files) and a Text and image tab for `mm` (a MultimodalARPipeline) when given;
    a PNG info tab always. Launch with demo.launch(css=CSS, ...)."""
    import gradio as gr

    from . import diffusion, png_info_tab, text_image
    from . import tokenizer as tokenizer_tab
    from .runner import Stops

    size = pipe.unet.config.sample_size
    stops = Stops()
    stops.guard(pipe.unet)
    with gr.Blocks(title="genkit") as demo:
        gr.Markdown(f"# genkit\nClass-conditional {size}×{size} emoji from a small pixel-space diffusion model"
                    f"{', a VQ tokenizer' if tokenizer is not None else ''}"
                    f"{' and a text-and-image transformer' if mm is not None else ''}. "
                    f"Training images: [OpenMoji](https://openmoji.org), licensed CC BY-SA 4.0.")
        with gr.Tabs() as tabs:
            with gr.Tab("Diffusion", id="diffusion"):
                diffusion_form = diffusion.build(pipe, stops, max_batch_size, model_name)
            text_form = None
            if mm is not None:
                with gr.Tab("Text and image", id="text_image"):
                    text_form = text_image.build(mm, examples)
            if tokenizer is not None:
                with gr.Tab("Tokenizer", id="tokenizer"):
                    tokenizer_tab.build(tokenizer, examples)
            with gr.Tab("PNG info", id="png_info"):
                png_info_tab.build(pipe, tabs, diffusion_form, text_form)
    demo.queue(max_size=queue_size)
    return demo
