"""The one worker pool that runs every long piece of work in the app.

A *job* is a generator function, or a plain function. The pool runs it on a worker
QThread and hands what it yields to the GUI thread:

* a yielded :class:`~playground.progress.Progress` updates the job's progress bar;
* anything else is a *partial result* (a metric point, an image, a token), delivered in
  order, in batches, through :attr:`Job.results`;
* the generator's return value (or a plain function's: an array, a list, a range, a
  tensor, anything that is not a generator is *one* value) arrives through
  :attr:`Job.finished`;
* an exception becomes a readable message through :attr:`Job.failed`, and its kind
  (:class:`~playground.errors.ErrorKind`: out of memory, bad file, ...) in
  :attr:`Job.error_kind`.

**Input into a running job.** :meth:`Job.send` queues a value for the job (the drag
editor moves a target; the chat pane stops one answer). The job reads its inputs between
two yields: the value of a ``yield`` expression is ``None`` when nothing arrived since
the previous yield, otherwise the list of every value sent since then, in order::

    def drag(...):
        while ...:
            inputs = yield frame        # None, or [value, value, ...]
            for value in inputs or ():
                ...

(``yield from`` passes the inputs on to a sub-generator; a sub-*iterator* that is not
a generator cannot take them, so a job that takes input yields from generators only.)

How the pieces fit:

* **Coalescing.** The worker appends to a locked buffer and emits one queued
  ``wake`` signal when the buffer goes from idle to busy. The GUI thread drains the
  whole buffer at once, and at most 20 times a second, so a job yielding 10,000
  points a second costs the GUI 20 small batches, not 10,000 events.
* **Cancellation** is cooperative: the worker checks the job's flag at every yield and
  closes the generator (``GeneratorExit`` at its ``yield``). A job that yields every
  0.1 s stops within about 0.1 s. Long inner loops can poll :func:`should_stop`.
* **Pause** waits between two yields, holding nothing.
* **Devices.** Every job names a device (``"cpu"``, ``"cuda:0"``, ...). Between yields
  a job holds its device's :class:`DeviceArbiter`; interactive jobs (a drag step, a chat
  token) are served before background jobs on the same device, so an interactive job
  waits at most one step of a training job.
* **Shutdown** cancels every job and joins every thread.
* **Garbage collection stays on the GUI thread** (:class:`GuiThreadCollector`). Python's
  cycle collector runs on whichever thread happens to allocate; on a worker it can free
  widgets left in reference cycles, and a QObject destroyed there while the GUI thread
  deletes another deadlocks the two (one holds the GIL, the other a Qt mutex). So the
  pool turns automatic collection off and collects from a timer on the GUI thread.

Only this module knows about threads. Panels submit; the ML core yields.
"""

from __future__ import annotations

import gc
import itertools
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable, Generator
from enum import Enum
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer, Signal, Slot

from .errors import ErrorKind, error_kind, friendly_message
from .progress import Progress

log = logging.getLogger(__name__)

#: Fewest milliseconds between two deliveries of one job's results to the GUI.
DELIVERY_INTERVAL_MS = 50



class GuiThreadCollector(QObject):
    """Python's cyclic garbage collection, done only on the GUI thread, from a timer.

    Automatic collection is switched off; every ``interval_ms`` the collector looks at
    the allocation counts and collects the generations the interpreter would have
    collected by now (the same thresholds), so memory behaves as before while no worker
    thread ever frees a Qt object it happens to find in a cycle. :meth:`install` makes
    one per application (it lives as long as the QCoreApplication) and is idempotent.
    """

    _instance: GuiThreadCollector | None = None

    def __init__(self, interval_ms: int = 500, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.thresholds = gc.get_threshold()
        self.collections = 0
        gc.disable()
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.collect_if_due)
        self._timer.start()

    @classmethod
    def install(cls) -> GuiThreadCollector | None:
        app = QCoreApplication.instance()
        if app is None:
            return None
        current = cls._instance
        try:
            if current is not None and current.parent() is app:
                gc.disable()  # something may have turned it back on
                return current
        except RuntimeError:  # the Qt side of an old instance is gone with its application
            pass
        cls._instance = cls(parent=app)
        return cls._instance

    @staticmethod
    def settle() -> None:
        """Collect everything once and move what survives (the imported libraries, the window)
        to the permanent generation, once per process: the collections that follow scan only
        what was made after it. Without this, the first collection of an older generation
        after start-up walks every object the imports made (100-170 ms on the GUI thread,
        measured during the first chat answer). The main window calls it once it is built, before
        its first paint."""
        if GuiThreadCollector._settled:
            return
        GuiThreadCollector._settled = True
        gc.collect()
        gc.freeze()

    _settled = False

    @Slot()
    def collect_if_due(self) -> int:
        """Collect the generations whose thresholds were passed; returns the oldest one collected, or -1."""
        counts = gc.get_count()
        oldest = -1
        for generation, (count, threshold) in enumerate(zip(counts, self.thresholds)):
            if threshold <= 0 or count <= threshold:
                break
            oldest = generation
        if oldest >= 0:
            gc.collect(oldest)
            self.collections += 1
        return oldest


