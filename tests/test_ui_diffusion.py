"""genkit/ui/diffusion.py: the Diffusion tab's handler -- per-seed images, previews, Stop within one network
evaluation, PNG parameters and a byte-identical regeneration from them, bad input named."""

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from genkit.png_info import parse_parameters, read_parameters
from genkit.ui import diffusion
from genkit.ui.runner import Stops
from ui_helpers import gradio_env, no_progress, tiny_pipe  # noqa: F401  (fixtures)


def run(pipe, *form, stops=None, preview_every=1, max_batch_size=4):
    gen = diffusion.make_generate(pipe, stops or Stops(), max_batch_size=max_batch_size)
    extra = {"guidance_sigma_max": form[12]} if len(form) > 12 else {}   # form order: the interval after skip
    return list(gen(*form[:12], preview_every=preview_every, progress=no_progress, **extra))


def test_images_match_per_seed_pipeline_calls_across_batches(tiny_pipe):
    outs = run(tiny_pipe, "b", 5, 3, "heun", "polynomial", 2.0, 2, 2)
    gallery, info, files, history = outs[-1]
    assert [c for _, c in gallery] == ["seed 5", "seed 6", "seed 7", "seed 8"]
    assert "NFE per image:** 10" in info and "step 6/6" in info      # heun: 2*3-1 = 5, x2 for guidance
    for b, seeds in enumerate(([5, 6], [7, 8])):      # batch b == one pipeline call with those seeds
        ref = tiny_pipe(batch_size=2, num_inference_steps=3, solver="heun", guidance_scale=2.0, class_labels="b",
                        generator=[torch.Generator().manual_seed(k) for k in seeds]).images
        for (path, _), im in zip(gallery[2 * b:2 * b + 2], ref):
            assert np.array_equal(np.asarray(Image.open(path)), np.asarray(im))
    # previews: one per step (3 steps x 2 batches) and one after each batch but the last, then the final result
    previews = [o for o in outs if any("step" in c for _, c in o[0])]
    assert len(previews) == 6 and len(outs) == 6 + 1 + 1
    assert files == [p for p, _ in gallery]                 # what the browser's zip is made of, after the run
    with zipfile.ZipFile(diffusion.zip_run(files)) as z:
        assert z.namelist() == ["5.png", "6.png", "7.png", "8.png"]
        assert z.read("6.png") == open(gallery[1][0], "rb").read()   # stored as written, chunk included
    assert [h["caption"] for h in history] == ["seed 8", "seed 7", "seed 6", "seed 5"]   # newest first
    assert len(run(tiny_pipe, "b", 5, 3, "euler", "polynomial", 2.0, 1, 1, preview_every=0)) == 1   # the result


def test_unconditional_and_diffusers_schedulers(tiny_pipe):
    gallery, info, _, _ = run(tiny_pipe, "(unconditional)", 0, 2, "euler", "polynomial", 2.0, 1, 1)[-1]
    assert "NFE per image:** 2" in info and "guidance not used" in info
    for sampler in diffusion.opt.DIFFUSERS_SCHEDULERS:
        gallery, info, _, _ = run(tiny_pipe, "a", 1, 4, sampler, "polynomial", 2.0, 2, 1)[-1]
        assert len(gallery) == 2 and "NFE per image:** 8" in info
        _, _, kv = parse_parameters(read_parameters(gallery[0][0]))
        assert kv["Sampler"] == sampler and "Schedule type" not in kv   # diffusers' own spacing


def test_random_seed_is_drawn_and_recorded(tiny_pipe):
    gallery, info, _, _ = run(tiny_pipe, "a", -1, 1, "euler", "polynomial", 1.0, 2, 1)[-1]
    seed = int(gallery[0][1].split()[1])
    assert gallery[1][1] == f"seed {seed + 1}" and f"**seed** {seed}" in info


