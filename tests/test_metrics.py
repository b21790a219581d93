"""Metrics: the Frechet distance against closed forms, reference statistics, the torchmetrics path, ODE error,
and `genkit eval` end to end (one process and two gloo ranks) on tiny random models."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genkit.cli import main
from genkit.metrics import (FrechetDistance, OpenMojiFeatureNet, ReferenceStats, frechet_distance, load_inception,
                            ode_error)
from helpers import run_cli as cli, save_tiny_features, save_tiny_pipeline

ROOT = Path(__file__).resolve().parents[1]


def test_frechet_distance_of_diagonal_gaussians_is_closed_form():
    """FD = |mu1 - mu2|^2 + sum_i (s1_i + s2_i - 2 sqrt(s1_i s2_i)) for diagonal covariances."""
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    exact = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(exact, rel=1e-9)
    assert frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0, abs=1e-9)


def test_frechet_distance_of_rotated_gaussians():
    """Both covariances rotated by one orthogonal Q: FD is unchanged (it depends on eigenvalues only)."""
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    mu1, mu2, s1, s2 = rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    exact = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    fd = frechet_distance(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert fd == pytest.approx(exact, rel=1e-7)


class Identity(torch.nn.Module):
    """'Features' = the 4 pixels of a 1x2x2 image, to check the metric path against numpy."""

    num_features = 12

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x.flatten(1).float()


def test_reference_roundtrip_and_metric_equal_numpy(tmp_path):
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (300, 3, 2, 2), generator=g, dtype=torch.uint8)
    fake = (real.float() * 0.8 + 20).round().clamp(0, 255).to(torch.uint8)[:200]
    ref = ReferenceStats.from_features(real.flatten(1).double(), "id", 2, source="random")
    ref.save(tmp_path / "ref.npz")
    back = ReferenceStats.load(tmp_path / "ref.npz")
    assert back.n == 300 and back.features == "id" and back.resolution == 2
    np.testing.assert_array_equal(back.mu, ref.mu)
    np.testing.assert_array_equal(back.sigma, ref.sigma)
    fd = FrechetDistance(Identity(), "id", resolution=2)
    fd.set_reference(back)
    fd.update(fake[:120])
    fd.update(fake[120:])                                         # several updates = one big one
    f = fake.flatten(1).double().numpy()
    expected = frechet_distance(f.mean(0), np.cov(f, rowvar=False), ref.mu, ref.sigma)
    assert fd.num_images == 200 and fd.compute() == pytest.approx(expected, rel=1e-6)
    fd.reset()                                                    # keeps the reference
    fd.update(real)
    assert fd.compute() == pytest.approx(0, abs=1e-6)


def test_reference_errors(tmp_path):
    fd = FrechetDistance(Identity(), "id", resolution=2)
    with pytest.raises(ValueError, match="no reference"):
        fd.compute()
    other = ReferenceStats(np.zeros(12), np.eye(12), 10, "openmoji:abc", 2)
    with pytest.raises(ValueError, match="built with features 'openmoji:abc', not 'id'"):
        fd.set_reference(other)
    with pytest.raises(ValueError, match="at 32 px but the images are 2 px"):
        fd.set_reference(ReferenceStats(np.zeros(12), np.eye(12), 10, "id", 32))
    fd.set_reference(ReferenceStats(np.zeros(12), np.eye(12), 10, "id", 2))
    fd.update(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="1 images are too few"):
        fd.compute()
    with pytest.raises(ValueError, match="images of 4 px"):
        fd.update(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a reference-statistics .npz"):
        ReferenceStats.load(tmp_path / "bad.npz")


def test_feature_net_takes_uint8_at_any_size_and_round_trips(tmp_path):
    path = save_tiny_features(tmp_path / "f")
    net = OpenMojiFeatureNet.from_pretrained(path).eval()
    x8 = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    assert net(x8).shape == (3, 8) and net.num_features == 8 and net.predict(x8).shape == (3,)
    with pytest.raises(ValueError, match="uint8 \\(N, 3, H, W\\)"):
        net(x8.float())


def test_inception_without_its_packages_or_weights_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="inception"):
        load_inception(str(tmp_path / "missing.pth"))


def test_ode_error_is_per_image_rms():
    x = torch.zeros(2, 3, 4, 4)
    y = x.clone()
    y[1] += 0.5
    assert ode_error(x, y).tolist() == [0.0, 0.5]
    with pytest.raises(ValueError, match="equal shapes"):
        ode_error(x, y[:1])


# -- genkit eval on tiny random models ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny pipeline, a tiny feature net and a reference built from random 8x8 images with `genkit eval ref`."""
    root = tmp_path_factory.mktemp("eval")
    model = save_tiny_pipeline(root / "model")
    features = save_tiny_features(root / "features")
    real = root / "real"
    real.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(real / f"{i:03d}.png")
    ref = root / "ref.npz"
    rc = main(["eval", "ref", "--samples", str(real), "--features-model", features, "--out", str(ref)])
    assert rc == 0
    return {"model": model, "features": features, "ref": str(ref), "real": real, "root": root}


