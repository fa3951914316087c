"""Files written by earlier releases keep decoding (tests/data/README.md says how each was made)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facezip.cli import main

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("codec,release", [("binarized-cae", 8), ("comcnn-reccnn", 8), ("comcnn-reccnn", 9),
                                                 ("comcnn-reccnn", 10)])
def test_a_file_of_an_earlier_release_still_decodes(codec, release, tmp_path, capsys):
    """Release 8: before the default codec changed; release 9: the default codec's first bundled
    weights, since replaced (weights/retired/), and its packed AVIF header; release 10: its
    augmented weights, the last before face_gain (retired too)."""
    fz = DATA / f"astronaut-face-{codec}-release{release}.fz"
    assert main(["info", str(fz)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["codec"] == codec
    if codec == "comcnn-reccnn":  # weights of every release before 11 sample the image uniformly
        assert info["face_region"].startswith("none")
    out = tmp_path / "face.png"
    assert main(["decompress", str(fz), "-o", str(out), "--quiet"]) == 0  # the codec comes from the file
    decoded = np.asarray(Image.open(out)).astype(int)
    then = np.asarray(Image.open(DATA / f"astronaut-face-{codec}-release{release}.png")).astype(int)
    assert decoded.shape == (160, 160, 3)
    assert np.abs(decoded - then).max() <= 1  # convolutions may round one grey level apart per machine
