"""The command-line edge of upsample guidance and the 64 px study: `genkit sample --size --ug`, `genkit bench
upsample` and `genkit eval curve`, on a tiny 8 px model and a tiny feature network (seconds on a CPU)."""

import json

import numpy as np
import pytest
import torch

from genkit.metrics import ReferenceStats, load_openmoji_features
from helpers import run_cli, save_tiny_features, save_tiny_pipeline


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ug")
    model = save_tiny_pipeline(root / "model")
    feats = save_tiny_features(root / "features")
    net, fid = load_openmoji_features(feats)
    refs = {}
    for res in (8, 16):  # statistics of random images: only the plumbing is tested here
        images = torch.randint(0, 256, (64, 3, res, res), dtype=torch.uint8, generator=torch.Generator().manual_seed(res))
        with torch.no_grad():
            ReferenceStats.from_features(net(images), fid, res).save(root / f"ref{res}.npz")
        refs[res] = str(root / f"ref{res}.npz")
    return {"model": model, "features": feats, "refs": refs, "root": root}


def test_sample_at_size_with_ug_writes_16px_images_and_counts_low_res_nfe(tiny, tmp_path, capsys):
    rc, out, err = run_cli(capsys, "sample", "--model", tiny["model"], "--num", 3, "--steps", 3, "--size", 16,
                           "--ug", 1.0, "--ug-window", "0.4-1", "--out", tmp_path)
    assert rc == 0, err
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["size"] == 16 and man["ug"] == 1.0 and 0 < man["nfe_low_res_per_image"] < man["nfe_per_image"]
    from PIL import Image
    assert Image.open(tmp_path / "000000.png").size == (16, 16)


@pytest.mark.parametrize("flags, msg", [
    (["--size", 12], "--size=12 is not allowed"),          # not m * 8 with m an int >= 2 (with --ug)
    (["--size", 16, "--ug-window", "0.9-0.1"], "--ug-window='0.9-0.1' is not allowed"),
    (["--size", 16, "--ug", "nan"], "--ug=nan is not allowed"),
])
def test_bad_size_and_ug_flags_exit_2_naming_them(tiny, tmp_path, capsys, flags, msg):
    rc, out, err = run_cli(capsys, "sample", "--model", tiny["model"], "--ug", 1.0, *flags, "--out", tmp_path)
    assert rc == 2 and msg in err and err.count("\n") == 1


def test_bench_upsample_arms_resume_and_grids(tiny, tmp_path, capsys):
    out = tmp_path / "b.json"
    argv = ["bench", "upsample", "--model", tiny["model"], "--size", 16, "--num", 4, "--steps", 2, "--scales", "1",
            "--windows", "0-1,0.5-1", "--bootstrap", 20, "--features-model", tiny["features"], "--ref",
            tiny["refs"][16], "--native", f"self16={tiny['model']}", "--out", out]
    rc, _, err = run_cli(capsys, *argv[:-4], "--out", out)  # no native arm first
    assert rc == 0, err
    res = json.loads(out.read_text())
    assert list(res["rows"]) == ["naive", "bicubic", "ug-w1", "ug-w1-t0.5-1", "ug-w1-no-time", "ug-w1-no-power"]
    r = res["rows"]
    assert r["naive"]["nfe_low_res"] == 0 and r["ug-w1"]["nfe_low_res"] == r["ug-w1"]["nfe"] == 4  # CFG 2 x 2 steps
    assert 0 < r["ug-w1-t0.5-1"]["nfe_low_res"] < 4 and r["naive"]["time_vs_naive"] == 1.0
    for row in r.values():
        lo, hi = row["fd_ci95"]
        assert lo <= hi and np.isfinite(row["fd"])
        assert (out.with_name("b.grids") / f"{row['arm']}.png").is_file()
    assert r["bicubic"]["cost_full_res_nfe"] == 1.0  # 4 NFE at 8 px = 1 at 16 px
    # paired ratios to naive and bicubic: the point estimate is the ratio of the rows' FDs, inside its interval
    for base in ("naive", "bicubic"):
        q = res["ratios"][f"ug-w1 / {base}"]
        assert q["ratio"] == pytest.approx(r["ug-w1"]["fd"] / r[base]["fd"], rel=1e-3)
        assert q["ci95"][0] <= q["ratio"] <= q["ci95"][1]
    assert "naive / naive" not in res["ratios"] and "| naive | " in out.with_suffix(".md").read_text()
    assert "--scales 1 --windows 0-1,0.5-1 " in res["command"] and "--ablation-scale 1 " in res["command"]
    # a second run with the same configuration measures nothing again (the rows are kept as they were)
    rc, _, err = run_cli(capsys, *argv[:-4], "--out", out)
    assert rc == 0 and json.loads(out.read_text())["rows"]["naive"] == r["naive"]
    # the native arm: a model trained at 16 px is refused when it is not (this 8 px one)
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2 and "--native=" in err


