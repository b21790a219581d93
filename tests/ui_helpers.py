"""Shared by the app's tests: a tiny pipeline, Gradio kept offline and in a temp folder, a free port."""

import os
import socket

import pytest
import torch

from helpers import CLASS_NAMES, tiny_unet


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
def tiny_pipe():
    from genkit.scheduler import GenkitScheduler
    from pipelines.pixel_diffusion import PixelDiffusionPipeline

    pipe = PixelDiffusionPipeline(tiny_unet(4), GenkitScheduler(image_size=8), class_names=CLASS_NAMES)
    pipe.set_progress_bar_config(disable=True)
    # One intra-op thread: this tiny net gains nothing from more, and on a busy 2-core box (a training job
    # beside the tests) two spinning threads make each call ~100x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield pipe
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_mm():
    from genkit.mm import MultimodalAR
    from pipelines.multimodal import MultimodalARPipeline

    torch.manual_seed(0)
    model = MultimodalAR(d_model=32, n_layers=1, n_heads=2, head_width=32, head_depth=1, max_text_bytes=16)
    return MultimodalARPipeline(model=model.eval())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_progress(*_args, **_kwargs):
    pass
