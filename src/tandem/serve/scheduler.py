"""The server's one generation thread: every admitted job decodes in one shared batch (continuous batching).

Handlers `submit` a `Job` with a `sink` (called on the scheduler's thread with each step's events, then
`FINISHED`, or an exception); jobs wait in FIFO order and join the running batch between two decoding
steps while it has rows to spare. A ticket that is cancelled (its client went away) or passes its
deadline leaves the batch at the next step, so nobody's abandoned work keeps the model busy. `stop()`
fails every waiting and running ticket with `ServerStopping` and ends the thread within one step.

The engine (`engine.Engine` for `--engine hf`, `vllm_engine.VLLMServeEngine` for vllm) makes the batch:
`add(job)` and `step()` return each job's events, `remove(job)` drops a job's rows, `rows` lists the
running rows (each with its `.job`); a job none of whose rows is left has finished.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tandem.serve.engine import Job

logger = logging.getLogger("tandem.serve")
FINISHED = object()


class RequestTimeout(Exception):
    """A job did not finish before its deadline."""


class ServerStopping(Exception):
    """The server is shutting down."""


@dataclass(eq=False)
class Ticket:
    job: Job
    sink: Callable[[object], None]
    deadline: float | None
    request: object = None  # the jobs of one request share this; together they hold at most half the batch
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class SchedulerStats:
    """Counts since start: what the batch did (read by tests and /health)."""

    finished: int = 0
    cancelled: int = 0
    timed_out: int = 0
    failed: int = 0
    steps: int = 0
    most_rows: int = 0  # the largest number of rows that decoded together in one step


class Scheduler:
    """Decodes submitted jobs on a daemon thread, up to `max_rows` rows at once (see the module docstring)."""

    def __init__(self, engine, max_rows: int, timeout: float | None = None) -> None:
        self.engine, self.max_rows, self.timeout = engine, max_rows, timeout
        self.waiting: collections.deque[Ticket] = collections.deque()
        self.stats = SchedulerStats()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tandem-serve-scheduler", daemon=True)
        self._thread.start()

    def submit(self, job: Job, sink: Callable[[object], None], request: object = None) -> Ticket:
        ticket = Ticket(job, sink, time.monotonic() + self.timeout if self.timeout else None, request)
        with self._wake:
            if self._stopping:
                raise ServerStopping("the server is shutting down")
            self.waiting.append(ticket)
            self._wake.notify()
        return ticket

    def stop(self, timeout: float = 10.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        batch, running = self.engine.batch(self.max_rows), {}
        while True:
            with self._wake:
                while not self._stopping and not self.waiting and not running:
                    self._wake.wait()
                if self._stopping:
                    _leave(batch, running)
                    for ticket in [*self.waiting, *running.values()]:
                        _deliver(ticket, ServerStopping("the server is shutting down"))
                    self.waiting.clear()
                    return
                joining = []
                for ticket in list(self.waiting):  # FIFO, skipping a request that holds its share of the batch
                    if self._drop_if_done(ticket):
                        self.waiting.remove(ticket)
                    elif self._fits(batch, running, joining, ticket):
                        self.waiting.remove(ticket)
                        joining.append(ticket)
                    elif not self._over_share(running, joining, ticket):
                        break  # the batch is full: later jobs wait their turn
            for ticket in joining:
                try:
                    events = batch.add(ticket.job)
                    running[ticket.job] = ticket
                    self._send(events, running, batch)
                except Exception as error:  # this job's prompt broke the model; the others go on
                    logger.exception("error while starting a generation")
                    batch.remove(ticket.job)
                    running.pop(ticket.job, None)
                    self.stats.failed += 1
                    _deliver(ticket, error)
            for job, ticket in list(running.items()):
                if self._drop_if_done(ticket):
                    batch.remove(job)
                    del running[job]
            if not batch.rows:
                continue
            try:
                self.stats.most_rows = max(self.stats.most_rows, len(batch.rows))
                events = batch.step()
                self.stats.steps += 1
            except Exception as error:  # the whole batch is lost; every job in it gets the error
                logger.exception("error while generating")
                _leave(batch, running)
                for ticket in running.values():
                    self.stats.failed += 1
                    _deliver(ticket, error)
                batch, running = self.engine.batch(self.max_rows), {}
                continue
            self._send(events, running, batch)

    def _send(self, events, running: dict, batch) -> None:
        """Deliver each job's events; a job whose rows all ended gets FINISHED and leaves `running`."""
        for job, job_events in events.items():
            if job_events:
                _deliver(running[job], job_events)
        live = {row.job for row in batch.rows}
        for job in [j for j in running if j not in live]:
            self.stats.finished += 1
            _deliver(running.pop(job), FINISHED)

    def _fits(self, batch, running: dict, joining: list[Ticket], ticket: Ticket) -> bool:
        """Whether `ticket` may join now: always into an empty batch; else if rows are left (and caches merge)
        and its request stays within half the batch, so a large request never shuts a small one out."""
        if not batch.rows and not joining:
            return True
        rows = len(batch.rows) + sum(t.job.n for t in joining) + ticket.job.n
        mergeable = getattr(self.engine, "mergeable", False)
        return mergeable and rows <= self.max_rows and not self._over_share(running, joining, ticket)

    def _over_share(self, running: dict, joining: list[Ticket], ticket: Ticket) -> bool:
        if ticket.request is None:
            return False
        held = sum(t.job.n for t in [*running.values(), *joining] if t.request is ticket.request)
        return held > 0 and held + ticket.job.n > max(self.max_rows // 2, 1)

    def _expired(self, ticket: Ticket) -> bool:
        return ticket.deadline is not None and time.monotonic() > ticket.deadline

    def _drop_if_done(self, ticket: Ticket) -> bool:
        """True (and the ticket told, when it timed out) if the ticket is cancelled or past its deadline."""
        if ticket.cancelled.is_set():
            self.stats.cancelled += 1
            return True
        if self._expired(ticket):
            self.stats.timed_out += 1
            _deliver(ticket, RequestTimeout(f"generation did not finish within {self.timeout:g} s"))
            return True
        return False


def _leave(batch, running: dict) -> None:
    """Take every running job out of `batch`, so an engine with its own queue (vLLM) drops their work too."""
    for job in running:
        try:
            batch.remove(job)
        except Exception:  # a batch broken by the error that ends it
            logger.debug("a job could not leave its batch", exc_info=True)


def _deliver(ticket: Ticket, item) -> None:
    try:
        ticket.sink(item)
    except Exception:  # the receiving side is gone (its event loop closed): nothing left to tell
        logger.debug("a finished request's sink failed", exc_info=True)
