"""One training step and what it needs, without Ray: the loss, the optimizers, the precision, the
wall-clock budget. ``loop.train_loop`` runs them inside Ray Train; ``scripts/train_on_gpu.py``
runs the same steps in one process where Ray is not installed."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from facezip.models.losses import MaskedL1Loss, with_rate
from facezip.models.registry import Codec
from facezip.tasks.train.data import Batch
from facezip.tasks.train.phases import get_phase


def make_loss(phase: str, tcfg: Any, device: torch.device, codec: Codec | None = None) -> nn.Module:
    """The phase's loss, or the codec's masked loss in every phase (``Codec.masked_loss``);
    ``train.lmbda`` was resolved by the driver (``runner.with_codec_lmbda``)."""
    if codec is not None and codec.masked_loss:
        masked = tcfg.masked
        return MaskedL1Loss(tcfg.lmbda, masked.adversarial_weight if masked.adversarial else None,
                            masked.discriminator_lr).to(device)
    return get_phase(phase).loss(tcfg, device)


def needs_masks(codec: Codec, phase: str, tcfg: Any) -> bool:
    """Whether batches carry face masks: for a masked loss, or finetune's face-weighted pixel term."""
    return codec.masked_loss or (phase == "finetune" and tcfg.finetune.face_weight > 0)


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


def steps_trained(codec: Codec) -> int:
    """The steps a model's weights record having been trained for (0 for an untrained model): what
    a run that starts from them adds its own steps to."""
    return int((getattr(codec, "metadata", None) or {}).get("steps") or 0)


def warm_up(optimizer: torch.optim.Optimizer, step: int, warmup_steps: int) -> None:
    """Linear warmup of the main lr over the first ``warmup_steps`` global steps (from the step
    count, so a resumed run continues where it was without scheduler state)."""
    for group in optimizer.param_groups:
        group.setdefault("base_lr", group["lr"])
        group["lr"] = group["base_lr"] * min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else group["base_lr"]


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
