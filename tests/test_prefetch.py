"""Batches drawn by worker processes (gpu_job/training/prefetch.py): each worker its own random
stream, nothing left running after close, and a worker that dies is an error, not a hang."""
import multiprocessing as mp

import numpy as np
import pytest

from gpu_job.training import prefetch
from gpu_job.training.prefetch import Prefetch


def draw(rng: np.random.Generator) -> tuple:
    return (rng.integers(0, 2**31, 4), np.zeros((2, 8, 8, 3), np.uint8))


def test_workers_draw_from_their_own_streams_and_stop_on_close():
    expected = {tuple(draw(np.random.default_rng([7, 100, i]))[0]) for i in (0, 1)}  # [seed, step, worker]
    p = Prefetch(draw, workers=2, seed=[7, 100])
    try:
        batches = [p.next(timeout=30)]
        while not expected <= {tuple(b[0]) for b in batches} and len(batches) < 2000:  # which worker is first is not fixed
            batches.append(p.next(timeout=30))
    finally:
        p.close()
    firsts = [tuple(b[0]) for b in batches]
    assert expected <= set(firsts)  # each worker's own stream ...
    assert len(set(firsts)) == len(firsts)  # ... so no batch drawn twice
    assert batches[0][1].shape == (2, 8, 8, 3)
    assert not [c for c in mp.active_children() if c.name.startswith("batches-")]


def broken(rng):
    raise MemoryError("out of memory while drawing")


def test_a_worker_that_dies_is_an_error_naming_the_way_to_see_why(monkeypatch):
    monkeypatch.setattr(prefetch, "POLL_S", 0.2)
    p = Prefetch(broken, workers=1, seed=[0])
    try:
        with pytest.raises(RuntimeError, match="--workers 0"):
            p.next(timeout=30)
    finally:
        p.close()


def test_workers_by_default_only_on_a_gpu(monkeypatch):
    import torch

    from gpu_job.training.loop import RunConfig, batch_workers

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert batch_workers(RunConfig(threads=2), torch.device("cpu")) == 0  # the step needs every core
    assert batch_workers(RunConfig(threads=4), torch.device("cuda")) == 8  # the spare cores, up to 8
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert batch_workers(RunConfig(threads=2), torch.device("cuda")) == 1
    assert batch_workers(RunConfig(threads=2, workers=3), torch.device("cpu")) == 3  # as asked
