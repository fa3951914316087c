"""``run_archive``: input images → xz shards + Parquet index, exactly once, resumable, incremental."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from facezip.infra.ray_runtime import cluster_cpus
from facezip.infra.readers import open_reader
from facezip.infra.slices import InputSlice, run_on_actors
from facezip.infra.storage import Storage, is_remote, join
from facezip.models.loading import weights_to_bytes
from facezip.models.registry import check_effort
from facezip.tasks.archive.config import ArchiveConfig
from facezip.tasks.archive.encode import EncoderSettings
from facezip.tasks.archive.floor import Floor, build_floor
from facezip.tasks.archive.ladder import Rung, check_rate_choice, encoding_rungs, search_steps
from facezip.tasks.archive.layout import (
    INDEX,
    MANIFESTS,
    SHARDS,
    STATS,
    committed_shards,
    json_bytes,
    read_json,
    stats_url,
)
from facezip.tasks.archive.plan import (
    INPUTS_SHA256,
    RUN_JOURNAL,
    Journal,
    PlanError,
    Planner,
    SkipRules,
    listing_fingerprint,
    open_journal,
    slice_fingerprint,
)
from facezip.tasks.archive.shards import ArchiveWorker, ShardResult
from facezip.tasks.archive.tally import IdentityTally
from facezip.tasks.stage import StageContext, StageSpec, run_stage


def run_archive(cfg: DictConfig, src: str, dest: str, incremental: bool = False, progress: bool = True) -> dict:
    """Archive every image of ``src`` (a detect output's face crops, or any dataset
    ``open_reader`` reads) into ``dest``; returns the summary also written to ``_SUCCESS.json``.

    Workers encode slices of ``archive.records_per_shard`` inputs and commit each as its own
    shard. A normal run skips ids already archived; an incremental run skips inputs whose source
    URI and content are archived. A rerun after a crash resumes the interrupted run's plan."""
    return run_stage(ARCHIVE_STAGE, cfg, dest, progress, src=src, incremental=incremental)


def archive(ctx: StageContext, src: str, incremental: bool = False) -> dict:
    """The stage's work: plan, encode and commit shard by shard, write the run's manifest."""
    import ray

    cfg, storage, dest, settings = ctx.cfg, ctx.storage, ctx.output, ctx.cfg.archive
    rungs = encoding_rungs(cfg, storage)
    check_effort(rungs[0].codec, cfg.codec.effort)  # here, not in every actor
    floor = build_floor(settings, storage)
    steps = search_steps(cfg)
    model = {**_model_summary(rungs, floor), "search_steps": steps, "bpp_target": cfg.codec.bpp}
    reader = open_reader(src, storage)  # a finished detect output reads as its face crops
    listed, listing_sha256 = listing_fingerprint(reader)
    remove_stale_temporaries(dest)
    journal, resuming = open_journal(dest, storage, src, incremental, settings.records_per_shard, listing_sha256)
    planner = Planner(SkipRules.before(dest, storage, incremental, journal.base_shard), storage)
    committed = set(committed_shards(dest, storage)) if resuming else set()
    started = time.monotonic()
    rung_weights = tuple((r.level, r.model, r.codec.quality, weights_to_bytes(r.codec, r.codec.metadata))
                         for r in rungs)
    encoder = EncoderSettings(
        rungs[0].codec.name, ray.put(rung_weights),
        cfg.device, settings.batch_size, settings.max_image_pixels,
        floor.thresholds if floor else None, ray.put(list(floor.judges)) if floor else None,
        settings.accept_damaged, ray.put(planner.rules.versions), steps, cfg.codec.bpp,
        cfg.codec.effort)
    worker = {"settings": encoder, "root": dest, "storage": storage, "archived_at": journal.archived_at}
    tally = RunTally()
    with tqdm(total=listed, desc="archive", unit="img", disable=not ctx.progress) as bar:
        jobs = _jobs(planner.slices(reader, settings.records_per_shard), journal, committed, dest, storage, tally)
        for result in run_on_actors(ArchiveWorker, worker, jobs, actors=settings.num_actors or
                                    max(1, int(cluster_cpus())), num_cpus=settings.cpus_per_actor,
                                    num_gpus=settings.gpus_per_actor):
            tally.add(result)
            bar.update(result.inputs)
        tally.skipped += planner.skipped
        bar.update(planner.skipped)
    summary = _summary(src, dest, incremental, tally, model, floor, time.monotonic() - started)
    manifest = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}.json"
    summary["manifest"] = join(dest, MANIFESTS, manifest)
    storage.write_bytes_atomic(summary["manifest"], json_bytes({
        **summary, "rejected_inputs": tally.rejected, "config": OmegaConf.to_container(cfg, resolve=True),
        "mlflow_run_id": ctx.run.info.run_id if ctx.run else None}))
    ctx.log_metrics(_metrics(summary))
    storage.remove(join(dest, RUN_JOURNAL))  # the plan is done (a crash from here on replans: all skipped)
    return summary


