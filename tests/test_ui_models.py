"""The Diffusion tab's Model menu: a teacher and a one-step (SiD) generator side by side -- each run goes to the
chosen pipeline, a one-step image is one network evaluation, PNG parameters name the model and PNG info restores
it (byte-identical regeneration), folders under weights/ are found and loaded as their own class."""

import numpy as np
import pytest
import torch
from PIL import Image

from genkit.png_info import parse_parameters, read_parameters
from genkit.scheduler import GenkitScheduler
from genkit.ui import build_demo, diffusion
from genkit.ui.runner import Stops
from helpers import CLASS_NAMES, tiny_unet
from pipelines.one_step import OneStepPipeline
from ui_helpers import free_port, gradio_env, no_progress, tiny_pipe  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def models(tiny_pipe):
    torch.manual_seed(1)
    sid = OneStepPipeline(tiny_unet(4), GenkitScheduler(image_size=8), class_names=CLASS_NAMES, sigma_init=2.5)
    sid.set_progress_bar_config(disable=True)
    return {"teacher": tiny_pipe, "teacher-sid": sid}


def run(models, *form, model=None, **kw):
    gen = diffusion.make_generate(models, Stops(), max_batch_size=4)
    extra = {"guidance_sigma_max": form[12]} if len(form) > 12 else {}   # form order: the interval after skip
    return list(gen(*form[:12], model=model, progress=no_progress, **extra, **kw))


def test_one_step_model_is_one_evaluation_per_image_and_ignores_what_it_has_not(models):
    sid = models["teacher-sid"]
    calls = []
    hook = sid.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:   # steps / sampler / grid / guidance / size / skip-tuning are the teacher's form values: ignored here
        outs = run(models, "b", 5, 20, "heun", "polynomial", 3.0, 2, 2, 8, 0.0, False, 0.9, model="teacher-sid")
    finally:
        hook.remove()
    gallery, info, _, history = outs[-1]
    assert len(calls) == 2 and "NFE per image:** 1" in info and "step 2/2" in info   # one call per batch
    for b, seeds in enumerate(([5, 6], [7, 8])):
        ref = sid(batch_size=2, class_labels="b", generator=[torch.Generator().manual_seed(k) for k in seeds]).images
        for (path, _), im in zip(gallery[2 * b:2 * b + 2], ref):
            assert np.array_equal(np.asarray(Image.open(path)), np.asarray(im))
    _, _, kv = parse_parameters(read_parameters(gallery[3][0]))
    assert (kv["Model"], kv["Steps"], kv["Sampler"], kv["CFG scale"], kv["Seed"]) == ("teacher-sid", "1",
                                                                                      "one_step", "1.0", "8")
    assert "Schedule type" not in kv and "Skip tuning" not in kv


def test_png_info_restores_the_model_and_regenerates_identical_bytes(models):
    for model, form in [("teacher-sid", ("c", 11, 1, "euler", "polynomial", 1.0, 3, 1)),
                        ("teacher", ("c", 11, 2, "euler", "polynomial", 1.5, 3, 1))]:
        gallery, _, _, _ = run(models, *form, model=model)[-1]
        original = open(gallery[2][0], "rb").read()
        values = diffusion.form_values(read_parameters(original), models)
        assert values[-1] == model and values[1] == 11 and values[6] == 3
        if model == "teacher-sid":   # fields a one-step model has not: left as they are in the form
            assert values[2:6] == [None] * 4 and values[8:10] == [None, None] and values[11:13] == [None, None]
        filled = [v if v is not None else d for v, d in zip(values, [*form, 8, 0.0, False, 1.0, 0.0, None])]
        again, _, _, _ = run(models, *filled[:-1], model=values[-1])[-1]
        assert open(again[2][0], "rb").read() == original
    # batch-invariant one-step: each image in its own call, so the image alone regenerates it
    gallery, _, _, _ = run(models, "a", 3, 1, "euler", "polynomial", 1.0, 3, 1, 8, 0.0, True, model="teacher-sid")[-1]
    values = diffusion.form_values(read_parameters(gallery[1][0]), models)
    assert values[1] == 4 and values[6] == 1 and values[10] is True
    alone, _, _, _ = run(models, "a", 4, 1, "euler", "polynomial", 1.0, 1, 1, 8, 0.0, True, model="teacher-sid")[-1]
    assert open(alone[0][0], "rb").read() == open(gallery[1][0], "rb").read()


def test_bad_model_is_named(models):
    import gradio as gr

    with pytest.raises(gr.Error, match="model='nope' is not allowed: one of"):
        run(models, "a", 0, 1, "euler", "polynomial", 1.0, 1, 1, model="nope")
    text = read_parameters(run(models, "a", 0, 1, "euler", "polynomial", 1.0, 1, 1)[-1][0][0][0])
    assert "Model: teacher," in text                                         # no model given: the first
    with pytest.raises(ValueError, match="model='other' is not allowed: this app serves teacher, teacher-sid"):
        diffusion.form_values(text.replace("Model: teacher,", "Model: other,").replace("Model hash", "X"), models)


def test_weights_folders_are_found_and_load_as_their_class(models, tmp_path):
    from genkit.loading import diffusion_folders, load_pipeline

    for name, pipe in [("b-teacher", models["teacher"]), ("a-sid", models["teacher-sid"]),
                       ("openmoji-32", models["teacher"])]:
        pipe.save_pretrained(tmp_path / name)
    (tmp_path / "notes").mkdir()
    assert [p.split("/")[-1] for p in diffusion_folders(str(tmp_path))] == ["openmoji-32", "a-sid", "b-teacher"]
    assert type(load_pipeline(str(tmp_path / "a-sid"))) is OneStepPipeline


def test_served_model_menu(models):
    from gradio_client import Client, handle_file

    demo = build_demo(models, max_batch_size=4)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True)
    client = None
    try:
        client = Client(url, verbose=False)
        gallery, info = client.predict("a", 0, 20, "heun", "polynomial", 2.0, 2, 1, 8, 0.0, False, 1.0, 0,
                                          "teacher-sid", api_name="/generate")
        assert len(gallery) == 2 and "NFE per image:** 1" in info
        out = client.predict(handle_file(gallery[1]["image"]), api_name="/png_info")
        assert out[-1] == "teacher-sid" and out[2] == 0   # the model restored, the run's first seed
        gallery, info = client.predict("a", 0, 2, "euler", "polynomial", 1.0, 1, 1, 8, 0.0, False, 1.0, 0,
                                          api_name="/generate")                 # the old API: the first model
        assert "Model: teacher," in read_parameters(gallery[0]["image"]) and "NFE per image:** 2" in info
    finally:
        if client is not None:
            client.close()
        demo.close()
