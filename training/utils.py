"""What every training script here shares at its edge: flag errors, model folders rewritten in place, the
one-line error exit. Checkpoints, logs, the loss and accelerate setup live in genkit.training (re-exported here)."""

from __future__ import annotations

import json
from pathlib import Path

from genkit.checks import bad, check_float, check_int, check_seed
from genkit.io import replace_folder_contents
from genkit.training.checkpoint import (checkpoint_dirs, discard, load_checkpoint,  # noqa: F401
                                       resolve_checkpoint, save_checkpoint)
from genkit.training.log import JsonlLog, minutes_before  # noqa: F401


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


def save_model_folder(model, out_dir: Path, metrics: dict) -> None:
    """model.save_pretrained (config + safetensors) and metrics.json into out_dir, replacing them atomically."""
    def write(tmp):
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    replace_folder_contents(out_dir, write, ("config.json", "diffusion_pytorch_model.safetensors", "metrics.json"))


def run_script(main, parse_args) -> None:
    """`main(parse_args())` with bad input answered as one line on stderr and exit status 2, like the CLI."""
    import sys

    from genkit.commands.common import exit_process

    try:
        main(parse_args())
    except ValueError as e:
        print(f"{Path(sys.argv[0]).name}: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
    exit_process(0)                  # a torchrun rank skips the interpreter's finalisation (see exit_process)
