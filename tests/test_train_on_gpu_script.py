"""scripts/pack_faces.py and scripts/train_on_gpu.py, run as a user runs them (on the CPU here):
detect outputs → one compact file → a budgeted run that saves weights and goes on where it stopped."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from facezip.models.loading import load_codec

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _detect_output(folder: Path, name: str, count: int, seed: int) -> Path:
    """A detect output's faces/ folder: smooth 96 px crops, their boxes, landmarks and crop boxes."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(coarse).resize((96, 96), Image.Resampling.BICUBIC).save(buffer, format="PNG")
        rows.append({"id": f"img{i}", "image_bytes": buffer.getvalue(), "face_box_in_crop": [16.0, 12.0, 80.0, 90.0],
                     "landmarks": [30.0, 40.0, 60.0, 40.0, 45.0, 55.0, 32.0, 70.0, 58.0, 70.0],
                     "crop_box": [0, 0, 96, 96], "probability": 0.99})
    (folder / name / "faces").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / name / "faces" / "part-0.parquet")
    return folder / name


def _run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *arguments], capture_output=True, text=True, timeout=600)


def test_pack_then_train_for_a_budget_then_go_on(tmp_path):
    tight, wide = _detect_output(tmp_path, "tight", 12, 1), _detect_output(tmp_path, "wide", 12, 2)
    packed = tmp_path / "faces.parquet"
    done = _run(str(SCRIPTS / "pack_faces.py"), str(packed), str(tight), str(wide))
    assert done.returncode == 0, done.stderr
    table = pq.read_table(packed)
    assert table.num_rows == 24 and {"id", "image_bytes", "face_box_in_crop", "landmarks"} <= set(table.column_names)
    with Image.open(io.BytesIO(table.column("image_bytes")[0].as_py())) as first:
        assert first.format == "WEBP" and first.size == (96, 96)
    too_big = _run(str(SCRIPTS / "pack_faces.py"), str(tmp_path / "no.parquet"), str(tight), "--max-mib", "0.001")
    assert too_big.returncode == 1 and "over --max-mib 0.001" in too_big.stderr
    assert not (tmp_path / "no.parquet").exists()

    out = tmp_path / "run"
    train = [str(SCRIPTS / "train_on_gpu.py"), str(packed), str(out), "--minutes", "0.001", "--loader-workers", "1",
             "train.batch_size=4", "train.crop_size=64", "train.log_every_steps=1", "train.val_fraction=0.25",
             "train.trainable=[rec]", "train.finetune.facenet_weight=0", "train.finetune.face_weight=2"]
    first = _run(*train)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["step"] == 1 and summary["device"] == "cpu" and np.isfinite(summary["val_psnr"])
    trained, bundled = (load_codec("comcnn-reccnn", weights) for weights in (str(out / "comcnn-reccnn.pt"), "bundled"))
    assert trained.metadata["lmbda"] == 2000.0  # the bundled model's λ
    assert trained.metadata["steps"] == bundled.metadata["steps"] + 1  # the steps the model has had, in all
    assert trained.weights_hash() != bundled.weights_hash()

    again = _run(*train)  # the same command goes on from state.pt
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["step"] == 2
    assert load_codec("comcnn-reccnn", str(out / "comcnn-reccnn.pt")).metadata["steps"] == bundled.metadata["steps"] + 2
    assert len((out / "log.jsonl").read_text().splitlines()) == 4  # a step line and a summary per run
