"""Face-aware bit allocation by resampling (issue #18): the face region gets more of the base codec's
pixels, the warp inverts, and weights saved before the option existed decode as they did."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import psnr
from facezip.cli import main
from facezip.models import create_codec
from facezip.models.coding import decode_files, encode_images
from facezip.models.face_mask import centre_ellipse
from facezip.models.face_sampling import resample, sampling_grid
from facezip.models.loading import codec_from_bytes, weights_to_bytes


def test_the_face_region_gets_more_of_the_warped_pixels_and_the_uniform_grid_is_the_image_itself():
    warped_x = sampling_grid(100, 100, 1.0, inverse=False)[0, 0, :, 0].numpy()  # where each warped column samples
    assert np.all(np.diff(warped_x) > 0)  # monotone: nothing folds over
    on_face = np.mean(np.abs(warped_x) < 0.6)  # the centre ellipse spans 0.3 W either side of the centre
    assert 0.7 < on_face < 0.8  # 60 % of the columns without the warp; 75 % at twice the density, less the soft edges
    image = torch.rand(1, 3, 20, 30)
    assert torch.allclose(resample(image, (20, 30), 0.0, inverse=False), image, atol=1e-5)


def test_the_inverse_warp_brings_a_smooth_image_back():
    y, x = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 80), indexing="ij")
    image = torch.stack([torch.sin(3 * x) * 0.4 + 0.5, x * y, 0.5 + 0.3 * torch.cos(4 * y)])[None]
    back = resample(resample(image, (96, 80), 1.0, inverse=False), (96, 80), 1.0, inverse=True, mode="bicubic")
    assert (back - image).abs().max() < 0.02


def test_with_a_face_gain_the_face_is_coded_finer_for_about_the_same_bytes(astronaut):
    torch.manual_seed(0)
    face = astronaut[37:197, 144:304]
    mask = centre_ellipse(*face.shape[:2])
    results = {}
    for gain in (0.0, 1.0):
        codec = create_codec("comcnn-reccnn", channels=8, rec_layers=3, face_gain=gain).freeze().at_quality(60)
        [file] = encode_images(codec, [face])
        [decoded] = decode_files(codec, [file])
        results[gain] = (len(file), psnr(face[mask], decoded[mask]), psnr(face[~mask], decoded[~mask]))
    (uniform_bytes, uniform_face, uniform_rest), (bytes_, face_psnr, rest_psnr) = results[0.0], results[1.0]
    assert bytes_ < 1.05 * uniform_bytes  # measured: 3 % fewer
    assert face_psnr > uniform_face + 0.3 and rest_psnr < uniform_rest  # measured: +0.6 dB, −1.9 dB


def test_weights_saved_before_face_gain_existed_load_without_it():
    codec = create_codec("comcnn-reccnn", channels=8, rec_layers=3, face_gain=0.0)
    data = weights_to_bytes(codec)
    blob = torch.load(io.BytesIO(data), weights_only=True)
    del blob["architecture"]["face_gain"]  # as releases before 11 wrote them
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    loaded = codec_from_bytes(buffer.getvalue(), "old weights")
    assert loaded.architecture()["face_gain"] == 0.0 and loaded.weights_hash() == codec.freeze().weights_hash()
    with pytest.raises(ValueError, match="face_gain: -1"):
        create_codec("comcnn-reccnn", face_gain=-1)


def test_the_default_codec_samples_the_face_densely_and_info_says_so(astronaut, tmp_path, capsys):
    Image.fromarray(astronaut[37:197, 144:304]).save(tmp_path / "face.png")
    assert main(["compress", str(tmp_path / "face.png"), "-o", str(tmp_path / "face.fz"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "face.fz")]) == 0
    region = json.loads(capsys.readouterr().out)["face_region"]
    assert region.startswith("the centre ellipse") and "2 times as densely" in region