class JobState(str, Enum):
    """Where a job is in its life. (A ``str`` enum: it prints as its value.)"""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def ended(self) -> bool:
        return self in ENDED


QUEUED, RUNNING, PAUSED, FINISHED, FAILED, CANCELLED = (
    JobState.QUEUED, JobState.RUNNING, JobState.PAUSED, JobState.FINISHED, JobState.FAILED, JobState.CANCELLED)
ENDED = (FINISHED, FAILED, CANCELLED)


class JobCancelled(Exception):
    """Raised by :func:`check_cancelled` inside a job whose cancel was requested."""


_local = threading.local()


def should_stop() -> bool:
    """True when the job running on this thread was cancelled (False outside jobs).

    The ML core may poll this inside long inner loops that do not yield.
    """
    job = getattr(_local, "job", None)
    return bool(job is not None and job._cancel_event.is_set())


def check_cancelled() -> None:
    """Raise :class:`JobCancelled` when the current job was cancelled."""
    if should_stop():
        raise JobCancelled()


class DeviceArbiter:
    """Hands one device between jobs, one step at a time, in turn; interactive jobs go first.

    Waiters queue in order of arrival (interactive ones ahead of background ones), and a
    job that releases the device and asks again goes to the back of its queue, so two
    background jobs on one device take turns instead of one starving the other.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._queues: dict[bool, list[object]] = {True: [], False: []}

    def _next(self) -> object | None:
        for interactive in (True, False):
            if self._queues[interactive]:
                return self._queues[interactive][0]
        return None

    def acquire(self, interactive: bool, cancelled: threading.Event) -> bool:
        """Wait for the device. Returns False (without holding it) if cancelled meanwhile."""
        ticket = object()
        with self._cond:
            self._queues[interactive].append(ticket)
            try:
                while self._busy or self._next() is not ticket:
                    if cancelled.is_set():
                        return False
                    self._cond.wait(0.05)
                self._busy = True
                return True
            finally:
                self._queues[interactive].remove(ticket)
                self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()


class Job(QObject):
    """One submitted piece of work, seen from the GUI thread.

    Signals (all delivered on the GUI thread):

    * ``progress(fraction, text)``: fraction is -1.0 when unknown;
    * ``results(list)``: partial results, in the order they were yielded;
    * ``finished(object)``: the return value; ``failed(str)``: a readable message (its
      kind is in :attr:`error_kind` by then);
    * ``cancelled()``; ``stateChanged(JobState)``; ``ended(JobState)`` once, with the final state.
    """

    progress = Signal(float, str)
    results = Signal(object)  # a list; `object` passes it through without conversion
    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    stateChanged = Signal(object)
    ended = Signal(object)

    _wake = Signal()  # emitted from the worker thread; queued to the GUI thread

    _ids = itertools.count(1)

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict, *, name: str,
                 device: str, interactive: bool, arbiter: DeviceArbiter,
                 delivery_ms: int = DELIVERY_INTERVAL_MS, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.delivery_ms = delivery_ms
        self.id = next(Job._ids)
        self.name = name
        self.device = device
        self.interactive = interactive
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._arbiter = arbiter
        self._cancel_event = threading.Event()
        self._resume_event = threading.Event()
        self._resume_event.set()
        self._lock = threading.Lock()
        self._buffer: list[Any] = []
        self._inputs: list[Any] = []  # sent by the GUI, taken by the worker between two yields
        self._latest_progress: Progress | None = None
        self._outcome: tuple[JobState, Any] | None = None  # (state, value) once ended in worker
        self._started = False
        self._wake_pending = False
        self._last_delivery = 0.0
        self._delivery_scheduled = False
        self.state = QUEUED
        self.fraction: float | None = None
        self.text = ""
        self.error: str | None = None
        self.error_kind: ErrorKind | None = None
        self.value: Any = None
        self._wake.connect(self._deliver)

    # -- control (GUI thread, or any thread) -------------------------------------------
    def cancel(self) -> None:
        """Ask the job to stop at its next yield. Safe to call twice or after the end."""
        self._cancel_event.set()
        self._resume_event.set()

    def pause(self) -> None:
        if self.state == RUNNING:
            self._resume_event.clear()
            self._set_state(PAUSED)

    def resume(self) -> None:
        if self.state == PAUSED:
            self._resume_event.set()
            self._set_state(RUNNING)

    def send(self, value: Any) -> bool:
        """Queue ``value`` for the running job; it gets it at its next yield (see the module doc).

        Thread-safe; values arrive in the order they were sent. Returns False (and drops
        the value) when the job has ended, is ending or was cancelled. A value sent while
        the job makes its last step may still be dropped (it has no next yield to read it
        at), and a plain-function job reads none: a job that takes input is a generator.
        """
        with self._lock:
            if self.state in ENDED or self._outcome is not None or self._cancel_event.is_set():
                return False
            self._inputs.append(value)
        return True

    def _take_inputs(self) -> list[Any] | None:
        with self._lock:
            if not self._inputs:
                return None
            taken, self._inputs = self._inputs, []
        return taken

    @property
    def is_cancel_requested(self) -> bool:
        return self._cancel_event.is_set()

    @property
    def is_done(self) -> bool:
        return self.state in ENDED

    # -- worker side ---------------------------------------------------------------------
    def _post(self, item: Any) -> None:
        with self._lock:
            if isinstance(item, Progress):
                self._latest_progress = item
            else:
                self._buffer.append(item)
            wake = not self._wake_pending
            self._wake_pending = True
        if wake:
            self._wake.emit()

    def _end(self, state: JobState, value: Any = None) -> None:
        with self._lock:
            self._outcome = (state, value)
            self._inputs.clear()  # sent too late: the job will not read them
            self._wake_pending = True
        self._wake.emit()

    def _wait_if_paused(self) -> bool:
        """Block while paused. Returns False if cancelled."""
        while not self._resume_event.wait(0.05):
            pass
        return not self._cancel_event.is_set()

    def _run(self) -> None:
        """Run the job to its end on the calling (worker) thread."""
        _local.job = self
        held = False
        try:
            if self._cancel_event.is_set():
                self._end(CANCELLED)
                return
            held = self._arbiter.acquire(self.interactive, self._cancel_event)
            if not held:
                self._end(CANCELLED)
                return
            with self._lock:
                self._started = True
                wake = not self._wake_pending
                self._wake_pending = True
            if wake:
                self._wake.emit()
            result = self._fn(*self._args, **self._kwargs)
            if not isinstance(result, Generator):
                # Only a generator is a stream of results. An array, a tensor, a list or a
                # range returned by a plain function is one value, not one per row.
                self._end(FINISHED, result)
                return
            gen = result
            value = None
            first = True  # a generator that has not run yet cannot take a value: inputs wait for its first yield
            while True:
                try:
                    inputs = None if first else self._take_inputs()
                    first = False
                    item = next(gen) if inputs is None else gen.send(inputs)
                except StopIteration as stop:
                    value = stop.value
                    break
                self._post(item)
                # Between two yields the job holds nothing: hand the device over.
                self._arbiter.release()
                held = False
                if self._cancel_event.is_set() or not self._wait_if_paused():
                    _close(gen)
                    self._end(CANCELLED)
                    return
                held = self._arbiter.acquire(self.interactive, self._cancel_event)
                if not held:
                    _close(gen)
                    self._end(CANCELLED)
                    return
            self._end(FINISHED, value)
        except JobCancelled:
            self._end(CANCELLED)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a message
            log.error("Job %r failed:\n%s", self.name, traceback.format_exc())
            self._end(FAILED, (error_kind(exc), friendly_message(exc)))
        finally:
            if held:
                self._arbiter.release()
            _local.job = None

    # -- GUI side -------------------------------------------------------------------------
    def _set_state(self, state: JobState) -> None:
        if state != self.state:
            self.state = state
            self.stateChanged.emit(state)

    @Slot()
    def _deliver(self) -> None:
        """Drain the worker's buffer on the GUI thread, at most 20 times a second."""
        if self._delivery_scheduled:
            return
        wait_ms = self.delivery_ms - (time.monotonic() - self._last_delivery) * 1000
        with self._lock:
            ending = self._outcome is not None
        if wait_ms > 1 and not ending:
            self._delivery_scheduled = True
            QTimer.singleShot(int(wait_ms), self._deliver_now)
            return
        self._deliver_now()

    @Slot()
    def _deliver_now(self) -> None:
        self._delivery_scheduled = False
        with self._lock:
            items, self._buffer = self._buffer, []
            progress, self._latest_progress = self._latest_progress, None
            outcome = self._outcome
            started = self._started
            self._wake_pending = False
        self._last_delivery = time.monotonic()
        if self.state == QUEUED and started and outcome is None:
            self._set_state(RUNNING)
        if progress is not None:
            self.fraction, self.text = progress.fraction, progress.text
            self.progress.emit(-1.0 if progress.fraction is None else float(progress.fraction),
                               progress.text)
        if items:
            self.results.emit(items)
        if outcome is not None and self.state not in ENDED:
            state, value = outcome
            if state == FINISHED:
                self.value = value
                self._set_state(FINISHED)
                self.finished.emit(value)
            elif state == FAILED:
                self.error_kind, self.error = value
                self._set_state(FAILED)
                self.failed.emit(self.error)
            else:
                self.error_kind = ErrorKind.CANCELLED
                self._set_state(CANCELLED)
                self.cancelled.emit()
            self.ended.emit(self.state)

    def flush(self) -> None:
        """Deliver whatever is buffered now (used at shutdown and in tests)."""
        self._deliver_now()


