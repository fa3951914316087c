"""Fine-tune a codec on one GPU (or the CPU) in one process, for a wall-clock budget, from one packed file.

    python scripts/train_on_gpu.py DATA.parquet OUT/ [--minutes 10] [--init WEIGHTS] [--codec comcnn-reccnn]
        [--loader-workers 8] [train.KEY=VALUE ...]

The steps of ``facezip train --phase finetune`` (``facezip.tasks.train.steps``: the same loss,
optimizers, bf16 autocast and augmentation, set by the same ``train.*`` keys) without Ray Train
and MLflow: the GPU machines lent to this project have PyTorch but neither, and cannot be sent
Ray (larger than all a call may take along). Where facezip is installed, ``facezip train ...
train.use_gpu=true train.num_workers=1 train.max_minutes=M`` is the same run with tracking.

DATA: ``scripts/pack_faces.py``'s file (or any detect ``faces`` Parquet). OUT gets ``state.pt``
(model, optimizers, step: the same command again goes on from it), ``<codec>.pt`` (weights with
the steps reached, as ``codec.weights`` or ``--init`` take them) and ``log.jsonl`` (a line per
``train.log_every_steps`` and the validation at the end). Past ``--minutes`` of training the run
validates, saves and exits; the validation faces are held out by ``train.val_fraction`` as
``facezip train`` holds them out. Prints steps/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch


def _skip_stage_packages() -> None:
    """Import the train stage's modules without the package ``__init__``s, which register every
    stage and import Ray: its step code needs neither."""
    import facezip

    root = Path(facezip.__file__).parent
    for name in ("facezip.tasks", "facezip.tasks.train"):
        package = types.ModuleType(name)
        package.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
        sys.modules.setdefault(name, package)


_skip_stage_packages()
from omegaconf import OmegaConf  # noqa: E402

from facezip.models.loading import load_codec, weights_to_bytes  # noqa: E402
from facezip.models.metrics import batch_psnr  # noqa: E402
from facezip.tasks.train.config import TrainConfig  # noqa: E402
from facezip.tasks.train.data import BatchMaker, _is_validation  # noqa: E402
from facezip.tasks.train.phases import codec_distortion, get_phase  # noqa: E402
from facezip.tasks.train.steps import (  # noqa: E402
    WallClock,
    for_precision,
    make_loss,
    make_optimizers,
    needs_masks,
    objective,
    steps_trained,
    train_step,
    trainable_names,
    warm_up,
)

PHASE = "finetune"


def load_rows(path: Path, val_fraction: float) -> tuple[dict, np.ndarray, np.ndarray]:
    """The packed columns as numpy arrays, and the training and validation row numbers."""
    table = pq.read_table(path)
    columns = {name: np.array(table.column(name).to_pylist(), dtype=object) for name in table.column_names}
    ids = columns.get("id", np.arange(table.num_rows).astype(str))
    splits = columns.get("split", [None] * table.num_rows)
    held_out = np.array([_is_validation(str(i), s, val_fraction) for i, s in zip(ids, splits)], dtype=bool)
    return columns, np.flatnonzero(~held_out), np.flatnonzero(held_out)


@dataclass
class Batches(torch.utils.data.Dataset):
    """Batch number → a batch of rows made by ``BatchMaker`` (decoded and augmented in loader workers)."""

    columns: dict
    order: np.ndarray
    batch_size: int
    maker: BatchMaker
    training: bool

    def __len__(self) -> int:
        return len(self.order) // self.batch_size if self.training else -(-len(self.order) // self.batch_size)

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.maker({name: values[rows] for name, values in self.columns.items()}, self.training)


def _seed_worker(worker_id: int) -> None:
    """Every loader worker its own augmentation draws (each starts with a copy of the same generator)."""
    info = torch.utils.data.get_worker_info()
    if info.dataset.maker.augment is not None:
        info.dataset.maker.augment.generator.manual_seed(info.seed % 2**31)


def loader(dataset: Batches, workers: int, seed: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                       worker_init_fn=_seed_worker, generator=torch.Generator().manual_seed(seed),
                                       persistent_workers=False, pin_memory=torch.cuda.is_available())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--codec", default="comcnn-reccnn")
    parser.add_argument("--init", default=None, help="starting weights (default: the bundled model)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget")
    parser.add_argument("--loader-workers", type=int, default=4)
    parser.add_argument("overrides", nargs="*", help="train.KEY=VALUE, as facezip train takes them")
    args = parser.parse_intermixed_args()
    dotlist = [item.removeprefix("train.") for item in args.overrides]
    defaults = OmegaConf.structured(TrainConfig(registered_model_name=None))  # no registry here
    tcfg = OmegaConf.to_object(OmegaConf.merge(defaults, OmegaConf.from_dotlist(dotlist)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "log.jsonl").open("a")

    codec = load_codec(args.codec, args.init or "bundled").train().to(device)
    codec = for_precision(codec, tcfg.precision)
    trainable = trainable_names(codec, list(tcfg.trainable))
    for name, parameter in codec.named_parameters():
        parameter.requires_grad_(name in trainable)
    if tcfg.lmbda is None:  # what the starting weights were trained at, else the codec's default
        tcfg.lmbda = codec.metadata.get("lmbda") or codec.lmbda_for(codec_distortion(get_phase(PHASE), codec))
    loss_fn = make_loss(PHASE, tcfg, device, codec)
    optimizers = make_optimizers(codec, PHASE, tcfg)
    state_file = args.out / "state.pt"
    step = 0
    if state_file.is_file():
        state = torch.load(state_file, map_location=device, weights_only=True)
        codec.load_state_dict(state["model"])
        for optimizer, saved in zip(optimizers, state["optimizers"]):
            optimizer.load_state_dict(saved)
        step = int(state["step"])
    start_step = step
    columns, train_rows, val_rows = load_rows(args.data, tcfg.val_fraction)
    maker = BatchMaker(PHASE, tcfg.crop_size, tcfg.max_image_pixels, needs_masks(codec, PHASE, tcfg), tcfg.augment)
    print(f"{args.codec} on {device}: {len(train_rows)} training and {len(val_rows)} validation faces, "
          f"from step {step}, {args.minutes:g} min", flush=True)

    clock, started, last = WallClock(args.minutes, 1, device), time.monotonic(), (time.monotonic(), step)
    while not clock.expired:
        order = np.random.default_rng(step).permutation(train_rows)  # a new order each pass, resumable
        for batch in loader(Batches(columns, order, tcfg.batch_size, maker, True), args.loader_workers, step):
            warm_up(optimizers[0], step, tcfg.warmup_steps)
            terms = train_step(codec, codec, loss_fn, optimizers, batch, device, tcfg.clip_grad_norm, tcfg.precision)
            step += 1
            if step % tcfg.log_every_steps == 0:
                pace = (time.monotonic() - last[0]) / (step - last[1])
                last = (time.monotonic(), step)
                print(f"step {step} ({pace:.3f} s/step): " + ", ".join(f"{k} {v:.4g}" for k, v in terms.items()),
                      flush=True)
                log.write(json.dumps({"step": step, "s_per_step": pace, **terms}) + "\n")
            if clock.out_of_time():
                break

    steps = step - start_step
    seconds = time.monotonic() - started
    metrics = validate(codec, loss_fn, Batches(columns, val_rows, 16, maker, False), device, tcfg.precision)
    summary = {"step": step, "steps_this_run": steps, "steps_per_s": steps / seconds, "device": str(device), **metrics}
    log.write(json.dumps(summary) + "\n")
    torch.save({"model": codec.state_dict(), "optimizers": [o.state_dict() for o in optimizers], "step": step},
               state_file)
    metadata = {"trained_by": "scripts/train_on_gpu.py", "phase": PHASE, "data": str(args.data),
                "steps": steps_trained(codec) + step, "steps_this_run": step,
                "lmbda": tcfg.lmbda, "val": metrics}
    (args.out / f"{args.codec}.pt").write_bytes(weights_to_bytes(codec, metadata))  # tensors saved to the CPU
    print(json.dumps(summary), flush=True)


@torch.no_grad()
def validate(codec, loss_fn, batches: Batches, device: torch.device, precision: str) -> dict[str, float]:
    """Mean loss terms and PSNR on the held-out faces (eval mode: the codec's named quality)."""
    codec.eval()
    sums: dict[str, float] = {}
    count = 0
    for index in range(len(batches)):
        x, x_hat, terms = objective(codec, codec, loss_fn, batches[index], device, precision)
        values = {**{k: float(v) for k, v in terms.items()}, "psnr": float(np.mean(batch_psnr(x_hat, x)))}
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value * len(x)
        count += len(x)
    codec.train()
    return {f"val_{key}": value / max(count, 1) for key, value in sums.items()}


if __name__ == "__main__":
    main()
