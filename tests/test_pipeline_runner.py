"""The pipeline runner with small stages of its own: order, wiring, resume, --from, failure, errors.

MLflow parent/child runs are checked against a real server in test_runs_compare.py."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from facezip.cli import main
from facezip.infra.config import ConfigError
from facezip.pipelines import PipelineError, StageFailed, load_pipeline, register_stage, run_pipeline
from facezip.tasks.stage import StageContext, StageSpec

CALLS: list[tuple[str, dict]] = []
BROKEN: set[str] = set()


def make_text(ctx: StageContext, src: str, copies: int = 1) -> dict:
    """A stand-in for detect: reads an input file, writes an output file."""
    CALLS.append(("make", {"src": src, "epochs": ctx.cfg.train.epochs, "device": ctx.cfg.device}))
    text = Path(src).read_text() * copies
    Path(ctx.output).mkdir(parents=True, exist_ok=True)
    (Path(ctx.output) / "text.txt").write_text(text)
    return {"count": len(text), "file": f"{ctx.output}/text.txt"}


def shout(ctx: StageContext, data: str, weights: str | None = None) -> dict:
    """A stand-in for train: consumes an earlier stage's output, may fail on demand."""
    CALLS.append(("shout", {"data": data, "weights": weights, "epochs": ctx.cfg.train.epochs}))
    if "shout" in BROKEN:
        raise ValueError(f"{data}: cannot shout this")
    Path(ctx.output).mkdir(parents=True, exist_ok=True)
    (Path(ctx.output) / "loud.txt").write_text(Path(data).read_text().upper())
    return {"weights": f"{ctx.output}/loud.txt", "metrics": {"bpp": 0.25}}


def check_in_place(ctx: StageContext, dest: str) -> dict:
    """A stand-in for verify: checks another stage's output, writes nothing."""
    CALLS.append(("check", {"dest": dest}))
    return {"ok": Path(dest, "loud.txt").read_text().isupper()}


def touch(ctx: StageContext, note: str = "") -> dict:
    """A stand-in for any stage on object storage (its marker goes through the configured Storage)."""
    CALLS.append(("touch", {"dest": ctx.output, "note": note}))
    return {"note": note}


def _spec(name: str, work, *result_keys: str) -> StageSpec:
    return StageSpec(name, work, None, result_keys=result_keys, uses_ray=False)


register_stage("test-make", _spec("make", make_text, "count", "file"))
register_stage("test-touch", _spec("touch", touch, "note"))
register_stage("test-shout", _spec("shout", shout, "weights", "metrics"))
register_stage("test-check", _spec("check", check_in_place, "ok"))

PIPELINE = """
pipeline: {name: toy}
data: {words: WORDS}
config: {train: {epochs: 5}}
stages:
  make:
    uses: test-make
    with: {src: "${data.words}", copies: 2}
  loud:
    uses: test-shout
    with: {data: "${stages.make.result.file}", weights: "${stages.make.output}/text.txt"}
    config: {train: {epochs: 7}}
  check:
    uses: test-check
    with: {dest: "${stages.loud.output}"}
"""


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    CALLS.clear()
    BROKEN.clear()
    (tmp_path / "words.txt").write_text("hello ")
    path = tmp_path / "toy.yaml"
    path.write_text(PIPELINE.replace("WORDS", str(tmp_path / "words.txt")))
    return path


def _load(path: Path, *overrides: str):
    return load_pipeline(str(path), [f"pipeline.root={path.parent / 'run'}", "tracking.enabled=false", *overrides])


def test_runs_stages_in_order_with_wired_inputs_and_layered_config(toy: Path) -> None:
    result = run_pipeline(_load(toy, "device=cpu"))
    root = toy.parent / "run"
    assert [name for name, _ in CALLS] == ["make", "shout", "check"]
    assert CALLS[0][1] == {"src": str(toy.parent / "words.txt"), "epochs": 5, "device": "cpu"}
    assert CALLS[1][1] == {"data": f"{root}/make/text.txt", "weights": f"{root}/make/text.txt", "epochs": 7}
    assert CALLS[2][1] == {"dest": f"{root}/loud"}
    assert (root / "loud" / "loud.txt").read_text() == "HELLO HELLO "
    assert json.loads((root / "check" / "_SUCCESS.json").read_text())["ok"] is True
    assert [s["status"] for s in result["stages"].values()] == ["ran", "ran", "ran"]
    assert json.loads((root / "_PIPELINE.json").read_text())["stages"]["make"]["summary"]["count"] == 12


def test_command_line_config_wins_over_stage_sections(toy: Path) -> None:
    run_pipeline(_load(toy, "train.epochs=2"))
    assert [call["epochs"] for name, call in CALLS if name != "check"] == [2, 2]


def test_rerun_skips_complete_stages_and_from_restarts_there(toy: Path) -> None:
    run_pipeline(_load(toy))
    CALLS.clear()
    again = run_pipeline(_load(toy))
    assert CALLS == []
    assert [s["status"] for s in again["stages"].values()] == ["skipped"] * 3
    assert again["stages"]["make"]["summary"]["count"] == 12  # reread from _SUCCESS.json

    restarted = run_pipeline(_load(toy), start_from="loud")
    assert [name for name, _ in CALLS] == ["shout", "check"]
    assert [s["status"] for s in restarted["stages"].values()] == ["skipped", "ran", "ran"]


