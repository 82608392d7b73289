"""The out-of-band buffers handed to the Unpickler in the order it takes them, read (and
checked) by background threads ahead of it, so that unpickling overlaps reading.

The Unpickler takes buffer i+1 only after buffer i, so buffer i is handed over as soon as its
own chunks are in and verified, while later ones are still being read. A RandomForest's 200
sub-MiB buffers were read (30 ms) before its trees were rebuilt (80 ms), one after the other;
now the rebuilding starts after the first buffer. Nothing here knows the file format: the
reader gives the buffers, their chunk jobs and the function that runs a job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class BufferFeed:
    """An iterator over ``buffers`` for ``pickle.Unpickler(buffers=...)``: buffer i is
    returned once every job of ``jobs[i]`` has run (``read(job)`` fills and checks one chunk).
    With ``workers`` > 0 the jobs run on that many threads, in buffer order, ahead of the
    consumer; otherwise each buffer's jobs run when it is taken. The first error of a job is
    raised by the ``next`` that waits for it, and stops the other threads. ``close`` must be
    called before the file they read from is closed: it waits for the threads."""

    def __init__(
        self,
        buffers: list[Any],
        jobs: list[list[tuple]],
        read: Callable[[tuple], None],
        workers: int = 0,
        before: Callable[[], None] | None = None,
    ) -> None:
        self.buffers = buffers
        self.jobs = jobs
        self.read = read
        self.taken = 0
        self.error: BaseException | None = None
        self.threads: list[threading.Thread] = []
        flat = [(i, job) for i, buffer_jobs in enumerate(jobs) for job in buffer_jobs]
        if workers <= 0 or not flat:
            if before is not None:
                before()
            return
        self.lock = threading.Lock()
        self.pending = [len(j) for j in jobs]
        self.ready = [threading.Event() for _ in jobs]
        for event, n in zip(self.ready, self.pending, strict=True):
            if not n:
                event.set()
        self.queue = iter(flat)
        self.stopped = False
        for k in range(min(workers, len(flat))):
            t = threading.Thread(
                target=self._work, args=(before if k == 0 else None,), name="statecache-read",
                daemon=True,
            )
            self.threads.append(t)
            t.start()

    @property
    def exhausted(self) -> bool:
        """Whether the consumer took every buffer."""
        return self.taken == len(self.buffers)

    def _work(self, before: Callable[[], None] | None) -> None:
        try:
            if before is not None:
                before()
            while not self.stopped:
                with self.lock:
                    item = next(self.queue, None)
                if item is None:
                    return
                i, job = item
                self.read(job)
                with self.lock:
                    self.pending[i] -= 1
                    done = not self.pending[i]
                if done:
                    self.ready[i].set()
        except BaseException as exc:
            with self.lock:
                if self.error is None:
                    self.error = exc
                self.stopped = True
            for event in self.ready:  # whoever waits learns of the error
                event.set()

    def __iter__(self) -> BufferFeed:
        return self

    def __next__(self) -> Any:
        i = self.taken
        if i >= len(self.buffers):
            raise StopIteration
        if self.threads:
            self.ready[i].wait()
            if self.error is not None and self.pending[i]:
                raise self.error
        else:
            for job in self.jobs[i]:
                self.read(job)
        self.taken += 1
        return self.buffers[i]

    def close(self) -> None:
        """Stop reading ahead and wait for the threads (they read from the caller's fd)."""
        if self.threads:
            self.stopped = True
            for t in self.threads:
                t.join()
            self.threads = []
