"""Train the FD-OpenMoji feature network: a small CNN classifier of OpenMoji subgroups (accelerate).

    accelerate launch training/train_features.py --output_dir weights/openmoji-features
    ... --output_dir runs/features --resume_from_checkpoint latest        # continue an interrupted run
    ... --output_dir runs/tiny --limit_train 16 --epochs 2 --channels 8,8,8,8   # a quick run (tests)

Data: the OpenMoji train split rendered at 32 px and at 64 px, both fed at the network's 64 px input (32 px
images upsampled bilinearly, exactly as genkit.metrics.features.to_unit_range does at evaluation time), so
one feature space serves FD at both resolutions. Augmentation: random translations only (blur or noise
augmentation would teach the features to ignore exactly what FD must see).

Per epoch the val split (unseen base emoji) is scored at both resolutions; the output_dir is a model folder
(config.json + safetensors) rewritten atomically at every epoch, with metrics.json beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from genkit.checks import OneLineParser, check_int
from genkit.data import OpenMojiDataset
from genkit.metrics.features import OpenMojiFeatureNet, to_unit_range
from training.utils import require_common, require_positive, resolve_checkpoint, run_script, save_checkpoint, save_model_folder


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--output_dir", required=True)
    a("--channels", default="32,64,128,256", help="channels per stage (32, 16, 8, 4 px)")
    a("--feature_dim", type=int, default=128, help="width of the penultimate layer = the FD features")
    a("--epochs", type=int, default=40)
    a("--train_batch_size", type=int, default=128)
    a("--learning_rate", type=float, default=2e-3)
    a("--weight_decay", type=float, default=0.05)
    a("--label_smoothing", type=float, default=0.1)
    a("--shift", type=int, default=4, help="max random translation in pixels at 64 px")
    a("--seed", type=int, default=0)
    a("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint-E folder")
    a("--limit_train", type=int, default=None,
      help="use only the first N train images (tests, quick runs; as train_mm.py); val is always whole")
    args = p.parse_args(argv)
    require_common(args)  # NaN / inf floats, seed, learning rate
    require_positive(args, "epochs", "train_batch_size", "feature_dim")
    if args.limit_train is not None:
        check_int("--limit_train", args.limit_train, 1)
    if args.learning_rate <= 0:
        raise ValueError(f"--learning_rate={args.learning_rate!r} is not allowed: a number > 0")
    try:
        args.channels = tuple(int(c) for c in args.channels.split(","))
    except ValueError:
        raise ValueError(f"--channels={args.channels!r} is not allowed: comma-separated ints") from None
    return args


class Classifier(torch.nn.Module):
    """Float images in [-1, 1] at 64 px -> logits: the training-time view of the feature network."""

    def __init__(self, net: OpenMojiFeatureNet):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.logits(x)


def load_split(split: str, limit: int | None = None):
    """uint8 images of a split at 32 px and 64 px, with subgroup labels: (images32, images64, labels, class
    names); limit: only the first N images (the class names stay all of them: the same classifier head)."""
    d32, d64 = OpenMojiDataset(32, split), OpenMojiDataset(64, split)
    assert d32.captions == d64.captions
    t = lambda d: torch.from_numpy(d.images[:limit]).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return t(d32), t(d64), torch.from_numpy(d32.labels[:limit]), list(d32.class_names)


def translate(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Random integer translation per image, padding with white (+1): (N, 3, S, S) -> same."""
    if shift == 0:
        return x
    n, s = len(x), x.shape[-1]
    padded = F.pad(x, (shift,) * 4, value=1.0)
    dx, dy = (torch.randint(0, 2 * shift + 1, (2, n), generator=generator)).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + s, dx[i]:dx[i] + s] for i in range(n)])


@torch.no_grad()
def accuracy(net, images_u8: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> float:
    net.eval()
    pred = torch.cat([net.predict(images_u8[i:i + batch]) for i in range(0, len(images_u8), batch)])
    net.train()
    return (pred.cpu() == labels).float().mean().item()


def main(args):
    out_dir = Path(args.output_dir)
    accelerator = Accelerator()
    set_seed(args.seed)
    x32, x64, y, names = load_split("train", args.limit_train)
    v32, v64, vy, _ = load_split("val")
    n = len(y)
    net = OpenMojiFeatureNet(num_classes=len(names), channels=args.channels, feature_dim=args.feature_dim,
                             class_names=names)
    clf = Classifier(net)
    steps_per_epoch = math.ceil(2 * n / args.train_batch_size)   # both resolutions once per epoch
    total = steps_per_epoch * args.epochs
    opt = torch.optim.AdamW(net.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.learning_rate, total_steps=total, pct_start=0.1)
    clf, opt, sched = accelerator.prepare(clf, opt, sched)

    path, start_epoch = resolve_checkpoint(out_dir, args.resume_from_checkpoint)   # checkpoint-E: after epoch E
    if path is not None:
        accelerator.load_state(str(path))

    prior = out_dir / "metrics.json"
    history = json.loads(prior.read_text()).get("history", [])[:start_epoch] if start_epoch and prior.exists() else []
    t0 = time.time()
    bar = tqdm(total=total, initial=start_epoch * steps_per_epoch, desc="train features",
               disable=not accelerator.is_local_main_process)
    for epoch in range(start_epoch, args.epochs):
        g = torch.Generator().manual_seed(args.seed * 1000 + epoch)      # the epoch's order and shifts
        # 1. Both renders of every train image, shuffled; all at the network's input size
        order = torch.randperm(2 * n, generator=g)
        for i in range(0, 2 * n, args.train_batch_size):
            idx = order[i:i + args.train_batch_size]
            lo, hi = idx[idx < n], idx[idx >= n] - n
            x = torch.cat([to_unit_range(x32[lo], 64), to_unit_range(x64[hi], 64)])
            target = torch.cat([y[lo], y[hi]])
            x = translate(x, args.shift, g).to(accelerator.device)       # 2. augmentation: shifts only
            loss = F.cross_entropy(clf(x), target.to(accelerator.device), label_smoothing=args.label_smoothing)
            accelerator.backward(loss)                                   # 3. AdamW + one-cycle lr
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch + 1)
        # 4. Score, save the model folder and a resumable checkpoint
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            model = accelerator.unwrap_model(clf).net
            row = {"epoch": epoch + 1, "loss": loss.item(), "minutes": (time.time() - t0) / 60,
                   "val_acc_32": accuracy(model, v32, vy), "val_acc_64": accuracy(model, v64, vy),
                   "train_acc_32": accuracy(model, x32, y)}
            history.append(row)
            tqdm.write(json.dumps(row))
            save_model_folder(model, out_dir, {**row, "train_images": n, "val_images": len(vy), "history": history,
                                               "args": {k: str(v) for k, v in vars(args).items()}})
        save_checkpoint(accelerator, out_dir, epoch + 1, keep=1)
    bar.close()
    if accelerator.is_main_process:  # finished: the model folder is all that is needed
        for old in out_dir.glob("checkpoint-*"):
            shutil.rmtree(old)
    accelerator.wait_for_everyone()  # all ranks meet, then the gloo/nccl group is torn down before exit
    accelerator.end_training()


if __name__ == "__main__":
    run_script(main, parse_args)