def test_failing_stage_stops_the_pipeline_keeps_earlier_outputs_and_resumes(toy: Path) -> None:
    BROKEN.add("shout")
    with pytest.raises(StageFailed, match=r"stage 'loud' \(uses: test-shout\) failed: ValueError: .*cannot shout"
                                          r".*outputs of make are kept.*resume at 'loud'"):
        run_pipeline(_load(toy))
    root = toy.parent / "run"
    assert [name for name, _ in CALLS] == ["make", "shout"]  # check never ran
    assert (root / "make" / "_SUCCESS.json").is_file()
    assert not (root / "loud" / "_SUCCESS.json").exists()

    BROKEN.clear()
    CALLS.clear()
    resumed = run_pipeline(_load(toy))
    assert [name for name, _ in CALLS] == ["shout", "check"]
    assert resumed["stages"]["make"]["status"] == "skipped"


def test_forced_restart_removes_the_stale_marker_before_running(toy: Path) -> None:
    run_pipeline(_load(toy))
    BROKEN.add("shout")
    with pytest.raises(StageFailed):
        run_pipeline(_load(toy), start_from="loud")
    assert not (toy.parent / "run" / "loud" / "_SUCCESS.json").exists()  # a plain rerun will redo it


def test_from_needs_earlier_stages_complete(toy: Path) -> None:
    with pytest.raises(PipelineError, match=r"--from loud: earlier stage 'make' is not complete"):
        run_pipeline(_load(toy), start_from="loud")
    with pytest.raises(PipelineError, match=r"no stage 'nope' \(stages: make, loud, check\)"):
        run_pipeline(_load(toy), start_from="nope")


@pytest.mark.parametrize("edit, message", [
    (("uses: test-check", "uses: no-such-stage"),
     r"stages.check: unknown stage 'uses: no-such-stage' \(known: .*detect"),
    (("copies: 2", "copies: 2, colour: red"), r"stages.make.with: 'test-make' takes no argument\(s\) \['colour'\]"),
    (("${stages.make.result.file}", "${stages.check.output}"), r"stages.loud refers to stages.check, which is not an"),
    (("${stages.make.result.file}", "${stages.make.result.fil}"),
     r"stages.loud refers to stages.make.result.fil, but 'test-make' has no result 'fil' \(it has: count, file\)"),
    (("stages:", "stagez: {}\nstages:"), r"unknown top-level key\(s\) \['stagez'\]"),
])
def test_definition_errors_name_the_key(toy: Path, edit: tuple[str, str], message: str) -> None:
    toy.write_text(toy.read_text().replace(*edit))
    with pytest.raises(PipelineError, match=message):
        _load(toy)
    assert CALLS == []


def test_bad_config_keys_are_reported_before_any_stage_runs(toy: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'"):
        _load(toy, "train.epoch=3")
    toy.write_text(toy.read_text().replace("epochs: 7", "epochs: seven"))
    pipeline = _load(toy)
    with pytest.raises(ConfigError, match=r"stages.loud.config: config key 'train.epochs' expects int"):
        run_pipeline(pipeline)
    assert [name for name, _ in CALLS] == ["make"]


def test_missing_pipeline_lists_the_bundled_ones() -> None:
    with pytest.raises(PipelineError, match=r"pipeline 'nope': no such file.*bundled: .*demo"):
        load_pipeline("nope")


def test_cli_run_reports_stages_and_failures(toy: Path, capsys) -> None:
    root = toy.parent / "run"
    assert main(["run", str(toy), f"pipeline.root={root}", "tracking.enabled=false"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [(line[0], line[1], line[3], line[4]) for line in lines] == [
        ("make", "ran", "s", f"{root}/make"), ("loud", "ran", "s", f"{root}/loud"),
        ("check", "ran", "s", f"{root}/check")]
    BROKEN.add("shout")
    assert main(["run", str(toy), "--from", "loud", f"pipeline.root={root}", "tracking.enabled=false"]) == 1
    assert "stage 'loud' (uses: test-shout) failed: ValueError" in capsys.readouterr().err
    assert main(["run", "no-such-pipeline"]) == 2
    assert "no such file, nor a bundled pipeline" in capsys.readouterr().err


def test_run_root_on_s3(s3_bucket) -> None:
    storage, bucket = s3_bucket
    CALLS.clear()
    definition = ("pipeline: {name: cloud}\n"
                  "stages:\n"
                  "  first: {uses: test-touch, with: {note: a}}\n"
                  "  second: {uses: test-touch, with: {note: '${stages.first.result.note}${stages.first.output}'}}\n")
    overrides = [f"pipeline.root={bucket}/runs/1", f"storage.endpoint_url={storage.endpoint_url}",
                 "tracking.enabled=false"]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
        handle.write(definition)
        handle.flush()
        first = run_pipeline(load_pipeline(handle.name, overrides))
        assert CALLS == [("touch", {"dest": f"{bucket}/runs/1/first", "note": "a"}),
                         ("touch", {"dest": f"{bucket}/runs/1/second", "note": f"a{bucket}/runs/1/first"})]
        assert json.loads(storage.read_bytes(f"{bucket}/runs/1/_PIPELINE.json"))["root"] == f"{bucket}/runs/1"
        again = run_pipeline(load_pipeline(handle.name, overrides), start_from="second")
    assert [s["status"] for s in first["stages"].values()] == ["ran", "ran"]
    assert [s["status"] for s in again["stages"].values()] == ["skipped", "ran"]
    assert len(CALLS) == 3
