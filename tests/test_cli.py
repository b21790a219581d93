"""The `genkit` command line on a tiny random class-conditional model: files, determinism, resume, errors."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import genkit
from pipelines.pixel_diffusion import PixelDiffusionPipeline
from helpers import run_cli as cli, save_tiny_pipeline

ROOT = Path(__file__).resolve().parents[1]
MANIFEST_KEYS = {"model", "num", "seeds", "steps", "solver", "grid", "class", "guidance", "batch_size",
                 "nfe_per_image", "wall_time_s", "device", "num_processes", "torch", "genkit", "model_sha256",
                 "batch_invariant", "complete", "grid_png"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def corrupt_model(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("corrupt") / "tiny"
    shutil.copytree(model, path)
    (weights,) = (path / "unet").glob("*.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    return str(path)


def sample(capsys, model, out, *extra, num=5, steps=3):
    rc, stdout, err = cli(capsys, "sample", "--model", model, "--num", num, "--steps", steps, "--solver", "euler",
                          "--device", "cpu", "--out", out, *extra)
    assert rc == 0, err
    return json.loads((Path(out) / "manifest.json").read_text())


def pngs(out):
    return {p.name: p.read_bytes() for p in sorted(Path(out).glob("0*.png"))}


def test_sample_files_manifest_and_bit_identical_across_batch_sizes(model, tmp_path, capsys):
    """--batch-invariant: the same PNG bytes (pixels and parameters chunk) whatever the batch size."""
    m = sample(capsys, model, tmp_path / "b4", "--batch-size", 4, "--batch-invariant")
    files = pngs(tmp_path / "b4")
    assert list(files) == [f"{s:06d}.png" for s in range(5)]
    for name in files:
        with Image.open(tmp_path / "b4" / name) as im:
            assert im.size == (8, 8) and im.mode == "RGB"
    with Image.open(tmp_path / "b4" / "grid.png") as grid:
        assert grid.size == (2 * 8, 3 * 8)  # 5 images: 2 columns, 3 rows
    assert set(m) == MANIFEST_KEYS
    assert m["num"] == 5 and m["seeds"] == [0, 4] and m["steps"] == 3 and m["solver"] == "euler"
    assert m["class"] == "cycle" and m["guidance"] == 2.0 and m["batch_size"] == 4  # class-conditional defaults
    assert m["nfe_per_image"] == 2 * 3 and m["device"] == "cpu" and m["num_processes"] == 1
    assert m["genkit"] == genkit.__version__ and m["wall_time_s"] >= 0 and m["grid"]
    assert not [p.name for p in (tmp_path / "b4").iterdir() if p.name.startswith(".")], "temp files left"
    assert len({files[n] for n in files}) == 5  # distinct images, so the comparisons below mean something

    sample(capsys, model, tmp_path / "b1", "--batch-size", 1, "--batch-invariant")
    assert pngs(tmp_path / "b1") == files
    sample(capsys, model, tmp_path / "again", "--batch-size", 4, "--batch-invariant")
    assert pngs(tmp_path / "again") == files
    # seed K..K+N-1: image k depends only on its seed
    sample(capsys, model, tmp_path / "from3", "--seed", 3, "--batch-size", 2, "--batch-invariant", num=2)
    assert pngs(tmp_path / "from3") == {n: files[n] for n in ("000003.png", "000004.png")}
    # and "its seed" is torch.Generator().manual_seed(k), what the Python API uses: 000003.png is that image
    from genkit.commands.common import class_ids_for
    from pipelines.pixel_diffusion import to_uint8

    pipe = PixelDiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    x = pipe(batch_size=1, num_inference_steps=3, solver="euler", guidance_scale=2.0,
             class_labels=class_ids_for(pipe, "cycle", [3]), generator=[torch.Generator().manual_seed(3)],
             output_type="latent").images
    with Image.open(tmp_path / "b4" / "000003.png") as im:
        assert np.array_equal(np.asarray(im), to_uint8(x)[0].permute(1, 2, 0).numpy())


def test_rerun_into_the_same_folder_regenerates_only_missing_images(model, tmp_path, capsys, monkeypatch):
    out = tmp_path / "s"
    sample(capsys, model, out, "--batch-size", 2)
    before = pngs(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("0*.png")}
    (out / "000002.png").unlink()

    drawn = []
    call = PixelDiffusionPipeline.__call__
    monkeypatch.setattr(PixelDiffusionPipeline, "__call__",
                        lambda self, **kw: drawn.append(kw["batch_size"]) or call(self, **kw))
    m = sample(capsys, model, out, "--batch-size", 2)
    assert drawn == [2]  # one network batch: the missing image's aligned batch (seeds 2, 3), only 2 written
    assert pngs(out) == before
    assert {n: t for n, t in mtimes.items() if n != "000002.png"} == \
        {p.name: p.stat().st_mtime_ns for p in out.glob("0*.png") if p.name != "000002.png"}
    assert m["num"] == 5 and (out / "grid.png").is_file()


@pytest.mark.parametrize("solver, guidance, nfe", [("euler", "2", 2 * 4), ("euler", "1", 4), ("heun", "2", 2 * 7)])
def test_guidance_and_class_set_nfe_per_image(model, tmp_path, capsys, solver, guidance, nfe):
    rc, _, err = cli(capsys, "sample", "--model", model, "--num", 2, "--steps", 4, "--solver", solver,
                     "--guidance", guidance, "--class", "b", "--out", tmp_path)
    assert rc == 0, err
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["nfe_per_image"] == nfe and m["class"] == "b" and m["guidance"] == float(guidance)


def test_guidance_interval_saves_the_null_branch_outside_it_and_is_recorded(model, tmp_path, capsys):
    from PIL import Image

    m = sample(capsys, model, tmp_path / "i", "--guidance", "2", "--guidance-sigma-range", "0,1", num=2, steps=4)
    assert 4 < m["nfe_per_image"] < 8 and m["guidance_sigma_range"] == "(0.0, 1.0)"
    assert "Guidance interval: 0-1" in Image.open(tmp_path / "i" / "000000.png").text["parameters"]
    full = sample(capsys, model, tmp_path / "f", "--guidance", "2", num=2, steps=4)
    assert full["nfe_per_image"] == 8 and pngs(tmp_path / "i") != pngs(tmp_path / "f")


def test_class_by_name_and_by_id_give_the_same_images(model, tmp_path, capsys):
    sample(capsys, model, tmp_path / "name", "--class", "b", num=2)
    sample(capsys, model, tmp_path / "id", "--class", "1", num=2)
    sample(capsys, model, tmp_path / "c", "--class", "c", num=2)
    assert pngs(tmp_path / "name") == pngs(tmp_path / "id") != pngs(tmp_path / "c")


BAD = [
    (["--steps", "0"], "--steps"),
    (["--steps", "abc"], "--steps"),
    (["--num", "-1"], "--num"),
    (["--seed", "-1"], "--seed"),
    (["--solver", "foo"], "--solver"),
    (["--grid", "foo"], "--grid"),
    (["--class", "zzz"], "--class"),
    (["--class", "99"], "--class"),
    (["--guidance", "-1"], "--guidance"),
    (["--guidance", "2", "--class", "none"], "--guidance"),
    (["--batch-size", "5000"], "--batch-size"),
    (["--guidance-sigma-range", "1,0.5"], "--guidance-sigma-range"),
    (["--guidance-sigma-range", "0"], "--guidance-sigma-range"),
    (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "nope"], "--device"),
]


@pytest.mark.parametrize("flags, name", BAD, ids=[" ".join(f) for f, _ in BAD])
def test_bad_flag_exits_2_with_one_line_naming_it(model, tmp_path, capsys, flags, name):
    out = tmp_path / "out"
    rc, stdout, err = cli(capsys, "sample", "--model", model, "--num", 2, "--steps", 2, "--out", out, *flags)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genkit: error: ") and f"{name}=" in lines[0], err
    assert not out.exists() or not list(out.iterdir()), "files written on error"


def test_bad_model_folders_and_unwritable_out(model, corrupt_model, tmp_path, capsys):
    regular_file = tmp_path / "file"
    regular_file.write_text("x")
    cases = [(["--model", "/nonexistent", "--out", tmp_path / "o1"], "--model=", "not a pipeline folder"),
             (["--model", tmp_path, "--out", tmp_path / "o2"], "--model=", "model_index.json"),
             (["--model", corrupt_model, "--out", tmp_path / "o3"], "--model=", "corrupt"),
             (["--model", model, "--out", regular_file / "sub"], "--out=", "not a writable folder"),
             (["--model", model, "--out", regular_file], "--out=", "not a writable folder")]
    for argv, name, why in cases:
        rc, _, err = cli(capsys, "sample", "--num", 2, "--steps", 2, *argv)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"genkit: error: {name}") and why in err, err
        out = Path(argv[-1])
        assert not out.is_dir() or not list(out.iterdir()), "files written on error"
    assert regular_file.read_text() == "x"


def test_missing_required_flags_and_command(capsys):
    for argv in ([], ["sample"], ["bench"], ["nope"]):
        rc, _, err = cli(capsys, *argv)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("genkit: error: "), err


def test_classes_lists_ids_and_names(model, corrupt_model, capsys):
    rc, out, _ = cli(capsys, "classes", "--model", model)
    assert rc == 0 and out == "0\ta\n1\tb\n2\tc\n"
    rc, _, err = cli(capsys, "classes", "--model", corrupt_model)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--model=" in err


def test_bench_overhead_writes_json(model, tmp_path, capsys):
    f = tmp_path / "overhead.json"
    rc, out, err = cli(capsys, "bench", "overhead", "--model", model, "--steps", 3, "--batch-size", 2,
                       "--repeats", 2, "--device", "cpu", "--out", f)
    assert rc == 0, err
    r = json.loads(f.read_text())
    assert r["nfe"] == 3 and r["batch_size"] == 2 and r["repeats"] == 2
    assert len(r["all_s"]["pipeline"]) == len(r["all_s"]["bare"]) == 2 and min(r["all_s"]["bare"]) > 0
    import statistics
    med = {k: statistics.median(v) for k, v in r["all_s"].items()}        # the ratio is of the medians it lists
    assert r["median_s"] == pytest.approx(med, rel=2e-4)                    # times keep 5 significant digits
    assert r["ratio_pipeline_over_bare"] == pytest.approx(r["median_s"]["pipeline"] / r["median_s"]["bare"],
                                                          rel=5e-3)
    assert "pipeline (euler) / bare UNet" in out


def console_script():
    exe = shutil.which("genkit")
    return [exe] if exe else [sys.executable, "-m", "genkit.cli"]


def test_console_script(model, tmp_path, capsys):
    res = subprocess.run([*console_script(), "sample", "--model", model, "--num", "3", "--steps", "2",
                          "--solver", "euler", "--batch-size", "2", "--out", str(tmp_path / "sub")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    sample(capsys, model, tmp_path / "inproc", "--batch-size", 2, num=3, steps=2)
    assert pngs(tmp_path / "sub") == pngs(tmp_path / "inproc")
    assert "wrote 3 images" in res.stdout
    for model_dir, steps, name in ((model, "0", "--steps="), ("/nonexistent", "2", "--model=")):
        res = subprocess.run([*console_script(), "sample", "--model", model_dir, "--steps", steps,
                              "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=300)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert res.stderr.startswith("genkit: error: ") and name in res.stderr and res.stdout == ""
    res = subprocess.run([*console_script(), "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and genkit.__version__ in res.stdout


def test_torchrun_two_processes_split_seeds_and_match_one_process(model, tmp_path, capsys):
    out = tmp_path / "ddp"
    # '--' ends torchrun's own options: else its argparse reads `--num` as an abbreviation of `--numa-binding`
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "--", "genkit.cli", "sample", "--model", model, "--num", "5", "--steps", "3", "--solver", "euler",
           "--batch-size", "2", "--out", str(out)]
    res = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["num_processes"] == 2 and m["num"] == 5
    assert "3/3" in res.stderr  # rank 0's progress bar: batches (0, 1) and (4); rank 1 draws (2, 3) silently
    sample(capsys, model, tmp_path / "one", "--batch-size", 2)  # the same aligned batches in one process
    assert pngs(out) == pngs(tmp_path / "one") and len(pngs(out)) == 5
    assert (out / "grid.png").read_bytes() == (tmp_path / "one" / "grid.png").read_bytes()


def test_every_subcommand_has_a_handler_that_imports():
    """The parser's commands and the dispatch table agree: a new subcommand without a handler fails here."""
    import argparse
    import importlib
    from genkit.cli import _HANDLERS, GROUPS, build_parser

    def choices(parser):
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return sub.choices

    wanted = set()
    for name, p in choices(build_parser()).items():
        if name in GROUPS:
            wanted |= {(name, s) for s in choices(p)}
        elif name != "classes":
            wanted.add((name, None))
    assert wanted == set(_HANDLERS)
    for target in _HANDLERS.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(f"genkit.commands.{module}"), func)), target


@pytest.mark.parametrize("world", [None, "2"])
def test_a_rank_exits_with_its_status_and_flushed_output(model, world):
    """A torchrun rank (WORLD_SIZE set) leaves through os._exit (gloo's threads can abort the interpreter's
    finalisation): its piped stdout / stderr must still arrive and its exit status must stay the command's."""
    env = {k: v for k, v in os.environ.items() if k != "WORLD_SIZE"} | ({"WORLD_SIZE": world} if world else {})
    ok = subprocess.run([*console_script(), "classes", "--model", model], capture_output=True, text=True,
                        timeout=120, env=env)
    assert ok.returncode == 0 and len(ok.stdout.splitlines()) >= 2, ok.stderr
    bad = subprocess.run([*console_script(), "sample", "--model", model, "--steps", "0", "--out", "x"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("genkit: error: ") and "--steps" in bad.stderr
