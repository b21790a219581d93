"""Property tests (hypothesis) over the pipelines' arguments and the CLI's flags: every input gives finite images
of the right shape or a ValueError naming the argument; never another exception, NaN pixels or a partial file.
And the batch-size promise, measured on the shipped model."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from genkit.sampling import solver_names
from helpers import run_cli as cli, save_tiny_pipeline

SOLVERS = solver_names(predictor=False)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights" / "openmoji-32"
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))

# numbers as careless callers send them: in range, out of range, non-finite, fractional, numpy, bool, text, None
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1.0, 2.0, 1e9, -1.0]),
                   st.floats(0, 4).map(np.float32), st.sampled_from([None, True, "2", b"2"]))
ints = st.one_of(st.integers(-2, 4), st.sampled_from([2**64, 10**7, 5000]), st.sampled_from([2.0, 3.7, None, True, "2"]),
                 st.integers(1, 3).map(np.int64))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def pipe(model):
    from pipelines.pixel_diffusion import PixelDiffusionPipeline

    p = PixelDiffusionPipeline.from_pretrained(model)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def mm_folder(tmp_path_factory):
    from genkit.mm import MultimodalAR
    from pipelines.multimodal import MultimodalARPipeline

    torch.manual_seed(0)
    model = MultimodalAR(d_model=32, n_layers=2, n_heads=2, head_width=32, head_depth=1, max_text_bytes=16)
    path = tmp_path_factory.mktemp("mm") / "pipe"
    MultimodalARPipeline(model=model.eval()).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def mm_pipe(mm_folder):
    from pipelines.multimodal import MultimodalARPipeline

    return MultimodalARPipeline.from_pretrained(mm_folder)


def outcome(call, names):
    """Run call(); a ValueError must start with one of the argument names; else return the images."""
    try:
        return call()
    except ValueError as e:
        assert str(e).split("=")[0].split(" ")[0] in names, f"ValueError not naming an argument: {e}"
        return None


# the pixel pipeline's sizes, upsample guidance, AMED and skip-tuning, as careless callers send them
# each: (values that work, careless values)
NEW_ARGS = {
    "height": ([16, 16, 8, None], [24, 12, 4, 6, 0, -8, 10**6, 8.0, "16", True, float("nan")]),
    "width": ([16, 8, None, 24], [12, 6, 0, 10**6, 16.0, "8", float("inf")]),
    "upsample_guidance_scale": ([1.0, 2.5, 0.0], [-1.0, 1e9, float("nan"), float("inf"), None, "1", True]),
    "upsample_guidance_window": ([(0.0, 1.0), (0.5, 1.0), [0.0, 0.3]],
                                 [(1.0, 0.0), (0.2,), "0-1", (float("nan"), 1.0), (0.0, float("inf")), None]),
    "amed_predictor": ([None], ["/nonexistent/predictor", 3]),
    "skip_tuning": ([None, False, 1.0, 0.9, 0.75], [True, 1.5, 0.0, "1", float("nan")]),
    "skip_sigma_range": ([None, (0.1, 10.0)], [(10.0, 0.1), (float("nan"), 1.0), (1.0,)]),
    "guidance_sigma_range": ([None, (0.0, 1.0), (0.3, float("inf"))],
                             [(1.0, 0.5), (float("nan"), 1.0), (0.0, float("nan")), (1.0,), "0,1", (-1.0, 1.0), 3]),
}
new_args = st.sampled_from([None, *NEW_ARGS]).flatmap(  # all valid, or one of them careless
    lambda broken: st.fixed_dictionaries({k: st.sampled_from(bad if k == broken else good)
                                          for k, (good, bad) in NEW_ARGS.items()}))
any_new_args = st.fixed_dictionaries({}, optional={k: st.sampled_from(good + bad)
                                                   for k, (good, bad) in NEW_ARGS.items()})


@settings(max_examples=60, **SETTINGS)
@given(batch_size=ints, steps=ints, guidance=floats,
       labels=st.one_of(st.none(), st.integers(-1, 4), st.sampled_from(["a", "b", "zz", "2", 1.5, [0, 1]])),
       solver=st.sampled_from([None, "euler", "heun", "dpmpp_2m", "rk4", "", "amed"]),
       sigmas=st.one_of(st.none(), st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4)),
       output_type=st.sampled_from(["np", "pt", "pil", "latent", "jpg"]), new=any_new_args)
def test_pixel_pipeline_gives_finite_images_or_a_named_value_error(pipe, batch_size, steps, guidance, labels, solver,
                                                                    sigmas, output_type, new):
    check_pixel_call(pipe, dict(batch_size=batch_size, num_inference_steps=steps, guidance_scale=guidance,
                                class_labels=labels, solver=solver, sigmas=sigmas, output_type=output_type, **new))


@settings(max_examples=25, **SETTINGS)
@given(batch_size=st.integers(1, 2), steps=st.integers(1, 3), guidance=st.sampled_from([1.0, 2.0]),
       solver=st.sampled_from(["euler", "heun", "dpmpp_2m", "amed"]), output_type=st.sampled_from(["np", "pt", "pil"]),
       new=new_args)
def test_pixel_pipeline_sizes_upsample_guidance_amed_and_skip_tuning(pipe, batch_size, steps, guidance, solver,
                                                                      output_type, new):
    """Valid base arguments and at most one careless new one, so that sizes, upsample guidance and skip-tuning
    run (about 1 draw in 5 samples, at 8 or 16 px, with and without both; AMED has no predictor in the tiny
    folder: a ValueError naming it)."""
    check_pixel_call(pipe, dict(batch_size=batch_size, num_inference_steps=steps, guidance_scale=guidance,
                                class_labels="a", solver=solver, output_type=output_type, **new))


def check_pixel_call(pipe, kwargs):
    """pipe(**kwargs): finite images of the asked shape (default 8 px), or a ValueError naming an argument."""
    names = {"batch_size", "num_inference_steps", "guidance_scale", "class", "class_labels", "solver", "sigmas",
             "output_type", "generator", *NEW_ARGS, "upsample_guidance_window[0]", "upsample_guidance_window[1]",
             "guidance_sigma_range[0]", "guidance_sigma_range[1]"}
    out = outcome(lambda: pipe(**kwargs, generator=torch.Generator().manual_seed(0)), names)
    if out is None:
        return
    n, h, w = kwargs["batch_size"], kwargs.get("height") or 8, kwargs.get("width") or 8  # None: the trained 8 px
    images = out.images
    if kwargs["output_type"] == "pil":
        assert len(images) == n and all(im.size == (w, h) for im in images)
        return
    arr = np.asarray(images)
    assert arr.shape == ((n, h, w, 3) if kwargs["output_type"] == "np" else (n, 3, h, w))
    assert np.isfinite(arr).all()


@settings(max_examples=40, **SETTINGS)
@given(prompt=st.one_of(st.text(max_size=20), st.sampled_from([None, b"apple", ["a", "b"], [], ["a"] * 65, 3])),
       num=ints, steps=ints, head_steps=st.one_of(st.integers(-1, 3), st.just(10**7)), guidance=floats,
       temperature=floats, negative=st.one_of(st.none(), st.text(max_size=4), st.just(b"x")),
       rerank=st.integers(0, 3), output_type=st.sampled_from(["np", "pt", "pil", "latent"]))
def test_multimodal_pipeline_gives_finite_images_or_a_named_value_error(mm_pipe, prompt, num, steps, head_steps,
                                                                         guidance, temperature, negative, rerank,
                                                                         output_type):
    names = {"prompt", "num_images_per_prompt", "num_inference_steps", "head_steps", "guidance_scale", "temperature",
             "negative_prompt", "rerank", "output_type", "solver", "generator"}
    out = outcome(lambda: mm_pipe(prompt, num_images_per_prompt=num, num_inference_steps=steps, head_steps=head_steps,
                                  guidance_scale=guidance, temperature=temperature, negative_prompt=negative,
                                  rerank=rerank, output_type=output_type,
                                  generator=torch.Generator().manual_seed(0)), names)
    if out is None:
        return
    n = (1 if isinstance(prompt, str) else len(prompt)) * num
    arr = np.stack([np.asarray(im) for im in out.images]) if output_type == "pil" else np.asarray(out.images)
    assert len(arr) == n and np.isfinite(arr).all()


@settings(max_examples=25, **SETTINGS)
@given(flags=st.lists(st.sampled_from([
    ("--guidance", "nan"), ("--guidance", "inf"), ("--guidance", "1.5"), ("--guidance", "-1"), ("--guidance", "1e9"),
    ("--steps", "0"), ("--steps", "2"), ("--steps", "x"), ("--steps", "99999999"), ("--num", "2"), ("--num", "0"),
    ("--seed", str(2**64)), ("--seed", "7"), ("--seed", "-3"), ("--class", "b"), ("--class", "3.7"), ("--class", "9"),
    ("--class", "none"), ("--solver", "heun"), ("--solver", "rk4"), ("--grid", "logsnr"), ("--grid", "x"),
    ("--batch-size", "1"), ("--batch-size", "0"), ("--batch-size", "5000"), ("--batch-invariant",)]),
    max_size=4))
def test_cli_sample_flags_give_images_or_one_line_naming_a_flag(model, tmp_path_factory, capsys, flags):
    out = tmp_path_factory.mktemp("cli") / "out"
    argv = [a for f in flags for a in f]
    rc, _, err = cli(capsys, "sample", "--model", model, "--num", "2", "--steps", "1", "--solver", "euler",
                     "--device", "cpu", "--out", out, *argv)
    if rc != 0:
        assert rc == 2 and err.count("\n") == 1 and err.startswith("genkit: error: --"), err
        assert not out.exists(), "a rejected run left its --out folder"
        return
    files = sorted(p.name for p in out.iterdir())
    assert not [f for f in files if f.startswith(".")], "temp files left"
    m = json.loads((out / "manifest.json").read_text(),
                   parse_constant=lambda c: pytest.fail(f"manifest.json holds {c}: not valid JSON"))
    pngs = [f for f in files if f[0].isdigit()]
    assert m["complete"] and len(pngs) == m["num"]
    for f in pngs:
        a = np.asarray(Image.open(out / f))
        assert a.shape == (8, 8, 3)


@settings(max_examples=15, **SETTINGS)
@given(flags=st.lists(st.sampled_from([
    ("--guidance", "nan"), ("--guidance", "-inf"), ("--guidance", "3"), ("--temperature", "nan"),
    ("--temperature", "0.5"), ("--temperature", "1e9"), ("--steps", "0"), ("--steps", "65"), ("--head-steps", "0"),
    ("--num", "65"), ("--num", "2"), ("--rerank", "300"), ("--rerank", "2"), ("--seed", str(2**64)),
    ("--solver", "rk4"), ("--solver", "euler"), ("--prompt", ""), ("--prompt", "x" * 40), ("--prompt", "\udcff"),
    ("--negative-prompt", "cat")]), max_size=3))
def test_cli_draw_flags_give_images_or_one_line_naming_a_flag(mm_folder, tmp_path_factory, capsys, flags):
    out = tmp_path_factory.mktemp("draw") / "out"
    argv = [a for f in flags for a in f]
    rc, _, err = cli(capsys, "draw", "--model", mm_folder, "--prompt", "red apple", "--num", "1", "--steps", "2",
                     "--head-steps", "2", "--device", "cpu", "--out", out, *argv)
    if rc != 0:
        assert rc == 2 and err.count("\n") == 1 and err.startswith("genkit: error: --"), err
        assert not out.exists(), "a rejected run left its --out folder"
        return
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temp files left"
    m = json.loads((out / "manifest.json").read_text(),
                   parse_constant=lambda c: pytest.fail(f"manifest.json holds {c}: not valid JSON"))
    pngs = [f for row in m["files"] for f in row]
    assert m["complete"] and all(np.asarray(Image.open(out / f)).shape == (32, 32, 3) for f in pngs)


def test_caption_composites_rgba_on_white_like_the_cli_and_app(mm_pipe):
    """A transparent image is read as the same RGB picture by pipe.caption, genkit caption (load_image_file) and
    the app (square_rgb): composited on white, not on the black its RGB channels may hold."""
    from genkit.data.folder import square_rgb

    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 8:24] = (200, 30, 30, 255)                     # a red square; the rest transparent black
    white = square_rgb(Image.fromarray(rgba, "RGBA"), 32)
    assert (white[0, 0] == 255).all()
    got = mm_pipe._as_tensor([Image.fromarray(rgba, "RGBA")])
    assert torch.equal(got, mm_pipe._as_tensor(white[None]))
    assert torch.equal(mm_pipe._as_tensor(rgba[None]), got)  # an RGBA array too
    assert mm_pipe.caption(Image.fromarray(rgba, "RGBA"), max_new_tokens=2) == mm_pipe.caption(white, max_new_tokens=2)
    with pytest.raises(ValueError, match=r"^images=.* is not allowed: finite values"):
        mm_pipe.caption(torch.full((1, 3, 32, 32), math.nan))


@pytest.mark.skipif(not (SHIPPED / "model_index.json").is_file(), reason="weights/openmoji-32 not shipped")
def test_shipped_model_images_are_byte_identical_across_batch_sizes(tmp_path, capsys):
    """Issue 15 #3 on the shipped model (the tiny random model never showed it): with --batch-invariant, genkit
    sample's images do not depend on --batch-size. Measured with batched network calls (the default), 16 images x
    10 steps differ in one pixel value between --batch-size 16 and 1; per-image network calls make them equal."""
    files = {}
    for bs in (4, 3, 1):
        out = tmp_path / f"b{bs}"
        rc, _, err = cli(capsys, "sample", "--model", SHIPPED, "--num", 4, "--steps", 3, "--solver", "dpmpp_2m",
                         "--device", "cpu", "--batch-size", bs, "--batch-invariant", "--out", out)
        assert rc == 0, err
        files[bs] = {p.name: p.read_bytes() for p in sorted(out.glob("0*.png"))}
    assert len(files[4]) == 4 and files[4] == files[3] == files[1]
    assert len(set(files[4].values())) == 4


@pytest.mark.slow
@pytest.mark.skipif(not (SHIPPED / "model_index.json").is_file(), reason="weights/openmoji-32 not shipped")
def test_shipped_model_issue_case_byte_identical(tmp_path, capsys):
    """The issue's exact case: --num 16 --steps 10 with --batch-size 16, 3 and 1 (about 3 minutes on 2 cores)."""
    files = []
    for bs in (16, 3, 1):
        out = tmp_path / f"b{bs}"
        rc, _, err = cli(capsys, "sample", "--model", SHIPPED, "--num", 16, "--steps", 10, "--device", "cpu",
                         "--batch-size", bs, "--batch-invariant", "--out", out)
        assert rc == 0, err
        files.append({p.name: p.read_bytes() for p in sorted(out.glob("0*.png"))})
    assert len(files[0]) == 16 and files[0] == files[1] == files[2]


