"""Training batches drawn in worker processes, so that a GPU does not wait for the CPU.

On an H200 the loop made 3.3 steps/s at batch 256 (docs/benchmarks-log.md, "A model of two
microscopes"): each batch's crops, masks and augmentation were drawn in the training process, on
one core, while the GPU waited. Here `workers` processes draw them (numpy only: no torch, no
device) and the loop only moves them to the device. How many: loop.batch_workers (on a CPU
none, since the step itself uses every core: batches drawn in the loop, as before).

The workers are forked: they share the stage's arrays (cells, fields, mask bank) with the loop
without copying them. Each draws from its own random stream ([seed, step, worker]), so a resumed
run draws new batches, not its first ones again; which worker's batch comes first is not fixed,
so a run with workers is not bit-for-bit repeatable (one without is).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
from typing import Callable

import numpy as np

DEPTH = 4  # batches kept ready per worker: enough to ride out one slow draw
POLL_S = 10.0  # how often a waiting loop checks that its workers are alive


def _draw_forever(draw: Callable, seed: list[int], out, parent: int) -> None:
    # The loop's own handlers (finish the step, checkpoint) came along with the fork: here SIGTERM
    # ends the worker, and Ctrl-C is the loop's to handle (it then closes the workers).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rng = np.random.default_rng(seed)
    while os.getppid() == parent:  # a loop killed outright leaves no worker behind
        batch = draw(rng)
        while os.getppid() == parent:
            try:
                out.put(batch, timeout=5.0)
                break
            except queue.Full:
                continue


class Prefetch:
    """`next()` gives the next drawn batch (numpy arrays, as `draw(rng)` returns them)."""

    def __init__(self, draw: Callable[[np.random.Generator], tuple], workers: int, seed: list[int]):
        ctx = mp.get_context("fork")  # shares the stage's arrays; the children never touch torch
        self.out = ctx.Queue(maxsize=DEPTH * workers)
        self.procs = [ctx.Process(target=_draw_forever, args=(draw, [*seed, i], self.out, os.getpid()), daemon=True, name=f"batches-{i}")
                      for i in range(workers)]
        for p in self.procs:
            p.start()

    def next(self, timeout: float = 600.0) -> tuple:
        while True:
            try:
                return self.out.get(timeout=min(timeout, POLL_S))
            except queue.Empty:
                dead = [p for p in self.procs if not p.is_alive()]
                if dead:  # a worker that died (out of memory, a bug in draw) would leave the loop waiting for ever
                    raise RuntimeError(f"a batch worker stopped (exit code {dead[0].exitcode}); run with --workers 0 to see why")
                timeout -= POLL_S
                if timeout <= 0:
                    raise

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.join(timeout=5)
        self.out.close()
        self.out.cancel_join_thread()  # batches left in the pipe are not worth waiting for