def test_png_info_round_trip_regenerates_identical_bytes(tiny_pipe):
    gallery, _, _, _ = run(tiny_pipe, "c", 11, 3, "dpmpp_2m", "logsnr", 1.5, 3, 1)[-1]
    original = open(gallery[2][0], "rb").read()
    form = diffusion.form_values(read_parameters(original), tiny_pipe)   # its batch: batched calls may round
    assert form == ["c", 11, 3, "dpmpp_2m", "logsnr", 1.5, 3, 1, 8, 0.0, False, 1.0, 0.0, "model"]  # differently
    again, _, _, _ = run(tiny_pipe, *form[:-1])[-1]                              # than alone (the model last)
    assert open(again[2][0], "rb").read() == original
    # batch-invariant: the image alone regenerates it
    gallery, _, _, _ = run(tiny_pipe, "c", 11, 3, "dpmpp_2m", "logsnr", 1.5, 3, 1, 8, 0.0, True)[-1]
    original = open(gallery[2][0], "rb").read()
    form = diffusion.form_values(read_parameters(original), tiny_pipe)
    assert form == ["c", 13, 3, "dpmpp_2m", "logsnr", 1.5, 1, 1, 8, 0.0, True, 1.0, 0.0, "model"]
    again, _, _, _ = run(tiny_pipe, *form[:-1])[-1]
    assert len(again) == 1 and open(again[0][0], "rb").read() == original


def test_skip_tuning_reaches_the_pipeline_and_the_png(tiny_pipe):
    gallery, _, _, _ = run(tiny_pipe, "a", 0, 3, "euler", "polynomial", 1.0, 2, 1, 8, 0.0, False, 0.8)[-1]
    ref = tiny_pipe(batch_size=2, num_inference_steps=3, solver="euler", class_labels="a", skip_tuning=0.8,
                    generator=[torch.Generator().manual_seed(k) for k in (0, 1)]).images
    plain = tiny_pipe(batch_size=2, num_inference_steps=3, solver="euler", class_labels="a",
                      generator=[torch.Generator().manual_seed(k) for k in (0, 1)]).images
    assert np.array_equal(np.asarray(Image.open(gallery[1][0])), np.asarray(ref[1]))
    assert not np.array_equal(np.asarray(ref[1]), np.asarray(plain[1]))        # it changes the image
    assert diffusion.form_values(read_parameters(gallery[1][0]), tiny_pipe)[-3] == 0.8


def test_guidance_interval_reaches_the_pipeline_the_nfe_and_the_png_and_restores(tiny_pipe):
    form = ("a", 0, 4, "euler", "polynomial", 2.0, 2, 1, 8, 0.0, False, 1.0, 1.0)
    gallery, info, _, _ = run(tiny_pipe, *form)[-1]
    out = tiny_pipe(batch_size=2, num_inference_steps=4, solver="euler", class_labels="a", guidance_scale=2.0,
                    guidance_sigma_range=(0.0, 1.0), generator=[torch.Generator().manual_seed(k) for k in (0, 1)])
    assert np.array_equal(np.asarray(Image.open(gallery[1][0])), np.asarray(out.images[1]))
    assert f"NFE per image:** {out.nfe}" in info and 4 < out.nfe < 8
    _, _, kv = parse_parameters(read_parameters(gallery[1][0]))
    assert kv["Guidance interval"] == "0-1"
    values = diffusion.form_values(read_parameters(gallery[1][0]), tiny_pipe)
    assert values[:-1] == list(form) and values[-1] == "model"
    with pytest.raises(ValueError, match="guidance_sigma_max=-1"):
        diffusion.validate(tiny_pipe, *form[:12], -1)


def test_twice_the_size_with_upsample_guidance(tiny_pipe):
    gallery, info, _, _ = run(tiny_pipe, "a", 0, 2, "euler", "polynomial", 1.0, 1, 1, 16, 0.5, False)[-1]
    assert Image.open(gallery[0][0]).size == (16, 16) and "low resolution" in info
    _, _, kv = parse_parameters(read_parameters(gallery[0][0]))
    assert kv["Size"] == "16x16" and kv["Upsample guidance"] == "0.5"
    assert diffusion.form_values(read_parameters(gallery[0][0]), tiny_pipe)[8:10] == [16, 0.5]


