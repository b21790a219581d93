"""training/distill_sid.py end to end on CPU with tiny teachers: a plain diffusers DDPM folder (eps, discrete
time), kill + exact resume, 2 torchrun gloo ranks with gradient accumulation == one process with the same global
batch, and the one-step folder it writes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler
from safetensors.torch import load_file

from genkit.denoiser import Denoiser
from pipelines.one_step import OneStepPipeline
from helpers import save_tiny_pipeline, tiny_unet

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "training" / "distill_sid.py")
TINY = ["--train_batch_size", "2", "--fd_every_images", "0", "--log_every", "1", "--checkpointing_steps", "2",
        "--learning_rate", "1e-4", "--ema_halflife_images", "20", "--seed", "0"]


def env():
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def cmd(teacher, out, images, *extra):
    return [sys.executable, SCRIPT, "--teacher", str(teacher), "--output_dir", str(out), "--max_train_images",
            str(images), *TINY, *extra]


def run(args, timeout=300):
    res = subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def checkpoints(out):
    return sorted((p.name for p in Path(out).glob("checkpoint-*")), key=lambda n: int(n.split("-")[1]))


def same_files(a, b, names=("model.safetensors", "model_1.safetensors", "ema_generator.safetensors")):
    for name in names:
        x, y = load_file(str(Path(a) / name)), load_file(str(Path(b) / name))
        assert x.keys() == y.keys()
        assert all(torch.equal(x[k], y[k]) for k in x), f"{name} differs"


@pytest.fixture(scope="module")
def genkit_teacher(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("teacher") / "tiny")


@pytest.fixture(scope="module")
def ddpm_teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddpm") / "tiny"
    DDPMPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(path)
    return path


def test_plain_ddpm_folder_distils_and_the_generator_starts_as_the_teacher(ddpm_teacher, tmp_path):
    """eps prediction, 1000 discrete steps, unconditional. With the generator's lr ~0 the saved EMA generator is
    still the teacher's denoiser at sigma_init: the whole chain (copy, EMA, export, OneStepPipeline over a DDPM
    scheduler) is exact. The fake score has its own lr: it moves."""
    out = tmp_path / "sid"
    log = run(cmd(ddpm_teacher, out, 4, "--learning_rate", "1e-12", "--fake_score_learning_rate", "1e-3"))
    assert "classes None, guidance 1.0" in log and checkpoints(out) == ["checkpoint-2"]
    teacher_w = load_file(str(Path(ddpm_teacher) / "unet" / "diffusion_pytorch_model.safetensors"))
    fake_w = load_file(str(out / "checkpoint-2" / "model_1.safetensors"))   # prepare order: generator, fake score
    assert max((teacher_w[k] - fake_w[k]).abs().max().item() for k in teacher_w) > 1e-4
    pipe = OneStepPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, DDPMScheduler) and pipe.scheduler.config.prediction_type == "epsilon"
    gens = lambda: [torch.Generator().manual_seed(s) for s in (0, 1)]  # noqa: E731
    out_latent = pipe(batch_size=2, generator=gens(), output_type="latent")
    z = torch.stack([torch.randn(3, 8, 8, generator=g) for g in gens()])
    teacher = Denoiser.from_scheduler(tiny_unet(), DDPMScheduler(num_train_timesteps=1000))
    assert out_latent.nfe == 1
    assert torch.allclose(out_latent.images, teacher(2.5 * z, 2.5), atol=1e-5)
    # every output type
    assert pipe(batch_size=2, generator=gens(), output_type="np").images.shape == (2, 8, 8, 3)
    assert pipe(batch_size=2, generator=gens(), output_type="pt").images.shape == (2, 3, 8, 8)
    pil = pipe(batch_size=2, generator=gens()).images
    assert len(pil) == 2 and pil[0].size == (8, 8)
    rows = (out / "loss.jsonl").read_text().splitlines()
    assert [eval(r)["step"] for r in rows] == [1, 2]  # noqa: S307 (our own JSON rows)


def test_genkit_teacher_moves_the_generator_and_class_labels_work(genkit_teacher, tmp_path):
    out = tmp_path / "sid"
    log = run(cmd(genkit_teacher, out, 8, "--teacher_guidance", "1.5", "--teacher_guidance_sigma_max", "1.0"))
    assert "classes 3, guidance 1.5" in log
    pipe = OneStepPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.teacher_guidance == 1.5 and pipe.config.teacher_guidance_sigma_max == 1.0
    assert pipe.config.class_names == ["a", "b", "c"]
    res = pipe(batch_size=3, class_labels=["a", "c", 1], generator=[torch.Generator().manual_seed(s) for s in range(3)],
               output_type="np")
    assert res.nfe == 1 and np.isfinite(res.images).all()
    teacher = load_file(str(Path(genkit_teacher) / "unet" / "diffusion_pytorch_model.safetensors"))
    gen = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    assert max((teacher[k] - gen[k]).abs().max().item() for k in teacher) > 1e-5  # it learnt something


@pytest.mark.slow  # ~60 s on a busy 2-core box: three runs
def test_kill_then_resume_is_bit_exact(genkit_teacher, tmp_path):
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd(genkit_teacher, killed, 100_000), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not checkpoints(killed):
            assert proc.poll() is None, "exited before its first checkpoint"
            assert time.time() < deadline, "no checkpoint after 300 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    step = int(checkpoints(killed)[-1].split("-")[1])
    target = step + 2
    log = run(cmd(genkit_teacher, killed, target * 2, "--resume_from_checkpoint", "latest"))
    assert f"at step {step}" in log
    straight = tmp_path / "straight"
    run(cmd(genkit_teacher, straight, target * 2))
    same_files(killed / f"checkpoint-{target}", straight / f"checkpoint-{target}")
    # logs: each step once, in order; minutes never restart from zero
    import json

    rows = [json.loads(r) for r in (killed / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, target + 1))
    assert all(b["minutes"] >= a["minutes"] for a, b in zip(rows, rows[1:]))
    state = json.loads((killed / f"checkpoint-{target}" / "trainer_state.json").read_text())
    assert state["images_seen"] == target * 2 and not list(killed.glob("checkpoint-*/*custom_checkpoint*"))


@pytest.mark.slow  # two torchrun ranks + one process
def test_two_gloo_ranks_with_accumulation_match_one_process(genkit_teacher, tmp_path):
    """2 ranks x 2 accumulation steps x batch 2 == 1 process x 4 accumulation steps x batch 2: the same 8 images per
    step (draws are keyed by the micro-batch's place in the global batch). DDP must all-reduce the accumulated
    generator and fake-score gradients once per step (forward and backward inside no_sync until the last
    micro-batch, for each of the --fake_score_steps fake-score steps); identical weights on both ranks and equal to
    the single process up to float round-off."""
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    # Adam with beta1 = 0 and eps 1e-8 is nearly sign(g): round-off in a tiny gradient flips a whole lr-sized
    # update. A large eps makes the update smooth in g, so the comparison sees real differences only.
    common = ["--max_train_images", "16", "--dump_rank_params", "--adam_eps", "1e-3", "--learning_rate", "1e-3",
              "--fake_score_steps", "2"]                              # each fake step synced once, too
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", SCRIPT,
         "--teacher", genkit_teacher, "--output_dir", str(ddp), *TINY, "--gradient_accumulation_steps", "2", *common])
    run(cmd(genkit_teacher, single, 16, "--gradient_accumulation_steps", "4", *common[2:]))  # cmd sets the 16
    r0, r1 = load_file(str(ddp / "rank0.safetensors")), load_file(str(ddp / "rank1.safetensors"))
    one = load_file(str(single / "rank0.safetensors"))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    worst = max((r0[k] - one[k]).abs().max().item() for k in r0)
    moved = max((r0[k] - load_file(str(Path(genkit_teacher) / "unet" / "diffusion_pytorch_model.safetensors"))
                 [k.split(".", 1)[1]]).abs().max().item() for k in r0)
    assert worst < 1e-5 < moved, (worst, moved)


@pytest.mark.parametrize("flag, value", [
    ("--alpha", "11"), ("--alpha", "-1"), ("--learning_rate", "2"), ("--teacher_guidance", "-1"),
    ("--train_batch_size", "0"), ("--tmax", "0"), ("--teacher", "/nonexistent"), ("--max_grad_norm", "-1"),
    ("--fd_teacher_features", "/nonexistent.npy"), ("--fake_score_learning_rate", "0"),
    ("--teacher_guidance_sigma_max", "-1"), ("--fake_score_steps", "0"),
])  # NaN / inf stop at the parser (one line, exit 2): tests/test_training_flags.py
def test_bad_flags_name_the_flag(tmp_path, flag, value):
    from training.distill_sid import parse_args

    with pytest.raises(ValueError, match=f"^{flag}="):
        parse_args(["--output_dir", str(tmp_path), flag, value])


def test_init_generator_continues_a_saved_generator_and_refuses_a_mismatched_one(genkit_teacher, tmp_path):
    """--init_generator: the generator starts from a one-step folder (here a UNet with other weights than the
    teacher's); with lr ~0 the saved EMA generator is that folder's UNet, not the teacher's. A folder made with
    another sigma_init, or one that is not a one-step generator, is refused before anything loads."""
    from genkit.scheduler import GenkitScheduler
    from training.distill_sid import parse_args

    init = tmp_path / "init"
    OneStepPipeline(tiny_unet(4, seed=1), GenkitScheduler(image_size=8), class_names=["a", "b", "c"],
                    sigma_init=2.5).save_pretrained(init)
    out = tmp_path / "sid"
    log = run(cmd(genkit_teacher, out, 2, "--learning_rate", "1e-12", "--init_generator", str(init)))
    assert f"generator starts from {init}" in log
    want = tiny_unet(4, seed=1).state_dict()
    gen = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.allclose(gen[k], want[k], atol=1e-6) for k in want)
    with pytest.raises(ValueError, match=r"--init_generator=.* made with --sigma_init 1.0 \(it was made with 2.5\)"):
        parse_args(["--teacher", genkit_teacher, "--output_dir", str(out), "--init_generator", str(init),
                    "--sigma_init", "1.0"])
    with pytest.raises(ValueError, match="--init_generator=.* a one-step generator folder"):
        parse_args(["--teacher", genkit_teacher, "--output_dir", str(out), "--init_generator", genkit_teacher])


@pytest.mark.parametrize("rampup", [True, False])
def test_the_ema_ramps_up_unless_told_not_to(genkit_teacher, tmp_path, rampup):
    """The EMA of step 3 from the raw generator of step 3 and the EMA of step 2: decay (1 + 2) / (10 + 2) = 0.25
    with the ramp (diffusers' EMAModel), the full 0.5 ** (2 / 20) from the first steps with --no-ema_rampup."""
    from diffusers import UNet2DModel

    out = tmp_path / "sid"
    run(cmd(genkit_teacher, out, 6, "--checkpointing_steps", "1", "--checkpoints_total_limit", "3",
            *([] if rampup else ["--no-ema_rampup"])))
    assert checkpoints(out) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    names = [n for n, _ in UNet2DModel.from_pretrained(Path(genkit_teacher) / "unet").named_parameters()]
    ema2, ema3 = (load_file(str(out / f"checkpoint-{s}" / "ema_generator.safetensors")) for s in (2, 3))
    w3 = load_file(str(out / "checkpoint-3" / "model.safetensors"))   # the generator: prepared first
    d = 0.25 if rampup else 0.5 ** (2 / 20)
    for i, name in enumerate(names):
        torch.testing.assert_close(ema3[str(i)], d * ema2[str(i)] + (1 - d) * w3[name], rtol=1e-5, atol=1e-6)


def test_the_curve_of_a_continued_run_counts_on_from_the_first():
    """sid_curve.chain: a run started with --init_generator from another's generator continues its curve:
    images and minutes are offset by the first run's last row, its step-0 row (the same generator) is dropped,
    and the slope is taken over the joined rows."""
    from training.sid_curve import chain, curve, images_to_reach

    first = [{"step": 0, "images": 0, "minutes": 0.0, "fd": 200.0}, {"step": 10, "images": 80, "minutes": 5.0,
                                                                     "fd": 100.0}]
    second = [{"step": 0, "images": 0, "minutes": 0.2, "fd": 100.3}, {"step": 10, "images": 80, "minutes": 4.0,
                                                                      "fd": 50.0}]
    rows = chain([first, second])
    assert [(r["run"], r["step"], r["images"], r["minutes"], r["fd"]) for r in rows] == [
        (0, 0, 0, 0.0, 200.0), (0, 10, 80, 5.0, 100.0), (1, 10, 160, 9.0, 50.0)]
    assert curve(rows)["slope_log_fd_per_log_images"] == pytest.approx(-1.0)   # FD halves as images double
    assert chain([first]) == [{**r, "run": 0} for r in first]
    assert "slope_log_fd_teacher_per_log_images" not in curve(rows)                 # only where measured
    with_teacher = [{**r, "fd_teacher": 40.0 / r["images"] ** 0.5} for r in rows if r["images"]]
    assert curve(with_teacher)["slope_log_fd_teacher_per_log_images"] == pytest.approx(-0.5)
    # the projection: where 40 / sqrt(images) reaches the teacher's FD to itself; none for a line that rises
    assert curve(with_teacher)["images_to_fd_teacher_of_the_teacher_itself"] == pytest.approx((40 / 2.6) ** 2)
    assert images_to_reach([{**r, "fd_teacher": r["images"] ** 0.5} for r in with_teacher], 2.6) is None


def test_fixed_seed_scores_equal_the_plain_formulas_on_one_feature_pass(tmp_path):
    """metrics.jsonl's scores from one feature pass: FD to data and to the teacher's samples equal the plain
    formula on the feature sets (0 when the teacher's features are the generator's own), spread is the
    within-class spread over the class cycle, class accuracy counts seed k's class k mod K."""
    import argparse
    import types
    from genkit.metrics import frechet_distance, within_class_spread
    from training.distill_sid import FixedSeedFD

    class Feats(torch.nn.Module):                                  # uint8 (N, 3, 4, 4) -> (N, 5), fixed weights
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(48, 5, generator=torch.Generator().manual_seed(0)))

        def forward(self, x):
            return x.float().flatten(1) @ self.w / 255

    class Classifier:                                              # says class 0 for every image
        def predict(self, images):
            return torch.zeros(len(images), dtype=torch.long)

    net = Feats()
    images = torch.randint(0, 256, (40, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    own = net(images).double().detach().numpy()
    other = own[::-1] * 1.5 + 0.3                                   # another set of 40 "teacher" features
    stats = lambda f: (f.mean(0), np.cov(f, rowvar=False))          # noqa: E731
    far = frechet_distance(*stats(own), *stats(other))
    assert far > 1.0                                                # the second set really is far away
    ref = types.SimpleNamespace(**dict(zip(("mu", "sigma"), stats(other))))
    for teacher, want in ((own, 0.0), (other, far)):
        fd = FixedSeedFD.__new__(FixedSeedFD)                       # no feature-network folder needed
        fd.net, fd.ref, fd.teacher, fd.num_classes, fd.classifier = net, ref, stats(teacher), 4, Classifier()
        got = fd.scores(images)
        assert abs(got["fd_teacher"] - want) < 1e-6 * max(1.0, want), (got["fd_teacher"], want)
        assert got["fd"] == pytest.approx(far, rel=1e-9)
        assert got["spread"] == pytest.approx(within_class_spread(own, np.arange(40) % 4), rel=1e-9)
        assert got["class_accuracy"] == pytest.approx(0.25)               # seeds 0, 4, 8, ... ask for class 0
    fd.teacher, fd.classifier, fd.num_classes = None, None, None        # unconditional, no teacher features
    assert fd.scores(images)["fd_teacher"] is None and fd.scores(images)["spread"] is None
    with pytest.raises(ValueError, match="fd_teacher_features"):    # a wrong-sized file is refused by name
        np.save(tmp_path / "short.npy", own[:10])
        FixedSeedFD(argparse.Namespace(features_model=str(ROOT / "weights/openmoji-features"), fd_num=40,
                                       fd_teacher_features=str(tmp_path / "short.npy")), 32, None, "cpu")


def test_gradient_noise_scale_recovers_a_known_mean_and_covariance():
    """training/sid_grad_noise.noise_scale on K synthetic batch gradients mu + N(0, s^2/B I) in P dims: |mu|^2,
    tr(Sigma_B) = P s^2 / B and B_noise = P s^2 / |mu|^2 come back within sampling error."""
    from training.sid_grad_noise import noise_scale

    gen = torch.Generator().manual_seed(0)
    K, P, B, s = 4000, 50, 8, 2.0
    mu = torch.full((P,), 0.5)
    grads = mu + torch.randn(K, P, generator=gen, dtype=torch.float64) * s / B ** 0.5
    got = noise_scale(grads, B)
    assert got["mu_sq"] == pytest.approx(P * 0.25, rel=0.05)
    assert got["trace_sigma_batch"] == pytest.approx(P * s * s / B, rel=0.05)
    assert got["b_noise"] == pytest.approx(P * s * s / (P * 0.25), rel=0.1)
    assert noise_scale(mu.repeat(3, 1), B)["trace_sigma_batch"] == pytest.approx(0, abs=1e-9)   # no noise


def test_gradient_noise_script_reads_a_checkpoint(genkit_teacher, tmp_path):
    """sid_grad_noise.py on a real distill_sid.py checkpoint: bf16 autocast gives nearly the float32 gradient on
    the same batch; the JSON is written; a folder without the fake score is refused by name."""
    from training.sid_grad_noise import main, parse_args

    out = tmp_path / "sid"
    run(cmd(genkit_teacher, out, 4))
    res = tmp_path / "noise.json"
    main(parse_args([str(out / "checkpoint-2"), "--teacher", str(genkit_teacher), "--batch", "2", "--batches", "3",
                     "--out", str(res)]))
    got = __import__("json").loads(res.read_text())
    assert all(p["cosine"] > 0.95 for p in got["bf16_vs_float32_same_batch"])
    assert -1 <= got["cosine_between_two_batches"] <= 1 and got["batches"] == 3
    with pytest.raises(ValueError, match="^checkpoint=.*model.safetensors"):
        parse_args([str(tmp_path)])
