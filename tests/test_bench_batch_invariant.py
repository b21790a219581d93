"""`genkit bench throughput`'s batch-invariant arm: its images/s beside batched sampling and their ratio, and
the two facts it checks on the images it drew (how many batched images differ from the same seed drawn alone;
whether its own images kept their bytes at another batch size)."""

import json

import pytest

from genkit.commands.bench_throughput import arms_for, identity_check
from helpers import run_cli, save_tiny_pipeline


def test_identity_check_counts_differing_images_and_compares_batch_sizes():
    first_seen, row = {}, {"batch_size": 3, "nfe": 2}
    identity_check(row, {"fp32": [b"a", b"X", b"c"], "fp32+batch-invariant": [b"a", b"b", b"c"]}, first_seen)
    assert row["images_differing_from_drawn_alone"] == {"fp32": 1}
    assert "same_bytes_as_batch_size" not in row          # nothing to compare with yet
    row2 = {"batch_size": 2, "nfe": 2}
    identity_check(row2, {"fp32": [b"a", b"b"], "fp32+batch-invariant": [b"a", b"b"]}, first_seen)
    assert row2 == {"batch_size": 2, "nfe": 2, "images_differing_from_drawn_alone": {"fp32": 0},
                    "same_bytes_as_batch_size": {"fp32+batch-invariant": {3: True}}}
    row3 = {"batch_size": 1, "nfe": 2}
    identity_check(row3, {"fp32+batch-invariant": [b"z"]}, first_seen)   # no batched arm: only the identity
    assert row3 == {"batch_size": 1, "nfe": 2, "same_bytes_as_batch_size": {"fp32+batch-invariant": {3: False}}}


def test_bench_arms_flag_is_checked(capsys):
    rc, _, err = run_cli(capsys, "bench", "throughput", "--model", "m", "--arms", "fp32,fp64")
    assert rc == 2 and "--arms='fp32,fp64' is not allowed: comma-separated names from fp32, bf16" in err
    import torch

    with pytest.raises(ValueError, match="--arms='fp16,fp16\\+compile' is not allowed: at least one arm this "
                                         "machine runs: fp32, bf16"):
        arms_for(torch.device("cpu"), False, ["fp16", "fp16+compile"])     # CUDA-only arms on a CPU
    arms, skipped = arms_for(torch.device("cpu"), False, ["fp32+batch-invariant", "fp16"])
    assert [a["name"] for a in arms] == ["fp32+batch-invariant"] and skipped["fp16"] == "needs CUDA"


def test_batched_vs_batch_invariant_on_a_tiny_model(tmp_path, capsys):
    model = save_tiny_pipeline(tmp_path / "m")
    rc, out, err = run_cli(capsys, "bench", "throughput", "--model", model, "--arms", "fp32,fp32+batch-invariant",
                           "--batch-sizes", "4,2", "--nfe", "2", "--repeats", "2", "--device", "cpu",
                           "--out", tmp_path / "tp.json")
    assert rc == 0, err
    result = json.loads((tmp_path / "tp.json").read_text())
    assert "--arms fp32,fp32+batch-invariant" in result["command"]
    assert result["skipped"]["bf16"] == "not in --arms" and result["skipped"]["ddim-peer"] == "not in --arms"
    for row in result["rows"]:
        assert set(row["images_per_s"]) == {"fp32", "fp32+batch-invariant"}
        ips, ratio, slow = row["images_per_s"], row["ratio_to_fp32"], row["batch_invariant_slowdown"]
        # slowdown = time batch-invariant / time batched = 1 / (its ratio to fp32) = fp32 img/s / its img/s
        r = ratio["fp32+batch-invariant"]   # both rounded to 3 decimals
        assert slow["fp32+batch-invariant"] == pytest.approx(1 / r, rel=5e-4 / r + 1e-3)
        assert slow["fp32+batch-invariant"] == pytest.approx(ips["fp32"] / ips["fp32+batch-invariant"], rel=1e-2)
        lo, hi = row["ratio_to_fp32_range"]["fp32+batch-invariant"]
        assert lo <= ratio["fp32+batch-invariant"] <= hi
        assert 0 <= row["images_differing_from_drawn_alone"]["fp32"] <= row["batch_size"]
    assert result["rows"][1]["same_bytes_as_batch_size"] == {"fp32+batch-invariant": {"4": True}}
