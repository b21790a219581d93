"""genkit/png_info.py: the A1111 `parameters` chunk round-trips; `genkit sample` / `genkit draw` write it."""

import io

import pytest
import torch
from PIL import Image

from genkit.png_info import (diffusion_settings, fingerprint, format_parameters, parse_parameters, png_bytes,
                             read_parameters)
from helpers import run_cli, save_tiny_pipeline, tiny_unet


def test_format_parse_round_trip_with_quoting_and_negative_prompt():
    settings = {"Steps": 20, "Sampler": "dpmpp_2m", "CFG scale": 2.0, "Seed": 5, "Odd": 'a, b: "c"', "Gone": None}
    text = format_parameters("flag: Japan", settings, "green, apple")
    assert text.splitlines()[0] == "flag: Japan" and text.splitlines()[1] == "Negative prompt: green, apple"
    assert "Gone" not in text
    prompt, negative, kv = parse_parameters(text)
    assert (prompt, negative) == ("flag: Japan", "green, apple")
    assert kv == {"Steps": "20", "Sampler": "dpmpp_2m", "CFG scale": "2.0", "Seed": "5", "Odd": 'a, b: "c"'}


def test_parses_an_automatic1111_line():
    text = ("a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, "
            "Seed: 123, Size: 512x512, Model hash: 6ce0161689, Model: v1-5, Version: v1.6.0")
    prompt, negative, kv = parse_parameters(text)
    assert prompt == "a cat" and negative == "blurry" and kv["Sampler"] == "Euler a" and kv["Size"] == "512x512"


@pytest.mark.parametrize("text", ["", "just a prompt", "prompt\n,,,"])
def test_bad_text_is_a_value_error_naming_parameters(text):
    with pytest.raises(ValueError, match="parameters=.*is not allowed"):
        parse_parameters(text)


def test_png_bytes_carry_the_chunk_and_are_deterministic():
    im = Image.new("RGB", (4, 4), (10, 20, 30))
    a, b = png_bytes(im, "x\nSeed: 1"), png_bytes(im, "x\nSeed: 1")
    assert a == b and read_parameters(a) == "x\nSeed: 1" and read_parameters(io.BytesIO(a)) == "x\nSeed: 1"
    assert read_parameters(png_bytes(im)) is None


def test_fingerprint_follows_the_weights():
    a, b = tiny_unet(4, seed=0), tiny_unet(4, seed=0)
    assert fingerprint(a) == fingerprint(b) and len(fingerprint(a)) == 12
    with torch.no_grad():
        b.conv_in.weight[0, 0, 0, 0] += 1e-3
    assert fingerprint(a) != fingerprint(b)


def test_genkit_sample_writes_the_chunk_each_image_its_own_seed(tmp_path, capsys):
    from genkit.loading import load_pipeline

    model = save_tiny_pipeline(tmp_path / "m")
    run_cli(capsys, "sample", "--model", model, "--out", str(tmp_path / "o"), "--num", "2", "--seed", "7",
            "--steps", "2", "--class", "b", "--solver", "euler")
    prompt, _, kv = parse_parameters(read_parameters(tmp_path / "o" / "000008.png"))
    pipe = load_pipeline(model)
    assert prompt == "b" and kv["Seed"] == "8" and kv["Steps"] == "2" and kv["Sampler"] == "euler"
    assert kv["CFG scale"] == "2.0" and kv["Size"] == "8x8" and kv["Model hash"] == fingerprint(pipe.unet)
    assert kv == {k: str(v) for k, v in diffusion_settings(
        steps=2, solver="euler", grid="polynomial", guidance=2.0, seed=8, size=8, model_hash=kv["Model hash"],
        model="m", **{"Batch size": 2, "Batch pos": 1}).items()}   # batched (the default): seeds 7, 8 in one batch


def test_genkit_draw_writes_the_chunk_with_seed_images_and_index(tmp_path, capsys):
    from genkit.mm import MultimodalAR
    from pipelines.multimodal import MultimodalARPipeline

    torch.manual_seed(0)
    model = MultimodalAR(d_model=32, n_layers=1, n_heads=2, head_width=32, head_depth=1, max_text_bytes=16)
    MultimodalARPipeline(model=model.eval()).save_pretrained(tmp_path / "mm")
    rc, _, err = run_cli(capsys, "draw", "--model", tmp_path / "mm", "--prompt", "red apple", "--num", 2,
                         "--steps", 2, "--head-steps", 2, "--seed", 3, "--negative-prompt", "pear", "--device", "cpu",
                         "--out", tmp_path / "out")
    assert rc == 0, err
    prompt, negative, kv = parse_parameters(read_parameters(tmp_path / "out" / "000-red-apple-1.png"))
    assert (prompt, negative) == ("red apple", "pear")
    assert (kv["Seed"], kv["Images"], kv["Index"], kv["Steps"], kv["Head steps"]) == ("3", "2", "1", "2", "2")
    assert kv["Model hash"] == fingerprint(model)
