"""The `genkit` command line: sample, draw, caption, eval, bench, classes.

    genkit sample --model weights/openmoji-32 --num 64 --steps 20 --solver dpmpp_2m --seed 0 --out samples/
    accelerate launch -m genkit.cli sample ...      # seeds split across processes, same images
    genkit bench overhead --model weights/openmoji-32 --out overhead.json
    genkit bench samplers --model weights/openmoji-32 --nfe 5,10,20,50 --out eval.json
    genkit eval fd --samples samples/                      # FD-OpenMoji vs the train reference
    genkit eval fd --model weights/openmoji-32 --num 1000 --solver dpmpp_2m --steps 20
    genkit eval ref --samples my_images/ --out my_ref.npz
    genkit classes --model weights/openmoji-32
    genkit draw --model weights/openmoji-mm --prompt "red apple" --num 8 --out apples/
    genkit caption --model weights/openmoji-mm apples/

Bad input prints one line `genkit: error: ...` naming the parameter, the value and what is allowed, and
exits with status 2.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _int_at_least(name: str, lo: int):
    """argparse type: an int >= lo, else the one-line error naming the flag."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < lo:
            raise argparse.ArgumentTypeError(f"--{name}={text!r} is not allowed: an int >= {lo}")
        return value
    return parse


def _positive_int(name):
    return _int_at_least(name, 1)


