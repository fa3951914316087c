"""``--effort N``: encode-time latent refinement (SGA) of mean-scale-hyperprior, with the decoder,
the ``.fz`` format and archive records as they were."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facezip.cli import main
from facezip.infra.storage import Storage
from facezip.models.coding import decode_file, encode_images
from facezip.models.hyperprior import LADDER_LMBDA
from facezip.models.loading import BUNDLED, load_codec
from facezip.models.registry import MAX_EFFORT, create_codec
from facezip.models.store import CodecStore
from facezip.tasks.archive import restore_records, run_archive
from facezip.tasks.evaluate.codecs import ModelEntry, model_levels
from tests.archive_support import archive_config, write_crops
from tests.conftest import REPO_ROOT

LEVEL, EFFORT = 4, 6
CODEC = "mean-scale-hyperprior"


@pytest.fixture(scope="module")
def codec():
    return load_codec(CODEC, BUNDLED, level=LEVEL)


@pytest.fixture(scope="module")
def faces(astronaut):
    """Two real faces, small (fast): Eileen Collins from scikit-image's astronaut at half size, and the
    test data's decoded face, the eyes-to-chin middle of it."""
    decoded = np.asarray(Image.open(REPO_ROOT / "tests" / "data" / "astronaut-face-hyperprior-release1.png"))
    return [astronaut[30:190:2, 170:330:2].copy(), np.ascontiguousarray(decoded[32:128, 32:128])]


@pytest.fixture(scope="module")
def refined(codec, faces):
    return encode_images(codec.with_effort(EFFORT), faces)


def test_refined_files_decode_with_a_fresh_codec_as_any_file(refined, faces, codec):
    assert refined != encode_images(codec, faces)  # the refinement changed the coded latents
    fresh = load_codec(CODEC, BUNDLED, level=LEVEL)  # no effort, nothing shared with the encoder
    for face, data in zip(faces, refined):
        assert decode_file(fresh, data).shape == face.shape


def test_refining_is_deterministic(refined, faces, codec):
    assert encode_images(load_codec(CODEC, BUNDLED, level=LEVEL).with_effort(EFFORT), faces) == refined


def test_refining_lowers_the_coded_rate_plus_lambda_distortion(refined, faces, codec):
    """bits per pixel of the real file + λ·MSE of its real decode (λ: the rung's training λ)."""
    def objective(data: bytes, face: np.ndarray) -> float:
        error = (decode_file(codec, data).astype(np.float64) - face) / 255
        return 8 * len(data) / face[..., 0].size + LADDER_LMBDA[LEVEL] * float(np.mean(error**2))

    base = encode_images(codec, faces)
    for face, before, after in zip(faces, base, refined):
        assert objective(after, face) <= objective(before, face)


def test_lambda_is_the_trained_one_else_the_default(codec):
    assert codec.metadata["lmbda"] == LADDER_LMBDA[LEVEL]  # the bundled rung's, added on loading
    model = create_codec(CODEC)
    model.metadata = {"lmbda": 25.0, "distortion": "mse+facenet"}  # as facezip train records it
    assert model._pixel_lmbda() == 25.0
    model.metadata = {"lmbda": 32.0, "distortion": "l1+ms-ssim"}  # a λ of another distortion: not MSE's
    assert model._pixel_lmbda() == model.default_lmbda["mse+facenet"]


def test_effort_zero_is_the_codec_itself(codec):
    assert codec.with_effort(0) is codec and codec.with_effort(3).with_effort(0).effort == 0


@pytest.mark.parametrize("effort", [-1, MAX_EFFORT + 1])
def test_out_of_range_efforts_are_refused(codec, effort):
    with pytest.raises(ValueError, match=rf"--effort {effort} \(codec.effort\): .* from 0 .* to {MAX_EFFORT}"):
        codec.with_effort(effort)


def test_a_codec_without_refinable_latents_refuses_effort():
    with pytest.raises(ValueError, match=r"--effort 2 \(codec.effort\): codec 'binarized-cae' cannot refine"):
        create_codec("binarized-cae").with_effort(2)
    assert create_codec("binarized-cae").with_effort(0).effort == 0


@pytest.mark.parametrize("arguments, message", [
    (["--effort", "-3"], "--effort -3"),
    (["codec.effort=5000"], "--effort 5000"),
    (["codec.name=binarized-cae", "--effort", "2"], "codec 'binarized-cae' cannot refine its latents"),
])
def test_compress_reports_bad_efforts_as_usage_errors(tmp_path, astronaut, capsys, arguments, message):
    Image.fromarray(astronaut[:32, :32]).save(tmp_path / "face.png")
    default_codec = [] if any(a.startswith("codec.name") for a in arguments) else [f"codec.name={CODEC}"]
    assert main(["compress", str(tmp_path / "face.png"), "-o", str(tmp_path / "out/"), "--quiet",
                 *default_codec, *arguments]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_evaluate_curves_carry_the_effort():
    store = CodecStore()
    levels = model_levels(ModelEntry(CODEC, CODEC, BUNDLED, ladder=True), store, effort=3)
    assert {level.codec for level in levels} == {f"{CODEC}+effort3"}
    with pytest.raises(ValueError, match="codec 'binarized-cae' cannot refine"):
        model_levels(ModelEntry("binarized-cae", "binarized-cae", BUNDLED), store, effort=3)


def test_archive_refines_in_its_workers_and_restores_with_any_facezip(ray_local, tmp_path, codec):
    crops = write_crops(tmp_path / "crops", 3, seed=5)
    cfg = archive_config(BUNDLED, f"codec.name={CODEC}", f"codec.level={LEVEL}", "codec.effort=3")
    assert run_archive(cfg, str(tmp_path / "crops"), str(tmp_path / "archive"), progress=False)["archived"] == 3
    restored = restore_records(CodecStore(), str(tmp_path / "archive"), None, str(tmp_path / "out"), Storage(),
                               progress=False).results  # a fresh store: the bundled rungs, no effort
    assert [r.error for r in restored] == [None] * 3
    images = [np.asarray(Image.open(path).convert("RGB")) for path in crops]
    unrefined = [decode_file(codec, data) for data in encode_images(codec, images)]
    pixels = [np.asarray(Image.open(tmp_path / "out" / f"{path.stem}.png")) for path in crops]
    assert any(not np.array_equal(a, b) for a, b in zip(pixels, unrefined))  # the workers refined
