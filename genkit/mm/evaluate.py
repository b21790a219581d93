"""Measurements of a MultimodalAR model on OpenMoji val (used by `genkit bench mm` and train_mm.py).

- val_losses: text NLL (nats per target byte) and image loss, with fixed directions and noise;
- image_loss_by_context: the image loss when 0%, 50% or 90% of the patches are already known: whether the model
  uses the patches it has drawn (the loss should fall as more are known; a model that ignores them draws mosaics);
- image_loss_by_caption: the same loss with the image's own name, a sibling's name (another emoji of its
  subgroup, e.g. "flag: France" for Japan's flag) and no name: whether the model reads the name or only its kind;
- text_to_image: images for val names -> FD-OpenMoji against the val reference, class accuracy (the shipped
  classifier's subgroup vs the name's; 98 fine classes, e.g. face-smiling vs face-affection) and group accuracy
  (the same prediction scored at the 9 groups, e.g. "a smiley" for a smiley's name), diversity (mean pairwise
  RMS distance among images of one name);
- captioning: greedy captions -> exact-match accuracy; retrieval: rank all val names by log p(name | image),
  top-1 / top-5 accuracy;
- decode_speed: the same work with and without the KV cache;
- centre_patch_losses, red_centre, head_red_share: whether a model draws a flag's central disc, and why not
  (`genkit bench japan-disc`).
"""

from __future__ import annotations

import math
import time

import torch
from tqdm.auto import tqdm

from .tokens import decode_text


def make_examples(images, captions, idx, generator, t2i_fraction: float = 0.5):
    """A batch of uint8 images (as [-1, 1] floats) or of VQ codes (as they are), their captions, and a random
    direction per example: caption -> image with probability t2i_fraction, else image -> caption."""
    first = (torch.rand(len(idx), generator=generator) < 1 - t2i_fraction).tolist()
    x = images[idx]
    return (x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x), [captions[i] for i in idx.tolist()], first


@torch.no_grad()
def val_losses(model, images: torch.Tensor, captions: list[list[int]], seed: int = 1234, batch: int = 64) -> dict:
    """Mean text and image loss over held-out data (uint8 images, or codes for the discrete arm); the same
    directions and noise every call."""
    was = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    tot, n = {"text_loss": 0.0, "image_loss": 0.0}, 0
    for i in range(0, len(images), batch):
        x, caps, first = make_examples(images, captions, torch.arange(i, min(i + batch, len(images))), g)
        _, logs = model.loss(x, caps, first, generator=g)
        for k in tot:
            tot[k] += logs[k].item() * len(caps)
        n += len(caps)
    model.train(was)
    return {f"val_{k}": v / n for k, v in tot.items()}


@torch.no_grad()
def image_loss_by_context(model, images: torch.Tensor, captions: list[list[int]],
                          known_fractions=(0.0, 0.5, 0.9), seed: int = 1234, batch: int = 64) -> dict:
    """Caption -> image loss on uint8 images with floor(f N) random patches known, for each f: {f: loss}. The
    same patches, noise and noise levels for every f (a random-order diffusion-head model only)."""
    was = model.training
    model.eval()
    n = model.num_patches
    out = {}
    for f in known_fractions:
        g = torch.Generator().manual_seed(seed)
        tot, count = 0.0, 0
        for i in range(0, len(images), batch):
            x = images[i:i + batch].float() / 127.5 - 1
            caps = captions[i:i + batch]
            b = len(caps)
            ranks = torch.argsort(torch.argsort(torch.rand(b, n, generator=g), 1), 1)
            known = ranks < int(f * n)                                       # (B, N) the first floor(f N) known
            _, logs = model.loss(x, caps, [False] * b, generator=g, known=known, drop_captions=False)
            m = (~known).sum().item()                                        # patches the mean is over
            tot, count = tot + logs["image_loss"].item() * m, count + m
        out[f"{f:g}"] = round(tot / count, 5)
    model.train(was)
    return out


def sibling_index(labels: torch.Tensor) -> torch.Tensor:
    """For each item, the next item of its class (cyclically, in order); -1 where it is alone in its class."""
    out = torch.full_like(labels, -1)
    for c in labels.unique():
        members = (labels == c).nonzero().flatten()
        if len(members) > 1:
            out[members] = members.roll(-1)
    return out


def image_loss_by_caption(model, images: torch.Tensor, captions: list[list[int]], labels: torch.Tensor,
                          seed: int = 1234) -> dict:
    """Caption -> image loss (no patches known) on the images that have a sibling in their class, with each
    image's own caption, its sibling's caption and the empty caption; the same noise in all three.
    own < sibling: the model reads the name, not only what kind of thing it names."""
    sib = sibling_index(labels)
    keep = (sib >= 0).nonzero().flatten().tolist()
    if not keep:
        return {"own": None, "sibling": None, "empty": None, "n": 0}
    x = images[keep]
    arms = {"own": [captions[i] for i in keep], "sibling": [captions[sib[i]] for i in keep],
            "empty": [[] for _ in keep]}
    out = {k: image_loss_by_context(model, x, caps, (0.0,), seed=seed)["0"] for k, caps in arms.items()}
    return out | {"n": len(keep)}


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)