def _nonneg_int(name):
    return _int_at_least(name, 0)


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
    s.add_argument("--steps", type=_positive_int("steps"), default=None, metavar="S",
                   help="solver steps (default 20; a one-step generator such as weights/openmoji-32-sid: 1); NFE "
                        "is reported in manifest.json")
    s.add_argument("--solver", default=None, metavar="NAME",
                   help="euler, heun, dpm2, dpmpp_2m, dpmpp_3m, ipndm (default: the model's, dpmpp_2m)")
    s.add_argument("--grid", default=None, metavar="NAME", help="sigma grid: polynomial (default), logsnr, time")
    s.add_argument("--seed", type=_nonneg_int("seed"), default=0, metavar="K", help="first seed (default 0)")
    _add_class_guidance(s)
    s.add_argument("--batch-size", type=_positive_int("batch-size"), default=16, metavar="B",
                   help="images per network call (default 16; at most 1024)")
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    s.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")

    d = sub.add_parser("draw", help="text -> images with a multimodal model (e.g. weights/openmoji-mm)",
                       description="Draw --num images per prompt with a MultimodalARPipeline folder: one PNG per "
                                   "image, grid.png (a labelled row per prompt) and manifest.json. Each prompt's "
                                   "images come from one generator seeded with --seed; prompts already written are "
                                   "skipped.")
    d.add_argument("--model", required=True, metavar="DIR", help="a MultimodalARPipeline folder")
    d.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                   help='repeatable, e.g. --prompt "red apple" --prompt "flag: Japan"')
    d.add_argument("--prompts-file", default=None, metavar="FILE", help="more prompts, one per line")
    d.add_argument("--num", type=_positive_int("num"), default=4, metavar="N", help="images per prompt (default 4)")
    d.add_argument("--steps", type=_positive_int("steps"), default=16, metavar="S",
                   help="AR steps: patches are revealed over S steps (default 16)")
    d.add_argument("--head-steps", type=_positive_int("head-steps"), default=20,
                   help="ODE steps of the per-patch diffusion head (default 20)")
    d.add_argument("--solver", default="dpmpp_2m", help="the diffusion head's solver (default dpmpp_2m)")
    d.add_argument("--guidance", type=float, default=5.0, metavar="W",
                   help="classifier-free guidance on the caption (default 5; 1 = off)")
    d.add_argument("--negative-prompt", default=None, metavar="TEXT",
                   help='what guidance pushes away from instead of the unconditional model, e.g. "flag: France"')
    d.add_argument("--rerank", type=_positive_int("rerank"), default=1, metavar="K",
                   help="draw K candidates per image and keep the one the model itself finds most likely to be "
                        "named the prompt (log p(prompt | image)); default 1 = off")
    d.add_argument("--temperature", type=float, default=0.7,
                   help="scale of the head's initial noise (default 0.7; 1 = the model's own distribution)")
    d.add_argument("--seed", type=_nonneg_int("seed"), default=0, metavar="K")
    d.add_argument("--device", default=None)
    d.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")

    cap = sub.add_parser("caption", help="images -> text with a multimodal model; prints one JSON line per image",
                         description="Caption image files (or every image in the given folders, except grid.png). "
                                     "Images are composited on white, center-cropped and resized to the model's "
                                     "size; decoding is greedy with the KV cache.")
    cap.add_argument("images", nargs="+", metavar="IMAGE|DIR")
    cap.add_argument("--model", required=True, metavar="DIR", help="a MultimodalARPipeline folder")
    cap.add_argument("--max-new-tokens", type=_positive_int("max-new-tokens"), default=64, metavar="T")
    cap.add_argument("--batch-size", type=_positive_int("batch-size"), default=64, metavar="B")
    cap.add_argument("--device", default=None)
    cap.add_argument("--out", default=None, metavar="FILE.json", help="also write the captions here")

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

    bs = bsub.add_parser("samplers", help="FD-OpenMoji, class accuracy and ODE error of every solver x grid and "
                                          "diffusers' schedulers at several NFE, same noise and seeds",
                         description="Every genkit solver on every sigma grid, plus diffusers' DDIM, DPM-Solver++ "
                                     "and UniPC schedulers on the same model, noise and seeds. Writes FILE.json "
                                     "(after every arm: a killed run resumes) and FILE.md (a table).")
    bs.add_argument("--model", required=True, metavar="DIR")
    bs.add_argument("--nfe", default="5,10,20,50", metavar="LIST", help="NFE budgets (default 5,10,20,50); "
                    "2-evaluation solvers (heun, dpm2) get the most steps that fit")
    bs.add_argument("--num", type=_positive_int("num"), default=512, metavar="N", help="images per arm (default 512)")
    bs.add_argument("--ode-num", type=_positive_int("ode-num"), default=64, metavar="M",
                    help="the first M seeds also get the ODE error against a Heun reference (default 64)")
    bs.add_argument("--ode-ref-steps", type=_positive_int("ode-ref-steps"), default=256, metavar="S",
                    help="steps of that Heun reference on the polynomial grid (default 256 = 511 NFE)")
    bs.add_argument("--solvers", default="euler,heun,dpm2,dpmpp_2m,dpmpp_3m,ipndm", metavar="LIST")
    bs.add_argument("--grids", default="polynomial,logsnr,time", metavar="LIST")
    bs.add_argument("--schedulers", default="ddim,dpmsolver,unipc", metavar="LIST",
                    help="diffusers schedulers: ddim, dpmsolver, unipc ('' for none)")
    _add_class_guidance(bs)
    bs.add_argument("--seed", type=_nonneg_int("seed"), default=0, metavar="K")
    bs.add_argument("--batch-size", type=_positive_int("batch-size"), default=16, metavar="B")
    bs.add_argument("--dtype", default="float32", metavar="float32|bfloat16",
                    help="the network's dtype in the arms (the ODE reference is always float32; bfloat16 adds "
                         "a measured floor to the ODE errors)")
    bs.add_argument("--features-model", default=None, metavar="DIR",
                    help="the FD-OpenMoji network (default weights/openmoji-features)")
    bs.add_argument("--ref", default=None, metavar="NAME|FILE", help="default openmoji-train-<resolution>")
    bs.add_argument("--device", default=None)
    bs.add_argument("--out", required=True, metavar="FILE.json")

    bv = bsub.add_parser("vq", help="quantizers (STE, rotation trick, SimVQ, FSQ; ours and vector-quantize-pytorch's) "
                                     "in one autoencoder at equal budget, ratios to VQ-STE",
                         description="Trains one small autoencoder per arm and codebook size on OpenMoji train and "
                                     "measures reconstruction MSE, codebook usage, perplexity and quantisation error "
                                     "on val. Writes FILE.json (after every arm: a killed run resumes) and FILE.md.")
    bv.add_argument("--arms", default="vq-ste,vq-rotation,vq-rotation-kmeans,simvq,simvq-rotation,fsq,"
                    "vqp:vq-ste,vqp:vq-rotation,vqp:vq-rotation-kmeans,vqp:simvq,vqp:simvq-rotation,vqp:fsq",
                    metavar="LIST", help="default: all six genkit arms and the six vector-quantize-pytorch arms")
    bv.add_argument("--codebook-sizes", default="256,1024,4096", metavar="LIST",
                    help="K values (default 256,1024,4096)")
    bv.add_argument("--steps", type=_positive_int("steps"), default=800, help="training steps per arm (default 800)")
    bv.add_argument("--batch-size", type=_positive_int("batch-size"), default=64)
    bv.add_argument("--learning-rate", type=float, default=1e-3)
    bv.add_argument("--channels", default="16,32,64", help="autoencoder widths at 32, 16, 8 px (default 16,32,64)")
    bv.add_argument("--latent-dim", type=_positive_int("latent-dim"), default=32, help="code vector size")
    bv.add_argument("--seed", type=_nonneg_int("seed"), default=0)
    bv.add_argument("--device", default=None)
    bv.add_argument("--out", required=True, metavar="FILE.json")

    bm = bsub.add_parser("mm", help="the multimodal model and its ablation arms on OpenMoji val: losses, FD, class "
                                     "accuracy, diversity, captions, retrieval, KV-cache speed",
                         description="Measures MultimodalARPipeline folders side by side; the first --arm is the "
                                     "baseline of the ratios. Train the arms with training/train_mm.py (same seed, "
                                     "steps and batch; one flag changed).")
    bm.add_argument("--arm", action="append", default=[], metavar="NAME=DIR",
                    help="repeatable, e.g. base=weights/openmoji-mm")
    bm.add_argument("--num", type=_positive_int("num"), default=400, metavar="N",
                    help="val images / names (default all 400)")
    bm.add_argument("--steps", type=_positive_int("steps"), default=16, help="AR steps per image (default 16)")
    bm.add_argument("--head-steps", type=_positive_int("head-steps"), default=20, help="diffusion-head solver steps")
    bm.add_argument("--solver", default="dpmpp_2m")
    bm.add_argument("--temperature", type=float, default=0.7, help="the head's noise scale (default 0.7)")
    bm.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance (default 5)")
    bm.add_argument("--rerank", type=_positive_int("rerank"), default=1, metavar="K",
                    help="text -> image: each image the best of K candidates by log p(name | image) (default 1)")
    bm.add_argument("--no-retrieval", dest="retrieval", action="store_false",
                    help="skip the N x N log-likelihood ranking (the slow part on a CPU)")
    bm.add_argument("--features-model", default=None, metavar="DIR")
    bm.add_argument("--device", default=None)
    bm.add_argument("--out", required=True, metavar="FILE.json")

    e = sub.add_parser("eval", help="Frechet distances (FD-OpenMoji, FID) and reference statistics")
    esub = e.add_subparsers(dest="eval", required=True, metavar="NAME")
    f = esub.add_parser("fd", help="FD of a folder of samples, or of a model's samples generated on the fly",
                        description="FD of --samples DIR (every image except grid.png; one size, not resized) "
                                    "or of --model DIR sampled with seeds K..K+N-1 (split across processes "
                                    "under accelerate launch / torchrun). Prints one JSON line.")
    f.add_argument("--samples", default=None, metavar="DIR", help="a folder of images, e.g. from genkit sample")
    f.add_argument("--model", default=None, metavar="DIR", help="a pipeline folder to sample and measure")
    f.add_argument("--num", type=_positive_int("num"), default=1000, metavar="N", help="with --model (default 1000)")
    f.add_argument("--steps", type=_positive_int("steps"), default=None, metavar="S",
                   help="solver steps (default 20; 1 for a one-step generator)")
    f.add_argument("--solver", default=None, metavar="NAME")
    f.add_argument("--grid", default=None, metavar="NAME")
    _add_class_guidance(f)
    f.add_argument("--seed", type=_nonneg_int("seed"), default=0, metavar="K")
    _add_features(f)
    f.add_argument("--ref", default=None, metavar="NAME|FILE",
                   help="openmoji-train-32 (default: openmoji-train-<resolution>), openmoji-val-64, ... or a .npz")
    f.add_argument("--batch-size", type=_positive_int("batch-size"), default=64, metavar="B")
    f.add_argument("--device", default=None)
    f.add_argument("--out", default=None, metavar="FILE.json", help="also write the JSON line here")
    f.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    sa = esub.add_parser("sanity", help="FD-OpenMoji's checks: train vs train ~ 0, the val floor, monotone in blur "
                                        "and noise, repeatable (shipped network and references)")
    sa.add_argument("--resolutions", default="32,64", metavar="LIST")
    sa.add_argument("--features-model", default=None, metavar="DIR", help="default weights/openmoji-features")
    sa.add_argument("--device", default=None)
    sa.add_argument("--out", default=None, metavar="FILE.json")

    r = esub.add_parser("ref", help="reference statistics (.npz: mu, sigma, n, feature id) of a folder or split")
    r.add_argument("--samples", default=None, metavar="DIR", help="a folder of images (one size)")
    r.add_argument("--openmoji", default=None, metavar="SPLIT", help="train, val or all")
    r.add_argument("--resolution", type=_positive_int("resolution"), default=32, help="with --openmoji")
    _add_features(r)
    r.add_argument("--device", default=None)
    r.add_argument("--out", required=True, metavar="FILE.npz")
    return p


