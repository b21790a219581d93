"""Fixtures shared by several test modules (plain helpers live in tests/helpers.py)."""

import pytest


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """A user's image folder: 22 seeded random 40x40 RGB PNGs (not square-cropped to the model size yet)."""
    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(22):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder
