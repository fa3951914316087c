"""comcnn-reccnn (issue #15): the payload is the base codec's file, byte for byte; RecCNN only adds
to its decode; one model codes at any quality of the base codec."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import psnr
from facezip.infra.storage import Storage
from facezip.models import base_file, create_codec
from facezip.models.coding import decode_files, encode_images
from facezip.models.container import FzFormatError, FzHeader, pack_fz, unpack_fz
from facezip.models.loading import weights_to_bytes
from facezip.models.store import CodecStore
from facezip.tasks.compress import compress_files, decompress_files
from facezip.tasks.evaluate.codecs import ModelEntry, model_levels

BASES = {"jpeg": "JPEG", "avif": "AVIF"}


def smooth_face(size: int = 64) -> np.ndarray:
    """A smooth, face-like test image (gradients and a blob), where bicubic ×2 is already close."""
    y, x = np.mgrid[0:size, 0:size] / size
    blob = np.exp(-((x - 0.5) ** 2 + (y - 0.45) ** 2) / 0.05)
    rgb = np.stack([0.3 + 0.5 * blob, 0.2 + 0.4 * x, 0.6 - 0.3 * y], axis=-1)
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module", params=list(BASES))
def codec(request):
    torch.manual_seed(0)
    return create_codec("comcnn-reccnn", base=request.param, channels=8, rec_layers=3).freeze()


def test_the_payload_is_the_base_codecs_file_at_half_size_its_header_deflated(codec):
    face = smooth_face()
    header, payload = unpack_fz(encode_images(codec, [face])[0])
    file = base_file.unpack(payload)
    assert len(payload) < len(file) - 150  # the ~300 bytes of header before the coded data, deflated
    with Image.open(io.BytesIO(file)) as opened:
        assert opened.format == BASES[codec.architecture()["base"]]
        assert opened.size == (32, 32)
    assert (header.height, header.width) == (64, 64)


def test_untrained_it_is_downscale_code_upscale_and_decodes_the_same_pixels_every_time(codec):
    """The base codec's files are made and read on torch's threads, one image each: the same bytes
    and pixels on one thread as on two."""
    faces = [smooth_face(), smooth_face()[:50, :38], smooth_face()[::-1].copy()]
    files = encode_images(codec.at_quality(90), faces)
    first, again = decode_files(codec, files), decode_files(codec, files, batch_size=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert encode_images(codec.at_quality(90), faces) == files
        alone = decode_files(codec, files)
    finally:
        torch.set_num_threads(threads)
    assert all(np.array_equal(a, b) for a, b in zip(first, alone))
    for face, decoded, other in zip(faces, first, again):
        assert decoded.shape == face.shape
        assert np.array_equal(decoded, other)
        assert psnr(face, decoded) > 30  # a wrong decoder (grey, shifted, swapped channels) is far below


def test_one_model_codes_every_quality_and_levels_name_points_of_it(codec):
    face = smooth_face(96)
    sizes = [len(encode_images(codec.at_level(level), [face])[0]) for level in (1, 4, 8)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert codec.at_level(3).quality == codec.named_qualities[2]
    assert codec.at_quality(33).weights_hash() == codec.weights_hash()  # one set of weights decodes all
    with pytest.raises(ValueError, match="outside"):
        codec.at_quality(101)
    with pytest.raises(ValueError, match="takes no quality"):
        create_codec("binarized-cae").at_quality(50)


def test_images_of_any_size_down_to_one_pixel_are_padded_and_come_back_whole(codec):
    faces = [smooth_face()[:1, :1], smooth_face()[:3, :5], smooth_face()[:2, :64]]
    decoded = decode_files(codec, encode_images(codec, faces))
    assert [image.shape for image in decoded] == [face.shape for face in faces]


def test_a_payload_that_is_not_a_base_codec_file_is_a_clear_error(codec):
    face = smooth_face()
    header, payload = unpack_fz(encode_images(codec, [face])[0])
    bad = pack_fz(FzHeader(header.codec, header.weights_hash, 64, 64), b"not an image at all", stored=True)
    with pytest.raises(FzFormatError, match="neither a JPEG nor an AVIF"):
        decode_files(codec, [bad])
    wrong_size = pack_fz(FzHeader(header.codec, header.weights_hash, 80, 64), payload, stored=True)
    with pytest.raises(FzFormatError, match="32×32 image, a 40×32 one was expected"):
        decode_files(codec, [wrong_size])
    for damaged, message in ((payload[:2] + b"\xff" * 8 + payload[10:], "deflated .* header is corrupt"),
                             (payload[:1] + b"\x09" + payload[2:], "no known base codec"),
                             (payload[:6], "truncated")):
        with pytest.raises(FzFormatError, match=message):
            decode_files(codec, [pack_fz(FzHeader(header.codec, header.weights_hash, 64, 64), damaged, stored=True)])


def test_decompress_raw_writes_the_payload_untouched_for_any_viewer(codec, tmp_path):
    source = tmp_path / "face.png"
    Image.fromarray(smooth_face()).save(source)
    storage = Storage()
    [compressed] = compress_files(codec, [str(source)], str(tmp_path / "fz") + "/", storage, progress=False)
    [raw] = decompress_files(None, [compressed.output], str(tmp_path / "raw") + "/", storage, progress=False, raw=True)
    suffix = {"jpeg": ".jpg", "avif": ".avif"}[codec.architecture()["base"]]
    assert raw.ok and raw.output.endswith("face" + suffix)
    written = (tmp_path / "raw" / f"face{suffix}").read_bytes()
    assert written == base_file.unpack(unpack_fz((tmp_path / "fz" / "face.fz").read_bytes())[1])
    with Image.open(io.BytesIO(written)) as opened:
        assert opened.convert("RGB").size == (32, 32)


def test_decompress_raw_refuses_a_codec_whose_payload_is_no_image_file(tmp_path):
    codec = create_codec("binarized-cae").freeze()
    path = tmp_path / "face.fz"
    path.write_bytes(encode_images(codec, [smooth_face()])[0])
    [result] = decompress_files(None, [str(path)], str(tmp_path / "out") + "/", Storage(), progress=False, raw=True)
    assert not result.ok and "not a standard image file" in result.error


def test_training_pass_trains_both_networks_on_the_real_codecs_output():
    torch.manual_seed(0)
    codec = create_codec("comcnn-reccnn", base="jpeg", channels=8, rec_layers=3).train()
    x = torch.from_numpy(smooth_face()).permute(2, 0, 1)[None].float().div(255).repeat(2, 1, 1, 1)
    out = codec(x)
    out["x_hat"].sub(x).pow(2).mean().backward()
    assert codec.rec[-1].weight.grad.abs().sum() > 0  # RecCNN's output layer, zero at the start
    assert codec.com[-1].weight.grad.abs().sum() > 0  # ComCNN through the codec-free approximation
    assert 8 * 100 < out["bits"].min() and out["bits"].max() < 8 * 5000  # real JPEG file sizes, in bits


def test_without_half_size_the_base_codec_sees_the_whole_image():
    codec = create_codec("comcnn-reccnn", base="jpeg", half_size=False, channels=8, rec_layers=3).freeze()
    _, payload = unpack_fz(encode_images(codec, [smooth_face()])[0])
    with Image.open(io.BytesIO(base_file.unpack(payload))) as opened:
        assert opened.size == (64, 64)
    assert codec.com is None and codec.pad_multiple == 1


def test_a_store_and_evaluate_give_a_variable_rate_model_as_one_curve(tmp_path):
    codec = create_codec("comcnn-reccnn", channels=8, rec_layers=3)
    path = tmp_path / "hybrid.pt"
    path.write_bytes(weights_to_bytes(codec))
    store = CodecStore()
    assert store.load("comcnn-reccnn", str(path), quality=42).quality == 42
    assert store.load("comcnn-reccnn", str(path), level=2).level == 2
    levels = model_levels(ModelEntry("comcnn-reccnn", "comcnn-reccnn", str(path)), store)
    assert [level.label for level in levels] == [f"comcnn-reccnn:hybrid-l{n}" for n in range(1, 9)]
    with pytest.raises(ValueError, match="one rate per weights"):
        store.load("binarized-cae", quality=50)


def test_the_bundled_model_stores_what_plain_avif_would_and_restores_it_better(astronaut):
    trained = CodecStore().load("comcnn-reccnn", quality=30)
    untrained = create_codec("comcnn-reccnn", **trained.architecture()).freeze().at_quality(30)
    face = astronaut[37:197, 144:304]
    [file], [start] = encode_images(trained, [face]), encode_images(untrained, [face])
    assert unpack_fz(file)[1] == unpack_fz(start)[1]  # trained with ComCNN kept at its start: the same AVIF
    restored, upscaled = decode_files(trained, [file])[0], decode_files(untrained, [start])[0]
    assert psnr(face, restored) > psnr(face, upscaled) + 0.1  # RecCNN adds to what AVIF decoded


def test_the_default_codec_is_the_shipped_model_and_the_papers_is_a_config_away():
    from facezip.models.registry import architecture_defaults, architecture_options
    from facezip.pipelines.config import load_config

    cfg = load_config()
    bundled = CodecStore().load(cfg.codec.name)
    assert (cfg.codec.name, bundled.architecture()) == ("comcnn-reccnn", architecture_defaults("comcnn-reccnn"))
    paper = load_config([Path(__file__).parents[1] / "configs" / "comcnn-reccnn-paper.yaml"])
    options = architecture_options(paper.codec.name, dict(paper.codecs.comcnn_reccnn))
    assert options == {"base": "jpeg", "half_size": True, "channels": 64, "rec_layers": 20, "face_gain": 0.0}


def test_the_base_codec_runs_its_thorough_settings_fewer_bytes_for_the_same_decoder(astronaut):
    from facezip.infra.images import decode_standard, encode_standard
    from facezip.tasks.evaluate.baselines import get_baseline

    jpeg = create_codec("comcnn-reccnn", base="jpeg", channels=8, rec_layers=3).freeze().at_quality(50)
    face = astronaut[37:197, 144:304]
    stored = base_file.unpack(unpack_fz(encode_images(jpeg, [face])[0])[1])
    compact = decode_standard(stored)
    plain = encode_standard(compact, "JPEG", 50)
    assert len(stored) < 0.9 * len(plain)  # optimised Huffman tables: the same pixels in fewer bytes
    assert np.array_equal(decode_standard(plain), decode_standard(encode_standard(compact, "JPEG", 50, True)))
    assert get_baseline("jpeg-optimized").encode(compact, 50) == encode_standard(compact, "JPEG", 50, True)