def _add_class_guidance(p):
    p.add_argument("--class", dest="class_label", default=None, metavar="NAME|ID|cycle|none",
                   help="class name (see `genkit classes`) or id; 'cycle' (the default for a class-conditional "
                        "model): image with seed s gets class s mod K; 'none': unconditional (the null class)")
    p.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="classifier-free guidance scale: 1 = off, >1 costs 2 NFE per step "
                        "(default 2.0 for a class-conditional model, else 1)")


def _add_features(p):
    p.add_argument("--features", default="openmoji", metavar="openmoji|inception",
                   help="FD-OpenMoji (the shipped classifier, default) or Inception FID (needs torch-fidelity, "
                        "torchvision and --inception-weights)")
    p.add_argument("--features-model", default=None, metavar="DIR", help="default weights/openmoji-features")
    p.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="pt_inception-2015-12-05-6726825d.pth (or $GENKIT_INCEPTION_WEIGHTS); never downloaded")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "sample":
            from .commands.sample import run_sample
            run_sample(args)
        elif args.command in ("draw", "caption"):
            from .commands.mm import run_caption, run_draw
            (run_draw if args.command == "draw" else run_caption)(args)
        elif args.command == "classes":
            from .commands.common import load_pipeline
            pipe = load_pipeline(args.model, "cpu")
            for i, name in enumerate(pipe.config.class_names or []):
                print(f"{i}\t{name}")
        elif args.command == "bench" and args.bench == "overhead":
            from .commands.bench import run_overhead
            run_overhead(args)
        elif args.command == "bench" and args.bench == "mm":
            from .commands.bench_mm import run_mm
            run_mm(args)
        elif args.command == "bench" and args.bench == "vq":
            from .commands.bench_vq import run_vq
            run_vq(args)
        elif args.command == "bench" and args.bench == "samplers":
            from .commands.bench_samplers import run_samplers
            run_samplers(args)
        elif args.command == "eval":
            from .commands.evaluate import run_fd, run_ref, run_sanity
            {"fd": run_fd, "ref": run_ref, "sanity": run_sanity}[args.eval](args)
    except ValueError as e:
        print(f"genkit: error: {' '.join(str(e).split())}", file=sys.stderr)  # one line, always
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
