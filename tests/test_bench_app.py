"""`genkit bench throughput` and `genkit bench app` run end to end on a tiny model and report what they claim."""

import json

import pytest

from helpers import run_cli, save_tiny_pipeline
from ui_helpers import gradio_env  # noqa: F401  (fixture)


@pytest.mark.slow
def test_bench_throughput_cpu_arms_and_skipped_cuda_arms(tmp_path, capsys):
    model = save_tiny_pipeline(tmp_path / "m")
    rc, out, err = run_cli(capsys, "bench", "throughput", "--model", model, "--batch-sizes", "2", "--nfe", "1,2",
                           "--repeats", "1", "--device", "cpu", "--out", tmp_path / "tp.json")
    assert rc == 0, err
    result = json.loads((tmp_path / "tp.json").read_text())
    assert [(r["batch_size"], r["nfe"]) for r in result["rows"]] == [(2, 1), (2, 2)]
    for row in result["rows"]:
        assert set(row["images_per_s"]) == {"fp32", "bf16", "fp32+batch-invariant", "ddim-peer"}
        assert row["ratio_to_fp32"]["fp32"] == 1.0
    assert set(result["skipped"]) == {"fp16", "fp16+xformers", "fp16+compile", "fp16+batch-invariant"}
    assert "--batch-sizes 2 --nfe 1,2" in result["command"] and "img/s" in out


def test_bench_throughput_bad_list_is_one_line(capsys):
    rc, _, err = run_cli(capsys, "bench", "throughput", "--model", "m", "--nfe", "1,0")
    assert rc == 2 and "--nfe='1,0' is not allowed" in err


@pytest.mark.slow
def test_bench_app_serves_every_concurrent_call(tmp_path, capsys):
    model = save_tiny_pipeline(tmp_path / "m")
    rc, out, err = run_cli(capsys, "bench", "app", "--model", model, "--mm", tmp_path / "none", "--clients", 4,
                           "--steps", 2, "--batch-size", 2, "--repeats", 1, "--device", "cpu",
                           "--out", tmp_path / "app.json")
    assert rc == 0, err
    result = json.loads((tmp_path / "app.json").read_text())
    assert result["concurrent"]["served"] == 4 and not result["concurrent"]["errors"]
    assert result["diffusion"]["ratio_app_over_script"] > 0 and "draw" not in result
    assert set(result["diffusion"]["median_s"]) == {"script", "app", "app_previews", "app_previews_no_download"}
    assert result["diffusion"]["ratio_app_previews_no_download_over_script"] > 0
