"""Fault test: kill -9 `genkit sample`, `genkit draw` and the training scripts (SiD distillation and AMED too) at random
moments, several times, resume, and compare with an uninterrupted run: the same bytes (images) or the same tensors
(weights), and no temp files, half-written images or checkpoints left visible. Tiny models; the kill times come
from a seeded RNG, so a failure replays."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import save_tiny_pipeline

ROOT = Path(__file__).resolve().parents[1]
KILLS = 3
pytestmark = pytest.mark.slow


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get(
        "PYTHONPATH", ""), "PYTHONUNBUFFERED": "1"}


def run(cmd, timeout=600):
    res = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]


def killed_runs(cmd, rng, lo, hi, kills=KILLS):
    """Start cmd `kills` times, each killed with SIGKILL (its whole process group) after a random lo..hi s."""
    for _ in range(kills):
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            proc.wait(timeout=rng.uniform(lo, hi))   # it may finish first: then the next start only resumes
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def files(folder, pattern):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob(pattern))}


def no_temp_files(folder):
    left = [str(p.relative_to(folder)) for p in Path(folder).rglob(".*")]
    assert not left, f"left behind: {left}"


def same_weights(a, b):
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_genkit_sample_killed_and_resumed_equals_one_run(tmp_path):
    model = save_tiny_pipeline(tmp_path / "tiny")
    cmd = lambda out: [sys.executable, "-m", "genkit.cli", "sample", "--model", model, "--num", "40",  # noqa: E731
                       "--steps", "40", "--solver", "heun", "--batch-size", "3", "--device", "cpu", "--out", str(out)]
    run(cmd(tmp_path / "straight"))
    killed_runs(cmd(tmp_path / "killed"), random.Random(0), 1.0, 8.0)
    run(cmd(tmp_path / "killed"))
    assert files(tmp_path / "killed", "*.png") == files(tmp_path / "straight", "*.png")
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("straight", "killed"))
    drop = ("wall_time_s",)
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    no_temp_files(tmp_path / "killed")


def test_genkit_draw_killed_and_resumed_equals_one_run(tmp_path):
    from genkit.mm import MultimodalAR
    from pipelines.multimodal import MultimodalARPipeline

    torch.manual_seed(0)
    model = MultimodalAR(d_model=32, n_layers=2, n_heads=2, head_width=32, head_depth=1, max_text_bytes=16)
    MultimodalARPipeline(model=model.eval()).save_pretrained(tmp_path / "mm")
    prompts = [a for p in ("red apple", "flag: Japan", "cat", "sun", "tree", "car") for a in ("--prompt", p)]
    cmd = lambda out: [sys.executable, "-m", "genkit.cli", "draw", "--model", str(tmp_path / "mm"), *prompts,  # noqa: E731
                       "--num", "3", "--steps", "8", "--head-steps", "8", "--device", "cpu", "--out", str(out)]
    run(cmd(tmp_path / "straight"))
    killed_runs(cmd(tmp_path / "killed"), random.Random(1), 1.0, 8.0)
    run(cmd(tmp_path / "killed"))
    assert files(tmp_path / "killed", "*.png") == files(tmp_path / "straight", "*.png")
    no_temp_files(tmp_path / "killed")


TRAIN = {
    "train_diffusion": (["--channels", "32,32", "--attention_levels", "1", "--layers_per_block", "1", "--resolution",
                         "16", "--train_batch_size", "4", "--checkpointing_steps", "2", "--checkpoints_total_limit",
                         "2", "--log_every", "1", "--seed", "0", "--max_train_steps", "16"],
                        "unet/diffusion_pytorch_model.safetensors"),
    "train_mm": (["--d_model", "32", "--n_layers", "1", "--n_heads", "2", "--head_width", "32", "--head_depth", "1",
                  "--train_batch_size", "4", "--max_train_steps", "16", "--eval_every", "2", "--checkpointing_steps",
                  "2", "--limit_train", "16"], "model/diffusion_pytorch_model.safetensors"),
    "train_vq": (["--max_train_steps", "16", "--channels", "8,8,8", "--latent_dim", "4", "--codebook_size", "16",
                  "--train_batch_size", "4", "--eval_every", "2", "--checkpointing_steps", "2"],
                 "diffusion_pytorch_model.safetensors"),
    "distill_sid": (["--train_batch_size", "2", "--max_train_images", "24", "--fd_every_images", "0", "--log_every",
                     "1", "--checkpointing_steps", "2", "--learning_rate", "1e-4", "--ema_halflife_images", "20",
                     "--seed", "0"], "unet/diffusion_pytorch_model.safetensors"),
    "train_amed": (["--solver", "amed-euler", "--nfe", "3", "--num_trajectories", "24", "--batch_size", "2",
                    "--checkpointing_steps", "2", "--eval_num", "2", "--seed", "0", "--device", "cpu"],
                   "diffusion_pytorch_model.safetensors"),
    "train_features": (["--limit_train", "16", "--epochs", "24", "--channels", "8,8,8,8", "--feature_dim", "8",
                        "--train_batch_size", "8", "--seed", "0"],   # 24 epochs of 4 steps, a checkpoint each:
                       "diffusion_pytorch_model.safetensors"),       # training: 15 of 29 s, ~3 in 4 kills hit it
}


@pytest.mark.parametrize("script", list(TRAIN))
def test_training_killed_and_resumed_equals_one_run(script, tmp_path, image_folder):
    flags, weights = TRAIN[script]
    if script == "train_vq":
        flags = [*flags, "--dataset", str(image_folder)]
    if script == "distill_sid":  # a tiny teacher (tests/helpers.py)
        flags = [*flags, "--teacher", save_tiny_pipeline(tmp_path / "teacher")]
    if script == "train_amed":   # a predictor for a tiny teacher
        flags = [*flags, "--model", save_tiny_pipeline(tmp_path / "teacher")]
    cmd = lambda out: [sys.executable, str(ROOT / "training" / f"{script}.py"), "--output_dir", str(out),  # noqa: E731
                       *flags, "--resume_from_checkpoint", "latest"]
    t0 = time.time()
    run(cmd(tmp_path / "straight"))
    took = time.time() - t0
    killed_runs(cmd(tmp_path / "killed"), random.Random(script), 0.3 * took, 0.9 * took)
    run(cmd(tmp_path / "killed"))
    same_weights(tmp_path / "straight" / weights, tmp_path / "killed" / weights)
    assert [p.name for p in (tmp_path / "killed").glob(".tmp-*")] == []
