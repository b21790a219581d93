"""`genkit bench vq`: quantizers side by side in one autoencoder, on OpenMoji, at equal budget and seeds.

    genkit bench vq --out vq.json                  # all arms at K = 256, 1024, 4096

Arms (genkit.vq), every one with the estimator and codebook update pinned:
  vq-ste               nearest code, straight-through, learned codebook (codebook + 0.25 commitment loss)
  vq-rotation          the same with the rotation trick
  vq-rotation-kmeans   the same, codebook initialised by k-means on the first batch
  simvq                codebook = frozen random Q times a learned linear map, straight-through
  simvq-rotation       SimVQ with the rotation trick
  fsq                  FSQ with the paper's levels for K: 256 -> 8,6,5 (240); 1024 -> 8,5,5,5 (1000);
                       4096 -> 7,5,5,5,5 (4375)
and the matching arms of vector-quantize-pytorch (`vqp:` prefix): VectorQuantize with ema_update=False,
learnable_codebook=True and rotation_trick / kmeans_init set explicitly, SimVQ with rotation_trick set, FSQ.
Everything else is identical: the encoder and decoder (same init), the batches (seeded by step), the optimizer
and the step count. Figures on OpenMoji val (held out): reconstruction MSE, codebook usage (codes used / K),
perplexity / K, quantisation error (|z - q|^2 for VQ; the rounding error in the bounded space for genkit's
FSQ; none for vqp:fsq, whose output is only seen after its projection); each also as a ratio to vq-ste at the
same K. JSON rows are written after
every arm (a killed run resumes); FILE.md gets the table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import __version__
from .common import atomic_write_bytes, atomic_write_json, pick_device

FSQ_LEVELS = {256: [8, 6, 5], 1024: [8, 5, 5, 5], 4096: [7, 5, 5, 5, 5]}  # Mentzer et al. Table 1
GENKIT_ARMS = {
    "vq-ste": dict(estimator="ste"),
    "vq-rotation": dict(estimator="rotation"),
    "vq-rotation-kmeans": dict(estimator="rotation", kmeans_init=True),
    "simvq": dict(simvq=True, estimator="ste"),
    "simvq-rotation": dict(simvq=True, estimator="rotation"),
    "fsq": dict(quantizer="fsq"),
}
PEER_ARMS = ("vqp:vq-ste", "vqp:vq-rotation", "vqp:vq-rotation-kmeans", "vqp:simvq", "vqp:simvq-rotation", "vqp:fsq")
RATIO_KEYS = ("mse", "usage", "perplexity_ratio", "quant_error")


class PeerQuantizer(torch.nn.Module):
    """A vector-quantize-pytorch module behind genkit's quantizer interface (QuantizerOutput)."""

    def __init__(self, arm: str, dim: int, codebook_size: int):
        super().__init__()
        try:
            import vector_quantize_pytorch as vqp
        except ImportError:
            raise ValueError("the vqp: arms need vector-quantize-pytorch (pip install vector-quantize-pytorch, "
                             "or pip install -e '.[bench]'); or leave them out with --arms") from None
        name = arm.split(":", 1)[1]
        self.is_fsq = name == "fsq"
        if self.is_fsq:
            self.module = vqp.FSQ(levels=FSQ_LEVELS[codebook_size], dim=dim)
            self.codebook_size = self.module.codebook_size
        elif name.startswith("simvq"):
            self.module = vqp.SimVQ(dim=dim, codebook_size=codebook_size, channel_first=True,
                                    rotation_trick=name == "simvq-rotation")
            self.codebook_size = codebook_size
        else:
            self.module = vqp.VectorQuantize(dim=dim, codebook_size=codebook_size, accept_image_fmap=True,
                                             ema_update=False, learnable_codebook=True,
                                             rotation_trick=name != "vq-ste", kmeans_init=name.endswith("kmeans"))
            self.codebook_size = codebook_size

    def forward(self, z):
        from genkit.vq import QuantizerOutput

        if self.is_fsq:
            q, idx = self.module(z)
            loss = z.new_zeros(())
        else:
            q, idx, loss = self.module(z)
        return QuantizerOutput(q, idx, loss.sum(), (q.detach() - z.detach()).pow(2).mean())


def build_arm(arm: str, k: int, args):
    """The same encoder/decoder (same seed, built before the quantizer) with the arm's quantizer."""
    from genkit.vq import VQTokenizer

    torch.manual_seed(args.seed)
    opts = dict(GENKIT_ARMS.get(arm, {}))
    if opts.get("quantizer") == "fsq":
        opts["fsq_levels"] = FSQ_LEVELS[k]
    tok = VQTokenizer(channels=args.channels, latent_dim=args.latent_dim, codebook_size=k, seed=args.seed, **opts)
    if arm.startswith("vqp:"):
        torch.manual_seed(args.seed + 1)
        tok.quant = PeerQuantizer(arm, args.latent_dim, k)
    return tok


