"""``run_archive``: input images → xz shards + Parquet index, exactly once, resumable, incremental."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import mlflow
from omegaconf import DictConfig, OmegaConf

from facezip.infra.ray_runtime import cluster_cpus, init_ray
from facezip.infra.readers import open_reader
from facezip.infra.storage import Storage, is_remote, join
from facezip.infra.tracking import start_run
from facezip.models.loading import weights_to_bytes
from facezip.tasks.archive.encode import ArchiveEncoder, EncoderSettings, SkipRules
from facezip.tasks.archive.floor import Floor, build_floor
from facezip.tasks.archive.ladder import Rung, encoding_rungs
from facezip.tasks.archive.integrity import read_index
from facezip.tasks.archive.layout import (INDEX, MANIFESTS, SHARDS, STATS, SUCCESS, committed_shards, json_bytes,
                                          read_json, stats_url)
from facezip.tasks.archive.shards import ShardWriter

def run_archive(cfg: DictConfig, src: str, dest: str, incremental: bool = False, progress: bool = True) -> dict:
    """Archive every image of ``src`` (a detect output's face crops, or any dataset
    ``open_reader`` reads) into ``dest``; returns the summary also written to ``_SUCCESS.json``.

    Shards already committed in ``dest`` are kept: a normal run skips their ids (resuming after
    a crash), an incremental run skips inputs whose source URI and content are archived."""
    import ray  # Ray loads only when a stage runs, not for every CLI call
    from ray.data import ActorPoolStrategy

    storage = Storage.from_config(cfg.storage)
    settings = cfg.archive
    rungs = encoding_rungs(cfg, storage)  # bad settings and weights fail before Ray starts
    floor = build_floor(settings, storage)
    model = _model_summary(rungs, floor)
    reader = open_reader(src, storage)  # a finished detect output reads as its face crops
    remove_stale_temporaries(dest)
    _remove(join(dest, SUCCESS), storage)  # until this run succeeds, dest must not look complete
    rules, first_shard = skip_rules(dest, storage, incremental)
    started = time.monotonic()
    with start_run(cfg, "archive", tags={"facezip.stage": "archive"}) as run:
        init_ray(cfg.ray)
        writer = ShardWriter(dest, storage, first_shard, settings.records_per_shard,
                             int(settings.target_shard_mb * 2**20), progress=progress)
        encoder = EncoderSettings(
            rungs[0].codec.name, ray.put(tuple((r.level, r.model, weights_to_bytes(r.codec, r.codec.metadata)) for r in rungs)),
            cfg.device, settings.batch_size, settings.max_image_pixels,
            floor.thresholds if floor else None, ray.put(list(floor.judges)) if floor else None,
            settings.accept_damaged)
        with _preserve_order():
            # Small blocks (streaming, order kept) so every actor gets work even from one big Parquet file.
            inputs = reader.to_ray_dataset().repartition(target_num_rows_per_block=4 * settings.batch_size)
            encoded = inputs.map_batches(
                ArchiveEncoder, fn_constructor_kwargs={"settings": encoder, "rules": ray.put(rules)},
                batch_size=settings.batch_size, batch_format="pyarrow",
                compute=ActorPoolStrategy(size=settings.num_actors or max(1, int(cluster_cpus()))),
                num_cpus=settings.cpus_per_actor, num_gpus=settings.gpus_per_actor)
            for batch in encoded.iter_batches(batch_format="pyarrow", batch_size=None):
                writer.add(batch)
        writer.close()
        summary = _summary(src, dest, incremental, writer, model, floor, time.monotonic() - started)
        manifest = join(dest, MANIFESTS, f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}.json")
        summary["manifest"] = manifest
        storage.write_bytes_atomic(manifest, json_bytes({
            **summary, "rejected_inputs": writer.rejected,
            "config": OmegaConf.to_container(cfg, resolve=True), "mlflow_run_id": run.info.run_id if run else None}))
        if run:
            mlflow.log_metrics(_metrics(summary))
            mlflow.log_dict(summary, "archive_summary.json")
    storage.write_bytes_atomic(join(dest, SUCCESS), json_bytes(summary))
    return summary


def _model_summary(rungs: list[Rung], floor: Floor | None) -> dict:
    """The start rung (as before ladders: codec, model, weights_hash), the floor and the whole ladder."""
    return {"codec": rungs[0].codec.name, "model": rungs[0].model, "level": rungs[0].level,
            "weights_hash": rungs[0].codec.weights_hash(), "min_identity": floor.thresholds if floor else None,
            "ladder": [{"level": r.level, "model": r.model, "weights_hash": r.codec.weights_hash()} for r in rungs]}


def remove_stale_temporaries(dest: str) -> None:
    """A killed run can leave the temporary files of ``Storage.write_bytes_atomic`` behind
    (``<name>.tmp-<hex>``, local only: object stores take single PUTs)."""
    if is_remote(dest):
        return
    for folder in (SHARDS, INDEX, STATS):
        for path in Path(dest, folder).glob("*.tmp-*"):
            path.unlink(missing_ok=True)


def skip_rules(dest: str, storage: Storage, incremental: bool) -> tuple[SkipRules, int]:
    """What ``dest`` already holds, and the number of the next shard."""
    index = read_index(dest, storage)
    shards = committed_shards(dest, storage)
    versions: dict[str, int] = {}
    for image_id, version in zip(index["id"].to_pylist(), index["version"].to_pylist()):
        versions[image_id] = max(version, versions.get(image_id, 0))
    rules = SkipRules(incremental=incremental, versions=versions)
    if incremental:
        rules.archived_keys = set(zip(index["source_uri"].to_pylist(), index["source_sha256"].to_pylist()))
    else:  # resuming: rejects of committed shards are accounted for too
        rules.done_ids = set(versions)
        for shard in shards:
            rules.done_ids.update(r["id"] for r in read_json(stats_url(dest, shard), storage)["rejected"])
    return rules, (shards[-1] + 1 if shards else 0)


def _summary(src: str, dest: str, incremental: bool, writer: ShardWriter, model: dict, floor: Floor | None,
             duration: float) -> dict:
    totals = writer.totals
    return {
        "stage": "archive", "src": src, "dest": dest, "incremental": incremental,
        "inputs": totals["archived"] + totals["skipped"] + totals["rejected"],
        "archived": totals["archived"], "skipped": totals["skipped"], "rejected": totals["rejected"],
        "failures": dict(writer.failures), "shards_written": writer.written, "bytes": totals["bytes"],
        "code_bytes": totals["payload_bytes"], "duration_s": round(duration, 3),
        "images_per_s": round(totals["archived"] / duration, 2) if duration else 0.0, **model,
        **writer.identity.summary(floor), "shards": join(dest, SHARDS), "index": join(dest, INDEX),
    }


def _metrics(summary: dict) -> dict[str, float]:
    counts = ("archived", "skipped", "rejected", "bytes", "images_per_s", "duration_s", "raised_faces",
              "lossless_fallbacks")
    metrics = {k: float(summary[k]) for k in counts if summary[k] is not None}
    metrics.update({f"faces_level_{level}": float(n) for level, n in summary["faces_per_level"].items()})
    metrics.update({f"raised_by.{judge}": float(n) for judge, n in summary["raised_by_judge"].items()})
    for judge, stats in summary["identity"].items():
        metrics.update({f"identity.{judge}.{stat}_{stats['measure']}": stats[stat] for stat in ("mean", "worst")})
    return metrics


def _remove(url: str, storage: Storage) -> None:
    fs, path = storage.fs(url)
    if fs.exists(path):
        fs.rm(path)


@contextlib.contextmanager
def _preserve_order() -> Iterator[None]:
    """Records must reach the shard writer in input order, so shard cuts are reproducible."""
    from ray.data import DataContext

    options = DataContext.get_current().execution_options
    before = options.preserve_order
    options.preserve_order = True
    try:
        yield
    finally:
        options.preserve_order = before
