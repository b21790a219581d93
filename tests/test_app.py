"""app.py: the Gradio app served for real (tiny random model) and called with gradio_client; startup errors."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genkit.scheduler import GenkitScheduler
from pipelines.pixel_diffusion import PixelDiffusionPipeline
from helpers import CLASS_NAMES, tiny_unet

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def gradio_env(tmp_path_factory):
    old = {k: os.environ.get(k) for k in ("GRADIO_ANALYTICS_ENABLED", "GRADIO_TEMP_DIR")}
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio"))
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def app():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import app as app_module
    return app_module


@pytest.fixture(scope="module")
def tiny_pipe():
    pipe = PixelDiffusionPipeline(tiny_unet(4), GenkitScheduler(image_size=8), class_names=CLASS_NAMES)
    pipe.set_progress_bar_config(disable=True)
    # One intra-op thread: this tiny net gains nothing from more, and on a busy 2-core box (a training job
    # beside the tests) two spinning threads make each call ~100x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield pipe
    torch.set_num_threads(threads)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_handler_matches_per_seed_pipeline_calls(app, tiny_pipe):
    generate = app.make_generate(tiny_pipe, max_batch_size=4)
    items, info = generate("b", 5, 3, "heun", 2.0, 3)
    assert [c for _, c in items] == ["seed 5", "seed 6", "seed 7"]
    assert "NFE per image:** 10" in info  # heun: 2*3-1 = 5 evaluations, x2 for guidance
    for k, (img, _) in enumerate(items):  # image k == a batch-of-one call with seed 5+k (as `genkit sample`)
        ref = tiny_pipe(num_inference_steps=3, solver="heun", guidance_scale=2.0, class_labels="b",
                        generator=[torch.Generator().manual_seed(5 + k)]).images[0]
        assert img.size == (8, 8) and np.array_equal(np.asarray(img), np.asarray(ref))
    calls = []
    items, info = generate(app.UNCONDITIONAL, 0, 2, "euler", 2.0, 1,  # guidance skipped: no doubled NFE
                           progress=lambda p, **kw: calls.append(p))
    assert len(items) == 1 and "NFE per image:** 2" in info and calls == [(1, 2), (2, 2)]


@pytest.mark.parametrize("args, name", [
    (("a", 0, 0, "euler", 1.0, 1), "steps=0"),
    (("a", 0, 2.5, "euler", 1.0, 1), "steps=2.5"),
    (("a", 0, 2, "nope", 1.0, 1), "solver='nope'"),
    (("zzz", 0, 2, "euler", 1.0, 1), "class='zzz'"),
    (("a", 0, 2, "euler", 1.0, 5), "batch_size=5"),
    (("a", 0, 2, "euler", -1.0, 1), "guidance=-1.0"),
    (("a", -3, 2, "euler", 1.0, 1), "seed=-3"),
    (("a", None, 2, "euler", 1.0, 1), "seed=None"),
])
def test_handler_rejects_bad_input_with_named_parameter(app, tiny_pipe, args, name):
    import gradio as gr

    with pytest.raises(gr.Error, match="is not allowed") as err:
        app.make_generate(tiny_pipe, max_batch_size=4)(*args)
    assert name in str(err.value)


def test_served_app_generates_rejects_and_keeps_serving(app, tiny_pipe):
    from gradio_client import Client
    from PIL import Image

    demo = app.build_demo(tiny_pipe, max_batch_size=4)
    _, local_url, _ = demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True)
    client = None
    try:
        client = Client(local_url, verbose=False)
        gallery, info = client.predict("a", 0, 2, "dpmpp_2m", 2.0, 3, api_name="/generate")
        assert len(gallery) == 3 and "NFE per image" in info and "device" in info
        for k, item in enumerate(gallery):
            assert item["caption"] == f"seed {k}"
            with Image.open(item["image"]) as im:
                assert im.size == (8, 8)
        for bad, name in [(("a", 0, 2, "nope", 2.0, 1), "solver"), (("a", 0, 0, "euler", 2.0, 1), "steps"),
                          (("a", 0, 2, "euler", 2.0, 9), "batch_size")]:
            with pytest.raises(Exception, match=f"{name}=.*is not allowed"):
                client.predict(*bad, api_name="/generate")
        gallery, _ = client.predict("c", 7, 1, "euler", 1.0, 1, api_name="/generate")  # still serving
        assert len(gallery) == 1 and gallery[0]["caption"] == "seed 7"
    finally:
        if client is not None:
            client.close()
        demo.close()


def run_app(*args):
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def test_missing_model_exits_2_with_one_line_error():
    res = run_app("--model", "/nonexistent")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("app.py: error: --model='/nonexistent'"), res.stderr


def test_corrupt_model_exits_2_with_one_line_error(tmp_path):
    (tmp_path / "model_index.json").write_text('{"_class_name": "PixelDiffusionPipeline",\n truncated')
    res = run_app("--model", str(tmp_path), "--device", "cpu")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not be loaded" in lines[0] and "corrupt" in lines[0], res.stderr


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from genkit.vq import VQTokenizer

    torch.manual_seed(0)
    return VQTokenizer(channels=(8, 8, 8), latent_dim=4, codebook_size=16).eval()


def test_tokenize_handler_crops_encodes_and_decodes(app, tiny_tokenizer):
    import gradio as gr

    tokenize = app.make_tokenize(tiny_tokenizer)
    rgba = np.zeros((40, 60, 4), np.uint8)                     # transparent, not square: white, center-cropped
    original, rec, grid, info = tokenize(rgba)
    assert original.shape == rec.shape == (256, 256, 3) and (original == 255).all()
    codes = tiny_tokenizer.encode(torch.full((1, 3, 32, 32), 255, dtype=torch.uint8))[0].tolist()
    assert grid == codes and "8x8 codes" in info and "codebook of 16" in info
    expected = ((tiny_tokenizer.decode(torch.tensor([codes]))[0].permute(1, 2, 0) + 1) * 127.5).round()
    assert np.array_equal(rec[::8, ::8], expected.to(torch.uint8).numpy())   # shown 8x larger, nearest
    with pytest.raises(gr.Error, match="image is missing"):
        tokenize(None)
    with pytest.raises(gr.Error, match="is not allowed"):
        tokenize(np.zeros((4, 4), np.float32))


def test_served_tokenizer_tab(app, tiny_pipe, tiny_tokenizer, tmp_path):
    from gradio_client import Client, handle_file
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    demo = app.build_demo(tiny_pipe, max_batch_size=4, tokenizer=tiny_tokenizer, examples=[str(tmp_path / "red.png")])
    _, local_url, _ = demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True)
    client = None
    try:
        client = Client(local_url, verbose=False)
        original, rec, codes, info = client.predict(handle_file(str(tmp_path / "red.png")), api_name="/tokenize")
        with Image.open(original) as im:
            assert im.size == (256, 256)
        assert len(codes["data"]) == 8 and len(codes["data"][0]) == 8 and "codes" in info
        gallery, _ = client.predict("a", 0, 1, "euler", 1.0, 1, api_name="/generate")   # both tabs serve
        assert len(gallery) == 1
    finally:
        if client is not None:
            client.close()
        demo.close()


@pytest.fixture(scope="module")
def tiny_mm():
    from genkit.mm import MultimodalAR
    from pipelines.multimodal import MultimodalARPipeline

    torch.manual_seed(0)
    model = MultimodalAR(d_model=32, n_layers=1, n_heads=2, head_width=32, head_depth=1, max_text_bytes=16)
    return MultimodalARPipeline(model=model.eval())


def test_multimodal_defaults_agree_everywhere(app):
    """The app, `genkit draw` and `genkit bench mm` sample with the pipeline's measured defaults."""
    from genkit.cli import build_parser
    from pipelines.multimodal import DEFAULT_GUIDANCE, DEFAULT_TEMPERATURE

    assert (app.MM_GUIDANCE, app.MM_TEMPERATURE) == (DEFAULT_GUIDANCE, DEFAULT_TEMPERATURE)
    parser = build_parser()
    draw = parser.parse_args(["draw", "--model", "m", "--prompt", "a", "--out", "o"])
    bench = parser.parse_args(["bench", "mm", "--arm", "a=b", "--out", "o.json"])
    for ns in (draw, bench):
        assert (ns.guidance, ns.temperature) == (DEFAULT_GUIDANCE, DEFAULT_TEMPERATURE)


