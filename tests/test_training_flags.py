"""Every training script answers a mistyped number flag the way the genkit CLI does: one line on stderr,
`NAME: error: --flag='value' is not allowed: ...`, exit status 2 (genkit.checks.OneLineParser), never
argparse's usage block and "invalid int value"."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# script -> (an int flag, a float flag) it has besides --seed
SCRIPTS = {
    "train_diffusion": ("--train_batch_size", "--learning_rate"),
    "train_features": ("--epochs", "--learning_rate"),
    "train_mm": ("--n_layers", "--learning_rate"),
    "train_vq": ("--codebook_size", "--learning_rate"),
    "train_amed": ("--nfe", "--learning_rate"),
    "train_bns": ("--nfe", "--learning_rate"),
    "distill_sid": ("--train_batch_size", "--alpha"),
    "sid_grad_noise": ("--batch", "--alpha"),
}
# the arguments each script needs besides the bad flag (default: --output_dir)
REQUIRED = {"sid_grad_noise": ["runs/unused/checkpoint-1"]}
# (flag, typed, as the message shows it, what is allowed): text that is no number is quoted, a float is not
CASES = [(script, flag, typed, shown, allowed)
         for script, (int_flag, float_flag) in SCRIPTS.items()
         for flag, typed, shown, allowed in [("--seed", "abc", "'abc'", "an int in [0, "),
                                             (int_flag, "2.5", "'2.5'", "an int"),
                                             (float_flag, "nan", "nan", "a finite number"),
                                             (float_flag, "inf", "inf", "a finite number"),
                                             (float_flag, "-inf", "-inf", "a finite number")]]


def test_every_training_script_is_covered():
    with_parser = {p.stem for p in (ROOT / "training").glob("*.py") if "def parse_args" in p.read_text()}
    assert with_parser == set(SCRIPTS)


@pytest.mark.parametrize("script,flag,typed,shown,allowed", CASES)
def test_bad_number_flag_is_one_line_exit_2(script, flag, typed, shown, allowed, capsys):
    parse_args = importlib.import_module(f"training.{script}").parse_args
    with pytest.raises(SystemExit) as exc:
        parse_args([*REQUIRED.get(script, ["--output_dir", "unused"]), f"{flag}={typed}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"error: {flag}={shown} is not allowed: {allowed}" in err, err
    assert "invalid" not in err and "usage:" not in err


def test_script_run_as_a_file_prints_its_name(tmp_path):
    """`python training/train_vq.py --seed abc`: the real entry point, its own name as the prefix."""
    res = subprocess.run([sys.executable, "training/train_vq.py", "--output_dir", str(tmp_path), "--seed", "abc"],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip() == ("train_vq.py: error: --seed='abc' is not allowed: an int in [0, "
                                  f"{__import__('genkit.checks').checks.LIMITS['seed']}]"), res.stderr
