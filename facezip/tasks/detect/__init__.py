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

import pyarrow as pa
import pyarrow.compute as pc
from omegaconf import DictConfig, OmegaConf

from facezip.infra.device import resolve_device
from facezip.infra.ray_runtime import cluster_cpus, init_ray
from facezip.infra.readers import DETECT_FACES_DIR, arrow_filesystem, open_reader
from facezip.infra.storage import Storage, join
from facezip.infra.tracking import start_run
from facezip.tasks.detect.faces import (DETECTION_SCHEMA, FACE_COLUMNS, REJECTED_COLUMNS, DetectFaces,
                                        select_faces)
from facezip.tasks.detect.report import (AccountingError, Counts, check_accounting, contact_sheet,
                                         count_outcomes, png_bytes)

__all__ = ["run_detect", "select_faces", "AccountingError", "DETECTION_SCHEMA", "FACE_COLUMNS", "REJECTED_COLUMNS"]
log = logging.getLogger(__name__)


def run_detect(cfg: DictConfig, src: str, dest: str) -> dict[str, Any]:
    """Detect and crop faces of every image under ``src``; write the outputs under ``dest``.

    Returns the summary also written to ``dest/_SUCCESS.json``. Raises AccountingError when
    the outputs do not account for every input."""
    storage = Storage.from_config(cfg.storage)
    reader = open_reader(src, storage, cfg.detect.layout)
    init_ray(cfg.ray)
    actors, gpus, device = _actor_resources(cfg)
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    with start_run(cfg, "detect", tags={"facezip.stage": "detect", "facezip.src": src}) as run:
        inputs = reader.count()
        log.info("detect: %d images in %s (%s layout), %d MTCNN actor(s) on %s", inputs, src, reader.layout,
                 actors, device)
        detections = reader.to_ray_dataset().map_batches(
            DetectFaces, fn_constructor_kwargs={"detect_cfg": OmegaConf.to_container(cfg.detect), "device": device},
            batch_size=cfg.detect.batch_size, batch_format="pyarrow", concurrency=actors,
            num_cpus=cfg.detect.cpus_per_actor, num_gpus=gpus).materialize()
        counts = count_outcomes(inputs, _columns(detections, ["face_index", "reason"]))
        check_accounting(counts)
        outputs = {"faces": join(dest, DETECT_FACES_DIR), "rejected": join(dest, "rejected")}
        _write_part(detections, outputs["faces"], FACE_COLUMNS, counts.faces, storage, cfg.detect.rows_per_file)
        _write_part(detections, outputs["rejected"], REJECTED_COLUMNS, counts.rejected, storage,
                    cfg.detect.rows_per_file)
        duration = time.perf_counter() - clock
        stats = _stats(counts, src, dest, reader.layout, started, duration, device, actors)
        storage.write_bytes_atomic(join(dest, "stats.json"), _json(stats))
        sheet = contact_sheet(_sample_crops(detections, cfg.detect.contact_sheet_faces))
        if sheet is not None:
            outputs["contact_sheet"] = join(dest, "contact_sheet.png")
            storage.write_bytes_atomic(outputs["contact_sheet"], png_bytes(sheet))
        if run is not None:
            _log_run(stats, counts, sheet)
        summary = {**stats, "stage": "detect", "outputs": {**outputs, "stats": join(dest, "stats.json")},
                   "mlflow_run_id": run.info.run_id if run is not None else None}
        storage.write_bytes_atomic(join(dest, "_SUCCESS.json"), _json(summary))
    log.info("detect: kept %d of %d images (%.1f%%), %d faces; rejected %s", counts.kept_images, inputs,
             100 * counts.kept_fraction, counts.faces, counts.rejected_by_reason or "none")
    return summary


def _actor_resources(cfg: DictConfig) -> tuple[int, float, str]:
    """(actors, GPUs per actor, actor device): a GPU share only when the device is CUDA."""
    device = resolve_device(cfg.device)
    actors = cfg.detect.num_actors or max(1, int(cluster_cpus()))
    gpus = cfg.detect.gpus_per_actor
    if gpus is None:
        gpus = min(1.0, 1.0 / actors) if device.type == "cuda" else 0.0
    return actors, float(gpus), (str(device) if gpus > 0 else "cpu")


def _columns(dataset, columns: list[str]) -> pa.Table:
    import ray

    tables = ray.get(dataset.select_columns(columns).to_arrow_refs())
    return pa.concat_tables(tables) if tables else DETECTION_SCHEMA.empty_table().select(columns)


def _rows_of(columns: list[str]):
    """A Ray batch function keeping kept-face rows (face columns) or rejected rows."""
    kept = "reason" not in columns

    def select(table: pa.Table) -> pa.Table:
        mask = pc.is_null(table["reason"]) if kept else pc.is_valid(table["reason"])
        return table.filter(mask).select(columns)

    return select


def _write_part(detections, url: str, columns: list[str], rows: int, storage: Storage, rows_per_file: int) -> None:
    """Write one output table; an empty one still gets a file, so readers find its schema."""
    fs, path = storage.fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)  # a rerun after a failure replaces, never appends
    if rows == 0:
        import pyarrow.parquet as pq

        fs.makedirs(path, exist_ok=True)
        with fs.open(f"{path}/part-empty.parquet", "wb") as handle:
            pq.write_table(DETECTION_SCHEMA.empty_table().select(columns), handle)
        return
    detections.map_batches(_rows_of(columns), batch_format="pyarrow", batch_size=None).write_parquet(
        path, filesystem=arrow_filesystem(fs), min_rows_per_file=rows_per_file)


def _sample_crops(detections, limit: int) -> list[bytes]:
    if limit <= 0:
        return []
    faces = detections.map_batches(_rows_of(["image_bytes"]), batch_format="pyarrow", batch_size=None)
    return [row["image_bytes"] for row in faces.take(limit)]


def _stats(counts: Counts, src: str, dest: str, layout: str, started: datetime, duration: float, device: str,
           actors: int) -> dict[str, Any]:
    return {**counts.as_dict(), "src": src, "dest": dest, "layout": layout, "device": device, "actors": actors,
            "started_at": started.isoformat(timespec="seconds"), "duration_s": round(duration, 3),
            "images_per_s": round(counts.inputs / duration, 3) if duration > 0 else None}


def _log_run(stats: dict[str, Any], counts: Counts, sheet) -> None:
    import mlflow

    metrics = {key: stats[key] for key in ("inputs", "kept_images", "faces", "rejected", "kept_fraction",
                                           "duration_s", "images_per_s") if stats[key] is not None}
    metrics.update({f"rejected_{reason}": n for reason, n in counts.rejected_by_reason.items()})
    mlflow.log_metrics(metrics)
    mlflow.log_dict(stats, "stats.json")
    if sheet is not None:
        mlflow.log_image(sheet, "contact_sheet.png")


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8")
