"""What every training script here shares: flag errors, checkpoint-N folders (written atomically, pruned after
the save, found again by --resume_from_checkpoint) and model folders rewritten in place."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from genkit.checks import bad, check_float, check_int, check_seed
from genkit.io import replace_folder_contents


def bad_flag(name: str, value, allowed: str):
    bad(f"--{name}", value, allowed)


def require_positive(args, *names: str) -> None:
    for name in names:
        check_int(f"--{name}", getattr(args, name), 1)


def require_common(args) -> None:
    """What every training script's flags share (genkit/checks.py): no float flag is NaN or inf, the seed fits
    torch's generator, the learning rate and gradient clip are positive, the log interval is >= 1."""
    for name, value in vars(args).items():
        if isinstance(value, float):
            check_float(f"--{name}", value)
    if hasattr(args, "seed"):
        check_seed("--seed", args.seed)
    if hasattr(args, "learning_rate"):
        check_float("--learning_rate", args.learning_rate, 1e-12, 10.0)
    if getattr(args, "max_grad_norm", None) is not None:
        check_float("--max_grad_norm", args.max_grad_norm, 1e-12)
    if hasattr(args, "log_every"):
        check_int("--log_every", args.log_every, 1)
    if getattr(args, "max_minutes", None) is not None:
        check_float("--max_minutes", args.max_minutes, 0)


def checkpoint_dirs(out_dir: Path) -> list[Path]:
    """checkpoint-N folders in step order (temp folders of an interrupted save are not among them)."""
    return sorted((p for p in Path(out_dir).glob("checkpoint-*") if p.name.split("-")[1].isdigit()),
                  key=lambda p: int(p.name.split("-")[1]))


def resolve_checkpoint(out_dir: Path, resume: str | None) -> tuple[Path | None, int]:
    """--resume_from_checkpoint ('latest' or a path) -> (folder, step); (None, 0) when there is nothing to resume."""
    if not resume:
        return None, 0
    if resume == "latest":
        ckpts = checkpoint_dirs(out_dir)
        path = ckpts[-1] if ckpts else None
    else:
        path = Path(resume)
    if path is None:
        return None, 0
    if not path.is_dir() or not path.name.split("-")[-1].isdigit():
        raise ValueError(f"--resume_from_checkpoint={str(path)!r} is not a checkpoint folder: give 'latest' or "
                         "an existing checkpoint-N folder")
    return path, int(path.name.split("-")[-1])


def minutes_before(out_dir: Path, step: int) -> float:
    """Training minutes already spent up to `step` in earlier runs of this output folder (the last metrics.jsonl
    row at or before it), so a resumed run logs the total, not only its own share."""
    log, minutes = Path(out_dir) / "metrics.jsonl", 0.0
    if step > 0 and log.is_file():
        for line in log.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            if row.get("step", step + 1) <= step and "minutes" in row:
                minutes = float(row["minutes"])
    return minutes


def discard(path: Path) -> None:
    """Delete a folder, renamed to a hidden temp name first so that a kill never leaves half of it visible."""
    trash = path.with_name(f".tmp-old-{path.name}")
    if trash.exists():
        shutil.rmtree(trash)
    os.replace(path, trash)
    shutil.rmtree(trash)


def save_checkpoint(accelerator, out_dir: Path, step: int, keep: int) -> None:
    """accelerator.save_state into checkpoint-{step}: written under a temp name, then renamed; older ones
    beyond `keep` pruned after the save (never before, so a kill always leaves one complete checkpoint); the
    hidden .tmp-* folders a killed save left behind are swept first."""
    tmp, final = out_dir / f".tmp-checkpoint-{step}", out_dir / f"checkpoint-{step}"
    if accelerator.is_main_process:  # saves run one at a time, so any temp here was left by a killed run
        for stale in Path(out_dir).glob(".tmp-*"):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # resumed from an older checkpoint: this step was saved before
            discard(final)
        os.replace(tmp, final)
        for old in checkpoint_dirs(out_dir)[:-keep]:
            discard(old)


def save_model_folder(model, out_dir: Path, metrics: dict) -> None:
    """model.save_pretrained (config + safetensors) and metrics.json into out_dir, replacing them atomically."""
    def write(tmp):
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    replace_folder_contents(out_dir, write, ("config.json", "diffusion_pytorch_model.safetensors", "metrics.json"))


def run_script(main, parse_args) -> None:
    """`main(parse_args())` with bad input answered as one line on stderr and exit status 2, like the CLI."""
    import sys

    try:
        main(parse_args())
    except ValueError as e:
        print(f"{Path(sys.argv[0]).name}: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