def test_stop_ends_the_run_within_one_network_evaluation_and_keeps_finished_images(tiny_pipe):
    stops = Stops()
    stops.guard(tiny_pipe.unet)
    calls = []

    def count(_module, _args, _out):  # Stop pressed during the 9th evaluation: mid-step of heun, 2nd batch
        calls.append(1)
        if len(calls) == 9:
            stops.stop("local")
    handle = tiny_pipe.unet.register_forward_hook(count)
    try:   # heun at 3 steps = 5 evaluations per batch: batch 1 takes 5, the 9th is in batch 2
        gallery, info, files, _ = run(tiny_pipe, "a", 0, 3, "heun", "polynomial", 1.0, 2, 3, stops=stops)[-1]
    finally:
        handle.remove()
    assert len(calls) == 9                     # no evaluation after the one during which Stop was pressed
    assert [c for _, c in gallery] == ["seed 0", "seed 1"] and "stopped" in info
    with zipfile.ZipFile(diffusion.zip_run(files)) as z:     # the finished batch's zip
        assert z.namelist() == ["0.png", "1.png"]
    assert diffusion.zip_run([]) is None                     # a run stopped before any image: no zip
    gallery, info, _, _ = run(tiny_pipe, "a", 0, 3, "heun", "polynomial", 1.0, 2, 1, stops=stops)[-1]
    assert len(gallery) == 2 and "stopped" not in info       # the next run is not affected


def test_stop_of_one_session_leaves_another_session_running():
    stops = Stops()
    stops.stop("other")                        # a Stop from a session with no run: nothing happens
    seen = []
    for kind, *payload in stops.run("mine", lambda report: [report("step", i) for i in range(3)]):
        seen.append(kind)
    assert seen == ["step", "step", "step", "done"]


def test_errors_in_the_work_reach_the_handler():
    def work(_report):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        list(Stops().run("s", work))


@pytest.mark.parametrize("form, name", [
    (("a", 0, 0, "euler", "polynomial", 1.0, 1, 1), "steps=0"),
    (("a", 0, 2.5, "euler", "polynomial", 1.0, 1, 1), "steps=2.5"),
    (("a", 0, 2, "nope", "polynomial", 1.0, 1, 1), "sampler='nope'"),
    (("a", 0, 2, "euler", "nope", 1.0, 1, 1), "grid='nope'"),
    (("zzz", 0, 2, "euler", "polynomial", 1.0, 1, 1), "class='zzz'"),
    (("a", 0, 2, "euler", "polynomial", 1.0, 5, 1), "batch_size=5"),
    (("a", 0, 2, "euler", "polynomial", 1.0, 1, 17), "batch_count=17"),
    (("a", 0, 2, "euler", "polynomial", -1.0, 1, 1), "guidance=-1.0"),
    (("a", 0, 2, "euler", "polynomial", float("nan"), 1, 1), "guidance=nan"),
    (("a", 0, 2, "euler", "polynomial", 9.0, 1, 1), "guidance=9.0"),
    (("a", -3, 2, "euler", "polynomial", 1.0, 1, 1), "seed=-3"),
    (("a", None, 2, "euler", "polynomial", 1.0, 1, 1), "seed=None"),
    (("a", 0, 2, "euler", "polynomial", 1.0, 1, 1, 24), "size=24"),
    (("a", 0, 2, "euler", "polynomial", 1.0, 1, 1, 8, 0.5), "upsample_guidance=0.5"),
    (("a", 0, 2, "euler", "polynomial", 1.0, 1, 1, 16, float("inf")), "upsample_guidance=inf"),
    (("a", 0, 2, "euler", "polynomial", 1.0, 1, 1, 8, 0.0, "yes"), "batch_invariant='yes'"),
    (("a", 0, 2, "euler", "polynomial", 1.0, 1, 1, 8, 0.0, False, 0.05), "skip_tuning=0.05"),
    (("a", 0, 2, "DDIM (diffusers)", "polynomial", 1.0, 1, 1, 8, 0.0, False, 0.8), "skip_tuning=0.8"),
])
def test_bad_input_is_a_message_naming_the_parameter(tiny_pipe, form, name):
    import gradio as gr

    with pytest.raises(gr.Error, match="is not allowed") as err:
        run(tiny_pipe, *form)
    assert name in str(err.value)
