"""Training steps per second on this machine: phase 1 (L1 + MS-SSIM) vs phase 2 (+ FaceNet), and
phase 2 under bf16 autocast (``train.precision=bf16``) vs fp32.

One process, no Ray: the cost of a step itself, to plan real runs (``facezip train`` adds data
loading and, with several workers, DDP gradient averaging). Prints steps/s of each and the ratios
measured in the same run.

    python benchmarks/train_step_speed.py --codec comcnn-reccnn --crop 160 --batch 8 --steps 5
"""

from __future__ import annotations

import argparse
import time

import torch

from facezip.models import create_codec
from facezip.models.facenet import load_facenet
from facezip.models.losses import FaceNetLoss, PretrainLoss
from facezip.pipelines.config import load_config
from facezip.tasks.train.steps import for_precision, make_optimizers, train_step


def steps_per_second(codec_name: str, phase: str, loss_fn: torch.nn.Module, crop: int, batch: int, steps: int,
                     precision: str = "fp32") -> float:
    torch.manual_seed(0)
    codec = for_precision(create_codec(codec_name), precision)
    optimizers = make_optimizers(codec, phase, load_config().train)
    images = torch.rand(batch, 3, crop, crop)
    boxes = torch.tensor([[crop * 0.2, crop * 0.1, crop * 0.8, crop * 0.9]]).repeat(batch, 1)
    step_batch = (images, boxes, None)  # no face masks: the masked loss is masked-cvae's alone
    cpu = torch.device("cpu")
    train_step(codec, codec, loss_fn, optimizers, step_batch, cpu, precision=precision)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        train_step(codec, codec, loss_fn, optimizers, step_batch, cpu, precision=precision)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", default="binarized-cae")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--facenet", default="casia-webface", help="facenet weights (none = random, same cost)")
    args = parser.parse_args()
    shape = (args.crop, args.batch, args.steps)
    pretrain = steps_per_second(args.codec, "pretrain", PretrainLoss(), *shape)
    facenet_loss = FaceNetLoss(load_facenet(args.facenet))
    finetune = steps_per_second(args.codec, "finetune", facenet_loss, *shape)
    bf16 = steps_per_second(args.codec, "finetune", facenet_loss, *shape, precision="bf16")
    print(f"{args.codec}, crop {args.crop}, batch {args.batch}, {torch.get_num_threads()} torch threads")
    for name, speed in (("pretrain", pretrain), ("finetune", finetune), ("finetune bf16", bf16)):
        print(f"{name}: {speed:.2f} steps/s ({1 / speed:.2f} s/step, {speed * args.batch:.1f} images/s)")
    print(f"finetune / pretrain speed ratio: {finetune / pretrain:.2f}")
    print(f"finetune bf16 / fp32 speed ratio: {bf16 / finetune:.2f}")


if __name__ == "__main__":
    main()
