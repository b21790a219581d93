"""training/train_diffusion.py end to end on CPU, in subprocesses as diffusers' example tests do:
checkpoints and pruning, kill + exact resume (model, optimizer, EMA), --init_from, flag errors, 2 gloo ranks."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.utils import write_basic_config
from diffusers import UNet2DModel
from safetensors.torch import load_file

from pipelines.pixel_diffusion import PixelDiffusionPipeline
from training.train_diffusion import parse_args

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "training" / "train_diffusion.py")
TINY = ["--channels", "32,32", "--attention_levels", "1", "--layers_per_block", "1", "--resolution", "16",
        "--train_batch_size", "4", "--checkpointing_steps", "2", "--checkpoints_total_limit", "2",
        "--log_every", "1", "--seed", "0"]
CKPT_FILES = {"model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl",
              "ema_unet.safetensors", "ema_unet.json", "trainer_state.json"}  # the EMA: safetensors + JSON
LR, WARMUP = 2e-4, 500  # the defaults: constant_with_warmup, so lr(step) = LR * step / WARMUP here


@pytest.fixture(scope="module")
def accelerate_config(tmp_path_factory):
    cfg = tmp_path_factory.mktemp("accelerate") / "default_config.yml"
    write_basic_config(save_location=str(cfg))
    return str(cfg)


def env():
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


def launch_cmd(cfg, out, steps, *extra):
    return ["accelerate", "launch", "--config_file", cfg, "--num_cpu_threads_per_process", "2", SCRIPT,
            "--output_dir", str(out), "--max_train_steps", str(steps), *TINY, *extra]


def train(cfg, out, steps, *extra):
    res = subprocess.run(launch_cmd(cfg, out, steps, *extra), cwd=ROOT, env=env(), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def checkpoints(out):
    return sorted(p.name for p in Path(out).iterdir() if p.name.startswith("checkpoint-"))


def state(out):
    return json.loads((Path(out) / "training_state.json").read_text())


def unet_weights(folder):
    return load_file(str(Path(folder) / "unet" / "diffusion_pytorch_model.safetensors"))


def last_lr(ckpt):
    return torch.load(Path(ckpt) / "scheduler.bin", weights_only=False)["_last_lr"][0]


def assert_same_tensors(a, b, atol=0.0):
    assert a.keys() == b.keys()
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert worst <= atol, f"max |difference| {worst:.3g} > {atol}"


def assert_loads_and_samples(out, batch=2):
    pipe = PixelDiffusionPipeline.from_pretrained(str(out))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.num_classes == 98 and len(pipe.config.class_names) == 98  # OpenMoji subgroups
    res = pipe(batch_size=batch, num_inference_steps=2, solver="euler", class_labels=0, guidance_scale=2.0,
               generator=[torch.Generator().manual_seed(s) for s in range(batch)], output_type="np")
    assert res.images.shape == (batch, 16, 16, 3) and np.isfinite(res.images).all()
    assert res.images.min() >= 0 and res.images.max() <= 1


@pytest.fixture(scope="module")
def straight6(accelerate_config, tmp_path_factory):
    """6 steps in one go: checkpoints at 2, 4, 6, pruned to the last 2."""
    out = tmp_path_factory.mktemp("straight6") / "run"
    log = train(accelerate_config, out, 6)
    return out, log


def test_checkpoints_pruning_and_output_dir_is_a_pipeline(straight6):
    out, log = straight6
    assert checkpoints(out) == ["checkpoint-4", "checkpoint-6"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temp folders left behind"
    for ckpt in checkpoints(out):
        assert CKPT_FILES <= {p.name for p in (out / ckpt).iterdir()}
    s = state(out)
    assert s["global_step"] == 6 and s["images_seen"] == 6 * 4
    assert [json.loads(line)["step"] for line in (out / "loss.jsonl").read_text().splitlines()] == list(range(1, 7))
    assert last_lr(out / "checkpoint-6") == pytest.approx(LR * 6 / WARMUP)
    assert "saved checkpoint-6 and the EMA pipeline" in log
    assert_loads_and_samples(out)


@pytest.mark.slow  # ~35 s: three launches
def test_resume_restores_model_optimizer_and_ema_exactly(straight6, accelerate_config, tmp_path):
    """2 steps, then --resume_from_checkpoint latest to 6 == 6 steps straight (batches are keyed by (seed, step))."""
    ref, _ = straight6
    out = tmp_path / "run"
    train(accelerate_config, out, 2)
    assert checkpoints(out) == ["checkpoint-2"]
    log = train(accelerate_config, out, 6, "--resume_from_checkpoint", "latest")
    assert f"resumed from {out / 'checkpoint-2'} at step 2" in log
    assert checkpoints(out) == ["checkpoint-4", "checkpoint-6"]
    assert state(out)["global_step"] == 6 and state(out)["images_seen"] == 24
    # the raw weights (checkpoint) and the EMA weights (the pipeline folder) both match the straight run.
    # Same ops in the same order on the same CPU: expected bit-identical; allow float32 round-off only.
    assert_same_tensors(load_file(str(out / "checkpoint-6" / "model.safetensors")),
                        load_file(str(ref / "checkpoint-6" / "model.safetensors")), atol=1e-6)
    assert_same_tensors(unet_weights(out), unet_weights(ref), atol=1e-6)
    assert last_lr(out / "checkpoint-6") == last_lr(ref / "checkpoint-6")
    # resuming from an older checkpoint by path redoes steps 5-6 and replaces checkpoint-6 (same result)
    log = train(accelerate_config, out, 6, "--resume_from_checkpoint", str(out / "checkpoint-4"))
    assert f"resumed from {out / 'checkpoint-4'} at step 4" in log
    assert checkpoints(out) == ["checkpoint-4", "checkpoint-6"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temp folders left behind"
    assert_same_tensors(unet_weights(out), unet_weights(ref), atol=1e-6)


def test_kill_mid_run_then_resume_latest(accelerate_config, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(launch_cmd(accelerate_config, out, 100_000), cwd=ROOT, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300        # a guard against a hang; a loaded 2-core box can take > 120 s
        while not (out.exists() and checkpoints(out)):  # checkpoint-2 (or later, if pruned already)
            assert proc.poll() is None, "training exited before its first checkpoint"
            assert time.time() < deadline, "no checkpoint after 300 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the training process it started
        proc.wait()
    time.sleep(0.2)
    # whatever the moment of the kill, every visible checkpoint-N is complete (temp names start with '.')
    names = checkpoints(out)
    assert names and all(n.split("-")[1].isdigit() for n in names)
    for n in names:
        assert CKPT_FILES <= {p.name for p in (out / n).iterdir()}, f"{n} is incomplete"
    step = int(names[-1].split("-")[1])
    target = step + 2
    # what a kill inside a save leaves (whether this kill did depends on timing): the resumed run must sweep it
    (out / ".tmp-killed-save").mkdir(exist_ok=True)
    (out / ".tmp-killed-save" / "config.json").write_text("{")
    log = train(accelerate_config, out, target, "--resume_from_checkpoint", "latest")
    assert f"resumed from {out / names[-1]} at step {step}" in log
    assert state(out)["global_step"] == target
    assert checkpoints(out)[-1] == f"checkpoint-{target}" and len(checkpoints(out)) == 2
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]
    assert_loads_and_samples(out, batch=1)


def test_init_from_pipeline_folder_continues_weights_and_step(straight6, accelerate_config, tmp_path):
    ref, _ = straight6
    out = tmp_path / "more"
    log = train(accelerate_config, out, 8, "--init_from", str(ref))
    assert f"continuing from pipeline {ref} at step 6" in log
    assert checkpoints(out) == ["checkpoint-8"]
    s = state(out)
    assert s["global_step"] == 8 and s["images_seen"] == 8 * 4
    # the lr is still warming up (~1e-6): 2 more steps barely move the weights away from the init folder,
    # while a fresh random init is far from it
    before, after = unet_weights(ref), unet_weights(out)
    assert_same_tensors(after, before, atol=1e-4)
    torch.manual_seed(1)
    fresh = UNet2DModel.from_config(UNet2DModel.load_config(str(ref), subfolder="unet")).state_dict()
    assert max((fresh[k] - before[k]).abs().max().item() for k in before) > 1e-2
    assert_loads_and_samples(out, batch=1)


@pytest.mark.parametrize("flags, name", [
    (["--channels", "30,60"], "--channels"),
    (["--channels", "32,x"], "--channels"),
    (["--attention_levels", "x"], "--attention_levels"),
    (["--attention_levels", "5"], "--attention_levels"),
    (["--dataset", "/nonexistent"], "--dataset"),
    (["--resolution", "12"], "--resolution"),
    (["--train_batch_size", "0"], "--train_batch_size"),
    (["--checkpoints_total_limit", "0"], "--checkpoints_total_limit"),
    (["--cond_drop", "1.0"], "--cond_drop"),
    (["--learning_rate", "0"], "--learning_rate"),
    (["--init_from", "/nonexistent"], "--init_from"),
])
def test_bad_flags_name_the_flag(tmp_path, flags, name):
    with pytest.raises(ValueError, match=f"^{name}="):
        parse_args(["--output_dir", str(tmp_path), *flags])


def test_good_flags_parse(tmp_path):
    args = parse_args(["--output_dir", str(tmp_path), *TINY])
    assert args.channels == [32, 32] and args.attention_levels == [1]


def test_resume_from_missing_checkpoint_is_a_clear_error(accelerate_config, tmp_path):
    res = subprocess.run(launch_cmd(accelerate_config, tmp_path / "run", 2, "--resume_from_checkpoint",
                                    str(tmp_path / "nope")), cwd=ROOT, env=env(), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode != 0
    assert "--resume_from_checkpoint=" in res.stderr and "is not a checkpoint folder" in res.stderr


def test_two_gloo_ranks_with_torchrun(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", SCRIPT,
           "--output_dir", str(out), "--max_train_steps", "2", *TINY]
    res = subprocess.run(cmd, cwd=ROOT, env={**env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert checkpoints(out) == ["checkpoint-2"]
    files = {p.name for p in (out / "checkpoint-2").iterdir()}
    assert CKPT_FILES | {"random_states_1.pkl"} <= files  # one RNG state per rank
    assert state(out)["images_seen"] == 2 * 4 * 2  # 2 steps x batch 4 x 2 ranks
    # the lr schedule counts optimizer steps, whatever the number of processes
    assert last_lr(out / "checkpoint-2") == pytest.approx(LR * 2 / WARMUP)
    assert_loads_and_samples(out)


def test_minutes_before_sums_earlier_runs_up_to_the_resumed_step(tmp_path):
    from training.utils import minutes_before

    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 500, "minutes": 9.0}, {"step": 1000, "minutes": 17.5}, {"step": 1500, "minutes": 26.0}]) + "\n")
    assert minutes_before(tmp_path, 1000) == 17.5      # resumed from checkpoint-1000: the later row is a lost run
    assert minutes_before(tmp_path, 0) == 0.0 and minutes_before(tmp_path / "new", 500) == 0.0
