"""Every command in README.md's ```bash blocks is either run here or skipped for a stated reason.

RUN: the command as pasted, from a fresh folder with the repository's weights/ and training/ linked in (the
README's relative paths), with a few flags appended to make it cheap (argparse keeps the last value, so every
flag as pasted is still parsed and checked: `--num 64 ... --num 2` draws 2). A block's commands run in order in
one folder, so `genkit eval fd --samples samples/` measures what the line above drew. SKIP: installs, servers,
hours of training, and lines whose `...` stands for flags given elsewhere, each with the reason. A command in
neither table (README grew an example) or an entry README no longer has fails
`test_every_readme_bash_command_is_run_or_skipped`, so no example goes unchecked silently."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# command (as README has it, without its trailing comment) -> flags appended to make it cheap ("" = as pasted)
RUN = {
    "genkit sample --model weights/openmoji-32 --num 64 --steps 20 --solver dpmpp_2m --seed 0 --out samples/":
        "--num 8 --steps 2",
    "genkit sample --model weights/openmoji-32 --num 16 --class heart --guidance 3 --out hearts/": "--num 2 --steps 2",
    "genkit classes --model weights/openmoji-32": "",
    "genkit eval fd --samples samples/": "",
    "genkit eval fd --model weights/openmoji-32 --num 1000 --solver dpmpp_2m --steps 20": "--num 8 --steps 2",
    "genkit eval ref --samples my_images/ --out my_ref.npz": "",
    "genkit bench samplers --model weights/openmoji-32 --nfe 5,10,20,50 --out eval.json":
        "--nfe 2 --num 4 --ode-num 2 --ode-ref-steps 4 --solvers euler --grids polynomial --schedulers ''",
    "genkit bench vq --out vq.json": "--arms fsq --codebook-sizes 256 --steps 2",
    "genkit bench overhead --model weights/openmoji-32 --out overhead.json": "--steps 2 --batch-size 2 --repeats 1",
    "genkit bench overhead --model weights/openmoji-32 --steps 5 --solvers euler,amed-euler --guidance 2 --out amed.json":
        "--batch-size 2 --repeats 1",
    "genkit sample --model weights/openmoji-32 --solver amed-euler --steps 4 --out amed/": "--num 2",
    "genkit sample --model weights/openmoji-32 --solver bns --steps 6 --out bns/": "--num 2",
    "genkit sample --model weights/openmoji-32 --solver euler --steps 5 --skip-tuning 0.8 --out skip/": "--num 2",
    "genkit sample --model weights/openmoji-32 --size 64 --ug 1.0 --out big/": "--num 2 --steps 2",
    "genkit sample --model weights/openmoji-32 --guidance 2 --guidance-sigma-range 0,1 --out interval/": "--num 2",
    "genkit sample --model weights/openmoji-32-sid --out one_step/": "--num 2",
    'genkit draw --model weights/openmoji-mm --prompt "red apple" --prompt "flag: Japan" --num 8 --out drawn/':
        "--num 1 --steps 2 --head-steps 2",
    "genkit caption --model weights/openmoji-mm drawn/ --out captions.json": "",
    "genkit bench mm --arm openmoji-mm=weights/openmoji-mm --out mm.json":
        "--num 4 --steps 2 --head-steps 2 --no-retrieval",
    "accelerate launch training/train_features.py --output_dir runs/features":
        "--limit_train 16 --epochs 1 --channels 8,8,8,8 --feature_dim 8",
    "genkit sample --model weights/openmoji-32-sid --num 64 --out samples/": "--num 2",
}
# what a command's output must show (a regex on stdout), beyond exit status 0
EXPECT = {
    "genkit sample --model weights/openmoji-32 --num 64 --steps 20 --solver dpmpp_2m --seed 0 --out samples/":
        r"wrote 8 images, grid.png and manifest.json to samples",
    "genkit bench overhead --model weights/openmoji-32 --steps 5 --solvers euler,amed-euler --guidance 2 --out amed.json":
        r"amed-euler / euler at 5 NFE: \d+\.\d+x",                          # the predictor found and timed
    "genkit classes --model weights/openmoji-32": r"(?m)^\d+\theart$",          # the class the line above names
    "genkit eval fd --samples samples/": r'"fd": \d+\.\d+, "n": 8,',        # a finite FD of the 8 images drawn
    "genkit eval fd --model weights/openmoji-32 --num 1000 --solver dpmpp_2m --steps 20": r'"fd": \d+\.\d+, "n": 8,',
}
# shell run before a command, in the same folder (a folder the README assumes the user has)
SETUP = {"genkit eval ref --samples my_images/ --out my_ref.npz": "ln -s samples my_images"}

TRAINING = "a full training run (hours on the reference hardware); every script runs tiny in tests/test_training.py " \
           "and tests/test_faults.py"
SKIP = {
    "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu && pip install -e . && python app.py":
        "installs packages and serves the app until stopped (the app's start: tests/test_app.py, test_browser.py)",
    "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu && pip install -e \".[dev]\" && "
    "OMP_NUM_THREADS=1 python -m pytest -q -n 2 --dist loadfile":
        "installs packages and runs the whole suite (this test is part of it)",
    "accelerate launch -m genkit.cli sample ...": "'...' stands for the flags of the lines above; several processes",
    "training/mm_ablations.sh train && training/mm_ablations.sh bench --num 200":
        "trains the seven ablation arms (hours); its bench half is `genkit bench mm`, run above",
    "accelerate launch training/train_diffusion.py --output_dir runs/openmoji-32 --max_train_steps 20000": TRAINING,
    "accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 training/train_diffusion.py ...":
        "8 GPUs; '...' stands for the flags of the line above",
    "accelerate launch training/train_diffusion.py --output_dir runs/openmoji-32 --resume_from_checkpoint latest":
        "resumes the training run above (resume is tests/test_faults.py)",
    "accelerate launch training/train_diffusion.py --init_from weights/openmoji-32 --output_dir runs/more ...":
        "'...' stands for the training flags of the lines above",
    "accelerate launch training/train_vq.py --output_dir runs/vq --simvq --codebook_size 1024": TRAINING,
    "accelerate launch training/train_mm.py --output_dir runs/mm": TRAINING,
    'mkdir -p runs/s64 && STOP_AT=$(date -d "+6 hours" +%s) nohup bash training/study_64.sh > runs/s64/drive.log '
    "2>&1 &": "the 6-hour 64 px schedule study, in the background",
    "genkit eval curve --run shifted=runs/s64-shifted --run cosine=runs/s64-cosine --num 1000 --steps 8 --at "
    "250,500,1000,2000,4000 --out weights/openmoji-64-study/curve.json":
        "needs the study's checkpoints (runs/s64-*); tests/test_eval_curve_sources.py runs the command on tiny runs",
    "bash training/study_64.sh save": "needs the study's snapshots; tests/test_study_64.py runs it on stand-in runs",
    "accelerate launch training/distill_sid.py --teacher weights/openmoji-32 --output_dir runs/sid "
    "--teacher_guidance_sigma_max 1.0 --fake_score_steps 4 --alpha 1.0 --ema_halflife_images 5000 "
    "--resume_from_checkpoint latest --max_minutes 60": TRAINING,
    "accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 training/distill_sid.py --teacher "
    "weights/openmoji-32 --output_dir runs/sid --teacher_guidance_sigma_max 1.0 --fake_score_steps 4 --alpha 1.0 "
    "--ema_halflife_images 5000 --train_batch_size 32 --resume_from_checkpoint latest":
        "8 GPUs; " + TRAINING,
    "torchrun --nproc_per_node 2 training/distill_sid.py ...":
        "'...' stands for the flags above; two gloo ranks run in tests/test_distill_sid.py",
}


def bash_blocks(text: str) -> list[list[str]]:
    """README's ```bash blocks, each a list of commands: `\\`-continued lines joined, trailing `# comments` and
    blank lines dropped."""
    blocks = []
    for body in re.findall(r"```bash\n(.*?)```", text, re.S):
        lines = re.sub(r"\\\n\s*", "", body).splitlines()
        blocks.append([re.sub(r"\s+#\s.*$", "", line).strip() for line in lines if line.strip()])
    return blocks


BLOCKS = bash_blocks((ROOT / "README.md").read_text())


def test_every_readme_bash_command_is_run_or_skipped():
    commands = [c for block in BLOCKS for c in block]
    unlisted = [c for c in commands if c not in RUN and c not in SKIP]
    assert not unlisted, f"README bash commands neither run nor skipped (add each to RUN or SKIP): {unlisted}"
    assert not set(RUN) & set(SKIP)
    stale = [c for c in [*RUN, *SKIP, *SETUP, *EXPECT] if c not in commands]
    assert set(SETUP) <= set(RUN) and set(EXPECT) <= set(RUN)
    assert not stale, f"entries README no longer has: {stale}"
    assert all(reason.strip() for reason in SKIP.values())


def test_the_parser_joins_continuations_and_drops_comments():
    text = "x\n```bash\ngenkit a --b 1 \\\n  --c 2   # why\n\ngenkit d  # e\n```\n```python\nno\n```\n"
    assert bash_blocks(text) == [["genkit a --b 1 --c 2", "genkit d"]]


@pytest.fixture
def fresh_folder(tmp_path):
    """A folder like a user's clone seen from outside: weights/ and training/ linked, `genkit` on PATH (the
    package of this checkout, whatever is installed)."""
    for name in ("weights", "training"):
        (tmp_path / name).symlink_to(ROOT / name)
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    (bin_dir / "genkit").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m genkit.cli "$@"\n')
    (bin_dir / "genkit").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    return tmp_path, env


@pytest.mark.slow
@pytest.mark.parametrize("index", [i for i, b in enumerate(BLOCKS) if any(c in RUN for c in b)])
def test_readme_bash_block_runs_as_pasted(index, fresh_folder):
    folder, env = fresh_folder
    for command in BLOCKS[index]:
        if command not in RUN:
            continue
        line = f"{SETUP[command]} && " if command in SETUP else ""
        line += f"{command} {RUN[command]}".strip()
        res = subprocess.run(["bash", "-c", line], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"README command failed: {line}\n{res.stderr[-3000:]}"
        if command in EXPECT:
            assert re.search(EXPECT[command], res.stdout), f"{line}: stdout lacks {EXPECT[command]!r}:\n{res.stdout}"