def _configure(cfg: DictConfig, arguments: dict) -> DictConfig:
    """A rate asked for in two ways is refused before Ray starts."""
    check_rate_choice(cfg)
    return cfg


ARCHIVE_STAGE = StageSpec("archive", archive, ArchiveConfig, result_keys=(
    "inputs", "archived", "skipped", "rejected", "failures", "shards_written", "bytes", "code_bytes", "codec",
    "model", "weights_hash", "manifest", "shards", "index"), configure=_configure)


def _jobs(slices: Iterator[InputSlice], journal: Journal, committed: set[int], dest: str, storage: Storage,
          tally: "RunTally") -> Iterator[tuple[int, InputSlice]]:
    """(shard, slice) for every slice whose shard is not committed yet; the committed ones (an
    interrupted run of the same plan) count as skipped, after checking they hold the same inputs."""
    for piece in slices:
        shard = journal.base_shard + piece.number
        if shard not in committed:
            yield shard, piece
            continue
        if read_json(stats_url(dest, shard), storage).get(INPUTS_SHA256) != slice_fingerprint(piece.refs):
            raise PlanError(f"{dest}: shard {shard} of the interrupted run {journal.started_at} holds other inputs "
                            f"than this rerun would put there (the inputs changed since): remove "
                            f"{join(dest, RUN_JOURNAL)} to archive them as a new run")
        tally.skipped += len(piece)
        tally.resumed.append(shard)


@dataclass
class RunTally:
    """The run's totals, summed from the workers' shard results."""

    archived: int = 0
    skipped: int = 0
    bytes: int = 0
    payload_bytes: int = 0
    rejected_by_shard: dict[int, list[dict]] = field(default_factory=dict)
    written: list[int] = field(default_factory=list)
    resumed: list[int] = field(default_factory=list)
    identity: IdentityTally = field(default_factory=IdentityTally)

    def add(self, result: ShardResult) -> None:
        self.archived += result.archived
        self.bytes += result.bytes
        self.payload_bytes += result.payload_bytes
        self.rejected_by_shard[result.shard] = result.rejected
        self.written.append(result.shard)
        self.identity.merge(result.identity)

    @property
    def rejected(self) -> list[dict]:
        """In input order, whichever worker finished first."""
        return [entry for shard in sorted(self.rejected_by_shard) for entry in self.rejected_by_shard[shard]]


def _model_summary(rungs: list[Rung], floor: Floor | None) -> dict:
    """The start rung (as before ladders: codec, model, weights_hash), the floor and the whole ladder."""
    return {"codec": rungs[0].codec.name, "model": rungs[0].model, "level": rungs[0].level,
            "quality": rungs[0].codec.quality,
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


def _summary(src: str, dest: str, incremental: bool, tally: RunTally, model: dict, floor: Floor | None,
             duration: float) -> dict:
    rejected = len(tally.rejected)
    return {
        "src": src, "dest": dest, "incremental": incremental,
        "inputs": tally.archived + tally.skipped + rejected, "archived": tally.archived, "skipped": tally.skipped,
        "rejected": rejected, "failures": dict(Counter(r["reason"] for r in tally.rejected).most_common()),
        "shards_written": sorted(tally.written + tally.resumed), "bytes": tally.bytes,
        "code_bytes": tally.payload_bytes, "duration_s": round(duration, 3),
        "images_per_s": round(tally.archived / duration, 2) if duration else 0.0, **model,
        **tally.identity.summary(floor), "shards": join(dest, SHARDS), "index": join(dest, INDEX),
    }


def _metrics(summary: dict) -> dict[str, float]:
    counts = ("archived", "skipped", "rejected", "bytes", "images_per_s", "duration_s", "raised_faces",
              "lossless_fallbacks")
    metrics = {k: float(summary[k]) for k in counts if summary[k] is not None}
    metrics.update({f"faces_level_{level}": float(n) for level, n in summary["faces_per_level"].items()})
    metrics.update({f"raised_by.{judge}": float(n) for judge, n in summary["raised_by_judge"].items()})
    for judge, stats in summary["identity"].items():
        metrics.update({f"identity.{judge}.{stat}_{stats['measure']}": stats[stat] for stat in ("mean", "worst")})
    metrics.update({f"quality.{name}": value for name, value in (summary["qualities"] or {}).items()})
    return metrics

