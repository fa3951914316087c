"""Rate ladders: several facezip codecs and every rung of a ladder in one evaluate run, BD-rate
against several anchors, speed, and ``--level`` in compress / decompress / info / sample.

The "bundled" ladder is three untrained mean-scale-hyperprior models written to a tmp folder
(the real ladder is trained elsewhere and not shipped with the tests)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import facezip.models.loading as loading
from facezip.cli import main
from facezip.infra.storage import Storage
from facezip.models.loading import load_codec, weights_to_bytes
from facezip.models.registry import codec_class, create_codec
from facezip.pipelines.config import load_config
from facezip.tasks.evaluate import run_evaluate
from facezip.tasks.evaluate.codecs import build_levels, parse_model_entry
from facezip.tasks.evaluate.report import bjontegaard, speed_table

HYPERPRIOR = "mean-scale-hyperprior"
RUNGS = (1, 2, 3)


def _untrained_hyperprior(seed: int, latent_scale: float = 1.0):
    """Untrained; a larger ``latent_scale`` spreads the latents over more quantisation bins: more bytes."""
    torch.manual_seed(seed)
    codec = create_codec(HYPERPRIOR, N=16, M=24)
    with torch.no_grad():
        codec.net.g_a[-1].weight.mul_(latent_scale)
    codec.refresh_entropy_model()
    return codec.freeze()


@pytest.fixture(scope="module")
def ladder_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ladder")
    for rung in RUNGS:
        codec = _untrained_hyperprior(rung, latent_scale=(1, 20, 100)[rung - 1])
        (folder / f"{HYPERPRIOR}-l{rung}.pt").write_bytes(weights_to_bytes(codec))
    (folder / "stranger.pt").write_bytes(weights_to_bytes(_untrained_hyperprior(99)))  # in no ladder
    return folder


@pytest.fixture
def bundled_ladder(monkeypatch, ladder_dir) -> Path:
    """Make ``ladder_dir`` the bundled ladder of mean-scale-hyperprior (other codecs unchanged)."""
    real_path, real_levels = loading.bundled_weights_path, loading.bundled_levels

    def weights_path(codec_name, level=None):
        if codec_name != HYPERPRIOR:
            return real_path(codec_name, level)
        return ladder_dir / f"{HYPERPRIOR}-l{codec_class(HYPERPRIOR).default_level if level is None else level}.pt"

    def levels(codec_name):
        return list(RUNGS) if codec_name == HYPERPRIOR else real_levels(codec_name)

    monkeypatch.setattr(loading, "bundled_weights_path", weights_path)
    monkeypatch.setattr(loading, "bundled_levels", levels)
    return ladder_dir


@pytest.fixture(scope="module")
def crops(tmp_path_factory, astronaut) -> Path:
    folder = tmp_path_factory.mktemp("crops")
    for i in range(3):  # 32×32: too small for MS-SSIM, which is skipped (slow on a busy CPU)
        Image.fromarray(astronaut[40 + 40 * i : 72 + 40 * i, 160:192]).save(folder / f"face{i}.png")
    return folder


def _evaluate_config(judge: Path, *extra: str):
    return load_config([], [f"evaluate.judges=[{judge}]", "evaluate.recognizer_input_size=64",
                            "evaluate.recognizer_normalization=unit", "evaluate.detect_faces=false",
                            "evaluate.baselines=[jpeg,avif]", "evaluate.jpeg_qualities=[5,90]",
                            "evaluate.avif_qualities=[20,80]", "evaluate.bd_metrics=[psnr,identity]",
                            "evaluate.samples=1", "evaluate.reference=false", "tracking.enabled=false",
                            "device=cpu", *extra])


def test_a_ladder_is_one_curve_with_a_point_per_rung_and_bd_rates_vs_two_anchors(
        bundled_ladder, crops, tiny_judge, tmp_path):
    cae = tmp_path / "cae.pt"
    torch.manual_seed(0)
    cae.write_bytes(weights_to_bytes(create_codec("binarized-cae").freeze()))
    cfg = _evaluate_config(tiny_judge, f"evaluate.models=[{HYPERPRIOR}:ladder,binarized-cae:{cae}]")
    summary = run_evaluate(cfg, str(crops), str(tmp_path / "eval"))

    labels = [level["label"] for level in summary["levels"]]
    assert labels == [f"{HYPERPRIOR}-l1", f"{HYPERPRIOR}-l2", f"{HYPERPRIOR}-l3", "binarized-cae-cae",
                      "jpeg-q5", "jpeg-q90", "avif-q20", "avif-q80"]
    ladder = [level for level in summary["levels"] if level["codec"] == HYPERPRIOR]
    assert [level["kind"] for level in ladder] == ["facezip"] * 3
    assert len({level["bpp_mean"] for level in ladder}) == 3  # three different models, three rates
    for level in summary["levels"]:
        assert level["ok"] == 3
        assert level["encode_ms"] > 0 and level["decode_ms"] > 0  # measured in this run

    bd = {(r["codec"], r["anchor"], r["metric"]): r for r in summary["bjontegaard"]}
    for anchor in ("jpeg", "avif"):
        for metric in ("psnr", f"identity.{tiny_judge.stem}.mean_cosine"):
            assert bd[(HYPERPRIOR, anchor, metric)]["points"] == 3
            one_point = bd[("binarized-cae", anchor, metric)]
            assert one_point["points"] == 1
            assert "one point" in one_point["note"] or "outside" in one_point["note"]
    assert ("avif", "jpeg", "psnr") in bd and ("jpeg", "avif", "psnr") in bd
    assert isinstance(bd[("avif", "jpeg", "psnr")]["bd_rate_percent"], float)

    dest = tmp_path / "eval"
    assert (dest / f"rate_identity_{tiny_judge.stem}.png").stat().st_size > 0
    report = (dest / "report.md").read_text()
    assert "Table 5: speed" in report and f"| {HYPERPRIOR} | l2 |" in report
    assert "| jpeg | q90 |" in report and "×" in report


def _summary(codec, setting, bpp, psnr, kind=None):
    return {"codec": codec, "kind": kind or codec, "setting": setting, "ok": 4, "bpp_mean": bpp, "psnr_mean": psnr,
            "encode_ms": 2.0 * bpp, "decode_ms": bpp}


def test_bd_rates_of_a_three_point_curve_against_two_anchors_known_answer():
    rates = [0.25, 0.5, 1.0, 2.0]
    jpeg = [_summary("jpeg", f"q{i}", r, 30 + 20 * math.log10(r)) for i, r in enumerate(rates)]
    avif = [_summary("avif", f"q{i}", 0.5 * r, 30 + 20 * math.log10(r)) for i, r in enumerate(rates)]
    ladder = [_summary(HYPERPRIOR, f"l{n}", 0.4 * r, 30 + 20 * math.log10(r), "facezip")
              for n, r in enumerate(rates[1:], 1)]
    rows = bjontegaard([*jpeg, *avif, *ladder], ["jpeg", "avif"], ["psnr"], [], has_pairs=False)
    by_key = {(r["codec"], r["anchor"]): r for r in rows}
    assert by_key[(HYPERPRIOR, "jpeg")]["bd_rate_percent"] == pytest.approx(-60.0, abs=1e-9)
    assert by_key[(HYPERPRIOR, "avif")]["bd_rate_percent"] == pytest.approx(-20.0, abs=1e-9)
    assert by_key[("avif", "jpeg")]["bd_rate_percent"] == pytest.approx(-50.0, abs=1e-9)
    assert by_key[(HYPERPRIOR, "jpeg")]["points"] == 3 and by_key[(HYPERPRIOR, "jpeg")]["note"] == ""
    assert bjontegaard([*jpeg, *ladder], ["webp"], ["psnr"], [], has_pairs=False) == []  # not measured: no rows


def test_speed_table_is_relative_to_the_mean_jpeg_speed():
    summaries = [_summary("jpeg", "q10", 1.0, 30.0), _summary("jpeg", "q90", 3.0, 40.0),
                 _summary(HYPERPRIOR, "l1", 0.2, 31.0, "facezip")]
    summaries[2].update(encode_ms=20.0, decode_ms=1.0)
    rows = speed_table(summaries).splitlines()
    assert rows[-1] == f"| {HYPERPRIOR} | l1 | 20.00 | 5.0× | 1.00 | 0.5× |"  # jpeg: 4 ms encode, 2 ms decode


def test_unknown_codecs_and_levels_in_evaluate_models_are_clear_errors(bundled_ladder):
    cfg = load_config([], ["device=cpu", "evaluate.baselines=[]"])
    storage, device = Storage(), torch.device("cpu")

    def levels_of(entry):
        cfg.evaluate.models = [entry]
        return build_levels(cfg, storage, device)

    with pytest.raises(ValueError, match="unknown codec 'jpegxl' in 'jpegxl:bundled'"):
        levels_of("jpegxl:bundled")
    with pytest.raises(ValueError, match="no bundled weights for codec 'mean-scale-hyperprior' at level 7; "
                                         "bundled levels: 1, 2, 3"):
        levels_of(f"{HYPERPRIOR}:l7")
    with pytest.raises(ValueError, match="'binarized-cae' has no bundled rate ladder"):
        levels_of("binarized-cae:ladder")
    assert [level.label for level in levels_of(f"{HYPERPRIOR}:l3")] == ["reference-raw", f"{HYPERPRIOR}-l3"]
    assert parse_model_entry("models:/faces/2", "binarized-cae").codec == "binarized-cae"  # plain: codec.name
    assert parse_model_entry(f"{HYPERPRIOR}:models:/faces/2", "binarized-cae").weights == "models:/faces/2"


def test_cli_evaluate_level_and_unknown_codec(bundled_ladder, crops, tiny_judge, tmp_path, capsys):
    common = [str(crops), "--judge", str(tiny_judge), "--baselines", "jpeg", "evaluate.jpeg_qualities=[50]",
              "evaluate.recognizer_input_size=64", "evaluate.detect_faces=false", "tracking.enabled=false",
              "evaluate.bd_anchors=[jpeg]", f"codec.name={HYPERPRIOR}"]
    assert main(["evaluate", common[0], str(tmp_path / "e"), *common[1:], "--level", "3"]) == 0
    assert "facezip-l3" in capsys.readouterr().out  # codec.* is the curve "facezip"; --level picked rung 3
    assert main(["evaluate", common[0], str(tmp_path / "e2"), *common[1:], "--codec", "nosuch:ladder"]) == 2
    assert "unknown codec 'nosuch'" in capsys.readouterr().err


def test_compress_at_two_levels_then_decompress_finds_each_rung_by_hash(bundled_ladder, ladder_dir, astronaut,
                                                                         tmp_path, capsys):
    face = astronaut[40:104, 150:214]
    Image.fromarray(face).save(tmp_path / "face.png")
    for level in (1, 3):
        assert main(["compress", str(tmp_path / "face.png"), "-o", str(tmp_path / f"l{level}.fz"), "--level",
                     str(level), f"codec.name={HYPERPRIOR}", "device=cpu", "--quiet"]) == 0
    first, third = (tmp_path / "l1.fz").read_bytes(), (tmp_path / "l3.fz").read_bytes()
    assert first != third

    out = tmp_path / "png"
    assert main(["decompress", str(tmp_path / "l1.fz"), str(tmp_path / "l3.fz"), "-o", str(out), "device=cpu",
                 "--quiet"]) == 0  # no --level, no codec.name: both taken from the files
    for level in (1, 3):
        expected = _decode_with(ladder_dir / f"{HYPERPRIOR}-l{level}.pt", tmp_path / f"l{level}.fz")
        assert np.array_equal(np.asarray(Image.open(out / f"l{level}.png")), expected)

    capsys.readouterr()
    assert main(["info", str(tmp_path / "l3.fz")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["codec"], info["bundled_level"]) == (HYPERPRIOR, 3)

    assert main(["compress", str(tmp_path / "face.png"), "-o", str(tmp_path / "x.fz"), f"codec.name={HYPERPRIOR}",
                 f"codec.weights={ladder_dir / 'stranger.pt'}", "device=cpu", "--quiet"]) == 0
    assert main(["decompress", str(tmp_path / "x.fz"), "-o", str(tmp_path / "x.png"), "--quiet"]) == 1
    assert "match none of bundled levels 1, 2, 3; give codec.weights=PATH" in capsys.readouterr().err
    assert main(["decompress", str(tmp_path / "x.fz"), "-o", str(tmp_path / "x.png"), f"codec.name={HYPERPRIOR}",
                 f"codec.weights={ladder_dir / 'stranger.pt'}", "--quiet"]) == 0


def test_unknown_level_is_a_usage_error(bundled_ladder, astronaut, tmp_path, capsys):
    Image.fromarray(astronaut[:32, :32]).save(tmp_path / "face.png")
    assert main(["compress", str(tmp_path / "face.png"), "-o", str(tmp_path / "f.fz"), "--level", "7",
                 f"codec.name={HYPERPRIOR}", "--quiet"]) == 2
    assert "no bundled weights for codec 'mean-scale-hyperprior' at level 7; bundled levels: 1, 2, 3" in \
        capsys.readouterr().err
    assert main(["sample", "-o", str(tmp_path / "s"), "--level", "1", f"codec.name={HYPERPRIOR}"]) == 0
    sample = capsys.readouterr().out
    assert f"codec {HYPERPRIOR} (weights " in sample and ", level 1)" in sample


def _decode_with(weights: Path, fz: Path) -> np.ndarray:
    from facezip.models.coding import decode_file

    return decode_file(load_codec(HYPERPRIOR, str(weights)), fz.read_bytes())
