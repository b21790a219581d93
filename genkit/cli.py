"""The `genkit` command line: sample, bench, classes.

    genkit sample --model weights/openmoji-32 --num 64 --steps 20 --solver dpmpp_2m --seed 0 --out samples/
    accelerate launch -m genkit.cli sample ...      # seeds split across processes, same images
    genkit bench overhead --model weights/openmoji-32 --out overhead.json
    genkit classes --model weights/openmoji-32

Bad input prints one line `genkit: error: ...` naming the parameter, the value and what is allowed, and
exits with status 2.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _positive_int(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name}={text!r} is not allowed: an int >= 1") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"--{name}={text!r} is not allowed: an int >= 1")
        return value
    return parse


def _nonneg_int(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name}={text!r} is not allowed: an int >= 0") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"--{name}={text!r} is not allowed: an int >= 0")
        return value
    return parse


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag prints one line (no usage block), like the errors raised by the commands."""

    def error(self, message):
        self.exit(2, f"genkit: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="genkit", description="genkit: pixel-space diffusion toolkit",
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--version", action="version", version=f"genkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("sample", help="generate images to a folder (one PNG per seed, grid.png, manifest.json)",
                       description="Generate N images with seeds K..K+N-1. Image k depends only on its seed: "
                                   "the same files whatever --batch-size or the number of processes. Images "
                                   "already in --out are skipped, so an interrupted job resumes.")
    s.add_argument("--model", required=True, metavar="DIR", help="a pipeline folder, e.g. weights/openmoji-32")
    s.add_argument("--num", type=_positive_int("num"), default=16, metavar="N", help="number of images (default 16)")
    s.add_argument("--steps", type=_positive_int("steps"), default=20, metavar="S",
                   help="solver steps (default 20); NFE is reported in manifest.json")
    s.add_argument("--solver", default=None, metavar="NAME",
                   help="euler, heun, dpm2, dpmpp_2m, dpmpp_3m, ipndm (default: the model's, dpmpp_2m)")
    s.add_argument("--grid", default=None, metavar="NAME", help="sigma grid: polynomial (default), logsnr, time")
    s.add_argument("--seed", type=_nonneg_int("seed"), default=0, metavar="K", help="first seed (default 0)")
    s.add_argument("--class", dest="class_label", default=None, metavar="NAME|ID|cycle|none",
                   help="class name (see `genkit classes`) or id; 'cycle' (the default for a class-conditional "
                        "model): image with seed s gets class s mod K; 'none': unconditional (the null class)")
    s.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="classifier-free guidance scale: 1 = off, >1 costs 2 NFE per step "
                        "(default 2.0 for a class-conditional model, else 1)")
    s.add_argument("--batch-size", type=_positive_int("batch-size"), default=16, metavar="B",
                   help="images per network call (default 16; at most 1024)")
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    s.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")

    c = sub.add_parser("classes", help="list a model's class ids and names")
    c.add_argument("--model", required=True, metavar="DIR")

    b = sub.add_parser("bench", help="benchmarks that compare arms side by side and report ratios")
    bsub = b.add_subparsers(dest="bench", required=True, metavar="NAME")
    o = bsub.add_parser("overhead", help="pipeline wall time at S NFE vs S bare UNet forwards (same batch)")
    o.add_argument("--model", required=True, metavar="DIR")
    o.add_argument("--steps", type=_positive_int("steps"), default=20)
    o.add_argument("--batch-size", type=_positive_int("batch-size"), default=16)
    o.add_argument("--repeats", type=_positive_int("repeats"), default=5)
    o.add_argument("--device", default=None)
    o.add_argument("--out", default=None, metavar="FILE.json")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "sample":
            from .commands.sample import run_sample
            run_sample(args)
        elif args.command == "classes":
            from .commands.common import load_pipeline
            pipe = load_pipeline(args.model, "cpu")
            for i, name in enumerate(pipe.config.class_names or []):
                print(f"{i}\t{name}")
        elif args.command == "bench" and args.bench == "overhead":
            from .commands.bench import run_overhead
            run_overhead(args)
    except ValueError as e:
        print(f"genkit: error: {' '.join(str(e).split())}", file=sys.stderr)  # one line, always
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
