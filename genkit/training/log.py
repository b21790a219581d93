"""Append-only .jsonl logs (one JSON row per line, each with a "step") that survive resumes.

A run killed after checkpoint-N had logged rows past N; the resumed run redoes those steps, so on resume the
rows with step > N are dropped (the file is rewritten atomically) before new ones are appended: no step is
logged twice.
"""

from __future__ import annotations

import json
from pathlib import Path

from genkit.io import atomic_path


def _rows(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:   # a line cut by a kill mid-write
            pass
    return rows


class JsonlLog:
    """path: the .jsonl file. resume_step: the checkpoint step a run resumed from (None or 0: a new run keeps what
    is there only if resume_step is None; 0 starts the file afresh). Only the main process writes."""

    def __init__(self, path: Path, resume_step: int | None, main_process: bool = True):
        self.path, self.main = Path(path), main_process
        if self.main and resume_step is not None and self.path.is_file():
            keep = [r for r in _rows(self.path) if r.get("step", 0) <= resume_step]
            with atomic_path(self.path) as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))

    def write(self, row: dict) -> None:
        if self.main:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def last(self) -> dict:
        return _rows(self.path)[-1] if self.path.is_file() and _rows(self.path) else {}


def minutes_before(out_dir: Path, step: int, names=("metrics.jsonl", "loss.jsonl")) -> float:
    """Training minutes already spent up to `step` in earlier runs of this output folder (the last row at or
    before it in the first of `names` that has minutes), for checkpoints older than trainer_state.json."""
    for name in names:
        log, minutes = Path(out_dir) / name, None
        if step > 0 and log.is_file():
            for row in _rows(log):
                if row.get("step", step + 1) <= step and "minutes" in row:
                    minutes = float(row["minutes"])
        if minutes is not None:
            return minutes
    return 0.0
