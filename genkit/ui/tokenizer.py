"""The Tokenizer tab: an image's 8x8 grid of VQ codes and the image decoded from them (/tokenize).

    original, reconstruction, codes, info = Client(url).predict(handle_file("emoji.png"), api_name="/tokenize")
"""

from __future__ import annotations

VIEW = 8  # 32x32 images are shown 8x larger, with crisp pixels


def make_tokenize(tokenizer):
    """Handler: an image (H, W, 3|4) uint8 -> (original 32x32, reconstruction, code grid, info). Any image is
    composited on white, center-cropped and resized to the tokenizer's size first."""
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
        big = lambda a: np.asarray(Image.fromarray(a).resize((size * VIEW,) * 2, Image.NEAREST))  # noqa: E731
        return big(small), big(rec), grid, info

    return tokenize


def build(tokenizer, examples: list[str] | None = None):
    import gradio as gr

    gr.Markdown("A VQ tokenizer turns a 32×32 image into an 8×8 grid of discrete codes and back. Upload any "
                "picture (center-cropped and resized to 32×32) or pick an OpenMoji val emoji the tokenizer never "
                "saw in training.")
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
            info = gr.Markdown(elem_id="tok_info")
    go.click(make_tokenize(tokenizer), inputs=[image], outputs=[original, recon, codes, info], api_name="tokenize",
             concurrency_id="model", concurrency_limit=1)
