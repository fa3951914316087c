"""binarized-cae and the image ↔ .fz round trip."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from facezip.models import available_codecs, create_codec, register_codec
from facezip.models.binarized_cae import BinarizedCAE, StochasticBinarizer
from facezip.models.coding import decode_file, decode_files, encode_images, padded_size
from facezip.models.container import unpack_fz
from facezip.models.loading import BUNDLED, codec_from_bytes, load_codec, weights_to_bytes
from facezip.models.registry import architecture_defaults, architecture_options
from facezip.pipelines.config import load_config
from tests.conftest import psnr


@pytest.fixture(scope="module")
def codec() -> BinarizedCAE:
    torch.manual_seed(0)
    return create_codec("binarized-cae").freeze()


def test_registry_lists_and_rejects():
    assert "binarized-cae" in available_codecs()
    with pytest.raises(ValueError, match="unknown codec 'nope'.*binarized-cae"):
        create_codec("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_codec("binarized-cae")(BinarizedCAE)


def test_paper_architecture_shapes(codec):
    x = torch.rand(2, 3, 160, 160)
    codes = codec.encode(x)
    assert codes.shape == (2, 128, 20, 20)
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert codec(x)["x_hat"].shape == x.shape
    first, second = codec.encoder[0][0], codec.encoder[1][0]
    assert (first.kernel_size, first.stride, first.padding) == ((8, 8), (4, 4), (2, 2))
    assert (second.kernel_size, second.stride) == ((2, 2), (2, 2))
    assert codec.decoder[0][0].kernel_size == (8, 8) and codec.decoder[1].kernel_size == (2, 2)


def test_binarizer_is_unbiased_and_straight_through():
    binarizer = StochasticBinarizer().train()
    x = torch.full((200_000,), 0.4, requires_grad=True)
    b = binarizer(x)
    assert abs(b.mean().item() - 0.4) < 0.01  # E[b] = x, not -x as eq. 1 is printed
    b.sum().backward()
    assert torch.all(x.grad == 1)
    assert torch.equal(binarizer.eval()(torch.tensor([-0.2, 0.0, 0.3])), torch.tensor([-1.0, 1.0, 1.0]))


def test_configurable_architecture():
    small = create_codec("binarized-cae", enc_channels=[8, 16], code_channels=4)
    assert small.encode(torch.rand(1, 3, 32, 32)).shape == (1, 4, 4, 4)
    with pytest.raises(ValueError, match="one entry per layer"):
        create_codec("binarized-cae", enc_channels=[8], kernel_sizes=[8, 2])


@pytest.mark.parametrize("name", available_codecs())
def test_architecture_defaults_are_the_constructors_and_options_are_checked(name):
    defaults = architecture_defaults(name)
    listed = lambda value: list(value) if isinstance(value, tuple) else value  # noqa: E731
    assert create_codec(name).architecture().items() <= {k: listed(v) for k, v in defaults.items()}.items()
    assert load_config([], [f"codecs.{name.replace('-', '_')}.{next(iter(defaults))}=1"])  # free-form section
    with pytest.raises(ValueError, match=rf"codec '{name}' has no option nope \(its options and defaults: "):
        architecture_options(name, {"nope": 1})


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (9, 8), (250, 250), (700, 1000), (160, 160)])
def test_round_trip_any_size(codec, shape):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    fz = encode_images(codec, [image])[0]
    restored = decode_file(codec, fz)
    assert restored.shape == image.shape and restored.dtype == np.uint8
    header, payload = unpack_fz(fz)
    padded = padded_size(*shape, 8)
    assert (header.height, header.width) == shape
    assert len(payload) == 128 * (padded[0] // 8) * (padded[1] // 8) // 8


def test_batch_of_mixed_sizes_keeps_order(astronaut):
    """Each file decodes to its own image, not to another of the same size: trained weights, so
    content tells the images apart."""
    codec = load_codec("binarized-cae", BUNDLED)
    images = [np.ascontiguousarray(astronaut[y : y + h, x : x + w]) for y, x, h, w in
              [(20, 180, 48, 48), (60, 200, 56, 40), (300, 300, 48, 48)]]
    decoded = [decode_file(codec, f) for f in encode_images(codec, images, batch_size=2)]
    assert [d.shape for d in decoded] == [i.shape for i in images]
    assert psnr(images[0], decoded[0]) > psnr(images[2], decoded[0]) + 3
    assert psnr(images[2], decoded[2]) > psnr(images[0], decoded[2]) + 3


def test_decoding_is_deterministic_across_processes(codec, tmp_path, astronaut):
    weights = tmp_path / "w.pt"
    weights.write_bytes(weights_to_bytes(codec))
    fz = encode_images(codec, [astronaut[:120, 150:290]])[0]
    (tmp_path / "a.fz").write_bytes(fz)
    first = decode_file(codec, fz)
    assert np.array_equal(first, decode_file(codec, fz))
    script = (f"import numpy as np, pathlib; from facezip.models.loading import codec_from_bytes;"
              f"from facezip.models.coding import decode_file;"
              f"c = codec_from_bytes(pathlib.Path(r'{weights}').read_bytes(), 'w');"
              f"np.save(r'{tmp_path / 'out.npy'}', decode_file(c, pathlib.Path(r'{tmp_path / 'a.fz'}').read_bytes()))")
    subprocess.run([sys.executable, "-c", script], check=True)
    assert np.array_equal(first, np.load(tmp_path / "out.npy"))


def test_weights_round_trip_keeps_hash(codec):
    reloaded = codec_from_bytes(weights_to_bytes(codec, {"note": "x"}), "memory")
    assert reloaded.weights_hash() == codec.weights_hash()
    assert reloaded.metadata == {"note": "x"}
    with pytest.raises(ValueError, match="not a facezip weights file"):
        codec_from_bytes(b"garbage", "garbage.pt")


def test_batched_decoding_equals_one_by_one(codec):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(16, 24, 3), (40, 40, 3), (16, 24, 3)]]
    files = encode_images(codec, images)
    batched = decode_files(codec, files, batch_size=2)
    assert all(np.array_equal(b, decode_file(codec, f)) for b, f in zip(batched, files))
