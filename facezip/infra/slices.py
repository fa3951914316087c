"""Inputs cut into numbered slices that Ray actors read, process and write on their own.

This is img2dataset's shape: the driver streams the listing and cuts it into slices of input
references (no image bytes); each worker reads its slice's bytes, does the stage's work and
commits its own output before it reports a small summary. The driver holds only the slices in
flight, so its memory does not grow with the input, and slice ``n`` always holds the same
inputs, so a rerun rewrites a lost output byte for byte.

A worker class declares its setup in ``__init__`` and its per-slice work in ``process(slice)``
(NeMo Curator's stage shape); ``run_on_actors`` gives it resources, restarts and back-pressure.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from facezip.infra.readers import Reader

_TASKS_PER_ACTOR = 2  # one running, one queued: the next slice's arguments travel while the first is worked on
_RETRIES = 3  # times a slice is run again on a new actor after its actor died


@dataclass(frozen=True)
class InputSlice:
    number: int  # 0, 1, … in listing order
    refs: pa.Table  # the reader's reference columns (+ part/row for Parquet, + any column the stage adds)

    def __len__(self) -> int:
        return self.refs.num_rows


def cut_slices(tables: Iterable[pa.Table], rows_per_slice: int) -> Iterator[InputSlice]:
    """Consecutive slices of ``rows_per_slice`` rows (the last may be shorter) of a stream of tables."""
    if rows_per_slice < 1:
        raise ValueError(f"rows per slice must be at least 1, got {rows_per_slice}")
    pending: list[pa.Table] = []
    rows = 0
    number = itertools.count()
    for table in tables:
        pending.append(table)
        rows += table.num_rows
        while rows >= rows_per_slice:
            merged = pa.concat_tables(pending)
            yield InputSlice(next(number), merged.slice(0, rows_per_slice).combine_chunks())
            rest = merged.slice(rows_per_slice)
            pending, rows = [rest], rest.num_rows
    if rows:
        yield InputSlice(next(number), pa.concat_tables(pending).combine_chunks())


def reader_slices(reader: Reader, rows_per_slice: int) -> Iterator[InputSlice]:
    return cut_slices(reader.ref_tables(), rows_per_slice)


def run_on_actors(worker_class: type, init_kwargs: dict[str, Any], slices: Iterable[Any], *, actors: int,
                  num_cpus: float, num_gpus: float = 0.0) -> Iterator[Any]:
    """``worker_class(**init_kwargs).process(s)`` for every slice on ``actors`` Ray actors; the
    results as they finish (any order). At most two slices per actor are submitted at a time.
    When an actor dies, it is replaced and its slices run again (workers commit idempotently):
    here rather than by Ray's ``max_restarts``, which cannot promise a restart whose constructor
    arguments live in the object store (ray-project/ray#53727)."""
    import ray

    # named after the worker, so the actor's process is ray::<worker class>.process
    lazy = type(worker_class.__name__, (_BuiltOnFirstSlice,), {})
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(lazy)
    pool = [remote.remote(worker_class, init_kwargs) for _ in range(max(1, actors))]
    load = [0] * len(pool)
    pending: dict[Any, tuple[int, Any, Any, int]] = {}  # ref → (actor index, actor, slice, tries)
    todo = iter(slices)

    def submit(index: int, item: Any, tries: int) -> None:
        pending[pool[index].process.remote(item)] = (index, pool[index], item, tries)

    try:
        while True:
            while min(load) < _TASKS_PER_ACTOR and (item := next(todo, None)) is not None:
                index = load.index(min(load))
                submit(index, item, 1)
                load[index] += 1
            if not pending:
                return
            (done,), _ = ray.wait(list(pending), num_returns=1)
            index, actor, item, tries = pending.pop(done)
            try:
                result = ray.get(done)
            except ray.exceptions.RayActorError:
                if tries > _RETRIES:
                    raise
                if pool[index] is actor:  # the first of its slices to fail replaces it
                    pool[index] = remote.remote(worker_class, init_kwargs)
                submit(index, item, tries + 1)
                continue
            except ray.exceptions.RayTaskError as exc:  # the worker's own exception, not Ray's wrapper and
                raise (exc.cause or exc) from exc  # the remote traceback in its message
            load[index] -= 1
            yield result
    finally:
        for ref in pending:  # queued slices of a failed run: cancelled, not retried
            ray.cancel(ref)
        for actor in pool:
            ray.kill(actor)


class _BuiltOnFirstSlice:
    """The actor around a stage's worker, which it builds on its first slice: a failing setup
    (bad weights, a missing model) then reaches the driver as its own exception, where Ray
    reports a failed actor constructor only as the text of an ActorDiedError."""

    def __init__(self, worker_class: type, init_kwargs: dict[str, Any]) -> None:
        self.build = lambda: worker_class(**init_kwargs)
        self.worker = None

    def process(self, item: Any) -> Any:
        if self.worker is None:
            self.worker = self.build()
        return self.worker.process(item)
