"""mean-scale-hyperprior: real rANS bitstreams, reproducible decoding, weights round trip, training terms."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from facezip.models import create_codec
from facezip.models.coding import decode_file, decode_files, encode_images
from facezip.models.container import PAYLOAD_STORED, FzFormatError, FzHeader, pack_fz, read_header
from facezip.models.loading import BUNDLED, codec_from_bytes, load_codec, weights_to_bytes
from facezip.models.losses import PretrainLoss, with_rate
from facezip.tasks.train.steps import make_optimizers, trainable_names
from tests.conftest import psnr

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
def gained(codec):
    """The same model with quantization gains between ½ and 2 (quant_gain)."""
    model = codec.with_options(quant_gain=True)
    with torch.no_grad():
        model.quant_gain.copy_(torch.linspace(0.5, 2.0, SMALL["M"]))
    return model.freeze()


@pytest.fixture(scope="module")
def faces(astronaut):
    return [np.ascontiguousarray(astronaut[y : y + 72, x : x + 88]) for y, x in ((20, 180), (60, 200), (0, 0))]


def test_payload_is_stored_entropy_coded_bits_that_decode_to_the_face(faces):
    codec = load_codec("mean-scale-hyperprior", BUNDLED, level=1)  # trained weights: the decode must look right
    files = encode_images(codec, faces)
    header, payload, coding = read_header(files[0])
    assert coding == PAYLOAD_STORED and payload[:6] != b"\xfd7zXZ\x00"
    assert (header.height, header.width) == (72, 88)
    decoded = decode_files(codec, files)
    assert [d.shape for d in decoded] == [f.shape for f in faces]
    # rung 1 measured 21.9–22.2 dB on these crops; a mid-grey decode scores 10.9–13.7 dB
    assert min(psnr(f, d) for f, d in zip(faces, decoded)) > 20


def test_rate_estimate_tracks_the_real_stream(codec, faces):
    x = torch.from_numpy(np.stack([faces[0], faces[1]])).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.pad(x, (0, 8, 0, 8), mode="reflect")  # 80×96: multiples of 16
    estimated = codec(x)["bits"] / 8
    real = torch.tensor([len(p) for p in codec.compress(x)], dtype=torch.float32)
    assert torch.allclose(real, estimated, rtol=0.25, atol=40), (real, estimated)


@pytest.mark.parametrize("model", ["codec", "gained"])
def test_decoding_ignores_batch_composition(model, faces, request):
    codec = request.getfixturevalue(model)
    files = encode_images(codec, faces)
    together = decode_files(codec, files)
    alone = [decode_file(codec, f) for f in files]
    assert all(np.array_equal(a, b) for a, b in zip(together, alone))


@pytest.mark.parametrize("model", ["codec", "gained"])
def test_decode_is_bit_exact_in_another_process_with_other_threads(model, faces, tmp_path, request):
    codec = request.getfixturevalue(model)
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


@pytest.mark.parametrize("payload, message", [
    (b"\x05", "payload of 1 bytes is implausibly short for a 72×88 image"),
    (b"\xff\x00" + bytes(40), "announces a 255-byte hyper-latent string"),
    (b"\x0a\x00" + bytes(40), "the hyper-latent string has 10 bytes; rANS writes whole 4-byte words"),
])
def test_damaged_streams_fail_clearly(codec, faces, payload, message):
    header, _, _ = read_header(encode_images(codec, faces[:1])[0])
    with pytest.raises(FzFormatError, match=message):
        decode_file(codec, pack_fz(header, payload, stored=True))


def test_a_stream_that_crashes_the_rans_decoder_is_an_error_not_a_crash(codec):
    # 8-byte strings claiming a 2048×2048 image: CompressAI's decoder reads megabytes past their end
    header = FzHeader(codec.name, codec.weights_hash(), 2048, 2048)
    y_string = b"\xff" * (4 * (codec.min_payload_bytes(2048, 2048) // 4) + 8)
    hostile = pack_fz(header, b"\x08\x00" + b"\xff" * 8 + y_string, stored=True)
    fine = encode_images(codec, [np.zeros((16, 16, 3), np.uint8)])[0]
    before = decode_file(codec, fine)
    with pytest.raises(FzFormatError, match=r"the entropy decoder crashed \(SIGSEGV\)"):
        decode_file(codec, hostile)
    assert np.array_equal(decode_file(codec, fine), before)  # the next decode is still right


def test_a_few_bytes_cannot_claim_a_huge_image(codec):
    bomb = pack_fz(FzHeader(codec.name, codec.weights_hash(), 4096, 4096), b"\x08\x00" + bytes(1500), stored=True)
    with pytest.raises(FzFormatError, match="implausibly short for a 4096×4096 image"):
        decode_file(codec, bomb)


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


def _padded(faces) -> torch.Tensor:
    x = torch.from_numpy(np.stack([faces[0], faces[1]])).permute(0, 3, 1, 2).float() / 255
    return torch.nn.functional.pad(x, (0, 8, 0, 8), mode="reflect")


def test_unit_gain_codes_exactly_as_the_model_without_it(codec, faces):
    unit = codec.with_options(quant_gain=True).freeze()
    assert unit.architecture() == {**SMALL, "quant_gain": True}
    x = _padded(faces)
    assert unit.compress(x) == codec.compress(x)
    # options the weights already set are theirs: nothing to add, the same model comes back
    assert codec.with_options(quant_gain=False) is codec and codec.with_options(N=999) is codec


def test_gains_trade_bits_for_fidelity_in_the_real_stream(codec, faces):
    """A larger gain is a finer quantization step: more bytes, and a decode closer to g_s(y)."""
    x = _padded(faces)
    unquantized = codec.net.g_s(codec.net.g_a(x)).clamp(0, 1)
    sizes, errors = [], []
    for gain in (0.25, 1.0, 4.0):
        model = codec.with_options(quant_gain=True)
        with torch.no_grad():
            model.quant_gain.fill_(gain)
        payloads = model.freeze().compress(x)
        sizes.append(sum(map(len, payloads)))
        errors.append(float(torch.mean((model.decompress(payloads, x.shape[-2:]) - unquantized) ** 2)))
    assert sizes == sorted(sizes) and len(set(sizes)) == 3, sizes
    assert errors == sorted(errors, reverse=True), errors


def test_gain_weights_round_trip_and_refuse_a_model_without_gains(codec, gained, faces):
    loaded = codec_from_bytes(weights_to_bytes(gained), "memory")
    assert loaded.architecture()["quant_gain"] and torch.equal(loaded.quant_gain, gained.quant_gain)
    assert loaded.weights_hash() == gained.weights_hash() != codec.weights_hash()
    assert encode_images(loaded, faces) == encode_images(gained, faces)
    with pytest.raises(ValueError, match="weights have quant_gain but the model was built with quant_gain=False"):
        create_codec("mean-scale-hyperprior", **SMALL).load_state_dict(gained.state_dict())


def test_trainable_gains_learn_alone_at_their_own_lr(codec, faces):
    """train.trainable=[quant_gain] with train.lr_by_parameter: the gains follow the rate term down,
    every weight and the entropy model's quantiles stay as they were."""
    model = codec.with_options(quant_gain=True).train()
    chosen = trainable_names(model, ["quant_gain"])
    assert chosen == {"quant_gain"} and len(trainable_names(model, [])) > 20
    with pytest.raises(ValueError, match=r"train.trainable: 'net.g_x' names no parameter .*net.g_s, net.h_a"):
        trainable_names(model, ["net.g_x"])
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in chosen)
    tcfg = OmegaConf.create({"lr": 1e-4, "aux_lr": 0.01, "lr_by_parameter": {"quant_gain": 0.05},
                             "finetune": {"lr": 3e-3, "beta1": 0.9, "weight_decay": 0.0}})
    optimizers = make_optimizers(model, "finetune", tcfg)
    assert len(optimizers) == 1  # frozen quantiles: no auxiliary optimizer
    assert [(len(g["params"]), g["lr"]) for g in optimizers[0].param_groups] == [(1, 0.05)]
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k != "quant_gain"}
    x = _padded(faces)
    rate = [float(model(x)["bits"].sum())]
    for _ in range(10):
        loss = model(x)["bits"].sum() / x[:, 0].numel()  # λ = 0: only the rate counts
        optimizers[0].zero_grad()
        loss.backward()
        optimizers[0].step()
        rate.append(float(loss) * x[:, 0].numel())
    assert rate[-1] < 0.9 * rate[0] and float(model.quant_gain.max()) < 1.0
    assert all(torch.equal(frozen[k], v) for k, v in model.state_dict().items() if k != "quant_gain")


def test_a_file_from_an_earlier_release_still_decodes(tmp_path, capsys):
    """tests/data: the astronaut's face written by facezip 1d1f613 at its --level 1, whose weights
    are rung 2 since the ladder grew. decompress finds the rung by hash and decodes the same face."""
    from facezip.cli import main

    data = Path(__file__).parent / "data"
    fz = data / "astronaut-face-hyperprior-release1.fz"
    assert main(["info", str(fz)]) == 0
    assert json.loads(capsys.readouterr().out)["bundled_level"] == 2
    out = tmp_path / "face.png"
    assert main(["decompress", str(fz), "-o", str(out), "codec.name=mean-scale-hyperprior", "--quiet"]) == 0
    decoded = np.asarray(Image.open(out)).astype(int)
    then = np.asarray(Image.open(data / "astronaut-face-hyperprior-release1.png")).astype(int)
    assert np.abs(decoded - then).max() <= 1  # the synthesis transform may round one grey level apart per machine
