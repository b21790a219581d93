"""app.py and genkit/ui served for real (tiny random models) and called with gradio_client: files keep their
PNG parameters, bad values are named and the app keeps serving, 20 concurrent calls are all served, a full queue
says so; startup errors."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genkit.png_info import read_parameters
from genkit.ui import build_demo
from genkit.ui.tokenizer import make_tokenize
from ui_helpers import free_port, gradio_env, tiny_pipe  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]
FORM = ("a", 0, 2, "dpmpp_2m", "polynomial", 2.0, 3, 1, 8, 0.0, False, 1.0, 0)  # /generate: the form, preview_every


class served:
    """with served(demo) as client: the demo on a free port and a gradio_client for it, both closed after."""

    def __init__(self, demo):
        self.demo = demo

    def __enter__(self):
        from gradio_client import Client

        _, url, _ = self.demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True)
        self.url = url
        self.client = Client(url, verbose=False)
        return self.client

    def __exit__(self, *exc):
        self.client.close()
        self.demo.close()


def test_served_app_files_keep_parameters_bad_values_named_keeps_serving(tiny_pipe):
    from gradio_client import handle_file
    from PIL import Image

    with served(build_demo(tiny_pipe, max_batch_size=4)) as client:
        gallery, info = client.predict(*FORM, api_name="/generate")    # (the zip is the browser's, after the run)
        assert len(gallery) == 3 and "NFE per image" in info and "device" in info
        for k, item in enumerate(gallery):
            assert item["caption"] == f"seed {k}"
            with Image.open(item["image"]) as im:
                assert im.size == (8, 8)
            assert f"Seed: {k}," in read_parameters(item["image"])    # what the browser downloads has the chunk
        # PNG info: the file's settings come back as the form's values
        out = client.predict(handle_file(gallery[1]["image"]), api_name="/png_info")
        text, form = out[0], list(out[-14:])            # (the selected tab is not an API value)
        assert form == ["a", 0, 2, "dpmpp_2m", "polynomial", 2.0, 3, 1, 8, 0.0, False, 1.0, 0.0, "model"]
        assert "Seed: 1" in text
        # the guidance interval: after the model, so that calls written before it keep their meaning
        gallery, info = client.predict(*FORM, "model", 1.0, api_name="/generate")
        assert "Guidance interval: 0-1" in read_parameters(gallery[0]["image"])
        for bad, name in [(("a", 0, 2, "nope", "polynomial", 2.0, 1, 1, 8, 0.0, False, 1.0, 0), "sampler"),
                          (("a", 0, 0, "euler", "polynomial", 2.0, 1, 1, 8, 0.0, False, 1.0, 0), "steps"),
                          (("a", 0, 2, "euler", "polynomial", 2.0, 9, 1, 8, 0.0, False, 1.0, 0), "batch_size"),
                          (("a", 0, 2, "euler", "polynomial", 1e6, 1, 1, 8, 0.0, False, 1.0, 0), "guidance")]:
            with pytest.raises(Exception, match=f"{name}=.*is not allowed"):
                client.predict(*bad, api_name="/generate")
        gallery, _ = client.predict("c", 7, 1, "euler", "polynomial", 1.0, 1, 1, 8, 0.0, False, 1.0, 0,
                                       api_name="/generate")
        assert len(gallery) == 1 and gallery[0]["caption"] == "seed 7"          # still serving


def test_twenty_concurrent_calls_are_all_served_and_a_full_queue_says_so(tiny_pipe):
    with served(build_demo(tiny_pipe, max_batch_size=4)) as client:
        jobs = [client.submit("a", k, 2, "euler", "polynomial", 1.0, 1, 1, 8, 0.0, False, 1.0, 0,
                              api_name="/generate")
                for k in range(20)]
        results = [j.result(timeout=120) for j in jobs]
        assert [r[0][0]["caption"] for r in results] == [f"seed {k}" for k in range(20)]
    with served(build_demo(tiny_pipe, max_batch_size=4, queue_size=1)) as client:
        jobs = [client.submit("a", k, 60, "heun", "polynomial", 2.0, 2, 2, 8, 0.0, False, 1.0, 0,
                              api_name="/generate")
                for k in range(6)]
        errors = []
        for j in jobs:
            try:
                j.result(timeout=300)
            except Exception as e:  # noqa: BLE001
                errors.append(str(e))
        assert errors and all("queue is full" in e.lower() for e in errors), errors
        assert len(errors) < len(jobs)                                          # the others were served


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


def test_tokenize_handler_crops_encodes_and_decodes(tiny_tokenizer):
    import gradio as gr

    tokenize = make_tokenize(tiny_tokenizer)
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


def test_served_tokenizer_tab(tiny_pipe, tiny_tokenizer, tmp_path):
    from gradio_client import Client, handle_file
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    demo = build_demo(tiny_pipe, max_batch_size=4, tokenizer=tiny_tokenizer, examples=[str(tmp_path / "red.png")])
    _, local_url, _ = demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True)
    client = None
    try:
        client = Client(local_url, verbose=False)
        original, rec, codes, info = client.predict(handle_file(str(tmp_path / "red.png")), api_name="/tokenize")
        with Image.open(original) as im:
            assert im.size == (256, 256)
        assert len(codes["data"]) == 8 and len(codes["data"][0]) == 8 and "codes" in info
        gallery, _ = client.predict("a", 0, 1, "euler", "polynomial", 1.0, 1, 1, 8, 0.0, False, 1.0, 0,
                                       api_name="/generate")   # both tabs serve
        assert len(gallery) == 1
    finally:
        if client is not None:
            client.close()
        demo.close()


