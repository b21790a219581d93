"""training/study_64.sh, the driver of the 64 px schedule study, with a stand-in for train_diffusion.py (the real
one would take hours at 64 px): the two arms alternate in chunks, every chunk leaves a snapshot, `save` copies the
latest snapshots to the interim folder, and a new machine (runs/ gone) continues each arm from its interim
weights at their step instead of from scratch."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# stands in for `python`: runs `-c` snippets with the real interpreter; for train_diffusion.py, records its flags
# and writes what a finished chunk leaves (the EMA pipeline folder at the target step, one checkpoint)
FAKE = f"""#!/usr/bin/env bash
[ "$1" = -c ] && exec {sys.executable} "$@"
shift; echo "$*" >> calls.log
out=; target=; init=
while [ $# -gt 0 ]; do case $1 in --output_dir) out=$2;; --max_train_steps) target=$2;; --init_from) init=$2;;
  esac; shift; done
mkdir -p $out/unet $out/scheduler $out/checkpoint-$target; rm -rf $(ls -d $out/checkpoint-* | grep -v -- -$target$)
echo '{{}}' > $out/model_index.json
echo "{{\\"global_step\\": $target, \\"init\\": \\"$init\\"}}" > $out/training_state.json
"""


def _drive(root: Path, *args: str, **env) -> subprocess.CompletedProcess:
    fake = root / "fake-python"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    return subprocess.run(["bash", "training/study_64.sh", *args], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHON": str(fake), **env}, timeout=120)


def _calls(root: Path) -> list[str]:
    return (root / "calls.log").read_text().splitlines() if (root / "calls.log").exists() else []


def test_arms_alternate_save_and_continue_on_a_new_machine_from_interim_weights(tmp_path):
    root = tmp_path / "repo"
    (root / "training").mkdir(parents=True)
    shutil.copy(REPO / "training" / "study_64.sh", root / "training")
    # 1. two chunks per arm, alternating, each from its own schedule, each leaving a snapshot
    p = _drive(root, CHUNK="10", FINAL="20")
    assert p.returncode == 0, p.stdout + p.stderr
    calls = _calls(root)
    assert [c.split("--output_dir ")[1].split()[0] for c in calls] == ["runs/s64-shifted", "runs/s64-cosine"] * 2
    assert ["--max_train_steps 10" in c for c in calls] == [True, True, False, False]
    assert all("--schedule shifted_cosine --base_resolution 32" in c for c in calls[::2])
    assert all("--schedule cosine" in c and "shifted" not in c.split("--schedule")[1] for c in calls[1::2])
    assert not any("--init_from" in c for c in calls)
    assert all("--mixed_precision bf16" in c for c in calls)  # the same precision in both arms
    for arm in ("shifted", "cosine"):
        assert sorted(p.name for p in (root / f"runs/s64-{arm}/snapshots").iterdir()) == ["step-10", "step-20"]
    # 2. save: the latest snapshot of each arm -> the interim folder
    p = _drive(root, "save")
    assert p.returncode == 0, p.stderr
    for arm in ("shifted", "cosine"):
        assert json.loads((root / f"weights/openmoji-64-study/{arm}/training_state.json").read_text())[
            "global_step"] == 20
    # 3. a new machine: runs/ is gone; each arm continues from its interim weights at step 20, not from 0
    shutil.rmtree(root / "runs")
    (root / "calls.log").unlink()
    p = _drive(root, CHUNK="10", FINAL="30")
    assert p.returncode == 0, p.stdout + p.stderr
    calls = _calls(root)
    assert len(calls) == 2 and all("--max_train_steps 30" in c for c in calls)
    assert [c.split("--init_from ")[1].split()[0] for c in calls] == [
        "weights/openmoji-64-study/shifted", "weights/openmoji-64-study/cosine"]
    assert all("--schedule" not in c for c in calls)      # the schedule comes with the interim pipeline
