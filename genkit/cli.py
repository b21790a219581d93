"""The `genkit` command line: sample, draw, caption, eval, bench, classes.

    genkit sample --model weights/openmoji-32 --num 64 --steps 20 --solver dpmpp_2m --seed 0 --out samples/
    accelerate launch -m genkit.cli sample ...      # seeds split across processes, same images
    genkit bench overhead --model weights/openmoji-32 --out overhead.json
    genkit bench samplers --model weights/openmoji-32 --nfe 5,10,20,50 --out eval.json
    genkit sample --model weights/openmoji-32 --size 64 --ug 1.0 --num 16 --out samples64/   # upsample guidance
    genkit bench upsample --model weights/openmoji-32 --size 64 --num 1000 --out bench_upsample.json
    genkit eval fd --samples samples/                      # FD-OpenMoji vs the train reference
    genkit eval fd --model weights/openmoji-32 --num 1000 --solver dpmpp_2m --steps 20
    genkit eval ref --samples my_images/ --out my_ref.npz
    genkit eval curve --run shifted=runs/s64-shifted --run cosine=runs/s64-cosine --num 1000 --out study64.json
    genkit classes --model weights/openmoji-32
    genkit draw --model weights/openmoji-mm --prompt "red apple" --num 8 --out apples/
    genkit caption --model weights/openmoji-mm apples/

Bad input prints one line `genkit: error: ...` naming the parameter, the value and what is allowed, and
exits with status 2, before any model is loaded where the check does not need the model. NaN and inf are
never accepted. Limits per request: {limits}.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .checks import LIMITS, OneLineParser, float_arg, int_arg, limits_text, seed_arg


# upper bounds by flag name, from the one table in genkit/checks.py
_UPPER = {"num": LIMITS["num_images"], "steps": LIMITS["steps"], "head-steps": LIMITS["steps"],
          "batch-size": LIMITS["batch_size"], "ode-ref-steps": LIMITS["steps"]}


def _positive_int(name):
    """argparse type: an int in [1, limit] (the limit from LIMITS where the flag has one)."""
    return int_arg(f"--{name}", 1, _UPPER.get(name))


def _nonneg_int(name):
    return seed_arg(f"--{name}") if name == "seed" else int_arg(f"--{name}", 0)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="genkit", description="genkit: pixel-space diffusion toolkit",
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.format(limits=limits_text()))
    p.add_argument("--version", action="version", version=f"genkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("sample", help="generate images to a folder (one PNG per seed, grid.png, manifest.json)",
                       description="Generate N images with seeds K..K+N-1. Image k depends only on its seed: "
                                   "the same files whatever --batch-size or the number of processes. Images "
                                   "already in --out are skipped, so an interrupted job resumes, when "
                                   "manifest.json shows they were made with the same model and settings.")
    s.add_argument("--model", required=True, metavar="DIR", help="a pipeline folder, e.g. weights/openmoji-32")
    s.add_argument("--num", type=_positive_int("num"), default=16, metavar="N", help="number of images (default 16)")
    s.add_argument("--steps", type=_positive_int("steps"), default=None, metavar="S",
                   help="solver steps (default 20; a one-step generator such as weights/openmoji-32-sid: 1); NFE "
                        "is reported in manifest.json")
    s.add_argument("--solver", default=None, metavar="NAME", help=_SOLVER_HELP)
    s.add_argument("--grid", default=None, metavar="NAME",
                   help="sigma grid: polynomial (default), logsnr, time; learned: an AMED predictor's own (the "
                        "default for --solver amed-... when its predictor learned one)")
    _add_methods(s)
    s.add_argument("--seed", type=_nonneg_int("seed"), default=0, metavar="K", help="first seed (default 0)")
    _add_class_guidance(s)
    _add_size_ug(s)
    s.add_argument("--batch-size", type=_positive_int("batch-size"), default=16, metavar="B",
                   help="images per network call (default 16; at most 1024)")
    s.add_argument("--batch-invariant", action="store_true",
                   help="one network call per image: image k is then byte-identical whatever --batch-size (about "
                        "2x slower on a CPU, far slower on a GPU). Default: batched calls, whose images may differ "
                        "in the last bit of a pixel between batch sizes (CPU kernels block by batch size); batches "
                        "are aligned to --seed, so a resume or another process count gives the same bytes")
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    s.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    s.add_argument("--restart", action="store_true",
                   help="delete the images, grid and manifest already in --out first (a rerun otherwise resumes, "
                        "and refuses when --out holds images made with other settings, naming them)")

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
    d.add_argument("--guidance", type=float_arg("--guidance", 0, LIMITS["guidance"]), default=5.0, metavar="W",
                   help="classifier-free guidance on the caption (default 5; 1 = off)")
    d.add_argument("--negative-prompt", default=None, metavar="TEXT",
                   help='what guidance pushes away from instead of the unconditional model, e.g. "flag: France"')
    d.add_argument("--rerank", type=_positive_int("rerank"), default=1, metavar="K",
                   help="draw K candidates per image and keep the one the model itself finds most likely to be "
                        "named the prompt (log p(prompt | image)); default 1 = off")
    d.add_argument("--temperature", type=float_arg("--temperature", 0, LIMITS["temperature"]), default=0.7,
                   help="scale of the head's initial noise (default 0.7; 1 = the model's own distribution)")
    d.add_argument("--seed", type=_nonneg_int("seed"), default=0, metavar="K")
    d.add_argument("--device", default=None)
    d.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    d.add_argument("--restart", action="store_true",
                   help="delete this run's images, grid and manifest already in --out first (a rerun otherwise "
                        "resumes, and refuses when they were made with other settings, naming them)")

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
    o.add_argument("--solvers", default="euler", metavar="A,B",
                   help="pipeline arms at exactly --steps NFE; each after the first is also reported as a ratio "
                        "over the first (e.g. euler,amed-euler: what the AMED predictor adds)")
    o.add_argument("--guidance", type=float, default=1.0, help="CFG scale of the pipeline arms (an AMED predictor "
                   "is trained for one: 2 for the shipped ones); the bare arm then runs 2B rows")
    o.add_argument("--generators", default=None, metavar="DIR,...",
                   help="one-step generators distilled from --model (e.g. weights/openmoji-32-sid): timed beside "
                        "the pipeline arms, reported as speed-up over the first solver at --steps NFE")
    o.add_argument("--device", default=None)
    o.add_argument("--out", default=None, metavar="FILE.json")

    from .commands.bench_app_flags import add_app_parser, add_throughput_parser
    add_throughput_parser(bsub, _positive_int)
    add_app_parser(bsub, _positive_int)

    bs = bsub.add_parser("samplers", help="FD-OpenMoji, class accuracy and ODE error of every solver x grid and "
                                          "diffusers' schedulers at several NFE, same noise and seeds",
                         description="Every genkit solver on every sigma grid, plus diffusers' DDIM, DPM-Solver++ "
                                     "and UniPC schedulers on the same model, noise and seeds. Writes FILE.json "
                                     "(after every arm: a killed run resumes) and FILE.md (a table).")
    bs.add_argument("--model", required=True, metavar="DIR")
    bs.add_argument("--nfe", default="5,10,20,50", metavar="LIST", help="NFE budgets (default 5,10,20,50); "
                    "2-evaluation solvers (heun, dpm2) get the most steps that fit")
    bs.add_argument("--num", type=_positive_int("num"), default=512, metavar="N", help="images per arm (default 512)")
    bs.add_argument("--ode-num", type=_nonneg_int("ode-num"), default=64, metavar="M",
                    help="the first M seeds also get the ODE error against a Heun reference (default 64; 0: none)")
    bs.add_argument("--ode-ref-steps", type=_positive_int("ode-ref-steps"), default=256, metavar="S",
                    help="steps of that Heun reference on the polynomial grid (default 256 = 511 NFE)")
    bs.add_argument("--solvers", default="euler,heun,dpm2,dpmpp_2m,dpmpp_3m,ipndm", metavar="LIST",
                    help="registry names; AMED arms (amed, amed-<base>) run at the NFE budgets for which the model "
                         "folder's amed/ has a predictor at this guidance ('' for none: only --teacher-nfe's arm "
                         "and --generators)")
    bs.add_argument("--skip-rhos", default=None, metavar="LIST",
                    help="also run every genkit arm with skip-tuning at each rho_bottom (e.g. 0.7,0.8,0.9)")
    bs.add_argument("--grids", default="polynomial,logsnr,time", metavar="LIST",
                    help="sigma grids: polynomial, logsnr, time; learned (AMED arms whose predictor learned its grid)")
    bs.add_argument("--schedulers", default="ddim,dpmsolver,unipc", metavar="LIST",
                    help="diffusers schedulers: ddim, dpmsolver, unipc ('' for none)")
    _add_class_guidance(bs)
    _add_guidance_interval(bs)
    bs.add_argument("--seed", type=_nonneg_int("seed"), default=0, metavar="K")
    bs.add_argument("--batch-size", type=_positive_int("batch-size"), default=16, metavar="B")
    bs.add_argument("--dtype", default="float32", metavar="float32|bfloat16",
                    help="the network's dtype in the arms (the ODE reference is always float32; bfloat16 adds "
                         "a measured floor to the ODE errors)")
    bs.add_argument("--features-model", default=None, metavar="DIR",
                    help="the FD-OpenMoji network (default weights/openmoji-features)")
    bs.add_argument("--ref", default=None, metavar="NAME|FILE", help="default openmoji-train-<resolution>")
    bs.add_argument("--bootstrap", type=_nonneg_int("bootstrap"), default=1000, metavar="B",
                    help="bootstrap resamples of the seeds for the FDs' 95%% intervals (default 1000; 0: none)")
    bs.add_argument("--teacher-nfe", type=_nonneg_int("teacher-nfe"), default=0, metavar="M",
                    help="also measure every arm's FD to the model's own samples at M NFE from the same seeds "
                         "(fd_teacher; e.g. 50; default 0: off)")
    bs.add_argument("--teacher-solver", default="dpmpp_2m", metavar="NAME",
                    help="the solver of those teacher samples (default dpmpp_2m, polynomial grid)")
    bs.add_argument("--generators", default=None, metavar="DIR,...",
                    help="one-step generators distilled from --model (e.g. weights/openmoji-32-sid): arms at NFE 1; "
                         "every other generator row gets paired FD ratios over the first; a row measured with other "
                         "weights at the same path is kept as NAME~<weights> and remeasured")
    bs.add_argument("--device", default=None)
    bs.add_argument("--out", required=True, metavar="FILE.json")

    bk = bsub.add_parser("skip", help="skip-tuning: rho_bottom sweep per solver and NFE; the best rho per "
                                      "solver / NFE goes to MODEL/skip_tuning.json (skip_tuning=True uses it)",
                         description="Runs `bench samplers` arms with skip-tuning at every --rhos value (1 = off) on "
                                     "--grid (default the model's), same seeds and noise; picks per solver and NFE the"
                                     " rho with the lowest FD-OpenMoji to the train reference among those whose paired"
                                     " bootstrap FD ratio over the untuned arm has a 95% interval below 1 (none: 1, "
                                     "off) and writes the sweep and the picks to MODEL/skip_tuning.json (atomically). "
                                     "Example: genkit bench skip --model weights/openmoji-32 --solvers euler --nfe 5 "
                                     "--rhos 0.7,0.8,0.9 --num 1000 --batch-size 50 --out "
                                     "weights/openmoji-32/bench_skip.json")
    bk.add_argument("--model", required=True, metavar="DIR")
    bk.add_argument("--solvers", default="euler,dpmpp_2m,ipndm", metavar="LIST")
    bk.add_argument("--nfe", default="5,9", metavar="LIST")
    bk.add_argument("--rhos", default="0.6,0.7,0.8,0.9", metavar="LIST", help="rho_bottom values (1 is always run)")
    bk.add_argument("--grid", default=None, metavar="NAME",
                    help="the sigma grid of every arm (default: the model's); 'learned' runs AMED solvers on the grid "
                         "their predictor learned (train_amed.py --learn_grid); the pick is stored for that grid")
    bk.add_argument("--num", type=_positive_int("num"), default=1000, metavar="N")
    bk.add_argument("--ode-num", type=_nonneg_int("ode-num"), default=0, metavar="M",
                    help="the first M seeds also get the ODE error to the untuned ODE's solution: how far skip-tuning "
                         "moves the samples, not how good they are (default 0: none)")
    bk.add_argument("--ode-ref-steps", type=_positive_int("ode-ref-steps"), default=256, metavar="S")
    bk.add_argument("--bootstrap", type=_nonneg_int("bootstrap"), default=1000, metavar="B",
                    help="bootstrap resamples of the seeds for the paired FD ratios the pick needs (default 1000; "
                         "0: pick by the point FD)")
    bk.add_argument("--teacher-nfe", type=_nonneg_int("teacher-nfe"), default=0, metavar="M",
                    help="as in `bench samplers`: also each arm's FD to the model's own samples at M NFE (reported, "
                         "not used for the pick); with the same flags --out can be a `bench samplers` JSON, whose "
                         "rows are reused")
    bk.add_argument("--teacher-solver", default="dpmpp_2m", metavar="NAME")
    _add_class_guidance(bk)
    bk.add_argument("--seed", type=_nonneg_int("seed"), default=0, metavar="K")
    bk.add_argument("--batch-size", type=_positive_int("batch-size"), default=16, metavar="B")
    bk.add_argument("--features-model", default=None, metavar="DIR")
    bk.add_argument("--ref", default=None, metavar="NAME|FILE")
    bk.add_argument("--device", default=None)
    bk.add_argument("--out", required=True, metavar="FILE.json")

    bu = bsub.add_parser("upsample", help="a low-resolution model at m x its size: naive, bicubic, upsample guidance "
                                          "(scales x windows, ablations), native models; FD with 95%% intervals",
                         description="Arms side by side on the same seeds: naive (the model run at --size), bicubic "
                                     "(sampled at its own size, upscaled), upsample guidance over --scales x "
                                     "--windows, UG without the time / power adjustment, and --native models trained "
                                     "at --size. Each arm: FD-OpenMoji at --size vs the train reference with a "
                                     "bootstrap 95%% interval, class accuracy, NFE (full + low-res), wall time "
                                     "relative to naive, a grid PNG in FILE.grids/. FILE.json is written after "
                                     "every arm: a killed run resumes.")
    bu.add_argument("--model", required=True, metavar="DIR", help="the low-resolution model, e.g. weights/openmoji-32")
    bu.add_argument("--size", type=_positive_int("size"), default=64, metavar="PX",
                    help="output side: m times the model's (default 64)")
    bu.add_argument("--num", type=_positive_int("num"), default=1000, metavar="N", help="images per arm (default 1000)")
    bu.add_argument("--steps", type=_positive_int("steps"), default=20, metavar="S")
    bu.add_argument("--solver", default=None, metavar="NAME", help="default: the model's (dpmpp_2m)")
    bu.add_argument("--scales", default="0.5,1.0,1.5", metavar="LIST",
                    help="UG scales w, paper convention: 1 = the low frequencies come from the low-res pass "
                         "(default 0.5,1.0,1.5)")
    bu.add_argument("--windows", default="0-1,0.4-1", metavar="LIST",
                    help="UG windows in model time (1 = pure noise), e.g. 0.4-1 = the paper's eta 0.6 "
                         "(default 0-1,0.4-1)")
    bu.add_argument("--ablation-scale", default="1.0", metavar="W",
                    help="scale of the no-time / no-power ablation arms ('' for none; default 1.0)")
    bu.add_argument("--native", action="append", default=[], metavar="NAME=DIR",
                    help="repeatable: a model trained at --size, e.g. s64=weights/openmoji-64")
    bu.add_argument("--only", default=None, metavar="LIST",
                    help="run only these arms (e.g. naive,bicubic or ug-w1); two processes with disjoint lists "
                         "and the same other flags share --out (default: every arm)")
    _add_class_guidance(bu)
    bu.add_argument("--seed", type=_nonneg_int("seed"), default=0, metavar="K")
    bu.add_argument("--batch-size", type=_positive_int("batch-size"), default=16, metavar="B")
    bu.add_argument("--bootstrap", type=_positive_int("bootstrap"), default=1000, metavar="B",
                    help="bootstrap resamples for the 95%% interval (default 1000)")
    bu.add_argument("--grid-num", type=_positive_int("grid-num"), default=64, metavar="G",
                    help="images in each arm's grid PNG (default 64)")
    bu.add_argument("--features-model", default=None, metavar="DIR")
    bu.add_argument("--ref", default=None, metavar="NAME|FILE", help="default openmoji-train-<size>")
    bu.add_argument("--device", default=None)
    bu.add_argument("--out", required=True, metavar="FILE.json")

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
    bv.add_argument("--learning-rate", type=float_arg("--learning-rate", 1e-12, 10.0), default=1e-3)
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
    bm.add_argument("--temperature", type=float_arg("--temperature", 0, LIMITS["temperature"]), default=0.7, help="the head's noise scale (default 0.7)")
    bm.add_argument("--guidance", type=float_arg("--guidance", 0, LIMITS["guidance"]), default=5.0, help="classifier-free guidance (default 5)")
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
    f.add_argument("--solver", default=None, metavar="NAME", help=_SOLVER_HELP)
    f.add_argument("--grid", default=None, metavar="NAME")
    _add_methods(f)
    _add_class_guidance(f)
    _add_size_ug(f)
    f.add_argument("--seed", type=_nonneg_int("seed"), default=0, metavar="K")
    _add_features(f)
    f.add_argument("--ref", default=None, metavar="NAME|FILE",
                   help="openmoji-train-32 (default: openmoji-train-<resolution>), openmoji-val-64, ... or a .npz")
    f.add_argument("--batch-size", type=_positive_int("batch-size"), default=64, metavar="B")
    f.add_argument("--device", default=None)
    f.add_argument("--out", default=None, metavar="FILE.json", help="also write the JSON line here")
    f.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    cu = esub.add_parser("curve", help="FD-OpenMoji of every saved checkpoint of training runs: a curve per run "
                                       "(JSON + PNG), FD ratios at equal steps with paired bootstrap intervals",
                         description="For each --run (a train_diffusion.py output_dir) and each snapshots/step-N/ "
                                     "(EMA pipeline folders, as training/study_64.sh writes them) or checkpoint-N/ "
                                     "with no snapshot of its step (ema_unet.safetensors; old pickles only with "
                                     "weights_only=True) in it: load its EMA weights (read-only), sample the fixed seeds K..K+N-1 at the run's "
                                     "resolution, FD-OpenMoji vs the train reference with a bootstrap 95%% interval "
                                     "and class accuracy. Rerun as training goes on: measured checkpoints are "
                                     "cached in FILE.json. FILE.png plots the curves.")
    cu.add_argument("--run", action="append", default=[], metavar="NAME=DIR",
                    help="repeatable; the first is the baseline of the ratios, e.g. --run shifted=runs/s64-shifted "
                         "--run cosine=runs/s64-cosine")
    cu.add_argument("--num", type=_positive_int("num"), default=1000, metavar="N",
                    help="fixed seeds per checkpoint (default 1000; each is a full sample at the run's size)")
    cu.add_argument("--steps", type=_positive_int("steps"), default=20, metavar="S")
    cu.add_argument("--solver", default="dpmpp_2m", metavar="NAME")
    cu.add_argument("--at", default=None, metavar="LIST",
                    help="measure only the checkpoints of these training steps, e.g. 250,500,1000,2000,4000 "
                         "(a log-spaced curve for a fraction of the cost; default: every checkpoint)")
    _add_class_guidance(cu)
    cu.add_argument("--seed", type=_nonneg_int("seed"), default=0, metavar="K")
    cu.add_argument("--batch-size", type=_positive_int("batch-size"), default=32, metavar="B")
    cu.add_argument("--bootstrap", type=_positive_int("bootstrap"), default=1000, metavar="B")
    cu.add_argument("--features-model", default=None, metavar="DIR")
    cu.add_argument("--ref", default=None, metavar="NAME|FILE", help="default openmoji-train-<resolution>")
    cu.add_argument("--device", default=None)
    cu.add_argument("--out", required=True, metavar="FILE.json")

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

    from .commands.bench_captions import add_parser as add_bench_captions
    from .commands.bench_disc import add_parser as add_bench_disc
    from .commands.bench_cfg_head import add_parser as add_bench_cfg_head
    from .commands.bench_orders import add_parser as add_bench_orders
    add_bench_orders(bsub)
    add_bench_cfg_head(bsub)
    add_bench_captions(bsub)
    add_bench_disc(bsub)

    from .commands.docs import add_parser as add_docs  # light: json and re only
    add_docs(sub)
    return p


# The registry's names (genkit.sampling.solver_names(); tests/test_registry.py keeps this text in step with it:
# importing the registry here would load torch and diffusers for every --help).
_SOLVER_HELP = ("euler, heun, dpm2, dpmpp_2m, dpmpp_3m, ipndm; amed, amed-euler, amed-dpm2, amed-dpmpp_2m, "
                "amed-ipndm (AMED: need a predictor trained for these steps and guidance, found in the model "
                "folder's amed/ or given with --amed-predictor; steps 3, 4, 5, 6 = NFE 3, 5, 7, 9); bns (a learned "
                "multistep solver: weights and grid from training/train_bns.py, found the same way; steps = NFE, or "
                "NFE + 1 for weights with AFS, whose first step reads a per-class table). "
                "Default: the model's (dpmpp_2m)")


def _add_methods(p):
    p.add_argument("--amed-predictor", default=None, metavar="DIR",
                   help="an AMED predictor folder (training/train_amed.py) for --solver amed / amed-<base>, or "
                        "BNS weights (training/train_bns.py) for --solver bns")
    p.add_argument("--skip-tuning", default=None, metavar="RHO|best",
                   help="skip-tuning: scale the UNet's skip connections by rho_bottom (innermost, in [0.1, 1]) "
                        "rising to 1 (outermost); 'best': the rho `genkit bench skip` stored in the model folder")
    p.add_argument("--skip-sigma-range", default=None, metavar="LO,HI",
                   help="skip-tuning only at noise levels sigma in [LO, HI] (EDM sigma; default: all)")
    _add_guidance_interval(p)


def _add_guidance_interval(p):
    p.add_argument("--guidance-sigma-range", default=None, metavar="LO,HI",
                   help="guidance interval (Kynkaanniemi et al. 2024): apply --guidance only at EDM sigma in [LO, HI] "
                        "(HI may be inf), the plain conditional model elsewhere at 1 NFE per step instead of 2; "
                        "e.g. 0,1: guided only at low noise, where classes are told apart (default: every step)")


def _add_class_guidance(p):
    p.add_argument("--class", dest="class_label", default=None, metavar="NAME|ID|cycle|none",
                   help="class name (see `genkit classes`) or id; 'cycle' (the default for a class-conditional "
                        "model): image with seed s gets class s mod K; 'none': unconditional (the null class)")
    p.add_argument("--guidance", type=float_arg("--guidance", 0, LIMITS["guidance"]), default=None, metavar="W",
                   help="classifier-free guidance scale: 1 = off, >1 costs 2 NFE per step "
                        "(default 2.0 for a class-conditional model, else 1)")


def _add_size_ug(p):
    p.add_argument("--size", type=_positive_int("size"), default=None, metavar="PX",
                   help="image side (default: the model's); any multiple of the UNet's downsampling factor")
    p.add_argument("--ug", type=float, default=0.0, metavar="W",
                   help="upsample guidance scale at --size = m x the model's size (0 = off, the default; 1 = the "
                        "low frequencies come from a low-resolution pass, which costs ~1/m^2 NFE per step; on "
                        "openmoji-32 at 64 px, 1 gives the best class accuracy, 1.5 a slightly lower FD, 0.5 is "
                        "too weak: README, Upsample guidance)")
    p.add_argument("--ug-window", default="0-1", metavar="A-B",
                   help="model time range where UG is on, 1 = pure noise (default 0-1; the paper's eta 0.6 = 0.4-1)")


def _add_features(p):
    p.add_argument("--features", default="openmoji", metavar="openmoji|inception",
                   help="FD-OpenMoji (the shipped classifier, default) or Inception FID (needs torch-fidelity, "
                        "torchvision and --inception-weights)")
    p.add_argument("--features-model", default=None, metavar="DIR", help="default weights/openmoji-features")
    p.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="pt_inception-2015-12-05-6726825d.pth (or $GENKIT_INCEPTION_WEIGHTS); never downloaded")


GROUPS = ("bench", "eval")  # commands with subcommands (args.bench, args.eval)
# (command, subcommand) -> "module in genkit.commands:function"; each module is imported only when its command runs
_HANDLERS = {
    ("sample", None): "sample:run_sample",
    ("draw", None): "mm:run_draw",
    ("caption", None): "mm:run_caption",
    ("docs", None): "docs:run",
    ("bench", "overhead"): "bench:run_overhead",
    ("bench", "mm"): "bench_mm:run_mm",
    ("bench", "vq"): "bench_vq:run_vq",
    ("bench", "throughput"): "bench_throughput:run_throughput",
    ("bench", "app"): "bench_app:run_app",
    ("bench", "samplers"): "bench_samplers:run_samplers",
    ("bench", "skip"): "bench_skip:run_skip",
    ("bench", "cfg-head"): "bench_cfg_head:run_cfg_head",
    ("bench", "orders"): "bench_orders:run_orders",
    ("bench", "captions"): "bench_captions:run_captions",
    ("bench", "japan-disc"): "bench_disc:run_disc",
    ("bench", "upsample"): "bench_upsample:run_upsample",
    ("eval", "curve"): "study_curve:run_curve",
    ("eval", "fd"): "evaluate:run_fd",
    ("eval", "ref"): "evaluate:run_ref",
    ("eval", "sanity"): "evaluate:run_sanity",
}


def _print_classes(args) -> None:
    from .commands.common import load_pipeline
    pipe = load_pipeline(args.model, "cpu")
    for i, name in enumerate(pipe.config.class_names or []):
        print(f"{i}\t{name}")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "classes":
            _print_classes(args)
            return 0
        sub = getattr(args, args.command) if args.command in GROUPS else None
        module, func = _HANDLERS[(args.command, sub)].split(":")
        run = getattr(importlib.import_module(f".commands.{module}", __package__), func)
        status = run(args)                         # benches return their JSON; docs returns an exit status
        return status if isinstance(status, int) else 0
    except ValueError as e:
        print(f"genkit: error: {' '.join(str(e).split())}", file=sys.stderr)  # one line, always
        return 2


def console_main() -> None:
    """The `genkit` command and `python -m genkit.cli`: main()'s status is the exit status."""
    status = main()
    if "WORLD_SIZE" in os.environ:       # a torchrun / accelerate rank: flush, then os._exit (see exit_process)
        from .commands.common import exit_process
        exit_process(status)
    sys.exit(status)


if __name__ == "__main__":
    console_main()
