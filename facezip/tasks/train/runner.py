"""``run_train``: the driver side of the train stage (checks, Ray Train, the trained model).

    run_train(cfg, data, dest, phase)      →  <dest>/weights/<codec>.pt, <dest>/_SUCCESS.json
                                               Ray Train checkpoints under train.storage_path
                                               (default <dest>/ray/facezip-<phase>/…)

Running it again with the same ``dest`` (and storage path) resumes from the latest checkpoint:
Ray Train finds the run's checkpoint snapshot under ``<storage_path>/facezip-<phase>``.
"""

from __future__ import annotations

import io
import logging
import os
from typing import Any

import mlflow
import ray
import torch
from omegaconf import DictConfig, OmegaConf

from facezip.infra.config import merge_config
from facezip.infra.ray_runtime import cluster_cpus
from facezip.infra.readers import arrow_filesystem
from facezip.infra.storage import Storage, is_remote, join
from facezip.models.loading import weights_to_bytes
from facezip.models.registry import Codec, architecture_options, codec_class, create_codec
from facezip.models.store import CodecStore
from facezip.tasks.stage import StageContext, StageSpec, run_stage
from facezip.tasks.train.augment import check_augment
from facezip.tasks.train.config import TrainConfig
from facezip.tasks.train.data import load_training_data
from facezip.tasks.train.loop import CHECKPOINT_FILE, train_loop
from facezip.tasks.train.phases import codec_distortion, get_phase
from facezip.tasks.train.steps import parameters_named, steps_trained, trainable_names
from facezip.tasks.train.tracking import log_trained_model, worker_visible_uri

log = logging.getLogger(__name__)
SCRATCH = "scratch"  # --init scratch: an untrained model in either phase (masked-cvae trains on faces alone)


def run_train(cfg: DictConfig, data: str, dest: str, phase: str, init_weights: str | None = None) -> dict[str, Any]:
    """Train the codec ``cfg.codec.name`` on ``data`` in a registered ``phase`` (pretrain | finetune).

    ``init_weights``: the starting model (a weights file, ``s3://`` URI or ``models:/name/version``),
    or ``scratch`` for an untrained one. Pretraining starts from it or from scratch; fine-tuning from
    it or else ``codec.weights`` (``Phase.starts_from_codec_weights``).
    """
    return run_stage(TRAIN_STAGE, cfg, dest, data=data, phase=phase, init_weights=init_weights)


def _train_config(cfg: DictConfig, arguments: dict[str, Any]) -> DictConfig:
    """Before the run opens: the phase checked (an unknown one fails before Ray starts), and the
    codec's own λ set, so MLflow's params and every worker see the value trained with."""
    get_phase(arguments["phase"])
    return with_codec_lmbda(cfg, codec_class(cfg.codec.name), arguments["phase"])


def train(ctx: StageContext, data: str, phase: str, init_weights: str | None = None) -> dict[str, Any]:
    """The stage's work: fit on Ray Train, keep the best checkpoint's weights, log the model."""
    cfg, storage, dest, run = ctx.cfg, ctx.storage, ctx.output, ctx.run
    check_resources(cfg.train)
    codec = initial_codec(cfg, phase, init_weights, storage)
    if not codec.masked_loss:
        get_phase(phase).check(cfg.train, storage)
    training_data = load_training_data(phase, data, storage, cfg.train)
    log.info("train %s: %s", phase, training_data.counts)

    if run is not None:
        mlflow.log_metrics({f"data_{key}": value for key, value in training_data.counts.items()})
        if training_data.skipped:
            mlflow.log_dict({"skipped": training_data.skipped}, "skipped_images.json")
    target = {"uri": worker_visible_uri(mlflow.get_tracking_uri()), "run_id": run.info.run_id} if run else None
    result = _fit(cfg, phase, codec, training_data, target, dest)
    best, best_metrics = _best_checkpoint(result)
    trained = _codec_from_checkpoint(best)
    steps = best_metrics.get("step")
    weights = weights_to_bytes(trained, {"trained_by": "facezip train", "phase": phase, "data": data,
                                         "epochs": best_metrics.get("epoch"), "steps_this_run": steps,
                                         # what the model has been trained for, its starting weights' steps too
                                         "steps": steps + steps_trained(codec) if steps is not None else None,
                                         # what --effort refines for (mean-scale-hyperprior's R + λ·D)
                                         "lmbda": cfg.train.lmbda,
                                         "distortion": codec_distortion(get_phase(phase), trained)})
    weights_uri = join(dest, "weights", f"{trained.name}.pt")
    storage.write_bytes_atomic(weights_uri, weights)
    model_uri = log_trained_model(trained, weights, cfg.train.registered_model_name) if run else None

    return {"phase": phase, "data": data, "weights": weights_uri, "model_uri": model_uri, "checkpoint": best.path,
            "images": training_data.counts, "skipped_examples": training_data.skipped,
            "metrics": {k: v for k, v in best_metrics.items() if isinstance(v, (int, float))}}


TRAIN_STAGE = StageSpec("train", train, TrainConfig, result_keys=(
    "phase", "data", "weights", "model_uri", "checkpoint", "images", "skipped_examples", "metrics"),
    tags=lambda arguments: {"facezip.phase": str(arguments["phase"])},
    run_name=lambda arguments: f"train-{arguments['phase']}", configure=_train_config)


def with_codec_lmbda(cfg: DictConfig, codec: Codec | type[Codec], phase: str) -> DictConfig:
    """``train.lmbda`` unset → the codec's own λ for the phase."""
    if cfg.train.lmbda is not None:
        return cfg
    lmbda = codec.lmbda_for(codec_distortion(get_phase(phase), codec))
    return merge_config(cfg, {"train": {"lmbda": lmbda}}, source=f"codec {codec.name}")


