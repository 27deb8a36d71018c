"""Worker processes for `prepare`: a spawned pool with bounded work in flight, and the
progress line.

Memory stays bounded whatever the corpus size: at most 2 * max(num_workers, 1) tasks
are in flight (read but not yet finished), and no more than `budget_bytes` of the
memory their submitters say they take (one task is always allowed). `submit` blocks
until there is room; when the budget, not the task limit, keeps workers idle, one line
on stderr says so (once), since a larger budget would be faster.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any


class Workers:
    """Runs `fn(task)` in `num_workers` spawned processes, or in this one at once (0).

    Each process first runs `initializer(*initargs, parallel)`, parallel saying whether
    several processes share the cores (in-process: once, here, with parallel=False).
    Results go to `on_result` as they finish. A worker's exception becomes a
    RuntimeError saying `what` failed (an OSError passes as it is: it names its file);
    in-process, exceptions pass unchanged. Leaving the `with` block shuts the pool down,
    cancelling the tasks not started.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        num_workers: int,
        initializer: Callable[..., None],
        initargs: tuple,
        budget_bytes: float,
        on_result: Callable[[Any], None],
        what: str,
        budget_name: str = "data.max_inflight_mb",
    ) -> None:
        self.fn, self.on_result, self.what = fn, on_result, what
        self.budget, self.budget_name = budget_bytes, budget_name
        self.num_workers = num_workers
        self.max_in_flight = 2 * max(num_workers, 1)
        self.pending: dict[concurrent.futures.Future, int] = {}  # future -> memory (bytes)
        self.told = False  # the "budget keeps workers idle" line was printed
        self.executor = None
        if num_workers:
            self.executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=num_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=initializer,
                initargs=(*initargs, num_workers > 1),
            )
        else:
            initializer(*initargs, False)

    def submit(self, task: Any, nbytes: int) -> None:
        """Runs `task` (taking `nbytes` of memory until it is finished), after waiting
        for room."""
        if self.executor is None:
            self.on_result(self.fn(task))
            return
        while self.pending and (
            len(self.pending) >= self.max_in_flight
            or sum(self.pending.values()) + nbytes > self.budget
        ):
            if len(self.pending) < self.num_workers and not self.told:
                from tqdm import tqdm  # its write() keeps a progress bar on its own line

                self.told = True
                mb = 1 << 20
                tqdm.write(
                    f"note: {self.budget_name}={self.budget / mb:g} keeps "
                    f"{self.num_workers - len(self.pending)} of {self.num_workers} "
                    f"workers waiting (in flight: {sum(self.pending.values()) / mb:.0f}"
                    f" MB, next: {nbytes / mb:.0f} MB, estimated); a larger value is "
                    "faster (docs/data.md#memory)",
                    file=sys.stderr,
                )
            self._collect(self._wait())
        self.pending[self.executor.submit(self.fn, task)] = nbytes

    def drain(self, after_each: Callable[[], None] = lambda: None) -> None:
        """Waits for every task; `after_each` runs whenever some finished."""
        while self.pending:
            self._collect(self._wait())
            after_each()

    def _wait(self) -> set[concurrent.futures.Future]:
        done, _ = concurrent.futures.wait(
            self.pending, return_when=concurrent.futures.FIRST_COMPLETED
        )
        return done

    def _collect(self, done: Iterable[concurrent.futures.Future]) -> None:
        for fut in done:
            self.pending.pop(fut)
            try:
                result = fut.result()
            except OSError:
                raise  # shard_files.write_atomic's: names the file and says what is kept
            except Exception as e:
                raise RuntimeError(
                    f"{self.what} failed: {type(e).__name__}: {e} "
                    "(finished shards are kept; re-run to resume)"
                ) from e
            self.on_result(result)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


class Progress:
    """The progress line on stderr (when enabled): documents read, docs/s, MB/s of text,
    shards done / chunks read; `counts()` gives (documents, bytes, done, chunks)."""

    def __init__(self, enabled: bool, counts: Callable[[], tuple[int, int, int, int]]) -> None:
        self.counts = counts
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                unit=" docs", unit_scale=True, file=sys.stderr, mininterval=0.5, dynamic_ncols=True
            )
        self.t0 = time.monotonic()
        self.last = 0.0

    def tick(self) -> None:
        """Shows the line at most every 0.5 s."""
        if self.bar is not None and time.monotonic() - self.last > 0.5:
            self.last = time.monotonic()
            self.show()

    def show(self, force: bool = False) -> None:
        if self.bar is None:
            return
        documents, nbytes, done, chunks = self.counts()
        self.bar.update(documents - self.bar.n)
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        self.bar.set_postfix_str(
            f"{nbytes / elapsed / 1e6:.2f} MB/s, shards {done}/{chunks}", refresh=force
        )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.show(force=True)
            self.bar.close()
