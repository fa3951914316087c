"""``facezip run``, ``demo``, ``submit``, ``status``, ``logs`` and ``runs compare``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from facezip.cli.common import CommandError, add_config_arguments, split_overrides
from facezip.pipelines import PipelineError, StageFailed, bundled_pipelines, load_pipeline, run_pipeline

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    bundled = ", ".join(bundled_pipelines())
    run = subparsers.add_parser("run", help="run a pipeline (stages in order, resumable)",
                                description=f"Run a pipeline file or a bundled pipeline ({bundled}). Complete "
                                            "stages are skipped; key=value overrides edit the pipeline "
                                            "(pipeline.root=…, data.NAME=…, stages.NAME.config.…) or the config.")
    _pipeline_arguments(run)
    run.set_defaults(func=_run)

    demo = subparsers.add_parser("demo", help="every stage on a tiny dataset built from skimage.data (no download)")
    demo.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. pipeline.root=/tmp/demo device=cpu")
    demo.add_argument("--from", dest="start_from", metavar="STAGE", help="rerun from this stage on")
    add_config_arguments(demo)
    demo.set_defaults(func=_demo)

    submit = subparsers.add_parser("submit", help="run a pipeline on a Ray cluster as a Ray Job")
    _pipeline_arguments(submit)
    _address_argument(submit)
    submit.add_argument("--follow", action="store_true", help="stream the job's log until it ends")
    submit.set_defaults(func=_submit)

    status = subparsers.add_parser("status", help="status of a submitted pipeline job")
    status.add_argument("job_id", metavar="JOB")
    _address_argument(status)
    status.set_defaults(func=_status)

    logs = subparsers.add_parser("logs", help="log of a submitted pipeline job")
    logs.add_argument("job_id", metavar="JOB")
    logs.add_argument("--follow", action="store_true", help="keep streaming until the job ends")
    _address_argument(logs)
    logs.set_defaults(func=_logs)

    runs = subparsers.add_parser("runs", help="MLflow runs").add_subparsers(dest="runs_command", required=True)
    compare = runs.add_parser("compare", help="key metrics of MLflow runs side by side, plus a plot")
    compare.add_argument("run_ids", nargs="+", metavar="RUN", help="MLflow run ids (pipeline or stage runs)")
    compare.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                                                "else MLflow's default sqlite:///mlflow.db)")
    compare.add_argument("--filter", metavar="TEXT", help="only metrics whose name contains TEXT, e.g. facezip")
    compare.add_argument("--plot", default="runs_compare.png", metavar="PNG", help="where the plot goes")
    compare.set_defaults(func=_compare, command="runs compare")


def _pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", metavar="PIPELINE", help="a pipeline YAML file or a bundled name")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--from", dest="start_from", metavar="STAGE", help="rerun from this stage on")
    add_config_arguments(parser)


def _address_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="the cluster's dashboard, e.g. http://HEAD:8265 "
                                           "(default: $RAY_ADDRESS, else http://127.0.0.1:8265)")


def _run(args: argparse.Namespace) -> int:
    return _run_and_report(_load(args.pipeline, args), args.start_from, args.verbose)


def _run_and_report(pipeline, start_from: str | None, verbose: bool) -> int:
    try:
        result = run_pipeline(pipeline, start_from)
    except StageFailed as exc:
        if verbose:
            log.error("stage %s failed", exc.stage.name, exc_info=exc.__cause__)
        print(f"facezip run: {exc}" + ("" if verbose else " (-v shows the traceback)"), file=sys.stderr)
        return 1
    except PipelineError as exc:
        raise CommandError(str(exc)) from None
    for name, stage in result["stages"].items():
        print(f"{name:<12} {stage['status']:<8} {stage['seconds']:>7.1f} s  {stage['output']}")
    if result["mlflow_run_id"]:
        print(f"MLflow run {result['mlflow_run_id']}: mlflow ui --backend-store-uri {_tracking_uri(pipeline)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    pipeline = _load("demo", args)
    status = _run_and_report(pipeline, args.start_from, args.verbose)
    if status == 0:
        print(f"data:       {pipeline.stage('data').output}\n"
              f"archive:    {pipeline.stage('archive').output} (facezip restore / verify)\n"
              f"evaluation: {pipeline.stage('evaluate').output} (report.md, summary.csv, rate_*.png, samples.png)")
    return status


def _submit(args: argparse.Namespace) -> int:
    from facezip.pipelines.jobs import client_for, follow_logs, submit_pipeline

    pipeline = _load(args.pipeline, args)  # catch mistakes here, not on the cluster
    if "://" not in pipeline.root:
        log.warning("pipeline.root %s will be a path on the cluster; use s3:// to keep outputs off the nodes",
                    pipeline.root)
    client = _client(client_for, args.address)
    submission = submit_pipeline(client, args.pipeline, args.overrides, args.config, args.start_from)
    print(submission.job_id)
    if not args.follow:
        return 0
    status = follow_logs(client, submission.job_id)
    print(f"job {submission.job_id}: {status.value}", file=sys.stderr)
    return 0 if status.value == "SUCCEEDED" else 1


def _status(args: argparse.Namespace) -> int:
    from facezip.pipelines.jobs import client_for

    try:
        info = _client(client_for, args.address).get_job_info(args.job_id)
    except RuntimeError as exc:  # the SDK's error for any failed request, e.g. 404 for an unknown job
        raise CommandError(f"job {args.job_id}: {exc}") from None
    print(json.dumps({"job_id": args.job_id, "status": info.status.value, "message": info.message,
                      "entrypoint": info.entrypoint, "start_time": info.start_time, "end_time": info.end_time}))
    return 0


def _logs(args: argparse.Namespace) -> int:
    from facezip.pipelines.jobs import client_for, follow_logs

    client = _client(client_for, args.address)
    try:
        if args.follow:
            print(f"job {args.job_id}: {follow_logs(client, args.job_id).value}", file=sys.stderr)
        else:
            print(client.get_job_logs(args.job_id), end="")
    except RuntimeError as exc:
        raise CommandError(f"job {args.job_id}: {exc}") from None
    return 0


def _compare(args: argparse.Namespace) -> int:
    import mlflow

    from facezip.pipelines.compare import CompareError, collect_runs, format_table, key_metric_names, plot_comparison

    client = mlflow.MlflowClient(args.tracking_uri)
    try:
        runs = collect_runs(client, args.run_ids)
    except CompareError as exc:
        raise CommandError(str(exc)) from None
    families = key_metric_names(runs, args.filter)
    if not families:
        raise CommandError("none of these runs has a bpp, PSNR, MS-SSIM, accuracy or cosine metric"
                           + (f" containing '{args.filter}'" if args.filter else ""))
    print(format_table(runs, families))
    Path(args.plot).write_bytes(plot_comparison(runs, families))
    print(f"plot: {args.plot}", file=sys.stderr)
    return 0


def _client(client_for, address: str | None):
    try:
        return client_for(address)
    except ConnectionError as exc:
        raise CommandError(f"cannot reach the Ray Jobs API: {exc}") from None


def _load(pipeline: str, args: argparse.Namespace):
    stray, _ = split_overrides(args.overrides)
    if stray:
        raise CommandError(f"expected key=value overrides after the pipeline, got {stray}")
    args.overrides = [*args.overrides, *getattr(args, "extra_overrides", [])]  # those given after options
    try:
        return load_pipeline(pipeline, args.overrides, args.config)
    except PipelineError as exc:
        raise CommandError(str(exc)) from None


def _tracking_uri(pipeline) -> str:
    import mlflow

    return pipeline.config.tracking.uri or mlflow.get_tracking_uri()
