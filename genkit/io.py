"""Atomic file writes: a reader (or a resumed job) never sees a half-written file or model folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def _umask_mode(mode: int) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ""):
    """Yield a temp path beside `path`; on success it is renamed onto `path` (with the usual 0644-style
    permissions, not mkstemp's 0600), on failure removed. `suffix` keeps writers that add extensions happy."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode(0o666))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def replace_folder_contents(out_dir: Path, write, names: tuple[str, ...]) -> None:
    """Call write(tmp_dir) to fill a temp folder inside out_dir, then move each of `names` into out_dir
    (files by an atomic rename; folders by moving the old one aside first)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".tmp-"))
    try:
        write(tmp)
        for name in names:
            for p in [tmp / name, *(tmp / name).rglob("*")]:
                if p.is_file():
                    os.chmod(p, _umask_mode(0o666))
            old = out_dir / name
            if old.is_dir():  # a folder cannot be replaced in one rename
                os.replace(old, tmp / f"old-{name}")
            os.replace(tmp / name, old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
