"""`genkit bench japan-disc`: does a multimodal model draw the red disc of "flag: Japan"? (the figures of
weights/openmoji-mm's "Japan's red disc", from one command)

For each --arm NAME=DIR (a MultimodalARPipeline folder), on the real train image of --name:
1. the caption -> image loss of its central 2 x 2 patches (the disc) with its own name, a sibling's (--sibling)
   and no name, and of the whole image with its own name (MultimodalAR.patch_losses: no patch known, --draws noise
   draws per patch, the same draws for every arm and name);
2. --num drawings of --name at the pipeline's defaults, one generator seeded with --seed (the images of
   `genkit draw --model DIR --prompt NAME --num 16 --seed 0`), and how many have a red centre (red on > 40% of the
   centre 8 x 8 pixels, < 5% elsewhere: genkit.mm.evaluate.red_centre) with the mean red share of the centre;
   the real image's share for reference.

With --detail NAME (an arm; repeatable), why that model does or does not draw the disc, under the arm's "detail":
3. the disc's loss with the other patches shown (own name, no name): does the model fill a white field with white?
4. the head alone: for each disc patch, the share of --head_draws samples from the transformer's output there (no
   patch known) that are red patches, at guidance 1 / temperature 1 and at the defaults (5 / 0.7);
5. drawings at temperature 1 for each --detail_guidance G:N (N drawings at guidance G, seeded with --seed): how
   many have a red centre;
6. log p(NAME | image) by the same model (captioning direction): the mean over the drawings of the last
   --detail_guidance entry with and without a red centre, and on the real image with and without its red pixels
   (painted white); the greedy caption of the real image.

    genkit bench japan-disc --arm step24800=weights/openmoji-mm --out weights/openmoji-mm/japan_disc.json
    genkit bench japan-disc --arm s22=DIR --detail s22 --out d.json     # + the detail of one model

Older models come from git: `git archive COMMIT weights/openmoji-mm | tar -x -C DIR`. On one thread of the shared
2-core box: ~10 s per arm, ~40 s more per --detail arm (5 arms, 2 with --detail: 2.0 min).
"""

from __future__ import annotations


def add_parser(bsub):
    p = bsub.add_parser("japan-disc", help="a multimodal model's loss on, and drawings of, the red disc of "
                        "'flag: Japan' (patch losses; red-centre count of drawings)", description=__doc__,
                        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--arm", action="append", default=[], metavar="NAME=DIR",
                   help="repeatable; default: step24800=weights/openmoji-mm")
    p.add_argument("--name", default="flag: Japan", help="a train caption of OpenMoji (default 'flag: Japan')")
    p.add_argument("--sibling", default="flag: France", help="the other name scored on the same image")
    p.add_argument("--draws", type=int, default=256, help="noise draws per patch (default 256)")
    p.add_argument("--num", type=int, default=16, help="drawings per arm (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seeds the draws and the drawings (default 0)")
    p.add_argument("--detail", action="append", default=[], metavar="NAME",
                   help="repeatable: an --arm's NAME to measure why it draws the disc or not (steps 3-6 above)")
    p.add_argument("--head_draws", type=int, default=200, help="head samples per disc patch (--detail; default 200)")
    p.add_argument("--detail_guidance", nargs="+", default=["1:16", "2:16", "3:16", "5:64"], metavar="G:N",
                   help="temperature-1 drawings per guidance (--detail; default 1:16 2:16 3:16 5:64); log p is taken "
                        "over the last entry's")
    p.add_argument("--out", required=True, metavar="FILE.json")


def parse_guidance(items: list[str]) -> list[tuple[float, int]]:
    """["1:16", "5:64"] -> [(1.0, 16), (5.0, 64)]; a ValueError naming --detail_guidance otherwise."""
    from genkit.checks import bad, check_float, check_int
    from pipelines.multimodal import MAX_IMAGES_PER_PROMPT

    out = []
    for item in items:
        g, sep, n = item.partition(":")
        try:
            pair = (check_float("--detail_guidance", float(g), 0, 50), check_int("--detail_guidance", int(n), 1,
                                                                                  MAX_IMAGES_PER_PROMPT))
        except ValueError:
            pair = None
        if not sep or pair is None:
            bad("--detail_guidance", item, f"G:N, a guidance in [0, 50] and 1 to {MAX_IMAGES_PER_PROMPT} drawings, "
                                           "e.g. 5:64")
        out.append(pair)
    return out


