"""`genkit bench captions`: greedy captions of N evenly spaced OpenMoji images vs their names (exact matches).

The images are indices 0, L // N, 2 L // N, ... of the split (L its length), the same ones tests/test_mm.py
checks. Deterministic (greedy decoding); ~1 min for 64 on a 2-core CPU.
"""

from __future__ import annotations


def add_parser(bsub):
    p = bsub.add_parser("captions", help="exact-name rate of a multimodal model's greedy captions on OpenMoji",
                        description=__doc__)
    p.add_argument("--model", default="weights/openmoji-mm", metavar="DIR")
    p.add_argument("--split", default="train", choices=["train", "val"])
    p.add_argument("--num", type=int, default=64, metavar="N", help="evenly spaced images (default 64)")
    p.add_argument("--out", required=True, metavar="FILE.json")


def caption_indices(length: int, num: int) -> list[int]:
    return list(range(0, length, length // num))[:num]


def run_captions(args) -> dict:
    import json
    import platform

    import torch

    from genkit.checks import check_int
    from genkit.data import OpenMojiDataset
    from genkit.io import atomic_write_bytes
    from pipelines.multimodal import MultimodalARPipeline

    ds = OpenMojiDataset(32, args.split)
    check_int("--num", args.num, 1, len(ds))
    pipe = MultimodalARPipeline.from_pretrained(args.model)
    idx = caption_indices(len(ds), args.num)
    x = torch.from_numpy(ds.images[idx]).permute(0, 3, 1, 2).float() / 127.5 - 1
    got = pipe.caption(x)
    pairs = [{"index": i, "name": ds.captions[i], "caption": g} for i, g in zip(idx, got)]
    result = {"model": args.model, "split": args.split, "n": len(idx),
              "exact": sum(p["name"] == p["caption"] for p in pairs), "pairs": pairs,
              "command": f"genkit bench captions --model {args.model} --split {args.split} --num {args.num} "
                         f"--out {args.out}",
              "device": f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)", "torch": torch.__version__}
    atomic_write_bytes(args.out, (json.dumps(result, indent=1, ensure_ascii=False) + "\n").encode())
    print(f"{result['exact']} of {result['n']} exact")
    return result
