"""``facezip compress / decompress / info / sample / config`` as a user runs them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from facezip.cli import main
from facezip.models import create_codec
from facezip.models.loading import weights_to_bytes


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> list[str]:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "cae.pt"
    path.write_bytes(weights_to_bytes(create_codec("binarized-cae").freeze()))
    return [f"codec.weights={path}", "codec.name=binarized-cae"]


@pytest.fixture
def images(tmp_path, astronaut):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(astronaut[:64, :80]).save(folder / "rgb.png")
    Image.fromarray(astronaut[:40, :40, 0]).save(folder / "grey.png")
    Image.fromarray(np.dstack([astronaut[:32, :48], np.full((32, 48), 128, np.uint8)])).save(folder / "alpha.png")
    (folder / "broken.jpg").write_bytes(b"this is text, not a JPEG")
    return folder


def test_damaged_input_is_rejected_unless_accepted(images, tmp_path, weights, capsys):
    damaged = bytearray((images / "rgb.png").read_bytes())
    damaged[damaged.rindex(b"IEND") - 5] ^= 0x01  # the IDAT chunk's CRC
    (images / "damaged.png").write_bytes(bytes(damaged))
    out = tmp_path / "fz"
    assert main(["compress", str(images / "damaged.png"), "-o", str(out) + "/", *weights, "--quiet"]) == 1
    assert "damaged: CRC error in the 'IDAT' chunk" in capsys.readouterr().err and not out.exists()
    assert main(["compress", str(images / "damaged.png"), "-o", str(out) + "/", *weights, "--quiet",
                 "compress.accept_damaged=true"]) == 0
    assert "damaged, kept as asked: CRC error" in capsys.readouterr().out and (out / "damaged.fz").exists()


def test_compress_many_with_one_bad_file(images, tmp_path, weights, capsys):
    out = tmp_path / "fz"
    inputs = sorted(str(p) for p in images.iterdir())
    assert main(["compress", *inputs, "-o", str(out), *weights, "--quiet"]) == 1  # one failed
    captured = capsys.readouterr()
    assert "broken.jpg: unreadable" in captured.err and "3 of 4 done, 1 failed" in captured.err
    assert "converted greyscale to RGB" in captured.out and "alpha composited on white" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["alpha.fz", "grey.fz", "rgb.fz"]

    restored = tmp_path / "png"
    assert main(["decompress", *sorted(str(p) for p in out.iterdir()), "-o", str(restored), *weights, "--quiet"]) == 0
    assert Image.open(restored / "rgb.png").size == (80, 64)
    assert Image.open(restored / "grey.png").mode == "RGB"

    capsys.readouterr()
    assert main(["info", str(out / "rgb.fz")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["codec"], info["height"], info["width"]) == ("binarized-cae", 64, 80)
    assert info["bpp"] == pytest.approx(info["file_bytes"] * 8 / (64 * 80), abs=1e-3)


def test_single_output_file_and_damaged_input(images, tmp_path, weights, capsys):
    target = tmp_path / "one.fz"
    assert main(["compress", str(images / "rgb.png"), "-o", str(target), *weights, "--quiet"]) == 0
    damaged = tmp_path / "damaged.fz"
    damaged.write_bytes(target.read_bytes()[:-10])
    assert main(["decompress", str(damaged), str(target), "-o", str(tmp_path / "out"), *weights, "--quiet"]) == 1
    assert "damaged.fz: truncated data" in capsys.readouterr().err
    assert (tmp_path / "out" / "one.png").is_file()


def test_usage_and_config_errors_exit_2(images, tmp_path, capsys):
    assert main(["compress", str(images / "rgb.png"), "-o", str(tmp_path), "train.epochz=1"]) == 2
    assert "unknown config key 'train.epochz'" in capsys.readouterr().err
    assert main(["compress", str(images / "rgb.png"), "-o", str(tmp_path), "codec.weights=/no/such.pt"]) == 2
    assert "file not found: /no/such.pt" in capsys.readouterr().err
    assert main(["info", str(images / "broken.jpg")]) == 1
    assert "wrong magic" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["compress"])
    assert exit_info.value.code == 2


def test_sample_prints_bpp_and_psnr(tmp_path, weights, capsys):
    assert main(["sample", "-o", str(tmp_path / "s"), *weights]) == 0
    out = capsys.readouterr().out
    assert "bpp" in out and "PSNR" in out and (tmp_path / "s" / "restored.png").is_file()


def test_config_prints_resolved_tree(capsys):
    assert main(["config", "train.epochs=9"]) == 0
    assert "epochs: 9" in capsys.readouterr().out


def test_overrides_are_told_from_paths_and_may_name_keys_with_dashes():
    from facezip.cli.common import split_overrides

    items = ["faces/", "evaluate.qualities.avif-speed4=[10,50]", "/data/x=1.png", "codec.level=2"]
    assert split_overrides(items) == (["faces/", "/data/x=1.png"],
                                      ["evaluate.qualities.avif-speed4=[10,50]", "codec.level=2"])