@pytest.mark.skipif(not (SHIPPED / "model_index.json").is_file(), reason="weights/openmoji-32 not shipped")
def test_batched_sample_resumes_to_the_same_bytes(tmp_path, capsys):
    """Batched (the default): batches are aligned to --seed, so images deleted from the middle of a batch (as a
    kill leaves them) are redrawn with the same neighbours, to the same bytes; each PNG names its batch."""
    from genkit.png_info import parse_parameters

    args = ("sample", "--model", SHIPPED, "--num", 5, "--seed", 3, "--steps", 2, "--solver", "euler",
            "--device", "cpu", "--batch-size", 2, "--out", tmp_path)
    assert cli(capsys, *args)[0] == 0
    before = {p.name: p.read_bytes() for p in sorted(tmp_path.glob("0*.png"))}
    for name in ("000004.png", "000007.png"):  # second of the batch (3, 4); the last, short batch (7)
        (tmp_path / name).unlink()
    assert cli(capsys, *args)[0] == 0
    assert {p.name: p.read_bytes() for p in sorted(tmp_path.glob("0*.png"))} == before
    _, _, info = parse_parameters(Image.open(tmp_path / "000006.png").text["parameters"])
    assert (info["Batch size"], info["Batch pos"]) == ("2", "1")   # seed 6 is second in the batch (5, 6)


def test_limits_reach_every_edge():
    """One table: the pipelines' batch limit and the CLI's are LIMITS' (no second copy to drift)."""
    from genkit.checks import LIMITS
    from pipelines.pixel_diffusion import MAX_BATCH_SIZE

    assert MAX_BATCH_SIZE == LIMITS["batch_size"]
    assert not math.isnan(LIMITS["guidance"])
