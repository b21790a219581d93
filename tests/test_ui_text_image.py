"""genkit/ui/text_image.py: draws as `genkit draw` does (one call, one generator), the API has the sliders' bounds,
PNG parameters fill the form back, captions; served with gradio_client."""

import numpy as np
import pytest
import torch

from genkit.png_info import read_parameters
from genkit.ui import build_demo, text_image
from genkit.ui.runner import Stops
from ui_helpers import free_port, gradio_env, no_progress, tiny_mm, tiny_pipe  # noqa: F401  (fixtures)


def draw(mm, *form, **kw):
    """All that the handler yields: the previews, then the final (gallery, info)."""
    return list(text_image.make_text_to_image(mm, max_images=4, **kw)(*form, progress=no_progress))


def test_images_are_genkit_draws_and_carry_their_parameters(tiny_mm):
    outs = draw(tiny_mm, "red apple", 3, 2, 2.0, 0.5, "pear")
    items, info = outs[-1]
    # one preview per AR step (16), captioned with its step, then the PNG files
    assert len(outs) == 17 and outs[0][0][1][1] == "seed 3 · 2/2 · step 1/16" and "step 16/16" in outs[-2][1]
    assert [c for _, c in items] == ["seed 3 · 1/2", "seed 3 · 2/2"] and "wall time" in info
    ref = tiny_mm(prompt="red apple", num_images_per_prompt=2, guidance_scale=2.0, temperature=0.5,
                  negative_prompt="pear", generator=torch.Generator().manual_seed(3)).images
    from PIL import Image
    for (path, _), im in zip(items, ref):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(im))   # the same call as genkit draw
    form = text_image.form_values(read_parameters(items[1][0]))
    assert form == ["red apple", 3, 2, 2.0, 0.5, "pear"]
    again, _ = draw(tiny_mm, *form, 0)[-1]                                     # previews off: one output
    assert open(again[1][0], "rb").read() == open(items[1][0], "rb").read()    # byte-identical regeneration


@pytest.mark.parametrize("args, name", [
    (("", 0, 1, 2.0), "prompt=''"), (("a", 0, 5, 2.0), "num_images=5"), (("a", -1, 1, 2.0), "seed=-1"),
    (("a", 0, 1, -2.0), "guidance=-2.0"), (("a", 0, 1, 1e6), "guidance=1000000.0"),
    (("a", 0, 1, float("nan")), "guidance=nan"), (("a", 0, 1, 2.0, -1.0), "temperature=-1.0"),
    (("a", 0, 1, 2.0, 2.0), "temperature=2.0"), ((["a", "b"], 0, 1, 2.0), "prompt=\\['a', 'b'\\]"),
    (("a", 0, 1, 2.0, 0.7, "y" * 300), "negative_prompt has 300 UTF-8 bytes")])
def test_bad_input_is_named_with_the_sliders_bounds(tiny_mm, args, name):
    import gradio as gr

    with pytest.raises(gr.Error, match=name):
        draw(tiny_mm, *args)


def test_stop_ends_the_draw_within_one_step_and_saves_nothing(tiny_mm):
    """Stop pressed during AR step 3 (in its callback): no 4th step starts, the partial images stay shown, gray
    where no patch is drawn yet, and no PNG is written."""
    stops, steps = Stops(), []

    def count(_module, _args):  # the transformer's forward: one per AR step with guidance off (one run)
        steps.append(1)
        if len(steps) == 4:
            stops.stop("local")
    hook = tiny_mm.model.transformer.register_forward_pre_hook(count)
    try:
        text_image.guard(tiny_mm, stops)
        outs = list(text_image.make_text_to_image(tiny_mm, max_images=4, stops=stops)(
            "a", 0, 2, 1.0, 0.5, "", progress=no_progress))
    finally:
        hook.remove()
    # the prefix pass + steps 1-2 ran; Stop came as step 3's transformer pass began: it did not run, nor any later
    gallery, info = outs[-1]
    assert len(steps) == 4
    assert "stopped" in info and "step 2/16" in info and len(outs) == 3
    assert [c for _, c in gallery] == ["seed 0 · 1/2 · step 2/16", "seed 0 · 2/2 · step 2/16"]
    pixels = np.asarray(gallery[0][0])
    assert (pixels == 128).all(axis=-1).any()                 # masked patches: gray (0 in [-1, 1] -> 128)


def test_caption_handler(tiny_mm):
    import gradio as gr

    assert isinstance(text_image.make_caption(tiny_mm)(np.zeros((48, 40, 4), np.uint8)), str)
    with pytest.raises(gr.Error, match="image is missing"):
        text_image.make_caption(tiny_mm)(None)


def test_defaults_agree_with_genkit_draw_and_bench_mm():
    from genkit.cli import build_parser
    from pipelines.multimodal import DEFAULT_GUIDANCE, DEFAULT_TEMPERATURE

    assert text_image.defaults() == (DEFAULT_GUIDANCE, DEFAULT_TEMPERATURE)
    parser = build_parser()
    for ns in (parser.parse_args(["draw", "--model", "m", "--prompt", "a", "--out", "o"]),
               parser.parse_args(["bench", "mm", "--arm", "a=b", "--out", "o.json"])):
        assert (ns.guidance, ns.temperature) == (DEFAULT_GUIDANCE, DEFAULT_TEMPERATURE)


def test_served_text_and_image_tab(tiny_pipe, tiny_mm, tmp_path):
    from gradio_client import Client, handle_file
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    demo = build_demo(tiny_pipe, max_batch_size=4, mm=tiny_mm)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True)
    client = None
    try:
        client = Client(url, verbose=False)
        gallery, _ = client.predict("red apple", 0, 2, 2.0, 0.5, "", api_name="/text_to_image")
        assert len(gallery) == 2 and "Index: 1" in read_parameters(gallery[1]["image"])
        assert isinstance(client.predict(handle_file(str(tmp_path / "red.png")), api_name="/caption"), str)
        out = client.predict(handle_file(gallery[1]["image"]), api_name="/png_info")   # fills the text tab's form
        assert list(out[-6:]) == ["red apple", 0, 2, 2.0, 0.5, ""]
        for bad, name in [(("", 0, 1, 2.0, 1.0, ""), "prompt=''"), (("a", 0, 1, 1e6, 0.7, ""), "guidance=")]:
            with pytest.raises(Exception, match=name):
                client.predict(*bad, api_name="/text_to_image")
        gallery, _ = client.predict("a", 0, 1, "euler", "polynomial", 1.0, 1, 1, 8, 0.0, False, 1.0, 0,
                                       api_name="/generate")
        assert len(gallery) == 1                                                       # still serving
    finally:
        if client is not None:
            client.close()
        demo.close()
