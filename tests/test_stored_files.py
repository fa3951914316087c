"""Files written by earlier releases keep decoding (tests/data/README.md says how each was made)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facezip.cli import main

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("codec", ["binarized-cae", "comcnn-reccnn"])
def test_a_file_of_the_release_before_the_default_codec_changed_still_decodes(codec, tmp_path, capsys):
    fz = DATA / f"astronaut-face-{codec}-release8.fz"
    assert main(["info", str(fz)]) == 0
    assert json.loads(capsys.readouterr().out)["codec"] == codec
    out = tmp_path / "face.png"
    assert main(["decompress", str(fz), "-o", str(out), "--quiet"]) == 0  # the codec comes from the file
    decoded = np.asarray(Image.open(out)).astype(int)
    then = np.asarray(Image.open(DATA / f"astronaut-face-{codec}-release8.png")).astype(int)
    assert decoded.shape == (160, 160, 3)
    assert np.abs(decoded - then).max() <= 1  # convolutions may round one grey level apart per machine
