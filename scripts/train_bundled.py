"""Train the stand-in bundled ``binarized-cae`` weights (until the Ray Train stage replaces them).

Faces: centre 160×160 crops of LFW-dev (deep-funneled, so faces sit in the centre); general
photos: random 160×160 crops of the Kodak images. Loss: L1 + (1 − MS-SSIM, 7×7 window), Adam.
Time-bounded so it fits a CPU session; the exact command is recorded in the weights' metadata.

    python scripts/train_bundled.py --data ../shared/data --minutes 12
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_msssim import ms_ssim

from facezip.models import create_codec
from facezip.models.coding import to_tensor
from facezip.models.loading import weights_to_bytes

CROP = 160
MS_SSIM_WINDOW = 7  # pytorch-msssim needs side > (window - 1) · 16; 11 would need > 160 px


def load_faces(root: Path, every: int) -> list[np.ndarray]:
    files = sorted((root / "lfw-dev" / "images").glob("*/*.jpg"))[::every]
    crops = []
    for path in files:
        image = np.asarray(Image.open(path).convert("RGB"))
        top, left = (image.shape[0] - CROP) // 2, (image.shape[1] - CROP) // 2
        crops.append(image[top : top + CROP, left : left + CROP])
    return crops


def load_photos(root: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted((root / "kodak").glob("*.png"))]


def random_crop(image: np.ndarray, rng: random.Random) -> np.ndarray:
    top, left = rng.randrange(image.shape[0] - CROP + 1), rng.randrange(image.shape[1] - CROP + 1)
    crop = image[top : top + CROP, left : left + CROP]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--face-every", type=int, default=3, help="use every N-th LFW-dev image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("facezip/models/weights/binarized-cae.pt"))
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    faces, photos = load_faces(args.data, args.face_every), load_photos(args.data)
    print(f"{len(faces)} face crops, {len(photos)} photos", flush=True)
    codec = create_codec("binarized-cae").train()
    optimizer = torch.optim.Adam(codec.parameters(), lr=args.lr, betas=(0.9, 0.999))
    deadline, step = time.monotonic() + args.minutes * 60, 0
    while time.monotonic() < deadline:
        # three faces for every general photo: the bundled model is for faces
        batch = [random_crop(rng.choice(photos), rng) if rng.random() < 0.25 else rng.choice(faces)
                 for _ in range(args.batch)]
        x = to_tensor([np.ascontiguousarray(b) for b in batch], (CROP, CROP))
        x_hat = codec(x)["x_hat"]
        loss = F.l1_loss(x_hat, x) + (1 - ms_ssim(x_hat, x, data_range=1.0, win_size=MS_SSIM_WINDOW))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
    metadata = {"trained_by": "scripts/train_bundled.py", "command": " ".join(sys.argv), "steps": step,
                "data": "lfw-dev centre crops + kodak random crops", "loss": "L1 + (1 - MS-SSIM, 7x7 window)"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(weights_to_bytes(codec.freeze(), metadata))
    print(f"wrote {args.out} after {step} steps", flush=True)


if __name__ == "__main__":
    main()
