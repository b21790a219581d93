"""The PNG info tab: drop a PNG made by genkit (the app, `genkit sample`, `genkit draw`), read its `parameters`
chunk, fill the matching tab's form with its settings and switch to it; Generate / Draw then makes the same image.

The PNG arrives as a file (gr.File), not through gr.Image, which would decode and re-encode it and lose the chunk.
"""

from __future__ import annotations

from pathlib import Path

from genkit.png_info import read_parameters

from . import diffusion, text_image


def build(pipe, tabs, diffusion_form: list, text_form: list | None):
    import gradio as gr

    gr.Markdown("Drop a PNG that genkit made: its settings fill the Diffusion (or Text and image) form. Same "
                "settings, same machine: the same bytes.")
    with gr.Row():
        upload = gr.File(label="PNG", file_types=[".png"], type="filepath", elem_id="png_upload")
        text = gr.Textbox(label="parameters", lines=4, interactive=False, elem_id="png_parameters")
    n_text = len(text_form or [])

    def read(path):
        if path is None:
            return [gr.update()] * (2 + len(diffusion_form) + n_text)
        skip_d, skip_t = [gr.update()] * len(diffusion_form), [gr.update()] * n_text
        try:
            params = read_parameters(Path(path))
        except Exception as e:  # noqa: BLE001  (not an image at all)
            raise gr.Error(f"file={Path(path).name!r} is not allowed: a PNG image ({type(e).__name__})",
                           print_exception=False) from None
        if params is None:
            raise gr.Error(f"file={Path(path).name!r} has no `parameters` chunk: a PNG made by genkit",
                           print_exception=False)
        try:
            return [params, gr.Tabs(selected="diffusion"), *diffusion.form_values(params, pipe), *skip_t]
        except ValueError:
            pass
        try:
            if text_form:
                return [params, gr.Tabs(selected="text_image"), *skip_d, *text_image.form_values(params)]
        except ValueError:
            pass
        gr.Warning("this PNG's settings do not fit a tab of this app (another model or kind of image)")
        return [params, gr.update(), *skip_d, *skip_t]

    upload.change(read, [upload], [text, tabs, *diffusion_form, *(text_form or [])], api_name="png_info",
                  queue=False)
