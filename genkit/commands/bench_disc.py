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

    genkit bench japan-disc --arm step24800=weights/openmoji-mm --out weights/openmoji-mm/japan_disc.json

Older models come from git: `git archive COMMIT weights/openmoji-mm | tar -x -C DIR`. ~30 s per arm on 2 CPU cores.
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
    p.add_argument("--out", required=True, metavar="FILE.json")


def run_disc(args) -> dict:
    import json
    import platform

    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from genkit.checks import bad, check_int
    from genkit.commands.bench_mm import parse_arms
    from genkit.commands.common import weights_fingerprint
    from genkit.data import OpenMojiDataset
    from genkit.io import atomic_write_bytes
    from genkit.mm.evaluate import centre_patch_losses, red_centre
    from pipelines.multimodal import MAX_IMAGES_PER_PROMPT, MultimodalARPipeline

    arms = parse_arms(args.arm or ["step24800=weights/openmoji-mm"])
    check_int("--draws", args.draws, 1, 4096)
    check_int("--num", args.num, 1, MAX_IMAGES_PER_PROMPT)
    check_int("--seed", args.seed, 0)
    ds = OpenMojiDataset(32, "train")
    if args.name not in ds.captions:
        bad("--name", args.name, "a caption of OpenMoji's train split, e.g. 'flag: Japan'")
    real = torch.from_numpy(np.ascontiguousarray(ds.images[ds.captions.index(args.name)]))    # (32, 32, 3) uint8
    image = real.permute(2, 0, 1).float() / 127.5 - 1
    captions = {"own": list(args.name.encode()), "sibling": list(args.sibling.encode()), "none": []}
    result = {"name": args.name, "sibling": args.sibling, "draws": args.draws, "num": args.num, "seed": args.seed,
              "real_centre_red": red_centre(real[None])["centre_red_mean"], "arms": {}}
    for arm, path in tqdm(arms.items(), desc="arms", unit="arm"):
        pipe = MultimodalARPipeline.from_pretrained(path)
        losses = centre_patch_losses(pipe.model, image, captions, args.draws, args.seed)
        images = pipe(args.name, num_images_per_prompt=args.num, output_type="np",
                      generator=torch.Generator().manual_seed(args.seed)).images
        drawn = red_centre(torch.from_numpy(np.round(np.asarray(images) * 255).astype(np.uint8)))
        result["arms"][arm] = {"model": path, "model_sha256": weights_fingerprint(path),
                               "disc_loss": {k: v["centre"] for k, v in losses.items()},
                               "whole_loss_own": losses["own"]["whole"], **drawn}
        print(f"{arm}: disc loss own {losses['own']['centre']:.3f} / sibling {losses['sibling']['centre']:.3f} / "
              f"none {losses['none']['centre']:.3f}; {drawn['red_centre']} of {drawn['n']} drawn with a red centre")
    result |= {"command": "genkit bench japan-disc " + " ".join(f"--arm {a}" for a in args.arm)
               + f" --draws {args.draws} --num {args.num} --seed {args.seed} --out {args.out}",
               "device": f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)", "torch": torch.__version__}
    atomic_write_bytes(args.out, (json.dumps(result, indent=1) + "\n").encode())
    return result
