"""Saving and loading codec weights: the bundled model, a file or an ``s3://`` URI.

A weights file is a ``torch.save``d dict ``{"format", "codec", "architecture", "state_dict",
"metadata"}``, loaded with ``weights_only=True`` so a file can never run code.
"""

from __future__ import annotations

import io
import re
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from facezip.infra.storage import Storage
from facezip.models.registry import Codec, codec_class, create_codec

WEIGHTS_FORMAT = "facezip-weights/1"
BUNDLED = "bundled"
REGISTRY_SCHEME = "models:/"


def bundled_weights_path(codec_name: str, level: int | None = None):
    """``weights/<codec>.pt``, or ``weights/<codec>-l<level>.pt`` for a rung of a rate ladder
    (``level`` None: the codec's ``default_level``)."""
    level = codec_class(codec_name).default_level if level is None else level
    suffix = "" if level is None else f"-l{level}"
    return resources.files("facezip.models") / "weights" / f"{codec_name}{suffix}.pt"


def bundled_levels(codec_name: str) -> list[int]:
    """The rungs of ``codec_name``'s bundled rate ladder, lowest rate first ([] without a ladder)."""
    prefix = f"{codec_name}-l"
    names = (entry.name for entry in (resources.files("facezip.models") / "weights").iterdir())
    return sorted(int(n[len(prefix):-3]) for n in names if n.startswith(prefix) and n[len(prefix):-3].isdigit())


def retired_weights_paths(codec_name: str) -> list:
    """``weights/retired/<codec>-<weights hash>.pt``: bundled models a newer one replaced, kept so
    that the files they wrote still decode (a file names the weights hash that wrote it)."""
    folder = resources.files("facezip.models") / "weights" / "retired"
    if not folder.is_dir():
        return []
    name = re.compile(re.escape(codec_name) + r"-[0-9a-f]{16}\.pt")
    return sorted((entry for entry in folder.iterdir() if name.fullmatch(entry.name)), key=lambda entry: entry.name)


def weights_to_bytes(codec: Codec, metadata: dict[str, Any] | None = None) -> bytes:
    buffer = io.BytesIO()
    torch.save({"format": WEIGHTS_FORMAT, "codec": codec.name, "architecture": codec.architecture(),
                "state_dict": {k: v.detach().cpu() for k, v in codec.state_dict().items()},
                "metadata": metadata or {}}, buffer)
    return buffer.getvalue()


def codec_from_bytes(data: bytes, source: str, expected_codec: str | None = None) -> Codec:
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{source}: not a facezip weights file ({exc})") from None
    if not isinstance(blob, dict) or blob.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{source}: not a facezip weights file (expected format {WEIGHTS_FORMAT})")
    if expected_codec and blob["codec"] != expected_codec:
        raise ValueError(f"{source}: holds weights of codec '{blob['codec']}', not '{expected_codec}' (give "
                         f"codec.name={blob['codec']})")
    codec = create_codec(blob["codec"], **{**codec_class(blob["codec"]).legacy_architecture, **blob["architecture"]})
    codec.load_state_dict(blob["state_dict"])
    codec.metadata = blob.get("metadata", {})
    return codec.freeze()


def load_codec(name: str, weights: str, device: torch.device | str = "cpu",
               storage: Storage | None = None, level: int | None = None) -> Codec:
    """A codec ready for inference. ``weights``: ``bundled``, a local path, an fsspec URL or a
    registered MLflow model ``models:/<name>/<version>`` (from the tracking URI MLflow is set to).
    ``level`` picks a rung of the bundled rate ladder (``codec.level``, ``--level N``)."""
    if level is not None and weights != BUNDLED:
        raise ValueError(f"codec.level={level} picks bundled weights, but codec.weights is {weights}; "
                         "give one or the other")
    if weights.startswith(REGISTRY_SCHEME):
        data, source = registered_weights(weights, name), weights
    elif weights == BUNDLED:
        path = bundled_weights_path(name, level)
        if not path.is_file():
            levels = bundled_levels(name)
            hint = f"bundled levels: {', '.join(map(str, levels))}" if levels else "give codec.weights=PATH"
            raise ValueError(f"no bundled weights for codec '{name}'"
                             + (f" at level {level}" if level is not None else "") + f"; {hint}")
        data, source = path.read_bytes(), f"bundled weights of {name}"
    else:
        try:
            data, source = (storage or Storage()).read_bytes(weights), weights
        except FileNotFoundError:
            raise ValueError(f"codec.weights: file not found: {weights}") from None
    codec = codec_from_bytes(data, source, expected_codec=name).to(device).freeze()
    codec.level = (level if level is not None else codec.default_level) if weights == BUNDLED else None
    if weights == BUNDLED:
        codec.metadata = {**codec.bundled_metadata(codec.level), **codec.metadata}
    return codec


def registered_weights(model_uri: str, codec_name: str) -> bytes:
    """The facezip weights file that ``facezip train`` logs inside a registered MLflow model
    (``extra_files/<codec>.pt``): read as weights, never unpickled like ``mlflow.pytorch.load_model``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    except MlflowException as exc:
        raise ValueError(f"codec.weights: cannot fetch {model_uri} from MLflow at {mlflow.get_tracking_uri()} "
                         f"({exc.message})") from None
    path = folder / "extra_files" / f"{codec_name}.pt"
    if not path.is_file():
        raise ValueError(f"codec.weights: {model_uri} has no facezip weights for codec '{codec_name}' "
                         f"(expected extra_files/{codec_name}.pt; was it logged by facezip train?)")
    return path.read_bytes()
