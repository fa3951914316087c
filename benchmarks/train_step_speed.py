"""Training steps per second on this machine: phase 1 (L1 + MS-SSIM) vs phase 2 (+ FaceNet).

One process, no Ray: the cost of a step itself, to plan real runs (``facezip train`` adds data
loading and, with several workers, DDP gradient averaging). Prints steps/s of both phases and the
ratio of phase 2 to phase 1 measured in the same run.

    python benchmarks/train_step_speed.py --crop 128 --batch 8 --steps 10
"""

from __future__ import annotations

import argparse
import time

import torch

from facezip.infra.config import load_config
from facezip.models import create_codec
from facezip.models.facenet import load_facenet
from facezip.models.losses import FaceNetLoss, PretrainLoss
from facezip.tasks.train.loop import make_optimizers, train_step


def steps_per_second(phase: str, loss_fn: torch.nn.Module, crop: int, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    codec = create_codec("binarized-cae")
    optimizers = make_optimizers(codec, phase, load_config().train)
    images = torch.rand(batch, 3, crop, crop)
    boxes = torch.tensor([[crop * 0.2, crop * 0.1, crop * 0.8, crop * 0.9]]).repeat(batch, 1)
    step_batch = (images, boxes, None)  # no face masks: binarized-cae has no masked loss
    train_step(codec, codec, loss_fn, optimizers, step_batch, torch.device("cpu"))  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        train_step(codec, codec, loss_fn, optimizers, step_batch, torch.device("cpu"))
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--facenet", default="casia-webface", help="facenet weights (none = random, same cost)")
    args = parser.parse_args()
    pretrain = steps_per_second("pretrain", PretrainLoss(), args.crop, args.batch, args.steps)
    finetune = steps_per_second("finetune", FaceNetLoss(load_facenet(args.facenet)), args.crop, args.batch, args.steps)
    print(f"crop {args.crop}, batch {args.batch}, {torch.get_num_threads()} torch threads")
    print(f"pretrain: {pretrain:.2f} steps/s ({pretrain * args.batch:.1f} images/s)")
    print(f"finetune: {finetune:.2f} steps/s ({finetune * args.batch:.1f} images/s)")
    print(f"finetune / pretrain speed ratio: {finetune / pretrain:.2f}")


if __name__ == "__main__":
    main()