@torch.no_grad()
def text_to_image(pipe, captions: list[list[int]], labels: torch.Tensor, fd, classifier, per_caption: int = 1,
                  diversity_captions: int = 50, diversity_images: int = 4, seed: int = 0, progress: bool = True,
                  groups: torch.Tensor | None = None, rerank: int = 1, **generate_kwargs) -> dict:
    """One image per caption (seeded by the caption's index) for FD and class accuracy; diversity_images more
    for the first diversity_captions captions. groups (num_classes,): the group of each class, for group
    accuracy. rerank=K: each image the best of K candidates (MultimodalARPipeline's rerank)."""
    correct, correct_group, dists = 0, 0, []
    for i, cap in enumerate(tqdm(captions, desc="text -> image", disable=not progress)):
        n = max(per_caption, diversity_images if i < diversity_captions else 1)
        x = pipe.images_of(pipe.generate_units(cap, None, n, rerank, torch.Generator().manual_seed(seed + i),
                                               **generate_kwargs))
        u8 = to_uint8(x.cpu())
        fd.update(u8[:per_caption])
        if classifier is not None:
            pred = classifier.predict(u8[:per_caption]).cpu()
            correct += int((pred == labels[i]).sum())
            if groups is not None:
                correct_group += int((groups[pred] == groups[labels[i]]).sum())
        if i < diversity_captions and n > 1:
            flat = x.flatten(1).double()
            d = torch.cdist(flat, flat) / flat.shape[1] ** 0.5
            dists.append(d[torch.triu(torch.ones(n, n, dtype=torch.bool), 1)].mean().item())
    n = len(captions) * per_caption
    return {"fd": round(fd.compute(), 4), "n": n,
            "class_accuracy": round(correct / n, 4) if classifier is not None else None,
            "group_accuracy": round(correct_group / n, 4) if classifier is not None and groups is not None else None,
            "diversity": round(sum(dists) / len(dists), 4) if dists else None}


@torch.no_grad()
def classifier_ceiling(images: torch.Tensor, labels: torch.Tensor, classifier, groups: torch.Tensor,
                       batch: int = 256) -> dict:
    """The classifier's own class and group accuracy on real images (uint8): the most a generator can score."""
    pred = torch.cat([classifier.predict(images[i:i + batch]).cpu() for i in range(0, len(images), batch)])
    return {"class_accuracy": round((pred == labels).double().mean().item(), 4),
            "group_accuracy": round((groups[pred] == groups[labels]).double().mean().item(), 4)}


@torch.no_grad()
def captioning(pipe, images: torch.Tensor, captions: list[list[int]], batch: int = 32, retrieval: bool = True,
               progress: bool = True) -> dict:
    """Greedy-caption exact match, and top-1 / top-5 retrieval of the true name among all given names."""
    model = pipe.model
    x_all = pipe.units_of((images.float() / 127.5 - 1).to(model.device))
    exact = 0
    for i in tqdm(range(0, len(images), batch), desc="captions", disable=not progress):
        got = model.caption(x_all[i:i + batch], max_new_tokens=model.config.max_text_bytes)
        exact += sum(decode_text(g) == decode_text(c) for g, c in zip(got, captions[i:i + batch]))
    out = {"caption_exact_match": round(exact / len(images), 4)}
    if retrieval:
        top1 = top5 = 0
        for i in tqdm(range(len(images)), desc="retrieval", disable=not progress):
            scores = model.rank_captions(x_all[i:i + 1], captions)       # the image prefix runs once
            rank = int((scores > scores[i]).sum())
            top1 += rank < 1
            top5 += rank < 5
        out.update(retrieval_top1=round(top1 / len(images), 4), retrieval_top5=round(top5 / len(images), 4))
    return out


@torch.no_grad()
def decode_speed(pipe, images: torch.Tensor, caption: list[int], repeats: int = 3, **generate_kwargs) -> dict:
    """Seconds for captioning a batch (64 new bytes at most) and for one text -> image call, with and without
    the KV cache (the medians of `repeats` interleaved runs), and their ratios."""
    model = pipe.model
    x = pipe.units_of((images.float() / 127.5 - 1).to(model.device))
    arms = {
        "caption_cached": lambda: model.caption(x, max_new_tokens=32),
        "caption_uncached": lambda: model.caption(x, max_new_tokens=32, use_cache=False),
        "generate_cached": lambda: model.generate(caption, generator=torch.Generator().manual_seed(0),
                                                  **generate_kwargs),
        "generate_uncached": lambda: model.generate(caption, generator=torch.Generator().manual_seed(0),
                                                    use_cache=False, **generate_kwargs),
    }
    times = {k: [] for k in arms}
    for _ in range(repeats):
        for k, fn in arms.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {**{f"{k}_s": round(v, 4) for k, v in med.items()},
            "caption_speedup": round(med["caption_uncached"] / med["caption_cached"], 3),
            "generate_speedup": round(med["generate_uncached"] / med["generate_cached"], 3)}