def test_eval_fd_of_a_folder_is_zero_against_its_own_reference_and_repeatable(tiny, capsys):
    args = ["eval", "fd", "--samples", tiny["real"], "--ref", tiny["ref"], "--features-model", tiny["features"]]
    rc, out, err = cli(capsys, *args)
    assert rc == 0, err
    row = json.loads(out.strip().splitlines()[-1])
    assert row["n"] == 40 and row["fd"] == pytest.approx(0, abs=1e-4) and row["features"].startswith("openmoji:")
    assert cli(capsys, *args)[1] == out                                   # the same number twice


def test_eval_fd_of_model_equals_fd_of_its_saved_samples(tiny, capsys, tmp_path):
    common = ["--num", 6, "--steps", 3, "--solver", "euler", "--seed", 4]
    rc, _, err = cli(capsys, "sample", "--model", tiny["model"], *common, "--device", "cpu", "--out", tmp_path / "s")
    assert rc == 0, err
    rc, out, err = cli(capsys, "eval", "fd", "--samples", tmp_path / "s", "--ref", tiny["ref"],
                       "--features-model", tiny["features"])
    from_folder = json.loads(out.strip().splitlines()[-1])
    rc, out, err = cli(capsys, "eval", "fd", "--model", tiny["model"], *common, "--ref", tiny["ref"],
                       "--features-model", tiny["features"], "--batch-size", 4, "--out", tmp_path / "fd.json")
    assert rc == 0, err
    from_model = json.loads(out.strip().splitlines()[-1])
    assert from_model["fd"] == pytest.approx(from_folder["fd"], rel=1e-6) and from_model["n"] == 6
    assert from_model["nfe_per_image"] == 6 and 0 <= from_model["class_accuracy"] <= 1  # 3 steps x CFG 2
    assert json.loads((tmp_path / "fd.json").read_text()) == from_model