def check_resources(tcfg: Any) -> None:
    """Fail fast on settings out of range, and before Ray Train would wait for resources the
    cluster will never have."""
    needed, available = tcfg.num_workers * tcfg.cpus_per_worker, cluster_cpus()
    if tcfg.num_workers < 1:
        raise ValueError(f"train.num_workers must be at least 1, got {tcfg.num_workers}")
    if tcfg.precision not in ("fp32", "bf16"):
        raise ValueError(f"train.precision: '{tcfg.precision}' is neither fp32 nor bf16")
    if tcfg.max_minutes is not None and tcfg.max_minutes <= 0:
        raise ValueError(f"train.max_minutes must be positive (or null for no budget), got {tcfg.max_minutes}")
    check_augment(tcfg.augment)
    if needed > available:
        raise ValueError(f"train.num_workers={tcfg.num_workers} × train.cpus_per_worker={tcfg.cpus_per_worker} "
                         f"needs {needed:g} CPUs but the Ray cluster has {available:g}; lower train.num_workers "
                         "or train.cpus_per_worker (fractions such as 0.5 are fine)")
    if tcfg.use_gpu and ray.cluster_resources().get("GPU", 0) < tcfg.num_workers:
        raise ValueError(f"train.use_gpu=true with {tcfg.num_workers} workers, but the Ray cluster has "
                         f"{ray.cluster_resources().get('GPU', 0):g} GPUs")


def initial_codec(cfg: DictConfig, phase: str, init_weights: str | None, storage: Storage) -> Codec:
    """The model training starts from (its weights are copied into every worker)."""
    start = starting_weights(cfg, phase, init_weights)
    section = cfg.codecs.get(cfg.codec.name.replace("-", "_"))
    arch = architecture_options(cfg.codec.name, OmegaConf.to_container(section, resolve=True) if section else {})
    if start is None:
        torch.manual_seed(int(cfg.seed))  # the same untrained start on every run
        codec = create_codec(cfg.codec.name, **arch)
    else:  # a trained model keeps its architecture; options it predates come from codecs.<name>
        codec = CodecStore(storage=storage).load(cfg.codec.name, *start).with_options(**arch)
    trainable_names(codec, list(cfg.train.trainable))  # a name that matches nothing fails before Ray Train
    parameters_named(codec, list(cfg.train.lr_by_parameter), "train.lr_by_parameter")
    return codec


def starting_weights(cfg: DictConfig, phase: str,
                     init_weights: str | None) -> tuple[str, int | None, float | None] | None:
    """``CodecStore.load``'s (weights, level, quality) of the model training starts from: ``--init``,
    else the codec reference ``codec.*`` (level and quality included, as everywhere else) in a phase
    that starts from it; None for an untrained model."""
    if init_weights:
        return None if init_weights == SCRATCH else (init_weights, None, None)
    if get_phase(phase).starts_from_codec_weights:
        return cfg.codec.weights, cfg.codec.level, cfg.codec.quality
    return None


def ray_storage(cfg: DictConfig, dest: str, storage: Storage) -> tuple[str, Any]:
    """``RunConfig(storage_path, storage_filesystem)``: local paths absolute, S3 through our endpoint."""
    path = cfg.train.storage_path or join(dest, "ray")
    if not is_remote(path):
        return os.path.abspath(path), None
    fs, bare = storage.fs(path)
    return bare, arrow_filesystem(fs)


def _fit(cfg: DictConfig, phase: str, codec: Codec, training_data, mlflow_target: dict | None, dest: str):
    from ray.train import CheckpointConfig, DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    tcfg = cfg.train
    buffer = io.BytesIO()
    torch.save(codec.state_dict(), buffer)
    storage_path, filesystem = ray_storage(cfg, dest, Storage.from_config(cfg.storage))
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"settings": OmegaConf.to_object(tcfg), "seed": int(cfg.seed), "phase": phase,
                           "codec": codec.name,
                           "architecture": codec.architecture(), "init_state": buffer.getvalue(),
                           "mlflow": mlflow_target},
        scaling_config=ScalingConfig(num_workers=tcfg.num_workers, use_gpu=tcfg.use_gpu,
                                     resources_per_worker={"CPU": tcfg.cpus_per_worker}),
        run_config=RunConfig(name=f"facezip-{phase}", storage_path=storage_path, storage_filesystem=filesystem,
                             checkpoint_config=CheckpointConfig(num_to_keep=tcfg.checkpoints_to_keep,
                                                                checkpoint_score_attribute="val_loss",
                                                                checkpoint_score_order="min")),
        datasets={"train": training_data.train, "val": training_data.val},
        dataset_config=DataConfig(datasets_to_split=["train"]),  # every worker sees all of val; rank 0 uses it
    )
    return trainer.fit()


def _best_checkpoint(result) -> tuple[Any, dict[str, Any]]:
    ranked = [(checkpoint, metrics) for checkpoint, metrics in (result.best_checkpoints or []) if "val_loss" in metrics]
    if ranked:
        return min(ranked, key=lambda pair: pair[1]["val_loss"])
    if result.checkpoint is None:
        raise RuntimeError("Ray Train finished without a checkpoint (was train.epochs 0?)")
    return result.checkpoint, dict(result.metrics or {})


def _codec_from_checkpoint(checkpoint) -> Codec:
    with checkpoint.as_directory() as folder:
        state = torch.load(os.path.join(folder, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
    codec = create_codec(state["codec"], **state["architecture"])
    codec.load_state_dict(state["model"])
    codec.refresh_entropy_model()
    return codec.freeze()
