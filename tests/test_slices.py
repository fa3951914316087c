"""Slices of a listing and the actor pool that works them (facezip.infra.slices)."""

from __future__ import annotations

import sys

import pyarrow as pa
import pytest
import ray.cloudpickle

from facezip.infra.slices import cut_slices, run_on_actors

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this test module


def test_slices_are_consecutive_whatever_the_input_tables() -> None:
    tables = [pa.table({"id": [f"{i}" for i in range(start, start + n)]}) for start, n in ((0, 3), (3, 5), (8, 2))]
    slices = list(cut_slices(tables, 4))
    assert [s.number for s in slices] == [0, 1, 2]
    assert [s.refs["id"].to_pylist() for s in slices] == [["0", "1", "2", "3"], ["4", "5", "6", "7"], ["8", "9"]]
    with pytest.raises(ValueError, match="at least 1"):
        list(cut_slices(tables, 0))


class Doubler:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def process(self, item: int) -> int:
        return item * self.factor


class BrokenSetup:
    def __init__(self) -> None:
        raise FileNotFoundError("weights.pt: no such file")

    def process(self, item: int) -> int:
        return item


def test_every_slice_is_worked_once_on_the_pool(ray_local) -> None:
    results = run_on_actors(Doubler, {"factor": 2}, range(10), actors=2, num_cpus=0.25)
    assert sorted(results) == [2 * i for i in range(10)]


def test_a_failing_worker_setup_reaches_the_driver_as_itself(ray_local) -> None:
    with pytest.raises(FileNotFoundError, match="weights.pt: no such file"):
        list(run_on_actors(BrokenSetup, {}, range(3), actors=1, num_cpus=0.25))