def test_eval_fd_two_gloo_ranks_equal_one_process(tiny, tmp_path):
    """torchrun --nproc_per_node 2: seeds split, the metric's sums are added across ranks, same FD."""
    args = ["-m", "genkit.cli", "eval", "fd", "--model", tiny["model"], "--num", "7", "--steps", "2", "--solver",
            "euler", "--ref", tiny["ref"], "--features-model", tiny["features"], "--batch-size", "2",
            "--no-progress", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    # '--' ends torchrun's own options (else `--num` reads as an abbreviation of its `--numa-binding`)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "--", *args[1:-2]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    a = json.loads(one.stdout.strip().splitlines()[-1])
    b = json.loads(two.stdout.strip().splitlines()[-1])
    assert b["num_processes"] == 2 and b["n"] == 7
    assert b["fd"] == pytest.approx(a["fd"], rel=1e-5) and b["class_accuracy"] == a["class_accuracy"]


@pytest.mark.parametrize("argv,match", [
    (["--samples", "{root}/nowhere"], "--samples=.*is not a folder"),
    (["--samples", "{root}/mixed"], "mixes image sizes"),
    (["--samples", "{root}/real", "--ref", "{root}/other-ref.npz"], "built with features"),
    (["--samples", "{root}/real", "--ref", "{root}/nope.npz"], "--ref=.*is not a file"),
    (["--samples", "{root}/real", "--ref", "imagenet"], "--ref='imagenet' is not allowed"),
    (["--samples", "{root}/real", "--features", "clip"], "--features='clip' is not allowed"),
    (["--samples", "{root}/real", "--model", "{root}/model"], "exactly one of --samples DIR or --model DIR"),
    (["--samples", "{root}/one", "--ref", "{root}/ref.npz"], "1 images are too few"),
])
def test_eval_fd_bad_input_is_one_line_exit_2(tiny, capsys, argv, match):
    root = tiny["root"]
    (root / "mixed").mkdir(exist_ok=True)
    Image.new("RGB", (8, 8)).save(root / "mixed" / "a.png")
    Image.new("RGB", (16, 16)).save(root / "mixed" / "b.png")
    (root / "one").mkdir(exist_ok=True)
    Image.new("RGB", (8, 8)).save(root / "one" / "a.png")
    other = save_tiny_features(root / "other-features", seed=1)
    main(["eval", "ref", "--samples", str(root / "real"), "--features-model", other,
          "--out", str(root / "other-ref.npz")])
    capsys.readouterr()
    argv = [a.format(root=root) for a in argv]
    rc, out, err = cli(capsys, "eval", "fd", *argv, "--features-model", tiny["features"])
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    import re
    assert re.search(match, err), err


def test_bench_samplers_on_a_tiny_model_resumes_and_writes_a_table(tiny, capsys, tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "samplers", "--model", tiny["model"], "--nfe", "2", "--num", 6, "--ode-num", 3,
            "--ode-ref-steps", 8,
            "--solvers", "euler,heun", "--grids", "polynomial,logsnr", "--schedulers", "ddim", "--batch-size", 4,
            "--ref", tiny["ref"], "--features-model", tiny["features"], "--device", "cpu", "--out", out]
    rc, _, err = cli(capsys, *args)
    assert rc == 0, err
    first = json.loads(out.read_text())
    assert set(first["rows"]) == {"euler/polynomial@2", "euler/logsnr@2", "heun/polynomial@2", "heun/logsnr@2",
                                  "diffusers:ddim@2"}
    row = first["rows"]["heun/polynomial@2"]
    assert row["steps"] == 1 and row["nfe"] == 1 and row["network_evals"] == 2      # heun: 1 step = 1 NFE
    assert all(math.isfinite(v["fd"]) and v["ode_error"] >= 0 for v in first["rows"].values())
    assert "| euler/polynomial |" in (tmp_path / "bench.md").read_text()
    # a second run with one more budget keeps the old rows (same values) and adds the new ones
    rc, _, err = cli(capsys, *[a if a != "2" else "2,3" for a in args])
    second = json.loads(out.read_text())
    assert rc == 0 and len(second["rows"]) == 10
    assert all(second["rows"][k] == v for k, v in first["rows"].items())
    assert len(second["commands"]) == 2 and "--nfe 2,3" in second["commands"][1]     # both runs are listed
    assert "--nfe 2 " in (tmp_path / "bench.md").read_text()


def test_bench_samplers_measures_fd_to_the_teachers_samples_and_a_one_step_generator(tiny, capsys, tmp_path):
    """An arm run exactly as the teacher's samples (dpmpp_2m, same NFE, same seeds) is at FD 0 from them, paired;
    a one-step generator is an arm at NFE 1 with the same classes; every FD has an ordered 95% interval; a new
    generator at the same path is measured again, the old one's row kept under its weights' name."""
    from genkit.scheduler import GenkitScheduler
    from helpers import CLASS_NAMES, tiny_unet
    from pipelines.one_step import OneStepPipeline

    OneStepPipeline(tiny_unet(4, seed=1), GenkitScheduler(image_size=8), class_names=CLASS_NAMES,
                    sigma_init=2.5).save_pretrained(tmp_path / "gen")
    out = tmp_path / "b.json"
    args = ("bench", "samplers", "--model", tiny["model"], "--nfe", "4", "--num", 8, "--ode-num", 0,
            "--solvers", "euler,dpmpp_2m", "--grids", "polynomial", "--schedulers", "", "--batch-size", 4,
            "--teacher-nfe", 4, "--generators", tmp_path / "gen", "--bootstrap", 40,
            "--ref", tiny["ref"], "--features-model", tiny["features"], "--device", "cpu", "--out", out)
    rc, _, err = cli(capsys, *args)
    assert rc == 0, err
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert set(rows) == {"generator:gen@1", "euler/polynomial@4", "dpmpp_2m/polynomial@4", "teacher:dpmpp_2m@4"}
    assert rows["dpmpp_2m/polynomial@4"]["fd_teacher_ci95"] == [0.0, 0.0]
    assert rows["dpmpp_2m/polynomial@4"]["fd"] == rows["teacher:dpmpp_2m@4"]["fd"]
    assert rows["euler/polynomial@4"]["fd_teacher"] > 0
    gen = rows["generator:gen@1"]
    assert (gen["nfe"], gen["network_evals"], gen["ode_error"]) == (1, 1, None) and gen["fd_teacher"] > 0
    assert all(v["fd_ci95"][0] <= v["fd_ci95"][1] and "fd_teacher_ci95" in v for v in rows.values())
    ratios = result["ratios"]            # each arm over Euler at its NFE, the generator over the teacher's samples
    assert set(ratios) == {"dpmpp_2m/polynomial@4 / euler/polynomial@4", "generator:gen@1 / teacher:dpmpp_2m@4"}
    same = ratios["dpmpp_2m/polynomial@4 / euler/polynomial@4"]
    assert same["fd"]["ratio"] == pytest.approx(rows["dpmpp_2m/polynomial@4"]["fd"] / rows["euler/polynomial@4"]["fd"],
                                                rel=1e-3)
    assert same["fd_teacher"]["ratio"] == 0.0      # dpmpp_2m@4 *is* the teacher's samples
    assert "fd_teacher" not in ratios["generator:gen@1 / teacher:dpmpp_2m@4"]
    assert result["config"]["teacher"] == "dpmpp_2m@4, polynomial grid"
    assert "--teacher-nfe 4" in result["command"] and "FD to the teacher" in (tmp_path / "b.md").read_text()
    # class by class from the cached features (training/sid_classes.py): the counts add up to the rows' accuracies
    from training.sid_classes import compare, main as classes, per_class, z_score

    classes([str(out), "--arms", "teacher:dpmpp_2m@4,generator:gen@1", "--features-model", tiny["features"],
             "--out", str(tmp_path / "c.json")])
    per = json.loads((tmp_path / "c.json").read_text())
    counts = np.bincount(np.arange(8) % len(CLASS_NAMES), minlength=len(CLASS_NAMES))
    for arm in per["arms"]:
        acc = [0 if a is None else a for a in per["accuracy"][arm]]
        assert float(np.dot(acc, counts)) / 8 == pytest.approx(rows[arm]["class_accuracy"], abs=1e-3)
    assert per["against_first"]["generator:gen@1"]["classes"] == int((counts > 0).sum())
    assert per_class(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 4) == [1.0, 1.0, 0.5, None]
    # 10/10 -> 0/10: pooled 0.5, z = -1 / sqrt(2 * 0.25 / 10) = -4.47, below; 0.2 -> 0.4 on 10 images each:
    # z = 0.2 / sqrt(2 * 0.3 * 0.7 / 10) = 0.98, not significant; on 100 each: 3.09, above
    assert z_score(1.0, 0.0, 10) == pytest.approx(-1 / math.sqrt(0.05)) and z_score(1.0, 1.0, 10) == 0
    got = compare([1.0, 0.5, 0.2, None], [0.0, 0.5, 0.4, 1.0], ["a", "b", "c", "d"], [10, 10, 10, 10])
    assert got.pop("correlation") == pytest.approx(np.corrcoef([1.0, 0.5, 0.2], [0.0, 0.5, 0.4])[0, 1], abs=1e-3)
    assert got == {"classes": 3, "at_or_above": 2, "none_right": ["a"], "below": ["a"], "above": [],
                   "worst": [["a", 1.0, 0.0]]}
    assert compare([0.2], [0.4], ["c"], [100])["above"] == ["c"]
    # a new generator shipped at the same path: measured again; the old row, its features and ratio are kept
    OneStepPipeline(tiny_unet(4, seed=2), GenkitScheduler(image_size=8), class_names=CLASS_NAMES,
                    sigma_init=2.5).save_pretrained(tmp_path / "gen")
    rc, _, err = cli(capsys, *args)
    assert rc == 0, err
    again = json.loads(out.read_text())
    kept = f"generator:gen~{gen['weights']}@1"
    assert set(again["rows"]) == set(rows) | {kept}
    assert again["rows"][kept] == {**gen, "arm": f"generator:gen~{gen['weights']}"}
    assert len(list(tmp_path.glob(f".b.features-*/generator_gen~{gen['weights']}@1.npy"))) == 1
    assert again["rows"]["generator:gen@1"]["weights"] != gen["weights"]
    assert again["rows"]["generator:gen@1"]["fd"] != gen["fd"]
    assert all(again["rows"][k] == rows[k] for k in rows if not k.startswith("generator:"))   # not rerun
    assert again["ratios"][f"{kept} / teacher:dpmpp_2m@4"] == ratios["generator:gen@1 / teacher:dpmpp_2m@4"]
    assert again["ratios"]["generator:gen@1 / teacher:dpmpp_2m@4"] != ratios["generator:gen@1 / teacher:dpmpp_2m@4"]
    # every other generator row over the first of --generators, to data and to the teacher's samples
    over_new = again["ratios"][f"{kept} / generator:gen@1"]
    fds = [(gen[k], again["rows"]["generator:gen@1"][k]) for k in ("fd", "fd_teacher")]   # rounded to 1e-4
    assert over_new["fd"]["ratio"] == pytest.approx(fds[0][0] / fds[0][1], rel=1e-2)
    assert over_new["fd_teacher"]["ratio"] == pytest.approx(fds[1][0] / fds[1][1], rel=1e-2)
    assert "generator:gen@1 / generator:gen@1" not in again["ratios"]
    rc, _, err = cli(capsys, "bench", "samplers", "--model", tiny["model"], "--num", 8, "--ode-num", 0,
                     "--teacher-nfe", 4, "--teacher-solver", "bogus", "--out", tmp_path / "bad.json")
    assert rc == 2 and "--teacher-solver='bogus' is not allowed" in err and not (tmp_path / "bad.json").exists()


def test_bench_samplers_guidance_interval_applies_to_the_teacher_arms_and_counts_what_ran(tiny, capsys, tmp_path):
    """--guidance-sigma-range: the teacher's arms guided only at sigma in [LO, HI] (network_evals between the
    unguided and the guided count), recorded in the config, the command and the table; --solvers '': only the
    teacher's arm and the generators."""
    from genkit.scheduler import GenkitScheduler
    from helpers import CLASS_NAMES, tiny_unet
    from pipelines.one_step import OneStepPipeline

    OneStepPipeline(tiny_unet(4, seed=1), GenkitScheduler(image_size=8), class_names=CLASS_NAMES,
                    sigma_init=2.5).save_pretrained(tmp_path / "gen")
    out = tmp_path / "i.json"
    rc, _, err = cli(capsys, "bench", "samplers", "--model", tiny["model"], "--nfe", "4", "--num", 8, "--ode-num", 0,
                     "--solvers", "", "--schedulers", "", "--batch-size", 4, "--guidance", 2,
                     "--guidance-sigma-range", "0,1", "--teacher-nfe", 4, "--generators", tmp_path / "gen",
                     "--bootstrap", 20, "--ref", tiny["ref"], "--features-model", tiny["features"], "--device", "cpu",
                     "--out", out)
    assert rc == 0, err
    result = json.loads(out.read_text())
    assert set(result["rows"]) == {"generator:gen@1", "teacher:dpmpp_2m@4"}
    assert 4 < result["rows"]["teacher:dpmpp_2m@4"]["network_evals"] < 8
    assert result["config"]["guidance_sigma_range"] == "0,1" and "--guidance-sigma-range 0,1" in result["command"]
    assert "at sigma in [0,1] only" in (tmp_path / "i.md").read_text()
    assert set(result["ratios"]) == {"generator:gen@1 / teacher:dpmpp_2m@4"}


def test_bench_overhead_times_a_one_step_generator_beside_its_teacher(tiny, capsys, tmp_path):
    """`bench overhead --generators`: the generator is an interleaved arm, its speed-up the ratio of the medians;
    a folder that is not a one-step generator is refused by flag."""
    from genkit.scheduler import GenkitScheduler
    from helpers import CLASS_NAMES, tiny_unet
    from pipelines.one_step import OneStepPipeline

    OneStepPipeline(tiny_unet(4, seed=1), GenkitScheduler(image_size=8), class_names=CLASS_NAMES,
                    sigma_init=2.5).save_pretrained(tmp_path / "gen")
    common = ["bench", "overhead", "--model", tiny["model"], "--steps", 4, "--batch-size", 2, "--repeats", 2,
              "--guidance", 2, "--device", "cpu"]
    rc, out, err = cli(capsys, *common, "--generators", tmp_path / "gen", "--out", tmp_path / "o.json")
    assert rc == 0, err
    r = json.loads((tmp_path / "o.json").read_text())
    assert set(r["all_s"]) == {"bare", "pipeline", "generator:gen"} and len(r["all_s"]["generator:gen"]) == 2
    speedup = r["generator_speedup_over_first_solver"]["generator:gen"]
    assert speedup == pytest.approx(r["median_s"]["pipeline"] / r["median_s"]["generator:gen"], rel=5e-3)
    assert "generator:gen (1 network evaluation)" in out and "--generators" in r["command"]
    rc, _, err = cli(capsys, *common, "--generators", tiny["model"])
    assert rc == 2 and "--generators=" in err and "not a one-step generator" in err


def test_within_class_spread_is_the_within_class_variance_and_zero_for_one_image_per_class():
    """Classes at far-apart means with isotropic noise s in d dims: spread = d s^2 whatever the means (the
    between-class part is not counted); unequal counts per class (2 to 50) stay unbiased; one image per class
    repeated (a generator that ignores its noise) gives 0; no class with 2 images is refused."""
    from genkit.metrics import within_class_spread

    rng = np.random.default_rng(0)
    d, s = 16, 0.7
    counts = [2, 3, 5, 50] * 100
    labels = np.repeat(np.arange(len(counts)), counts)
    means = rng.normal(0, 100, (len(counts), d))
    feats = means[labels] + rng.normal(0, s, (len(labels), d))
    assert within_class_spread(feats, labels) == pytest.approx(d * s * s, rel=0.03)
    assert within_class_spread(means[labels], labels) == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="at least 2 images"):
        within_class_spread(feats[:3], np.arange(3))
