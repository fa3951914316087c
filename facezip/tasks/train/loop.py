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
from facezip.models.losses import MaskedL1Loss, ms_ssim_score, with_rate
from facezip.models.metrics import batch_psnr
from facezip.models.recognizer import Recognizer, identity_key
from facezip.models.registry import Codec, create_codec
from facezip.tasks.train.data import Batch, BatchMaker
from facezip.tasks.train.phases import get_phase
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
    batches = BatchMaker(phase, tcfg.crop_size, tcfg.max_image_pixels, masks=codec.masked_loss,
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


class WallClock:
    """``train.max_minutes``: every worker stops at the same step once any of them is past the
    budget (DDP replicas that stopped apart would wait for each other for ever)."""

    def __init__(self, minutes: float | None, world_size: int, device: torch.device) -> None:
        self.deadline = time.monotonic() + 60 * minutes if minutes else None
        self.world_size, self.device, self.expired = world_size, device, False

    def out_of_time(self) -> bool:
        if self.deadline is None or self.expired:
            return self.expired
        late = torch.tensor([float(time.monotonic() > self.deadline)], device=self.device)
        if self.world_size > 1:
            torch.distributed.all_reduce(late, op=torch.distributed.ReduceOp.MAX)
        self.expired = bool(late.item())
        return self.expired


def say(line: str) -> None:
    """One progress line on the worker's stdout, which Ray forwards to the driver. Not ``print``:
    Ray Train patches it in workers to log *and* echo, and every line reached the console twice."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def make_loss(phase: str, tcfg: Any, device: torch.device, codec: Codec | None = None) -> nn.Module:
    """The phase's loss, or the codec's masked loss in every phase (``Codec.masked_loss``);
    ``train.lmbda`` was resolved by the driver (``runner.with_codec_lmbda``)."""
    if codec is not None and codec.masked_loss:
        masked = tcfg.masked
        return MaskedL1Loss(tcfg.lmbda, masked.adversarial_weight if masked.adversarial else None,
                            masked.discriminator_lr).to(device)
    return get_phase(phase).loss(tcfg, device)


def make_optimizers(codec: Codec, phase: str, tcfg: Any) -> list[torch.optim.Optimizer]:
    """Adam with β1 from config (the paper's momentum 0.99); ``train.lr`` overrides the phase's lr.
    Entropy-model quantiles get their own Adam on the codec's auxiliary loss, as in CompressAI."""
    phase_cfg = get_phase(phase).settings(tcfg)
    lr = tcfg.lr if tcfg.lr is not None else phase_cfg.lr
    aux = [p for p in codec.aux_parameters() if p.requires_grad]
    main = [(name, p) for name, p in codec.named_parameters() if p.requires_grad and all(p is not a for a in aux)]
    groups = []
    for prefix, group_lr in dict(tcfg.lr_by_parameter).items():
        chosen = parameters_named(codec, [prefix], "train.lr_by_parameter")
        groups.append({"params": [p for name, p in main if name in chosen], "lr": float(group_lr)})
        main = [(name, p) for name, p in main if name not in chosen]
    groups = [{"params": [p for _, p in main], "lr": lr}, *groups]
    optimizer = torch.optim.Adam([g for g in groups if g["params"]], betas=(phase_cfg.beta1, 0.999),
                                 weight_decay=phase_cfg.weight_decay)
    return [optimizer, torch.optim.Adam(aux, lr=tcfg.aux_lr)] if aux else [optimizer]


def trainable_names(codec: Codec, selection: list[str]) -> set[str]:
    """The parameters ``train.trainable`` names ([] = all of them)."""
    if not selection:
        return {name for name, _ in codec.named_parameters()}
    return parameters_named(codec, selection, "train.trainable")


def parameters_named(codec: Codec, selection: list[str], key: str) -> set[str]:
    """Parameter names matching ``selection``'s full names or dotted prefixes; one that matches nothing is an error."""
    names = [name for name, _ in codec.named_parameters()]
    chosen: set[str] = set()
    for prefix in selection:
        matched = {name for name in names if name == prefix or name.startswith(prefix.rstrip(".") + ".")}
        if not matched:
            groups = sorted({".".join(name.split(".")[:2]) for name in names})
            raise ValueError(f"{key}: '{prefix}' names no parameter of codec {codec.name} "
                             f"(its parameter groups: {', '.join(groups)})")
        chosen |= matched
    return chosen


def warm_up(optimizer: torch.optim.Optimizer, step: int, warmup_steps: int) -> None:
    """Linear warmup of the main lr over the first ``warmup_steps`` global steps (from the step
    count, so a resumed run continues where it was without scheduler state)."""
    for group in optimizer.param_groups:
        group.setdefault("base_lr", group["lr"])
        group["lr"] = group["base_lr"] * min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else group["base_lr"]


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


def for_precision(codec: Codec, precision: str) -> Codec:
    """bf16: the channels-last memory layout too, where oneDNN's bf16 convolutions are fastest
    (a comcnn-reccnn step: 1.0 s fp32, 0.68 s bf16, 0.46 s both, on 2 cores)."""
    return codec.to(memory_format=torch.channels_last) if precision == "bf16" else codec


def objective(model: nn.Module, codec: Codec, loss_fn: nn.Module, batch: Batch, device: torch.device,
              precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``(x, x̂, loss terms)``: the loss on the batch (with its face masks when it has them), plus the
    estimated rate for codecs that learn it; the forward pass under bf16 autocast for ``bf16``."""
    images, boxes, masks = (None if t is None else t.to(device) for t in batch)
    if precision == "bf16":
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
        out = model(images)
        pixels = images.shape[0] * images.shape[2] * images.shape[3]
        terms = loss_fn(out["x_hat"], images, boxes, **({} if masks is None else {"masks": masks}))
    terms = {key: value.float() for key, value in terms.items()}
    return images, out["x_hat"].float(), with_rate(terms, out["bits"].float(), pixels, codec.learns_rate)


def train_step(model: nn.Module, codec: Codec, loss_fn: nn.Module, optimizers: list[torch.optim.Optimizer],
               batch: Batch, device: torch.device, clip_grad_norm: float | None = None,
               precision: str = "fp32") -> dict[str, float]:
    _, _, terms = objective(model, codec, loss_fn, batch, device, precision)
    main, *aux = optimizers
    main.zero_grad(set_to_none=True)
    terms["loss"].backward()
    if clip_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    main.step()
    if aux:
        aux_loss = codec.aux_loss()
        aux[0].zero_grad(set_to_none=True)
        aux_loss.backward()
        aux[0].step()
        terms["aux_loss"] = aux_loss
    return {key: float(value.detach()) for key, value in terms.items()}


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
