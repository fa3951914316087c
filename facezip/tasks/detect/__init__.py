"""Stage ``detect``: a raw face database → a Parquet dataset of MTCNN face crops.

Under DEST: ``faces/`` (one row per kept face), ``rejected/`` (one row per image not kept,
with its reason), ``stats.json``, ``contact_sheet.png`` and, last, ``_SUCCESS.json``.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import Any

from omegaconf import DictConfig
from tqdm import tqdm

from facezip.infra.device import resolve_device
from facezip.infra.ray_runtime import cluster_cpus
from facezip.infra.readers import open_reader
from facezip.infra.slices import reader_slices, run_on_actors
from facezip.infra.storage import Storage, join, parquet_bytes
from facezip.tasks.detect.config import DetectConfig
from facezip.tasks.detect.faces import DETECTION_SCHEMA, FACE_COLUMNS, REJECTED_COLUMNS, select_faces
from facezip.tasks.detect.parts import FACES_DIR, REJECTED_DIR, DetectWorker, part_url
from facezip.tasks.detect.report import AccountingError, Counts, check_accounting, contact_sheet, png_bytes
from facezip.tasks.stage import StageContext, StageSpec, run_stage

__all__ = ["run_detect", "STAGE", "select_faces", "AccountingError", "DETECTION_SCHEMA", "FACE_COLUMNS",
           "REJECTED_COLUMNS"]
log = logging.getLogger(__name__)


def run_detect(cfg: DictConfig, src: str, dest: str, progress: bool = True) -> dict[str, Any]:
    """Detect and crop faces of every image under ``src``; write the outputs under ``dest``.

    Returns the summary also written to ``dest/_SUCCESS.json``. Raises AccountingError when
    the outputs do not account for every input."""
    return run_stage(STAGE, cfg, dest, progress, src=src)


def detect(ctx: StageContext, src: str) -> dict[str, Any]:
    """The stage's work. Workers write their own Parquet parts as their slices finish (the driver
    holds only counts and a few sample crops)."""
    cfg, storage, dest = ctx.cfg, ctx.storage, ctx.output
    reader = open_reader(src, storage, cfg.detect.layout)
    actors, gpus, device = _actor_resources(cfg)
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    inputs = reader.count()
    log.info("detect: %d images in %s (%s layout), %d MTCNN actor(s) on %s", inputs, src, reader.layout,
             actors, device)
    outputs = {"faces": join(dest, FACES_DIR), "rejected": join(dest, REJECTED_DIR)}
    for url in outputs.values():  # a rerun replaces, never appends
        storage.remove(url)
    counts, samples = _detect_parts(ctx, reader, inputs, actors, device, gpus)
    check_accounting(counts)
    if inputs != counts.inputs:
        raise AccountingError(f"{src} listed {inputs} images, but the workers were given {counts.inputs}")
    for folder, columns in ((FACES_DIR, FACE_COLUMNS), (REJECTED_DIR, REJECTED_COLUMNS)):
        _ensure_schema_file(dest, folder, columns, storage)
    stats = _stats(counts, src, dest, reader.layout, started, time.perf_counter() - clock, device, actors)
    storage.write_bytes_atomic(join(dest, "stats.json"), _json(stats))
    sheet = contact_sheet(samples)
    if sheet is not None:
        outputs["contact_sheet"] = join(dest, "contact_sheet.png")
        storage.write_bytes_atomic(outputs["contact_sheet"], png_bytes(sheet))
    _log_run(ctx, stats, counts, sheet)
    log.info("detect: kept %d of %d images (%.1f%%), %d faces; rejected %s", counts.kept_images, inputs,
             100 * counts.kept_fraction, counts.faces, counts.rejected_by_reason or "none")
    return {**stats, "outputs": {**outputs, "stats": join(dest, "stats.json")}}


STAGE = StageSpec("detect", detect, DetectConfig, result_keys=(
    "inputs", "kept_images", "faces", "rejected", "rejected_by_reason", "kept_fraction", "outputs"),
    tags=lambda arguments: {"facezip.src": str(arguments["src"])})


def _detect_parts(ctx: StageContext, reader, inputs: int, actors: int, device: str,
                  gpus: float) -> tuple[Counts, list[bytes]]:
    """Every slice through the MTCNN actors; the summed counts and the first slices' sample crops."""
    settings = ctx.settings  # the typed DetectConfig
    wanted = settings.contact_sheet_faces
    worker = {"detect_cfg": settings, "device": device, "dest": ctx.output, "storage": ctx.storage,
              "samples": wanted}
    counts, samples = Counts(), {}
    with tqdm(total=inputs, desc="detect", unit="img", disable=not ctx.progress) as bar:
        for part in run_on_actors(DetectWorker, worker, reader_slices(reader, settings.rows_per_file),
                                  actors=actors, num_cpus=settings.cpus_per_actor, num_gpus=gpus):
            counts += part.counts
            samples[part.number] = part.samples
            samples = dict(sorted(samples.items())[: max(1, wanted)])  # crops of the lowest slices suffice
            bar.update(part.counts.inputs)
    return counts, [png for number in sorted(samples) for png in samples[number]][:wanted]


def _actor_resources(cfg: DictConfig) -> tuple[int, float, str]:
    """(actors, GPUs per actor, actor device): a GPU share only when the device is CUDA."""
    device = resolve_device(cfg.device)
    actors = cfg.detect.num_actors or max(1, int(cluster_cpus()))
    gpus = cfg.detect.gpus_per_actor
    if gpus is None:
        gpus = min(1.0, 1.0 / actors) if device.type == "cuda" else 0.0
    return actors, float(gpus), (str(device) if gpus > 0 else "cpu")


def _ensure_schema_file(dest: str, folder: str, columns: list[str], storage: Storage) -> None:
    """An output with no rows still gets a file, so readers find its schema."""
    fs, path = storage.fs(join(dest, folder))
    if not fs.exists(path) or not fs.ls(path, detail=False):
        empty = DETECTION_SCHEMA.empty_table().select(columns)
        storage.write_bytes_atomic(part_url(dest, folder, 0), parquet_bytes(empty))


def _stats(counts: Counts, src: str, dest: str, layout: str, started: datetime, duration: float, device: str,
           actors: int) -> dict[str, Any]:
    return {**counts.as_dict(), "src": src, "dest": dest, "layout": layout, "device": device, "actors": actors,
            "started_at": started.isoformat(timespec="seconds"), "duration_s": round(duration, 3),
            "images_per_s": round(counts.inputs / duration, 3) if duration > 0 else None}


def _log_run(ctx: StageContext, stats: dict[str, Any], counts: Counts, sheet) -> None:
    metrics = {key: stats[key] for key in ("inputs", "kept_images", "faces", "rejected", "kept_fraction",
                                           "duration_s", "images_per_s") if stats[key] is not None}
    metrics.update({f"rejected_{reason}": n for reason, n in counts.rejected_by_reason.items()})
    ctx.log_metrics(metrics)
    ctx.log_dict(stats, "stats.json")
    ctx.log_image(sheet, "contact_sheet.png")


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8")