def centre_patches(model) -> torch.Tensor:
    """Ids of the central 2 x 2 patches (a flag's disc) in the row-major patch grid, (4,)."""
    side = math.isqrt(model.num_patches)                                   # patches per row
    rows = torch.arange(side // 2 - 1, side // 2 + 1)
    return (rows[:, None] * side + rows[None, :]).flatten()


def centre_patch_losses(model, image: torch.Tensor, captions: dict[str, list[int]], draws: int = 256,
                        seed: int = 0, others_known: bool = False) -> dict:
    """Caption -> image loss of one image (3, H, W) in [-1, 1] for each named caption: on the central 2 x 2
    patches (a flag's disc) and on the whole image; the same `draws` noise draws per patch (seeded) for every
    caption. No patch known, or with others_known the other N - 4 shown to the transformer (then "whole" is the
    mean over the 4 hidden ones, = "centre"). {key: {"centre": float, "whole": float}}"""
    centre = centre_patches(model)
    known = None
    if others_known:
        known = torch.ones(1, model.num_patches, dtype=torch.bool)
        known[0, centre] = False
    out = {}
    for key, caption in captions.items():
        per = model.patch_losses(image.unsqueeze(0), [caption], known=known, draws=draws,
                                 generator=torch.Generator().manual_seed(seed))[0]      # (N,), NaN where known
        out[key] = {"centre": per[centre].mean().item(), "whole": per.nanmean().item()}
    return out


def red_pixels(x: torch.Tensor) -> torch.Tensor:
    """Which pixels of channels-last images (..., 3) in [-1, 1] are red: R - G > 0.5 (bool, (...))."""
    return (x[..., 0] - x[..., 1]) > 0.5


def red_centre_each(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image of uint8 (N, H, W, 3): (has a red centre (N,) bool, red share of the centre (N,)); see red_centre."""
    red = red_pixels(images.float() / 127.5 - 1)                           # (N, H, W)
    h, w = red.shape[1:]
    centre = red[:, 3 * h // 8:5 * h // 8, 3 * w // 8:5 * w // 8].float().mean((1, 2))
    outside = red.clone()
    outside[:, 5 * h // 16:11 * h // 16, 5 * w // 16:11 * w // 16] = False
    return (centre > 0.4) & (outside.float().mean((1, 2)) < 0.05), centre


def red_centre(images: torch.Tensor) -> dict:
    """Red-disc check on uint8 images (N, H, W, 3): a pixel is red when R - G > 0.5 on the [-1, 1] scale; an image
    has a red centre when > 40% of its centre (H/4 x W/4, 8 x 8 at 32 px) is red and < 5% outside the central
    3H/8 x 3W/8 box (12 x 12). {"red_centre": count, "n": N, "centre_red": [share per image], "centre_red_mean"}"""
    has, centre = red_centre_each(images)
    return {"red_centre": int(has.sum()), "n": len(images), "centre_red": [round(v, 6) for v in centre.tolist()],
            "centre_red_mean": centre.mean().item()}


@torch.no_grad()
def head_red_share(model, caption: list[int], draws: int = 200, guidance_scale: float = 1.0,
                   temperature: float = 1.0, head_steps: int = 20, solver: str = "dpmpp_2m", seed: int = 0) -> list:
    """What the diffusion head alone draws for each central patch with no patch known: the share of `draws`
    samples from the transformer's output z there (guided against the no-name output when guidance_scale != 1)
    that are red patches (more than half of the patch's pixels red, as red_pixels). [share per centre patch]"""
    from .diffusion_head import sample_patches
    from .tokens import unpatchify

    was = model.training
    model.eval()
    z = {}
    hidden = torch.zeros(1, model.num_patches, dtype=torch.bool, device=model.device)        # 1. nothing known
    units = torch.zeros(1, model.num_patches, model.patch_dim, device=model.device)
    for key, cap in (("cond", caption), ("uncond", [])):
        z[key] = model.patch_outputs([cap], units, hidden)[0]                # (N, d)
    generator = torch.Generator().manual_seed(seed)
    shares = []
    for k in centre_patches(model).tolist():
        zc, zu = (z[key][k].expand(draws, -1) for key in ("cond", "uncond"))                 # 2. one z, many draws
        x = sample_patches(model.patch_head, zc, head_steps, solver, temperature, guidance_scale, zu, generator,
                           model.patch_dim)                                 # (draws, P)
        pix = unpatchify(x.float().cpu().unsqueeze(1), 1, model.config.patch_size).permute(0, 2, 3, 1)  # (D, p, p, 3)
        shares.append(red_pixels(pix.clamp(-1, 1)).float().mean((1, 2)).gt(0.5).float().mean().item())  # 3. red?
    model.train(was)
    return shares