def test_bench_upsample_resumes_an_arm_killed_part_way_at_its_last_batch(tiny, tmp_path, capsys, monkeypatch):
    """Killed in bicubic's second batch, the rerun keeps naive, takes bicubic's first batch from the partial file
    and ends with the same FDs as an uninterrupted run."""
    import genkit.commands.bench_upsample as bu

    argv = ["bench", "upsample", "--model", tiny["model"], "--size", 16, "--num", 4, "--steps", 2, "--scales", "1",
            "--windows", "0-1", "--ablation-scale", "", "--batch-size", 2, "--bootstrap", 20, "--features-model",
            tiny["features"], "--ref", tiny["refs"][16]]
    rc, _, err = run_cli(capsys, *argv, "--out", tmp_path / "whole.json")
    assert rc == 0, err
    whole = json.loads((tmp_path / "whole.json").read_text())["rows"]

    calls, real = [], bu.class_ids_for

    def dies_on_the_4th_batch(*a):
        calls.append(1)
        if len(calls) == 4:   # naive: batches 1, 2; bicubic: batch 1, then killed
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(bu, "class_ids_for", dies_on_the_4th_batch)
    out = tmp_path / "killed.json"
    with pytest.raises(KeyboardInterrupt):
        run_cli(capsys, *argv, "--out", out)
    assert list(json.loads(out.read_text())["rows"]) == ["naive"]
    assert len(list(tmp_path.glob(".killed.features-*/bicubic.partial.npz"))) == 1
    calls.clear()
    monkeypatch.setattr(bu, "class_ids_for", lambda *a: calls.append(1) or real(*a))
    rc, _, err = run_cli(capsys, *argv, "--out", out)
    assert rc == 0, err
    assert len(calls) == 1 + 2   # bicubic's second batch, ug-w1's two
    rows = json.loads(out.read_text())["rows"]
    assert {k: v["fd"] for k, v in rows.items()} == {k: v["fd"] for k, v in whole.items()}
    assert not list(tmp_path.glob(".killed.features-*/*.partial.npz"))


def test_bench_upsample_only_splits_arms_over_processes_sharing_one_file(tiny, tmp_path, capsys, monkeypatch):
    """Process B (--only naive) starts; while it samples, process A (--only ug-w1) finishes and writes the file.
    B's write keeps A's row (merged under the lock, not overwritten) and adds the paired ratio ug-w1 / naive."""
    import genkit.commands.bench_upsample as bu

    out = tmp_path / "b.json"
    argv = ["bench", "upsample", "--model", tiny["model"], "--size", 16, "--num", 4, "--steps", 2, "--scales", "1",
            "--windows", "0-1", "--ablation-scale", "", "--bootstrap", 20, "--features-model", tiny["features"],
            "--ref", tiny["refs"][16], "--out", out]
    real = bu._run_arm

    def a_finishes_meanwhile(arm, *rest):
        if arm["arm"] == "naive":
            rc, _, err = run_cli(capsys, *argv, "--only", "ug-w1")
            assert rc == 0, err
            assert list(json.loads(out.read_text())["rows"]) == ["ug-w1"]
        return real(arm, *rest)

    monkeypatch.setattr(bu, "_run_arm", a_finishes_meanwhile)
    rc, _, err = run_cli(capsys, *argv, "--only", "naive")
    assert rc == 0, err
    res = json.loads(out.read_text())
    assert set(res["rows"]) == {"ug-w1", "naive"} and "ug-w1 / naive" in res["ratios"]
    assert res["rows"]["ug-w1"]["time_vs_naive"] > 0
    # the command in the file reproduces every row: no --only, the arm flags read from the rows
    assert "--only" not in res["command"] and "--scales 1 --windows 0-1 " in res["command"]
    rc, _, err = run_cli(capsys, *argv, "--only", "naive,ug-w2")
    assert rc == 2 and "--only='ug-w2' is not allowed" in err and "naive, bicubic, ug-w1" in err


