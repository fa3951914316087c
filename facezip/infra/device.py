"""Turning the ``device`` config value into a torch device."""

from __future__ import annotations

import torch


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda``/``cuda:N`` must exist."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"device '{spec}' is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{spec}' was asked for but no CUDA GPU is visible (use device=auto or cpu)")
    return device
