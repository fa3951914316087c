"""The per-worker training loop run by Ray Train's ``TorchTrainer``.

Each worker trains a DDP replica on its shard of ``train``; rank 0 also validates on the whole
``val`` set, logs to MLflow and saves a checkpoint every epoch. A restarted run (same Ray Train
run name and storage path) gets the latest checkpoint from ``ray.train.get_checkpoint`` and goes
on from its epoch and global step.
"""

from __future__ import annotations

import copy
import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
from torch import nn

from facezip.models.coding import encode_images, to_uint8
from facezip.models.losses import ms_ssim_score
from facezip.models.metrics import batch_psnr
from facezip.models.recognizer import Recognizer, identity_key
from facezip.models.registry import Codec, create_codec
from facezip.tasks.train.data import BatchMaker
from facezip.tasks.train.phases import get_phase
from facezip.tasks.train.steps import (
    WallClock,
    for_precision,
    make_loss,
    make_optimizers,
    needs_masks,
    objective,
    train_step,
    trainable_names,
    warm_up,
)
from facezip.tasks.train.tracking import RunLogger

CHECKPOINT_FILE = "state.pt"
GRID_IMAGES = 4
SHUFFLE_BUFFER_ROWS = 256


def train_loop(config: dict[str, Any]) -> None:
    """``train_loop_per_worker``. ``config``: ``settings`` (the typed ``train`` section), ``seed``, ``phase``,
    ``codec`` / ``architecture`` / ``init_state`` (the starting weights), ``mlflow``
    (``{"uri", "run_id"}`` or None)."""
    phase, tcfg = config["phase"], config["settings"]
    context = ray.train.get_context()
    rank = context.get_world_rank()
    torch.manual_seed(config["seed"] + rank)
    device = ray.train.torch.get_device()

    codec = create_codec(config["codec"], **config["architecture"])
    if config["init_state"] is not None:
        codec.load_state_dict(torch.load(io.BytesIO(config["init_state"]), map_location="cpu", weights_only=True))
    codec = for_precision(codec, tcfg.precision)
    trainable = trainable_names(codec, list(tcfg.trainable))
    for name, parameter in codec.named_parameters():
        parameter.requires_grad_(name in trainable)
    loss_fn = make_loss(phase, tcfg, device, codec)
    optimizers = make_optimizers(codec, phase, tcfg)
    start_epoch, step = restore(codec, optimizers)
    model = _prepare_model(codec)
    batches = BatchMaker(phase, tcfg.crop_size, tcfg.max_image_pixels, masks=needs_masks(codec, phase, tcfg),
                         augment=tcfg.augment)
    clock = WallClock(tcfg.max_minutes, context.get_world_size(), device)
    validator = _Validator(batches, loss_fn, get_phase(phase).val_judges(tcfg), device, config["mlflow"], step) \
        if rank == 0 else None
    if validator and start_epoch == 0:
        validator.run(codec, epoch=0, step=0)  # the untrained baseline, so the curve has a start

    shard = ray.train.get_dataset_shard("train")
    for epoch in range(start_epoch, tcfg.epochs):
        model.train()
        totals: dict[str, float] = {}
        batch_count = 0
        for batch in shard.iter_batches(batch_size=tcfg.batch_size, batch_format="numpy",
                                        local_shuffle_buffer_size=SHUFFLE_BUFFER_ROWS):
            if tcfg.max_steps_per_epoch and batch_count >= tcfg.max_steps_per_epoch:
                break
            warm_up(optimizers[0], step, tcfg.warmup_steps)
            terms = train_step(model, codec, loss_fn, optimizers, batches(batch, training=True), device,
                               tcfg.clip_grad_norm, tcfg.precision)
            step, batch_count = step + 1, batch_count + 1
            for key, value in terms.items():
                totals[key] = totals.get(key, 0.0) + value
            if validator and step % tcfg.log_every_steps == 0:
                validator.logger_metrics({f"train_{k}": v for k, v in terms.items()}, step)
                validator.progress(phase, epoch + 1, step, terms)
            if clock.out_of_time():  # after a step, so that every sitting trains at least one
                break
        means = {f"epoch_train_{k}": v / max(batch_count, 1) for k, v in totals.items()}
        metrics = {"epoch": epoch + 1, "step": step, **means}
        if validator is None:
            ray.train.report(metrics)  # every worker reports each epoch; only rank 0 checkpoints
            if clock.expired:
                break
            continue
        metrics.update(validator.run(codec, epoch=epoch + 1, step=step))
        validator.logger_metrics({k: v for k, v in metrics.items() if k.startswith("epoch_train_")}, step)
        say(f"[train {phase}] epoch {epoch + 1}/{tcfg.epochs} step {step}: "
            + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith(("epoch_train_loss", "val_"))))
        with tempfile.TemporaryDirectory() as tmp:
            torch.save({"codec": codec.name, "architecture": codec.architecture(), "model": codec.state_dict(),
                        "optimizers": [o.state_dict() for o in optimizers], "epoch": epoch + 1, "step": step},
                       Path(tmp) / CHECKPOINT_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        if clock.expired:
            say(f"[train {phase}] train.max_minutes={tcfg.max_minutes:g} reached at step {step} (epoch "
                f"{epoch + 1} of {tcfg.epochs}): checkpointed; run again with the same DEST to go on")
            break


def say(line: str) -> None:
    """One progress line on the worker's stdout, which Ray forwards to the driver. Not ``print``:
    Ray Train patches it in workers to log *and* echo, and every line reached the console twice."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _prepare_model(codec: Codec) -> nn.Module:
    """DDP over the main parameters only: the quantiles get no gradient from the main loss, and their
    auxiliary loss needs no data, so every replica moves them the same way without all-reduce."""
    aux = [parameter for parameter in codec.aux_parameters() if parameter.requires_grad]
    for parameter in aux:
        parameter.requires_grad_(False)
    model = ray.train.torch.prepare_model(codec)
    for parameter in aux:
        parameter.requires_grad_(True)
    return model


def restore(codec: Codec, optimizers: list[torch.optim.Optimizer]) -> tuple[int, int]:
    """Load the latest checkpoint of this run, if any: ``(epochs done, global step)``."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, 0
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    codec.load_state_dict(state["model"])
    for optimizer, saved in zip(optimizers, state["optimizers"]):
        optimizer.load_state_dict(saved)
    return int(state["epoch"]), int(state["step"])


class _Validator:
    """Rank 0: metrics on a fixed validation batch set, a reconstruction grid, MLflow logging."""

    def __init__(self, batches: BatchMaker, loss_fn: nn.Module, judges: list[Recognizer], device: torch.device,
                 mlflow_target: dict | None, step: int) -> None:
        cfg_rows = ray.train.get_dataset_shard("val")
        self.batches = [batches(batch, training=False)
                        for batch in cfg_rows.iter_batches(batch_size=8, batch_format="numpy")]
        self.loss_fn, self.judges, self.device = loss_fn, judges, device
        self.judged_faces: dict[str, np.ndarray] = {}  # the fixed validation faces, embedded once per judge
        self.logger = RunLogger(mlflow_target["uri"], mlflow_target["run_id"]) if mlflow_target else None
        self.last_time, self.last_step = time.monotonic(), step

    def logger_metrics(self, values: dict[str, float], step: int) -> None:
        if self.logger:
            self.logger.metrics(values, step)

    def progress(self, phase: str, epoch: int, step: int, terms: dict[str, float]) -> None:
        """A line per ``log_every_steps`` with the pace, so a long run shows it is moving."""
        now = time.monotonic()
        pace = (now - self.last_time) / max(step - self.last_step, 1)
        self.last_time, self.last_step = now, step
        say(f"[train {phase}] epoch {epoch} step {step} ({pace:.2f} s/step): "
            + ", ".join(f"{k} {v:.4g}" for k, v in terms.items()))

    @torch.no_grad()
    def run(self, codec: Codec, epoch: int, step: int) -> dict[str, float]:
        was_training = codec.training
        codec.eval()  # deterministic binarization: the same val batch gives the same loss
        sums: dict[str, float] = {}
        count, bits, pixels = 0, 0, 0
        faces, decoded_faces = [], []  # for the judges
        coder = copy.deepcopy(codec)  # fresh entropy tables without touching the buffers DDP keeps in sync
        coder.refresh_entropy_model()
        for batch in self.batches:
            x, x_hat, terms = objective(codec, codec, self.loss_fn, batch, self.device)
            values = {**{k: float(v) for k, v in terms.items()}, "psnr": float(np.mean(batch_psnr(x_hat, x))),
                      "ms_ssim": float(ms_ssim_score(x_hat, x))}
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value * len(x)
            uint8 = list(to_uint8(x))
            faces += uint8
            decoded_faces += list(to_uint8(x_hat.cpu()))
            bits += sum(8 * len(fz) for fz in encode_images(coder, uint8))
            pixels += x.shape[0] * x.shape[2] * x.shape[3]
            count += len(x)
        metrics = {f"val_{k}": v / count for k, v in sums.items()}
        metrics["val_bpp"] = bits / pixels  # real .fz files (codes + xz + header), not an estimate
        if "val_facenet_l2" in metrics:  # unit embeddings: squared distance = 2 − 2·cos
            metrics["val_facenet_cosine"] = 1.0 - metrics["val_facenet_l2"] / 2.0
        for judge in self.judges:  # does what the loss's FaceNet keeps carry over to other recognizers?
            if judge.name not in self.judged_faces:
                self.judged_faces[judge.name] = judge.embed(faces)
            values = judge.compare(self.judged_faces[judge.name], judge.embed(decoded_faces))
            metrics[f"val_{identity_key(judge.name, f'mean_{judge.measure}')}"] = float(values.mean())
        if self.logger:
            self.logger.metrics(metrics, step)
            originals = self.batches[0][0][:GRID_IMAGES]
            self.logger.reconstruction_grid(originals, codec(originals.to(self.device))["x_hat"].cpu(), epoch)
        codec.train(was_training)
        self.last_time, self.last_step = time.monotonic(), step  # the pace counts training steps only
        return metrics