def train_arm(tok, train, held, args, device) -> dict:
    from genkit.vq.fit import batch_indices, evaluate_tokenizer, to_float

    tok.to(device).train()
    opt = torch.optim.Adam(tok.parameters(), lr=args.learning_rate)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    t0 = time.perf_counter()
    for step in range(args.steps):
        x = to_float(train[batch_indices(len(train), args.batch_size, args.seed, step)]).to(device)
        loss, _ = tok.loss(x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tok.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return {**evaluate_tokenizer(tok, held), "seconds": round(time.perf_counter() - t0, 1)}


def run_vq(args) -> dict:
    from genkit.data import OpenMojiDataset

    from .bench_samplers import parse_list

    arms = parse_list("arms", args.arms, tuple(GENKIT_ARMS) + PEER_ARMS)
    ks = parse_list("codebook-sizes", args.codebook_sizes, tuple(FSQ_LEVELS), cast=int)
    try:
        args.channels = tuple(int(c) for c in args.channels.split(","))
        assert len(args.channels) == 3 and all(c % 8 == 0 for c in args.channels)
    except (ValueError, AssertionError):
        raise ValueError(f"--channels={args.channels!r} is not allowed: three multiples of 8 such as 16,32,64") \
            from None
    device = pick_device(args.device)
    t = lambda split: torch.from_numpy(OpenMojiDataset(32, split).images).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    train, held = t("train"), t("val")
    config = {"steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
              "channels": list(args.channels), "latent_dim": args.latent_dim, "seed": args.seed,
              "data": f"OpenMoji 32 px: train {len(train)} images, held out: val {len(held)} images "
                      f"({len(held) * 64} code positions)"}
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.is_file() else {}
    rows = old.get("rows", {}) if old.get("config") == config else {}
    result = {"config": config, "rows": rows, "command": _command(args), "genkit": __version__,
              "torch": torch.__version__, "device": str(device)}
    try:
        import vector_quantize_pytorch
        result["vector_quantize_pytorch"] = vector_quantize_pytorch.__version__ \
            if hasattr(vector_quantize_pytorch, "__version__") else _version("vector-quantize-pytorch")
    except ImportError:
        pass
    todo = [(a, k) for k in ks for a in arms if f"{a}@{k}" not in rows]
    for arm, k in (bar := tqdm(todo, desc="bench vq")):
        bar.set_postfix(arm=f"{arm}@{k}")
        tok = build_arm(arm, k, args)
        rows[f"{arm}@{k}"] = {"arm": arm, "k": k, **train_arm(tok, train, held, args, device)}
        atomic_write_json(out, result)
    for row in rows.values():
        if row["arm"] == "vqp:fsq":  # its output is after project_out: |q - z| there is no quantisation error
            row["quant_error"] = None
        base = rows.get(f"vq-ste@{row['k']}")  # ratios to vq-ste at the same K
        if base:
            row["ratio_to_vq_ste"] = {key: round(row[key] / base[key], 4) if row[key] is not None and base[key]
                                      else None for key in RATIO_KEYS}
    atomic_write_json(out, result)
    atomic_write_bytes(out.with_suffix(".md"), markdown_table(result).encode())
    print(markdown_table(result))
    return result


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def _command(args) -> str:
    return (f"genkit bench vq --arms {args.arms} --codebook-sizes {args.codebook_sizes} --steps {args.steps} "
            f"--batch-size {args.batch_size} --learning-rate {args.learning_rate} --channels "
            f"{','.join(map(str, args.channels)) if not isinstance(args.channels, str) else args.channels} "
            f"--latent-dim {args.latent_dim} --seed {args.seed} --out {args.out}")


def markdown_table(result: dict) -> str:
    c = result["config"]
    lines = [f"Held-out OpenMoji val; {c['steps']} steps at batch {c['batch_size']}, same autoencoder, seeds and "
             "batches in every arm. Ratios are to vq-ste at the same K (MSE, quantisation error: lower is better; "
             "usage, perplexity/K: higher is better).", "",
             "| arm | K | MSE | usage | perplexity/K | quant. error | MSE ratio | usage ratio | perplexity ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, r in sorted(result["rows"].items(), key=lambda kv: (kv[1]["k"], kv[1]["arm"].startswith("vqp:"))):
        ratio = r.get("ratio_to_vq_ste") or {}
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        qerr = "-" if r["quant_error"] is None else f"{r['quant_error']:.4f}"
        lines.append(f"| {r['arm']} | {r['codebook_size']} | {r['mse']:.4f} | {100 * r['usage']:.1f}% | "
                     f"{100 * r['perplexity_ratio']:.1f}% | {qerr} | {fmt(ratio.get('mse'))} | "
                     f"{fmt(ratio.get('usage'))} | {fmt(ratio.get('perplexity_ratio'))} |")
    return "\n".join(lines + ["", f"Command: `{result['command']}`", ""])