def detail(pipe, name: str, image, args, guidance: list[tuple[float, int]]) -> dict:
    """Steps 3-6 of the module docstring for one pipeline; image: the real one, (3, H, W) in [-1, 1]."""
    import numpy as np
    import torch

    from genkit.mm.evaluate import centre_patch_losses, head_red_share, red_centre, red_centre_each, red_pixels
    from genkit.mm.tokens import decode_text
    from pipelines.multimodal import DEFAULT_GUIDANCE, DEFAULT_TEMPERATURE

    model, cap = pipe.model, list(name.encode())
    known = centre_patch_losses(model, image, {"own": cap, "none": []}, args.draws, args.seed, others_known=True)
    head = {f"guidance {g:g}, temperature {t:g}": head_red_share(model, cap, args.head_draws, g, t, seed=args.seed)
            for g, t in ((1.0, 1.0), (DEFAULT_GUIDANCE, DEFAULT_TEMPERATURE))}
    drawn, last = {}, None
    for g, n in guidance:
        x = pipe(name, num_images_per_prompt=n, guidance_scale=g, temperature=1.0, output_type="pt",
                 generator=torch.Generator().manual_seed(args.seed)).images          # (n, 3, H, W) in [0, 1]
        u8 = torch.from_numpy(np.round(x.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8))
        r = red_centre(u8)
        drawn[f"{g:g}"] = {k: r[k] for k in ("red_centre", "n", "centre_red_mean")}
        last = (x * 2 - 1, red_centre_each(u8)[0])
    x, has = last
    lp = model.caption_logprob(pipe.units_of(x), [cap] * len(x))
    no_disc = image.clone()
    no_disc[:, red_pixels(image.permute(1, 2, 0))] = 1.0                      # the disc painted white
    lp_real = model.caption_logprob(pipe.units_of(torch.stack([image, no_disc])), [cap, cap])
    mean = lambda v: v.mean().item() if len(v) else None                     # noqa: E731
    return {"disc_loss_others_known": {k: v["centre"] for k, v in known.items()},
            "head_red_share": {"draws": args.head_draws, **head},
            "temperature_1": drawn,
            "logprob_name": {"guidance": f"{guidance[-1][0]:g}", "drawn_red_centre": mean(lp[has]),
                             "n_red": int(has.sum()), "drawn_other": mean(lp[~has]), "n_other": int((~has).sum()),
                             "real": lp_real[0].item(), "real_disc_painted_white": lp_real[1].item()},
            "real_caption": decode_text(model.caption(pipe.units_of(image[None]), model.config.max_text_bytes)[0])}


def run_disc(args) -> dict:
    import platform
    import time

    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from genkit.checks import bad, check_int
    from genkit.commands.bench_mm import parse_arms
    from genkit.commands.common import atomic_write_json, weights_fingerprint
    from genkit.data import OpenMojiDataset
    from genkit.mm.evaluate import centre_patch_losses, red_centre
    from pipelines.multimodal import MAX_IMAGES_PER_PROMPT, MultimodalARPipeline

    arms = parse_arms(args.arm or ["step24800=weights/openmoji-mm"])
    check_int("--draws", args.draws, 1, 4096)
    check_int("--num", args.num, 1, MAX_IMAGES_PER_PROMPT)
    check_int("--seed", args.seed, 0)
    guidance = parse_guidance(args.detail_guidance)
    check_int("--head_draws", args.head_draws, 1, 4096)
    for d in args.detail:
        if d not in arms:
            bad("--detail", d, f"the NAME of an --arm: one of {sorted(arms)}")
    ds = OpenMojiDataset(32, "train")
    if args.name not in ds.captions:
        bad("--name", args.name, "a caption of OpenMoji's train split, e.g. 'flag: Japan'")
    real = torch.from_numpy(np.ascontiguousarray(ds.images[ds.captions.index(args.name)]))    # (32, 32, 3) uint8
    image = real.permute(2, 0, 1).float() / 127.5 - 1
    captions = {"own": list(args.name.encode()), "sibling": list(args.sibling.encode()), "none": []}
    result = {"name": args.name, "sibling": args.sibling, "draws": args.draws, "num": args.num, "seed": args.seed,
              "real_centre_red": red_centre(real[None])["centre_red_mean"], "arms": {}}
    for arm, path in tqdm(arms.items(), desc="arms", unit="arm"):
        t0 = time.perf_counter()
        pipe = MultimodalARPipeline.from_pretrained(path)
        losses = centre_patch_losses(pipe.model, image, captions, args.draws, args.seed)
        images = pipe(args.name, num_images_per_prompt=args.num, output_type="np",
                      generator=torch.Generator().manual_seed(args.seed)).images
        drawn = red_centre(torch.from_numpy(np.round(np.asarray(images) * 255).astype(np.uint8)))
        result["arms"][arm] = {"model": path, "model_sha256": weights_fingerprint(path),
                               "disc_loss": {k: v["centre"] for k, v in losses.items()},
                               "whole_loss_own": losses["own"]["whole"], **drawn}
        if arm in args.detail:
            result["arms"][arm]["detail"] = detail(pipe, args.name, image, args, guidance)
        result["arms"][arm]["seconds"] = round(time.perf_counter() - t0, 1)             # wall time of this arm
        print(f"{arm}: disc loss own {losses['own']['centre']:.3f} / sibling {losses['sibling']['centre']:.3f} / "
              f"none {losses['none']['centre']:.3f}; {drawn['red_centre']} of {drawn['n']} drawn with a red centre")
    result |= {"command": "genkit bench japan-disc " + " ".join(f"--arm {a}" for a in args.arm)
               + "".join(f" --detail {d}" for d in args.detail)
               + (f" --head_draws {args.head_draws} --detail_guidance {' '.join(args.detail_guidance)}"
                  if args.detail else "")
               + f" --draws {args.draws} --num {args.num} --seed {args.seed} --out {args.out}",
               "device": f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)", "torch": torch.__version__}
    atomic_write_json(args.out, result)
    return result