def test_text_and_image_handlers(app, tiny_mm):
    import gradio as gr

    items, info = app.make_text_to_image(tiny_mm, max_images=4)("red apple", 3, 2, 2.0)
    assert [c for _, c in items] == ["seed 3", "seed 4"] and "wall time" in info
    one = tiny_mm(prompt="red apple", guidance_scale=2.0, generator=torch.Generator().manual_seed(4)).images[0]
    assert np.array_equal(np.asarray(items[1][0]), np.asarray(one))            # image k == seed + k alone
    cool, _ = app.make_text_to_image(tiny_mm, max_images=4)("red apple", 3, 2, 2.0, 0.5)
    colder = tiny_mm(prompt="red apple", guidance_scale=2.0, temperature=0.5,
                     generator=torch.Generator().manual_seed(4)).images[0]
    assert np.array_equal(np.asarray(cool[1][0]), np.asarray(colder))          # the temperature reaches the model
    for args, name in [(("", 0, 1, 2.0), "prompt=''"), (("a", 0, 5, 2.0), "num_images=5"),
                       (("a", -1, 1, 2.0), "seed=-1"), (("a", 0, 1, -2.0), "guidance=-2.0"),
                       (("a", 0, 1, float("nan")), "guidance=nan"), ((["a", "b"], 0, 1, 2.0), r"prompt=\['a', 'b'\]"),
                       (("a", 0, 1, 2.0, -1.0), "temperature=-1.0"),
                       (("a", 0, 1, 2.0, 0.7, "y" * 300), "negative_prompt='yyyy.*at most 16 UTF-8 bytes")]:
        with pytest.raises(gr.Error, match=name):
            app.make_text_to_image(tiny_mm, max_images=4)(*args)
    text = app.make_caption(tiny_mm)(np.zeros((48, 40, 4), np.uint8))
    assert isinstance(text, str)
    with pytest.raises(gr.Error, match="image is missing"):
        app.make_caption(tiny_mm)(None)


def test_served_text_and_image_tab(app, tiny_pipe, tiny_mm, tmp_path):
    from gradio_client import Client, handle_file
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    demo = app.build_demo(tiny_pipe, max_batch_size=4, mm=tiny_mm)
    _, local_url, _ = demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True)
    client = None
    try:
        client = Client(local_url, verbose=False)
        gallery, info = client.predict("red apple", 0, 2, 2.0, 0.5, api_name="/text_to_image")
        assert len(gallery) == 2 and gallery[1]["caption"] == "seed 1"
        gallery, _ = client.predict("red apple", 0, 1, 2.0, 0.5, "green apple", api_name="/text_to_image")
        assert len(gallery) == 1
        assert isinstance(client.predict(handle_file(str(tmp_path / "red.png")), api_name="/caption"), str)
        with pytest.raises(Exception, match="prompt=''"):
            client.predict("", 0, 1, 2.0, 1.0, api_name="/text_to_image")
        gallery, _ = client.predict("a", 0, 1, "euler", 1.0, 1, api_name="/generate")     # still serving
        assert len(gallery) == 1
    finally:
        if client is not None:
            client.close()
        demo.close()
