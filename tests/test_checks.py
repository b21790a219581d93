"""genkit/checks.py, the one validation layer, and the defects of issue 15 it closes, each reproduced."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genkit.checks import (LIMITS, check_choice, check_float, check_int, check_new_file, check_seed, check_sigmas,
                           check_text, float_arg, int_arg, limits_text)
from helpers import run_cli as cli, save_tiny_pipeline

FORMAT = r"^{name}=.+ is not allowed: .+"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("model") / "tiny")


# -- the checks themselves -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "1", None, True, 1e9, -0.5])
def test_check_float_refuses_non_finite_and_out_of_range(value):
    with pytest.raises(ValueError, match=r"^w=.* is not allowed: a finite number in \[0, 10\]$"):
        check_float("w", value, 0, 10)


def test_check_float_accepts_numpy_and_ints():
    assert check_float("w", np.float32(2.5), 0, 10) == 2.5 and type(check_float("w", np.float32(2.5))) is float
    assert check_float("w", 3) == 3.0 and check_float("w", np.int64(3), 0) == 3.0


@pytest.mark.parametrize("value", [3.7, 3.0, "3", True, np.float64(2.0), -1, 11])
def test_check_int_never_truncates(value):
    with pytest.raises(ValueError, match=r"^n=.* is not allowed: an int in \[0, 10\]$"):
        check_int("n", value, 0, 10)
    assert check_int("n", np.int64(4), 0, 10) == 4


def test_seed_text_sigmas_choice_and_file_checks(tmp_path):
    assert check_seed("seed", LIMITS["seed"]) == LIMITS["seed"]
    for v in (2**64, -1):
        with pytest.raises(ValueError, match=r"^seed="):
            check_seed("seed", v)
    with pytest.raises(ValueError, match=r"^seed="):
        check_seed("seed", LIMITS["seed"], count=2)            # seed + 1 would not fit
    for v in (None, b"apple", "", "  ", "\udcff"):              # \udcff: a non-UTF-8 argv byte, as Python decodes it
        with pytest.raises(ValueError, match=r"^prompt="):
            check_text("prompt", v)
    with pytest.raises(ValueError, match=r"at most 4 UTF-8 bytes \(it has 6\)"):
        check_text("prompt", "äää", 4)
    assert check_sigmas("sigmas", torch.tensor([2.0, 1.0, 0.0])) == [2.0, 1.0, 0.0]
    for v in ([], [1.0], [1.0, 2.0], [2.0, 2.0], [2.0, math.nan], [1.0, -1.0], "ab"):
        with pytest.raises(ValueError, match=r"^sigmas="):
            check_sigmas("sigmas", v)
    with pytest.raises(ValueError, match=r"^solver='rk4' is not allowed: one of a, b$"):
        check_choice("solver", "rk4", ["a", "b"])
    with pytest.raises(ValueError, match=r"^--out=.* is not allowed: a file path, not an existing folder$"):
        check_new_file("--out", tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"is a file"):
        check_new_file("--out", tmp_path / "f" / "caps.json")
    assert check_new_file("--out", tmp_path / "new" / "caps.json")


def test_argparse_types_give_the_same_message():
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match=r"^--steps=0 is not allowed: an int in \[1, 5\]$"):
        int_arg("--steps", 1, 5)("0")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^--guidance=nan is not allowed"):
        float_arg("--guidance", 0, 10)("nan")
    assert float_arg("--guidance", 0, 10)("1e0") == 1.0 and int_arg("--n")("7") == 7
    assert all(k in limits_text() for k in LIMITS)


# -- the defects, through the CLI and the pipelines --------------------------------------------------------------

NON_FINITE = [("sample", "--guidance", "nan"), ("sample", "--guidance", "inf"), ("sample", "--guidance", "1e9"),
              ("sample", "--steps", "10000000"), ("sample", "--num", "1000000000"), ("sample", "--seed", str(2**64)),
              ("sample", "--solver", "rk4"), ("sample", "--grid", "cubic"), ("sample", "--batch-size", "5000"),
              ("draw", "--guidance", "nan"), ("draw", "--temperature", "inf"), ("draw", "--solver", "rk4"),
              ("draw", "--num", "65")]


@pytest.mark.parametrize("command, flag, value", NON_FINITE, ids=[" ".join(c) for c in NON_FINITE])
def test_cli_refuses_before_loading_and_leaves_no_folder(tmp_path, capsys, command, flag, value):
    """One line naming the flag, exit 2, no --out folder left, and no model needed: the model path does not exist
    (so a check that ran after the load would report the model instead)."""
    out = tmp_path / "out"
    extra = ["--prompt", "a"] if command == "draw" else []
    rc, stdout, err = cli(capsys, command, "--model", tmp_path / "no-model", "--out", out, *extra, flag, value)
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"genkit: error: {flag}="), err
    assert not out.exists()


def test_rejected_run_after_the_load_leaves_no_empty_folder(model, tmp_path, capsys):
    rc, _, err = cli(capsys, "sample", "--model", model, "--class", "zzz", "--out", tmp_path / "o")
    assert rc == 2 and "--class='zzz'" in err and not (tmp_path / "o").exists()


def test_pipeline_refuses_non_finite_and_fractional_arguments(model):
    from pipelines.pixel_diffusion import PixelDiffusionPipeline

    pipe = PixelDiffusionPipeline.from_pretrained(model)
    for kw, name in [({"guidance_scale": math.nan}, "guidance_scale"), ({"guidance_scale": math.inf}, "guidance_scale"),
                     ({"class_labels": 1.7}, "class"), ({"num_inference_steps": 2.0}, "num_inference_steps"),
                     ({"sigmas": []}, "sigmas"), ({"sigmas": [0.5, 1.0, 2.0]}, "sigmas"),
                     ({"num_inference_steps": LIMITS["steps"] + 1}, "num_inference_steps")]:
        with pytest.raises(ValueError, match=FORMAT.format(name=name)):
            pipe(batch_size=1, num_inference_steps=kw.pop("num_inference_steps", 2), **kw)
    out = pipe(batch_size=1, num_inference_steps=2, guidance_scale=np.float32(2.0), class_labels=1, output_type="np")
    assert np.isfinite(out.images).all()                                     # np.float32 guidance is fine


def test_resume_refuses_other_settings_and_restart_starts_over(model, tmp_path, capsys):
    """Issue 15 #2: `--num 2 --steps 1 --class 0` then `--num 3 --steps 2 --class 1` into the same folder used to
    keep the two old images under a manifest claiming the new settings."""
    out = tmp_path / "s"
    base = ("sample", "--model", model, "--solver", "euler", "--out", out)
    assert cli(capsys, *base, "--num", 2, "--steps", 1, "--class", "0")[0] == 0
    old = (out / "000000.png").read_bytes()
    rc, _, err = cli(capsys, *base, "--num", 3, "--steps", 2, "--class", "1")
    assert rc == 2 and "other settings" in err and "steps 1 (now 2)" in err and "class '0' (now '1')" in err
    assert "--restart" in err and (out / "000000.png").read_bytes() == old
    assert cli(capsys, *base, "--num", 3, "--steps", 2, "--class", "1", "--restart")[0] == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["steps"] == 2 and m["class"] == "1" and m["complete"]
    fresh = tmp_path / "fresh"
    assert cli(capsys, "sample", "--model", model, "--solver", "euler", "--out", fresh, "--num", 3, "--steps", 2,
               "--class", "1")[0] == 0
    assert all((out / n).read_bytes() == (fresh / n).read_bytes() for n in ("000000.png", "000001.png", "000002.png"))
    # a folder of images without a manifest: unknown settings, refused
    (out / "manifest.json").unlink()
    rc, _, err = cli(capsys, *base, "--num", 3, "--steps", 2, "--class", "1")
    assert rc == 2 and "no readable manifest.json" in err


def test_resume_sweeps_temp_files_of_a_killed_run(model, tmp_path, capsys):
    out = tmp_path / "s"
    base = ("sample", "--model", model, "--solver", "euler", "--num", 3, "--steps", 1, "--out", out)
    assert cli(capsys, *base)[0] == 0
    (out / "000002.png").unlink()
    (out / ".000002.png.abc123.tmp").write_bytes(b"half a png")          # what a kill during a write leaves
    assert cli(capsys, *base)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png", "000002.png", "grid.png",
                                                     "manifest.json"]


def test_decompression_bomb_is_one_line(tmp_path, monkeypatch):
    from genkit.data.folder import load_image_file, read_images_as_is

    Image.new("RGB", (64, 64), "red").save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)                   # 4096 pixels > 2 x 1000: an error
    for read in (lambda: load_image_file(tmp_path / "big.png", 32), lambda: read_images_as_is(tmp_path)):
        with pytest.raises(ValueError, match=r"big.png.* is not allowed: at most Image.MAX_IMAGE_PIXELS=1000"):
            read()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)                   # over the limit, under 2x: was a warning
    with pytest.raises(ValueError, match="MAX_IMAGE_PIXELS=3000"):
        load_image_file(tmp_path / "big.png", 32)


@pytest.mark.parametrize("argv, flag", [
    (["--learning_rate", "20"], "--learning_rate=20.0"), (["--max_grad_norm", "0"], "--max_grad_norm=0.0"),
    (["--log_every", "0"], "--log_every=0"), (["--attention_head_dim", "0"], "--attention_head_dim=0"),
    (["--attention_head_dim", "48"], "--attention_head_dim=48"), (["--cond_drop", "1.0"], "--cond_drop=1.0")])
def test_training_flags_use_the_same_checks(tmp_path, argv, flag):
    from training.train_diffusion import parse_args

    with pytest.raises(ValueError, match="^" + flag):
        parse_args(["--output_dir", str(tmp_path), *argv])


@pytest.mark.parametrize("argv, msg", [
    (["--learning_rate", "inf"], "--learning_rate=inf is not allowed"),
    (["--max_grad_norm", "nan"], "--max_grad_norm=nan is not allowed"),
    (["--cond_drop", "nan"], "--cond_drop=nan is not allowed"),
    (["--seed", str(2**64)], f"--seed={2**64} is not allowed")])
def test_training_parsers_refuse_non_finite_floats_and_huge_seeds_in_one_line(tmp_path, capsys, argv, msg):
    """genkit.checks.OneLineParser: refused where typed, exit 2, the CLI's one-line format (every script:
    tests/test_training_flags.py)."""
    from training.train_diffusion import parse_args

    with pytest.raises(SystemExit) as exc:
        parse_args(["--output_dir", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and msg in err and err.count("\n") == 1, err


def test_app_text_to_image_refuses_a_prompt_list_and_non_finite_numbers():
    """/text_to_image through the API: one str prompt (a list used to be drawn as many prompts labelled with one
    prompt's seeds), finite guidance and temperature; the handler answers with gr.Error naming the parameter."""
    import gradio as gr

    from genkit.mm import MultimodalAR
    from genkit.ui.text_image import make_text_to_image
    from pipelines.multimodal import MultimodalARPipeline

    torch.manual_seed(0)
    mm = MultimodalARPipeline(model=MultimodalAR(d_model=32, n_layers=2, n_heads=2, head_width=32, head_depth=1,
                                                 max_text_bytes=16).eval())
    handler = make_text_to_image(mm, max_images=4)
    for args, name in [((["a", "b"], 0, 1, 2.0, 0.7, ""), "prompt"), ((None, 0, 1, 2.0, 0.7, ""), "prompt"),
                       (("a", 0, 1, 1e9, 0.7, ""), "guidance"), (("a", 0, 1, math.nan, 0.7, ""), "guidance"),
                       (("a", 0, 1, 2.0, math.inf, ""), "temperature"), (("a", 0, 100, 2.0, 0.7, ""), "num_images")]:
        with pytest.raises(gr.Error, match=f"{name}=.* is not allowed"):
            list(handler(*args))  # a generator handler (live previews): errors come on the first item


def test_caption_out_folder_is_refused_before_the_model_loads(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    rc, _, err = cli(capsys, "caption", "--model", tmp_path / "no-model", tmp_path / "a.png", "--out", tmp_path)
    assert rc == 2 and "--out=" in err and "not an existing folder" in err


def test_readme_states_the_limits():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert limits_text() in readme
