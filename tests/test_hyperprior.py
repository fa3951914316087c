"""mean-scale-hyperprior: real rANS bitstreams, reproducible decoding, weights round trip, training terms."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from facezip.models import create_codec
from facezip.models.coding import decode_file, decode_files, encode_images
from facezip.models.container import PAYLOAD_STORED, FzFormatError, pack_fz, read_header
from facezip.models.loading import codec_from_bytes, weights_to_bytes
from facezip.models.losses import PretrainLoss, with_rate

SMALL = {"N": 16, "M": 24}


def _trained_a_little(seed: int = 0):
    """A small model a few steps away from initialisation: non-trivial scales and means."""
    torch.manual_seed(seed)
    codec = create_codec("mean-scale-hyperprior", **SMALL)
    optimizer = torch.optim.Adam(codec.parameters(), lr=1e-2)
    x = torch.rand(2, 3, 64, 64)
    for _ in range(3):
        out = codec(x)
        loss = out["bits"].sum() / x[:, 0].numel() + 100 * torch.mean((out["x_hat"] - x) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    codec.refresh_entropy_model()
    return codec.freeze()


@pytest.fixture(scope="module")
def codec():
    return _trained_a_little()


@pytest.fixture(scope="module")
def faces(astronaut):
    return [np.ascontiguousarray(astronaut[y : y + 72, x : x + 88]) for y, x in ((20, 180), (60, 200), (0, 0))]


def test_payload_is_stored_entropy_coded_bits(codec, faces):
    files = encode_images(codec, faces)
    header, payload, coding = read_header(files[0])
    assert coding == PAYLOAD_STORED and payload[:6] != b"\xfd7zXZ\x00"
    assert (header.height, header.width) == (72, 88)
    decoded = decode_files(codec, files)
    assert [d.shape for d in decoded] == [f.shape for f in faces]
    assert np.mean([np.abs(d.astype(int) - f).mean() for d, f in zip(decoded, faces)]) < 128


def test_rate_estimate_tracks_the_real_stream(codec, faces):
    x = torch.from_numpy(np.stack([faces[0], faces[1]])).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.pad(x, (0, 8, 0, 8), mode="reflect")  # 80×96: multiples of 16
    estimated = codec(x)["bits"] / 8
    real = torch.tensor([len(p) for p in codec.compress(x)], dtype=torch.float32)
    assert torch.allclose(real, estimated, rtol=0.25, atol=40), (real, estimated)


def test_decoding_ignores_batch_composition(codec, faces):
    files = encode_images(codec, faces)
    together = decode_files(codec, files)
    alone = [decode_file(codec, f) for f in files]
    assert all(np.array_equal(a, b) for a, b in zip(together, alone))


def test_decode_is_bit_exact_in_another_process_with_other_threads(codec, faces, tmp_path):
    (tmp_path / "model.pt").write_bytes(weights_to_bytes(codec))
    files = encode_images(codec, faces, batch_size=3)
    for i, data in enumerate(files):
        (tmp_path / f"{i}.fz").write_bytes(data)
    np.save(tmp_path / "here.npy", np.stack([decode_file(codec, f)[:64, :64] for f in files]))
    script = textwrap.dedent(f"""
        import pathlib, numpy as np, torch
        torch.set_num_threads(1)
        from facezip.models.coding import decode_file
        from facezip.models.loading import codec_from_bytes
        root = pathlib.Path({str(tmp_path)!r})
        codec = codec_from_bytes((root / "model.pt").read_bytes(), "model.pt")
        out = [decode_file(codec, (root / f"{{i}}.fz").read_bytes())[:64, :64] for i in range({len(files)})]
        np.save(root / "there.npy", np.stack(out))
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    assert np.array_equal(np.load(tmp_path / "here.npy"), np.load(tmp_path / "there.npy"))


def test_weights_round_trip_keeps_the_cdf_tables(codec, faces):
    loaded = codec_from_bytes(weights_to_bytes(codec), "memory")
    assert loaded.weights_hash() == codec.weights_hash()
    files = encode_images(codec, faces)
    assert encode_images(loaded, faces) == files
    assert all(np.array_equal(a, b) for a, b in zip(decode_files(loaded, files), decode_files(codec, files)))


@pytest.mark.parametrize("payload, message", [(b"\x05", "too short"),
                                              (b"\xff\x00abc", "announces a 255-byte hyper-latent string")])
def test_damaged_streams_fail_clearly(codec, faces, payload, message):
    header, _, _ = read_header(encode_images(codec, faces[:1])[0])
    with pytest.raises(FzFormatError, match=message):
        decode_file(codec, pack_fz(header, payload, stored=True))


def test_untrained_tables_are_refused():
    fresh = create_codec("mean-scale-hyperprior", **SMALL)
    with pytest.raises(RuntimeError, match="refresh_entropy_model"):
        fresh.compress(torch.rand(1, 3, 16, 16))


def test_rate_joins_the_loss_only_when_learned(astronaut):
    torch.manual_seed(0)
    x = torch.from_numpy(astronaut[100:164, 150:214].copy()).permute(2, 0, 1)[None].float() / 255
    loss_fn = PretrainLoss(lmbda=8.0)
    codec = create_codec("mean-scale-hyperprior", **SMALL).train()
    out = codec(x)
    terms = with_rate(loss_fn(out["x_hat"], x.repeat(1, 1, 1, 1)), out["bits"], 64 * 64, codec.learns_rate)
    assert terms["loss"].requires_grad
    assert torch.isclose(terms["loss"], terms["bpp"] + terms["distortion"])
    with torch.no_grad():  # validation ranks checkpoints by the same R + λ·D
        codec.eval()
        out = codec(x)
        validation = with_rate(loss_fn(out["x_hat"], x), out["bits"], 64 * 64, codec.learns_rate)
    assert torch.isclose(validation["loss"], validation["bpp"] + validation["distortion"])
    binarized = create_codec("binarized-cae")
    fixed = binarized(x)
    plain = with_rate(loss_fn(fixed["x_hat"], x), fixed["bits"], 64 * 64, binarized.learns_rate)
    assert "distortion" not in plain and plain["bpp"] > 0


def test_aux_loss_trains_the_quantiles_alone():
    codec = create_codec("mean-scale-hyperprior", **SMALL)
    quantiles = codec.aux_parameters()
    assert len(quantiles) == 1 and quantiles[0].shape[0] == SMALL["N"]
    optimizer = torch.optim.Adam(quantiles, lr=0.1)
    before = codec.aux_loss().item()
    for _ in range(20):
        optimizer.zero_grad()
        codec.aux_loss().backward()
        optimizer.step()
    assert float(codec.aux_loss()) < before
