"""What every training script here shares at its edge: flag errors, model folders rewritten in place, the
one-line error exit. Checkpoints, logs, the loss and accelerate setup live in genkit.training (re-exported here)."""

from __future__ import annotations

import json
from pathlib import Path

from genkit.io import replace_folder_contents
from genkit.training.checkpoint import (checkpoint_dirs, discard, load_checkpoint,  # noqa: F401
                                       resolve_checkpoint, save_checkpoint)
from genkit.training.log import JsonlLog, minutes_before  # noqa: F401


def bad_flag(name: str, value, allowed: str):
    raise ValueError(f"--{name}={value!r} is not allowed: {allowed}")


def require_positive(args, *names: str) -> None:
    for name in names:
        if getattr(args, name) < 1:
            bad_flag(name, getattr(args, name), "an int >= 1")


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