def _fake_run(tiny, root):
    """A train_diffusion.py-style run: the pipeline folder, and checkpoint-N/ folders holding EMA state dicts."""
    import shutil

    from diffusers import UNet2DModel

    run = root / "run"
    shutil.copytree(tiny["model"], run)
    unet = UNet2DModel.from_pretrained(run / "unet")
    for step, noise in ((100, 0.5), (200, 0.1)):
        (run / f"checkpoint-{step}").mkdir()
        shadow = [p.detach() + noise * torch.randn_like(p) for p in unet.parameters()]
        torch.save({"decay": 0.9999, "optimization_step": step, "shadow_params": shadow},
                   run / f"checkpoint-{step}" / "custom_checkpoint_0.pkl")
    return run


def test_eval_curve_reads_checkpoints_without_writing_and_reports_paired_ratios(tiny, tmp_path, capsys):
    run = _fake_run(tiny, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    out = tmp_path / "curve.json"
    argv = ["eval", "curve", "--run", f"a={run}", "--run", f"b={run}", "--num", 4, "--steps", 2, "--bootstrap", 20,
            "--features-model", tiny["features"], "--ref", tiny["refs"][8], "--out", out]
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 0, err
    res = json.loads(out.read_text())
    assert sorted(res["runs"]["a"]["points"], key=int) == ["100", "200"]
    pa, pb = res["runs"]["a"]["points"], res["runs"]["b"]["points"]
    assert pa["100"]["fd"] == pb["100"]["fd"] and pa["100"]["fd"] != pa["200"]["fd"]  # same weights, same seeds
    assert res["ratios"]["b/a"]["100"] == {"ratio": 1.0, "ci95": [1.0, 1.0]}
    assert out.with_suffix(".png").is_file()
    saved = sorted(p.name for p in tmp_path.glob(".curve.features-*/*"))  # one file per point: committed once
    assert saved == ["a@100.npy", "a@200.npy", "b@100.npy", "b@200.npy"]
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # the run folder is only read
    # a new checkpoint: only it is measured on the next call
    (run / "checkpoint-300").mkdir()
    torch.save({"shadow_params": [torch.zeros_like(p) for p in torch.load(
        run / "checkpoint-200" / "custom_checkpoint_0.pkl", weights_only=True)["shadow_params"]]},
        run / "checkpoint-300" / "custom_checkpoint_0.pkl")
    rc, _, err = run_cli(capsys, *argv)
    res2 = json.loads(out.read_text())
    assert rc == 0 and res2["runs"]["a"]["points"]["100"] == pa["100"] and "300" in res2["runs"]["a"]["points"]


def test_eval_curve_at_measures_only_the_listed_steps(tiny, tmp_path, capsys):
    run = _fake_run(tiny, tmp_path)
    out = tmp_path / "curve.json"
    argv = ["eval", "curve", "--run", f"a={run}", "--num", 4, "--steps", 2, "--bootstrap", 20, "--features-model",
            tiny["features"], "--ref", tiny["refs"][8], "--out", out]
    rc, _, err = run_cli(capsys, *argv, "--at", "200,400")
    assert rc == 0, err
    res = json.loads(out.read_text())
    assert list(res["runs"]["a"]["points"]) == ["200"] and "--at 200,400" in res["command"]
    rc, _, err = run_cli(capsys, *argv, "--at", "1k")
    assert rc == 2 and "--at='1k' is not allowed" in err


def test_eval_curve_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "eval", "curve", "--run", f"x={tmp_path}", "--out", tmp_path / "c.json")
    assert rc == 2 and "--run=" in err