def _close(gen: Any) -> None:
    close = getattr(gen, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # noqa: BLE001 - a generator that misbehaves while closing
            log.exception("Error while closing a cancelled job")


class _Worker(QThread):
    """A worker thread of the pool: takes jobs from the queue until it gets None."""

    def __init__(self, tasks: queue.Queue[Job | None], pool: JobPool) -> None:
        super().__init__()
        self._tasks = tasks
        self._pool = pool
        self.current: Job | None = None

    def run(self) -> None:  # noqa: D401 - QThread API
        while True:
            job = self._tasks.get()
            if job is None:
                return
            self.current = job
            self._pool._note_busy(+1)
            try:
                job._run()
            finally:
                self.current = None
                self._pool._note_busy(-1)


class JobPool(QObject):
    """The app's one pool of worker QThreads.

    Threads are started on demand up to ``max_threads``; beyond that jobs wait in a queue.
    """

    jobAdded = Signal(object)
    jobEnded = Signal(object)

    def __init__(self, max_threads: int = 6, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.max_threads = max_threads
        self._tasks: queue.Queue[Job | None] = queue.Queue()
        self._threads: list[_Worker] = []
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._arbiters: dict[str, DeviceArbiter] = {}
        self.jobs: list[Job] = []
        self._closed = False
        GuiThreadCollector.install()

    def _note_busy(self, delta: int) -> None:
        with self._busy_lock:
            self._busy += delta

    def arbiter(self, device: str) -> DeviceArbiter:
        key = str(device)
        if key not in self._arbiters:
            self._arbiters[key] = DeviceArbiter()
        return self._arbiters[key]

    def submit(self, fn: Callable[..., Any], *args: Any, name: str = "Job", device: str = "cpu",
               interactive: bool = False, delivery_ms: int = DELIVERY_INTERVAL_MS, **kwargs: Any) -> Job:
        """Run ``fn(*args, **kwargs)`` on a worker thread and return its :class:`Job`.

        ``delivery_ms`` is the fewest milliseconds between two deliveries of results: a
        panel that draws only a few times a second asks for fewer, larger batches.

        Connect to the job's signals right after this call: nothing is delivered before
        the GUI's event loop runs again.
        """
        if self._closed:
            raise RuntimeError("The job pool is shut down")
        job = Job(fn, args, kwargs, name=name, device=device, interactive=interactive,
                  arbiter=self.arbiter(device), delivery_ms=delivery_ms, parent=self)
        self.jobs.append(job)
        job.ended.connect(lambda _state, j=job: self._on_ended(j))
        with self._busy_lock:
            idle = len(self._threads) - self._busy - self._tasks.qsize()
        if idle <= 0 and len(self._threads) < self.max_threads:
            worker = _Worker(self._tasks, self)
            worker.setObjectName(f"playground-worker-{len(self._threads) + 1}")
            self._threads.append(worker)
            worker.start()
        self._tasks.put(job)
        self.jobAdded.emit(job)
        return job

    def _on_ended(self, job: Job) -> None:
        if job in self.jobs:
            self.jobs.remove(job)
        self.jobEnded.emit(job)
        # Forget the job's inputs, and let Python own it: it goes when the panel lets go.
        job._fn, job._args, job._kwargs = None, (), {}
        job.setParent(None)

    def active_jobs(self) -> list[Job]:
        return [j for j in self.jobs if not j.is_done]

    def cancel_all(self) -> None:
        for job in list(self.jobs):
            job.cancel()

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Process events until every job has ended (for tests and shutdown)."""
        from PySide6.QtCore import QCoreApplication

        deadline = time.monotonic() + timeout_s
        while self.active_jobs():
            if time.monotonic() > deadline:
                return False
            QCoreApplication.processEvents()
            time.sleep(0.005)
        return True

    def shutdown(self, timeout_s: float = 10.0) -> bool:
        """Cancel every job and join every thread. Returns False if a thread would not stop."""
        self._closed = True
        self.cancel_all()
        for _ in self._threads:
            self._tasks.put(None)
        ok = True
        deadline = time.monotonic() + timeout_s
        for worker in self._threads:
            remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
            if not worker.wait(remaining_ms):
                log.error("Worker %s did not stop within %.0f s", worker.objectName(), timeout_s)
                ok = False
        # Deliver what the jobs left so panels keep every partial result.
        for job in list(self.jobs):
            job.flush()
        if ok:
            self._threads.clear()
        return ok
